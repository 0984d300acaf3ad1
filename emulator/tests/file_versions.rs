//! File versions (cells-share-versions.md §2): recorded asynchronously after each content
//! change with a new hash on the versioned workspaces, listed with `"Versions": true` (bodies
//! validated against the official swagger), read with S3 GET/HEAD `?versionId=`, restored by
//! a CopyObject of the key onto itself in both `x-amz-copy-source` encodings; and boto3 doing
//! the same as a third-party S3 client.

mod common;

#[path = "common/s3_client.rs"]
mod s3_client;

use std::time::Duration;

use common::{Swagger, TestEmu, meta};
use reqwest::Method;
use s3_client::{Payload, S3Client, encode_key, error_code};
use serde_json::{Value, json};

/// The version nodes of `path` (`POST /a/meta/bulk/get` with `Versions`), swagger-checked.
async fn versions(emu: &TestEmu, sw: &Swagger, token: &str, path: &str) -> (u16, Vec<Value>) {
    let (status, body) = emu
        .rest(
            sw,
            Method::POST,
            "/meta/bulk/get",
            Some(token),
            Some(&json!({"NodePaths": [path], "Versions": true})),
            "restBulkMetaResponse",
        )
        .await;
    let nodes = body["Nodes"].as_array().cloned().unwrap_or_default();
    (status, nodes)
}

/// Wait until `path` has `n` versions (versioning is asynchronous); returns them.
async fn wait_versions(
    emu: &TestEmu,
    sw: &Swagger,
    token: &str,
    path: &str,
    n: usize,
) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, nodes) = versions(emu, sw, token, path).await;
        assert_eq!(status, 200);
        if nodes.len() >= n {
            assert_eq!(nodes.len(), n, "too many versions: {nodes:?}");
            return nodes;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{path}: {} versions, want {n}",
            nodes.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn version_id(node: &Value) -> String {
    meta(node, "versionId")
        .and_then(|v| v.as_str().map(str::to_string))
        .expect("versionId meta")
}

fn md5_hex(data: &[u8]) -> String {
    use md5::Digest as _;
    hex::encode(md5::Md5::digest(data))
}

async fn put_ok(s3: &S3Client, key: &str, body: &[u8]) {
    let r = s3.put(key, body).await;
    assert_eq!(r.status(), 200, "PUT {key}");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_content_change_with_a_new_hash_makes_one_version() {
    let emu = TestEmu::start().await;
    let sw = Swagger::load();
    let token = emu.pat("alice");
    let s3 = S3Client::new(&emu.url, &token);
    let key = "personal-files/report.txt";

    // The first upload is a version.
    put_ok(&s3, key, b"one").await;
    let v = wait_versions(&emu, &sw, &token, key, 1).await;
    assert_eq!(v[0]["Etag"], md5_hex(b"one"));
    // A new hash: a new version; the same content again: none.
    put_ok(&s3, key, b"two!").await;
    wait_versions(&emu, &sw, &token, key, 2).await;
    put_ok(&s3, key, b"two!").await;
    put_ok(&s3, key, b"three").await;
    let v = wait_versions(&emu, &sw, &token, key, 3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(versions(&emu, &sw, &token, key).await.1.len(), 3);

    // Newest first; each the current node with the version's Etag and size, and the
    // versionId / versionDescription metadata (JSON strings); distinct ids.
    let current = emu.state().store.stat("alice", key).unwrap();
    let etags: Vec<&str> = v.iter().map(|n| n["Etag"].as_str().unwrap()).collect();
    assert_eq!(
        etags,
        [md5_hex(b"three"), md5_hex(b"two!"), md5_hex(b"one")]
    );
    let sizes: Vec<&str> = v.iter().map(|n| n["Size"].as_str().unwrap()).collect();
    assert_eq!(sizes, ["5", "4", "3"]);
    let mut ids: Vec<String> = v.iter().map(version_id).collect();
    for n in &v {
        assert_eq!(n["Uuid"], current.uuid.as_str());
        assert_eq!(n["Path"], key);
        assert_eq!(n["Type"], "LEAF");
        assert!(n["MTime"].is_string());
        assert!(
            meta(n, "versionDescription").is_some_and(|d| d.is_string()),
            "{n}"
        );
        assert_eq!(
            n["MetaStore"]["versionId"].as_str().unwrap().chars().next(),
            Some('"')
        );
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3);

    // Versioned: personal and common files. Not versioned: team-docs, scratch. Folders
    // have none; a missing path is a 404.
    put_ok(&s3, "common-files/c.txt", b"c").await;
    wait_versions(&emu, &sw, &token, "common-files/c.txt", 1).await;
    put_ok(&s3, "scratch/s.txt", b"s").await;
    let admin = emu.pat("admin");
    let s3_admin = S3Client::new(&emu.url, &admin);
    put_ok(&s3_admin, "team-docs/t.txt", b"t").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        versions(&emu, &sw, &token, "scratch/s.txt")
            .await
            .1
            .is_empty()
    );
    assert!(
        versions(&emu, &sw, &admin, "team-docs/t.txt")
            .await
            .1
            .is_empty()
    );
    assert!(
        versions(&emu, &sw, &token, "personal-files")
            .await
            .1
            .is_empty()
    );
    assert_eq!(
        versions(&emu, &sw, &token, "personal-files/missing.txt")
            .await
            .0,
        404
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_is_read_with_version_id_and_restored_by_a_copy_onto_itself() {
    let emu = TestEmu::start().await;
    let sw = Swagger::load();
    let token = emu.pat("alice");
    let s3 = S3Client::new(&emu.url, &token);
    let key = "personal-files/doc/notes.md";
    put_ok(&s3, key, b"first draft").await;
    wait_versions(&emu, &sw, &token, key, 1).await;
    put_ok(&s3, key, b"second, longer draft").await;
    let v = wait_versions(&emu, &sw, &token, key, 2).await;
    let first = version_id(&v[1]);
    let uuid = emu.state().store.stat("alice", key).unwrap().uuid;

    // GET and HEAD of a version: its content and headers; plain GET is the current one.
    let path = format!("/io/{}?versionId={first}", encode_key(key));
    let r = s3
        .request("GET", &path, &[], Payload::Unsigned(b""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["etag"],
        format!("\"{}\"", md5_hex(b"first draft")).as_str()
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"first draft");
    let r = s3
        .request("HEAD", &path, &[], Payload::Unsigned(b""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "11");
    let r = s3.get(key, &[]).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"second, longer draft");
    // Presigned, versionId signed with the rest of the query.
    let url = s3.presigned_url("GET", &path, Duration::from_secs(60));
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"first draft");
    // Unknown version.
    let bad = format!("/io/{}?versionId=nope", encode_key(key));
    let r = s3
        .request("GET", &bad, &[], Payload::Unsigned(b""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(&r.text().await.unwrap()), "NoSuchVersion");

    // Same-key copy without a version: refused as on the server.
    let dest = format!("/io/{}", encode_key(key));
    let plain_source = format!("io/{}", encode_key(key));
    let r = s3
        .request(
            "PUT",
            &dest,
            &[("x-amz-copy-source", &plain_source)],
            Payload::Unsigned(b""),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 501);

    // Restore, the web UI's way: the whole source percent-encoded.
    let encoded: String =
        url::form_urlencoded::byte_serialize(format!("io/{key}?versionId={first}").as_bytes())
            .collect::<String>()
            .replace('+', "%20");
    let r = s3
        .request(
            "PUT",
            &dest,
            &[("x-amz-copy-source", &encoded)],
            Payload::Unsigned(b""),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("<CopyObjectResult"), "{text}");
    let r = s3.get(key, &[]).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"first draft");
    assert_eq!(
        emu.state().store.stat("alice", key).unwrap().uuid,
        uuid,
        "same node"
    );
    // The restore is a content change: a new version.
    let v = wait_versions(&emu, &sw, &token, key, 3).await;
    assert_eq!(v[0]["Etag"], md5_hex(b"first draft"));

    // Restore, the AWS way: `io/<encoded key>?versionId=<id>`.
    let second = version_id(&v[1]);
    let aws = format!("io/{}?versionId={second}", encode_key(key));
    let r = s3
        .request(
            "PUT",
            &dest,
            &[("x-amz-copy-source", &aws)],
            Payload::Unsigned(b""),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = s3.get(key, &[]).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"second, longer draft");
    wait_versions(&emu, &sw, &token, key, 4).await;

    // Another user cannot read alice's versions (her personal files are not theirs).
    let bob = S3Client::new(&emu.url, &emu.pat("bob"));
    let r = bob
        .request("GET", &path, &[], Payload::Unsigned(b""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

const BOTO3_VERSIONS: &str = r#"
import sys
import boto3
from botocore.config import Config

endpoint, token = sys.argv[1], sys.argv[2]
try:
    cfg = Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                 request_checksum_calculation="when_required",
                 response_checksum_validation="when_required")
except TypeError:
    cfg = Config(s3={"addressing_style": "path"}, signature_version="s3v4")
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=token,
                  aws_secret_access_key="gatewaysecret", region_name="us-east-1", config=cfg)
key, first, current = "personal-files/b/v.txt", sys.argv[3], sys.argv[4]
got = s3.get_object(Bucket="io", Key=key, VersionId=first)["Body"].read()
assert got == b"version one", got
head = s3.head_object(Bucket="io", Key=key, VersionId=first)
assert head["ContentLength"] == len(b"version one"), head
assert s3.get_object(Bucket="io", Key=key)["Body"].read() == current.encode()
try:
    s3.get_object(Bucket="io", Key=key, VersionId="unknown")
    raise SystemExit("an unknown version was served")
except s3.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] in ("NoSuchVersion", "404"), e.response
s3.copy_object(Bucket="io", Key=key, CopySource={"Bucket": "io", "Key": key, "VersionId": first})
assert s3.get_object(Bucket="io", Key=key)["Body"].read() == b"version one"
print("BOTO3-VERSIONS-OK")
"#;

#[tokio::test(flavor = "multi_thread")]
async fn boto3_reads_and_restores_versions() {
    let emu = TestEmu::start().await;
    let sw = Swagger::load();
    let token = emu.pat("alice");
    let s3 = S3Client::new(&emu.url, &token);
    let key = "personal-files/b/v.txt";
    put_ok(&s3, key, b"version one").await;
    wait_versions(&emu, &sw, &token, key, 1).await;
    put_ok(&s3, key, b"version two").await;
    let v = wait_versions(&emu, &sw, &token, key, 2).await;
    let script = emu.dir.path().join("versions.py");
    std::fs::write(&script, BOTO3_VERSIONS).unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("python3")
            .arg(&script)
            .arg(&emu.url)
            .arg(&token)
            .arg(version_id(&v[1]))
            .arg("version two")
            .env_remove("AWS_CA_BUNDLE")
            .env_remove("AWS_PROFILE")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .output(),
    )
    .await
    .expect("boto3 timed out")
    .expect("python3 with boto3 must be installed");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("BOTO3-VERSIONS-OK"),
        "{text}"
    );
    wait_versions(&emu, &sw, &token, key, 3).await;
}
