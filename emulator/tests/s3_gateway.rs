//! The S3 gateway over real HTTP on loopback: auth transports and their failures, payload
//! hashes, streaming payloads refused, GET/HEAD/Range, PUT with parents and conflicts,
//! rights, DELETE, CopyObject, multipart, and the ListObjectsV2 quirks of cells-api.md §6.7.

#[path = "common/s3_client.rs"]
mod s3_client;

use std::time::Duration;

use cells_emu::auth::PatExpiry;
use cells_emu::{EmuConfig, RunningEmulator};
use md5::Digest as _;
use s3_client::{Payload, S3Client, encode_key, error_code, xml_values};

struct Fixture {
    emu: RunningEmulator,
    _dir: tempfile::TempDir,
    alice: S3Client,
    alice_token: String,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let emu = cells_emu::start(EmuConfig::for_tests(dir.path()))
        .await
        .expect("start emulator");
    let alice_token = emu
        .state
        .auth
        .mint_pat("alice", PatExpiry::Fixed(Duration::from_secs(3600)))
        .expect("mint PAT");
    let alice = S3Client::new(&emu.url, &alice_token);
    Fixture {
        emu,
        _dir: dir,
        alice,
        alice_token,
    }
}

fn md5_hex(data: &[u8]) -> String {
    hex::encode(md5::Md5::digest(data))
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

async fn text(resp: reqwest::Response) -> String {
    resp.text().await.expect("body")
}

#[tokio::test]
async fn put_get_head_roundtrip_creates_parents() {
    let f = fixture().await;
    let body = b"hello cells".to_vec();
    let put = f.alice.put("personal-files/docs/deep/a.txt", &body).await;
    assert_eq!(put.status(), 200);
    let etag = put.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", md5_hex(&body)));

    // Parents exist as real folders.
    let folder = f
        .emu
        .state
        .store
        .stat("alice", "personal-files/docs/deep")
        .expect("parent folder created");
    assert!(!folder.is_leaf());

    let get = f.alice.get("personal-files/docs/deep/a.txt", &[]).await;
    assert_eq!(get.status(), 200);
    assert_eq!(get.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(get.bytes().await.unwrap().as_ref(), body.as_slice());

    let head = f.alice.head("personal-files/docs/deep/a.txt").await;
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        body.len().to_string().as_str()
    );
    assert_eq!(head.headers()["etag"].to_str().unwrap(), etag);
    assert!(head.headers().contains_key("last-modified"));
    assert!(head.headers().contains_key("content-type"));

    // Overwrite keeps the Uuid and changes the Etag.
    let before = f
        .emu
        .state
        .store
        .stat("alice", "personal-files/docs/deep/a.txt")
        .unwrap();
    let put2 = f.alice.put("personal-files/docs/deep/a.txt", b"v2").await;
    assert_eq!(put2.status(), 200);
    let after = f
        .emu
        .state
        .store
        .stat("alice", "personal-files/docs/deep/a.txt")
        .unwrap();
    assert_eq!(before.uuid, after.uuid);
    assert_eq!(after.etag, md5_hex(b"v2"));
    assert_eq!(after.size, 2);

    // Unicode and spaces in keys.
    let key = "personal-files/Été 2024/naïve file.txt";
    assert_eq!(f.alice.put(key, b"unicode").await.status(), 200);
    let get = f.alice.get(key, &[]).await;
    assert_eq!(get.status(), 200);
    assert_eq!(get.bytes().await.unwrap().as_ref(), b"unicode");
    f.emu.stop().await;
}

#[tokio::test]
async fn ranged_gets() {
    let f = fixture().await;
    let body = pattern(100_000, 7);
    assert_eq!(
        f.alice.put("personal-files/r.bin", &body).await.status(),
        200
    );

    let r = f
        .alice
        .get("personal-files/r.bin", &[("range", "bytes=10-19")])
        .await;
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 10-19/100000");
    assert_eq!(r.headers()["content-length"], "10");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &body[10..20]);

    let r = f
        .alice
        .get("personal-files/r.bin", &[("range", "bytes=99990-")])
        .await;
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 99990-99999/100000");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &body[99990..]);

    let r = f
        .alice
        .get("personal-files/r.bin", &[("range", "bytes=-5")])
        .await;
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &body[99995..]);

    // A range past the end is clamped; one starting past the end is refused.
    let r = f
        .alice
        .get("personal-files/r.bin", &[("range", "bytes=99000-200000")])
        .await;
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().len(), 1000);
    let r = f
        .alice
        .get("personal-files/r.bin", &[("range", "bytes=100000-")])
        .await;
    assert_eq!(r.status(), 416);
    assert_eq!(error_code(&text(r).await), "InvalidRange");

    // Big ranged read across chunk boundaries.
    let big = pattern(3 * 1024 * 1024 + 17, 3);
    assert_eq!(
        f.alice.put("personal-files/big.bin", &big).await.status(),
        200
    );
    let r = f
        .alice
        .get(
            "personal-files/big.bin",
            &[("range", "bytes=1048570-2097160")],
        )
        .await;
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &big[1048570..=2097160]);
    let full = f.alice.get("personal-files/big.bin", &[]).await;
    assert_eq!(full.bytes().await.unwrap().as_ref(), big.as_slice());
    f.emu.stop().await;
}

#[tokio::test]
async fn payload_hashes_are_verified() {
    let f = fixture().await;
    let body = pattern(70_000, 1);
    let ok = f
        .alice
        .request(
            "PUT",
            "/io/personal-files/signed.bin",
            &[],
            Payload::Signed(&body),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    let bad = f
        .alice
        .request(
            "PUT",
            "/io/personal-files/mismatch.bin",
            &[],
            Payload::WrongHash(&body),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(error_code(&text(bad).await), "XAmzContentSHA256Mismatch");
    // Nothing is left behind: no file, no placeholder.
    assert!(
        f.emu
            .state
            .store
            .stat("alice", "personal-files/mismatch.bin")
            .is_err()
    );
    f.emu.stop().await;
}

#[tokio::test]
async fn streaming_payloads_are_refused() {
    let f = fixture().await;
    let body = b"10;chunk-signature=abc\r\n0123456789\r\n0;chunk-signature=def\r\n\r\n";
    for declared in [
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
    ] {
        let resp = f
            .alice
            .request(
                "PUT",
                "/io/personal-files/chunked.bin",
                &[
                    ("content-encoding", "aws-chunked"),
                    ("x-amz-decoded-content-length", "10"),
                ],
                Payload::Declared(body, declared),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{declared}");
        assert_eq!(error_code(&text(resp).await), "SignatureDoesNotMatch");
    }
    assert!(
        f.emu
            .state
            .store
            .stat("alice", "personal-files/chunked.bin")
            .is_err()
    );
    f.emu.stop().await;
}

#[tokio::test]
async fn bad_signatures_and_tokens_are_refused() {
    let f = fixture().await;
    assert_eq!(
        f.alice.put("personal-files/s.txt", b"x").await.status(),
        200
    );

    // Right token, wrong secret.
    let wrong = f.alice.with_secret("not-the-gateway-secret");
    let r = wrong.get("personal-files/s.txt", &[]).await;
    assert_eq!(r.status(), 403);
    assert_eq!(error_code(&text(r).await), "SignatureDoesNotMatch");

    // Unknown token, right secret.
    let stranger = S3Client::new(&f.emu.url, "not-a-token.at-all");
    let r = stranger.get("personal-files/s.txt", &[]).await;
    assert_eq!(r.status(), 403);
    assert_eq!(error_code(&text(r).await), "AccessDenied");

    // No credentials at all.
    let r = reqwest::get(format!("{}/io/personal-files/s.txt", f.emu.url))
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(error_code(&text(r).await), "AccessDenied");

    // A token that expires.
    let short = f
        .emu
        .state
        .auth
        .mint_pat("alice", PatExpiry::Fixed(Duration::from_secs(1)))
        .unwrap();
    let short_client = S3Client::new(&f.emu.url, &short);
    assert_eq!(
        short_client.get("personal-files/s.txt", &[]).await.status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = short_client.get("personal-files/s.txt", &[]).await;
    assert_eq!(r.status(), 403);
    assert_eq!(error_code(&text(r).await), "AccessDenied");

    // Every token expired at once.
    f.emu.state.expire_all_tokens();
    let r = f.alice.get("personal-files/s.txt", &[]).await;
    assert_eq!(r.status(), 403);
    assert_eq!(error_code(&text(r).await), "AccessDenied");
    f.emu.stop().await;
}

#[tokio::test]
async fn other_token_transports() {
    let f = fixture().await;
    assert_eq!(
        f.alice
            .put("personal-files/t.txt", b"transport")
            .await
            .status(),
        200
    );

    // X-Pydio-Bearer with a request signed by the gateway's own key.
    let gateway = S3Client::new(&f.emu.url, "gateway");
    let r = gateway
        .request(
            "GET",
            "/io/personal-files/t.txt",
            &[("x-pydio-bearer", f.alice_token.as_str())],
            Payload::Unsigned(b""),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"transport");
    let r = gateway
        .request(
            "GET",
            "/io/personal-files/t.txt",
            &[("x-pydio-bearer", "bogus")],
            Payload::Unsigned(b""),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // The gateway key alone is nobody.
    let r = gateway.get("personal-files/t.txt", &[]).await;
    assert_eq!(r.status(), 403);

    // pydio_jwt query parameter: no signature, forced attachment.
    let r = reqwest::get(format!(
        "{}/io/personal-files/t.txt?pydio_jwt={}",
        f.emu.url, f.alice_token
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"transport");
    let r = reqwest::get(format!(
        "{}/io/personal-files/t.txt?pydio_jwt=bogus",
        f.emu.url
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 403);

    // Presigned URLs: GET and PUT; a wrong secret or an expired URL fails.
    let url = f
        .alice
        .presigned_url("GET", "/io/personal-files/t.txt", Duration::from_secs(300));
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"transport");
    let url = f.alice.with_secret("wrong").presigned_url(
        "GET",
        "/io/personal-files/t.txt",
        Duration::from_secs(300),
    );
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(error_code(&text(r).await), "SignatureDoesNotMatch");
    let url = f
        .alice
        .presigned_url("GET", "/io/personal-files/t.txt", Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status(), 403);
    let url = f.alice.presigned_url(
        "PUT",
        "/io/personal-files/presigned-put.txt",
        Duration::from_secs(300),
    );
    let r = reqwest::Client::new()
        .put(&url)
        .body("via presigned")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = f.alice.get("personal-files/presigned-put.txt", &[]).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"via presigned");
    f.emu.stop().await;
}

#[tokio::test]
async fn conflicts_rights_and_folders() {
    let f = fixture().await;
    assert_eq!(
        f.alice
            .put("personal-files/dir/file.txt", b"x")
            .await
            .status(),
        200
    );

    // A folder stands at the key.
    let r = f.alice.put("personal-files/dir", b"y").await;
    assert_eq!(r.status(), 409);
    assert_eq!(error_code(&text(r).await), "XMinioObjectExistsAsDirectory");
    // A file stands where a parent folder must be.
    let r = f
        .alice
        .put("personal-files/dir/file.txt/child.txt", b"z")
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(&text(r).await), "XMinioParentIsObject");
    // GET/HEAD of a folder fail.
    let r = f.alice.get("personal-files/dir", &[]).await;
    assert!(r.status().is_server_error(), "{}", r.status());
    let r = f.alice.head("personal-files/dir").await;
    assert!(r.status().is_server_error(), "{}", r.status());
    // An empty "dir/" object makes a real folder (S3 tools' mkdir).
    assert_eq!(
        f.alice
            .put("personal-files/made-by-s3/", b"")
            .await
            .status(),
        200
    );
    let made = f
        .emu
        .state
        .store
        .stat("alice", "personal-files/made-by-s3")
        .expect("folder made");
    assert!(!made.is_leaf());
    assert_eq!(
        f.alice
            .put("personal-files/made-by-s3/", b"")
            .await
            .status(),
        200
    );
    assert_eq!(
        f.alice
            .put("personal-files/with-content/", b"x")
            .await
            .status(),
        400
    );
    // Missing key.
    let r = f.alice.get("personal-files/nope.txt", &[]).await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(&text(r).await), "NoSuchKey");

    // Read-only workspace: reads allowed, writes refused.
    let r = f.alice.put("team-docs/alice-was-here.txt", b"no").await;
    assert_eq!(r.status(), 403);
    assert_eq!(error_code(&text(r).await), "AccessDenied");
    let admin_token = f
        .emu
        .state
        .auth
        .mint_pat("admin", PatExpiry::Fixed(Duration::from_secs(600)))
        .unwrap();
    let admin = S3Client::new(&f.emu.url, &admin_token);
    assert_eq!(
        admin.put("team-docs/handbook.txt", b"rules").await.status(),
        200
    );
    let r = f.alice.get("team-docs/handbook.txt", &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(f.alice.delete("team-docs/handbook.txt").await.status(), 403);

    // Another user's personal files are invisible.
    let bob_token = f
        .emu
        .state
        .auth
        .mint_pat("bob", PatExpiry::Fixed(Duration::from_secs(600)))
        .unwrap();
    let bob = S3Client::new(&f.emu.url, &bob_token);
    assert_eq!(
        bob.get("personal-files/dir/file.txt", &[]).await.status(),
        404
    );
    assert_eq!(
        bob.put("personal-files/dir/file.txt", b"bob's")
            .await
            .status(),
        200
    );
    let r = f.alice.get("personal-files/dir/file.txt", &[]).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"x");

    // Unknown bucket and workspace.
    let r = f
        .alice
        .request(
            "GET",
            "/nosuch/personal-files/dir/file.txt",
            &[],
            Payload::Unsigned(b""),
        )
        .send()
        .await
        .unwrap();
    // Only `io` and `data` are buckets: anything else is not the gateway at all.
    assert_eq!(r.status(), 404);
    assert!(
        f.alice
            .put("no-such-ws/x.txt", b"x")
            .await
            .status()
            .is_client_error()
    );
    f.emu.stop().await;
}

#[tokio::test]
async fn delete_is_permanent_and_copy_works() {
    let f = fixture().await;
    assert_eq!(
        f.alice
            .put("personal-files/gone.txt", b"bye")
            .await
            .status(),
        200
    );
    assert_eq!(
        f.alice.delete("personal-files/gone.txt").await.status(),
        204
    );
    assert_eq!(
        f.alice.get("personal-files/gone.txt", &[]).await.status(),
        404
    );
    // Not in the recycle bin.
    let bin = f
        .emu
        .state
        .store
        .list("alice", "personal-files/recycle_bin")
        .unwrap_or_default();
    assert!(bin.iter().all(|n| !n.path.ends_with("gone.txt")), "{bin:?}");
    // Deleting a missing key succeeds (S3 semantics).
    assert_eq!(
        f.alice.delete("personal-files/gone.txt").await.status(),
        204
    );

    let body = pattern(200_000, 9);
    assert_eq!(
        f.alice.put("personal-files/src.bin", &body).await.status(),
        200
    );
    let r = f
        .alice
        .request(
            "PUT",
            "/io/common-files/copies/dst.bin",
            &[("x-amz-copy-source", "/io/personal-files/src.bin")],
            Payload::Unsigned(b""),
        )
        .send()
        .await
        .unwrap();
    let status = r.status();
    let xml = text(r).await;
    assert_eq!(status, 200, "{xml}");
    assert_eq!(
        xml_values(&xml, "ETag"),
        vec![format!("\"{}\"", md5_hex(&body))]
    );
    let r = f.alice.get("common-files/copies/dst.bin", &[]).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), body.as_slice());
    let src = f
        .emu
        .state
        .store
        .stat("alice", "personal-files/src.bin")
        .unwrap();
    let dst = f
        .emu
        .state
        .store
        .stat("alice", "common-files/copies/dst.bin")
        .unwrap();
    assert_ne!(src.uuid, dst.uuid);

    // Copy onto itself is "not implemented" on the real gateway.
    let r = f
        .alice
        .request(
            "PUT",
            "/io/personal-files/src.bin",
            &[
                ("x-amz-copy-source", "/io/personal-files/src.bin"),
                ("x-amz-metadata-directive", "REPLACE"),
            ],
            Payload::Unsigned(b""),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 501);
    assert_eq!(error_code(&text(r).await), "NotImplemented");
    // Copy of a missing source.
    let r = f
        .alice
        .request(
            "PUT",
            "/io/personal-files/x.bin",
            &[("x-amz-copy-source", "/io/personal-files/missing.bin")],
            Payload::Unsigned(b""),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    f.emu.stop().await;
}

async fn initiate(c: &S3Client, key: &str, clear_size: Option<u64>) -> String {
    let size = clear_size.map(|s| s.to_string());
    let mut headers = vec![("content-type", "application/x-test")];
    if let Some(s) = size.as_deref() {
        headers.push(("x-amz-meta-pydio-clear-size", s));
    }
    let r = c
        .request(
            "POST",
            &format!("/io/{}?uploads", encode_key(key)),
            &headers,
            Payload::Unsigned(b""),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    xml_values(&text(r).await, "UploadId")
        .pop()
        .expect("UploadId")
}

async fn upload_part(c: &S3Client, key: &str, upload_id: &str, n: u32, data: &[u8]) -> String {
    let r = c
        .request(
            "PUT",
            &format!(
                "/io/{}?partNumber={n}&uploadId={upload_id}",
                encode_key(key)
            ),
            &[],
            Payload::Signed(data),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.headers()["etag"].to_str().unwrap().to_owned()
}

async fn complete(
    c: &S3Client,
    key: &str,
    upload_id: &str,
    parts: &[(u32, String)],
) -> reqwest::Response {
    let mut xml = String::from("<CompleteMultipartUpload>");
    for (n, etag) in parts {
        xml.push_str(&format!(
            "<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>"
        ));
    }
    xml.push_str("</CompleteMultipartUpload>");
    c.request(
        "POST",
        &format!("/io/{}?uploadId={upload_id}", encode_key(key)),
        &[],
        Payload::Signed(xml.as_bytes()),
    )
    .send()
    .await
    .unwrap()
}

#[tokio::test]
async fn multipart_upload_with_several_parts() {
    let f = fixture().await;
    let key = "personal-files/mp/big.bin";
    let part1 = pattern(5 * 1024 * 1024, 1);
    let part2 = pattern(5 * 1024 * 1024, 2);
    let part3 = pattern(123_457, 3);
    let total = (part1.len() + part2.len() + part3.len()) as u64;

    let upload_id = initiate(&f.alice, key, Some(total)).await;
    // The temporary node shows the announced size while the upload runs.
    let placeholder = f.emu.state.store.stat("alice", key).expect("placeholder");
    assert_eq!(placeholder.etag, "temporary");
    assert_eq!(placeholder.size, total);

    let e1 = upload_part(&f.alice, key, &upload_id, 1, &part1).await;
    let e3 = upload_part(&f.alice, key, &upload_id, 3, &part3).await;
    let e2 = upload_part(&f.alice, key, &upload_id, 2, &part2).await;
    assert_eq!(e2, format!("\"{}\"", md5_hex(&part2)));

    // ListParts and ListMultipartUploads.
    let r = f
        .alice
        .request(
            "GET",
            &format!("/io/{}?uploadId={upload_id}", encode_key(key)),
            &[],
            Payload::Unsigned(b""),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let xml = text(r).await;
    assert_eq!(xml_values(&xml, "PartNumber"), vec!["1", "2", "3"]);
    let r = f
        .alice
        .request(
            "GET",
            "/io?uploads&prefix=personal-files%2Fmp",
            &[],
            Payload::Unsigned(b""),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        xml_values(&text(r).await, "UploadId"),
        vec![upload_id.clone()]
    );

    // A wrong ETag is refused; the upload survives.
    let r = complete(
        &f.alice,
        key,
        &upload_id,
        &[(1, e1.clone()), (2, "\"0000\"".into()), (3, e3.clone())],
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(&text(r).await), "InvalidPart");

    let r = complete(
        &f.alice,
        key,
        &upload_id,
        &[(1, e1.clone()), (2, e2.clone()), (3, e3.clone())],
    )
    .await;
    assert_eq!(r.status(), 200);
    let xml = text(r).await;
    let digests: Vec<u8> = [&part1, &part2, &part3]
        .iter()
        .flat_map(|p| md5::Md5::digest(p).to_vec())
        .collect();
    let expected_etag = format!("{}-3", md5_hex(&digests));
    assert_eq!(
        xml_values(&xml, "ETag"),
        vec![format!("\"{expected_etag}\"")]
    );

    let node = f.emu.state.store.stat("alice", key).unwrap();
    assert_eq!(
        node.uuid, placeholder.uuid,
        "the placeholder's Uuid is kept"
    );
    assert_eq!(node.size, total);
    assert_eq!(node.etag, expected_etag);
    let mut whole = part1.clone();
    whole.extend_from_slice(&part2);
    whole.extend_from_slice(&part3);
    let r = f.alice.get(key, &[]).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), whole.as_slice());
    let r = f
        .alice
        .request("GET", "/io?uploads", &[], Payload::Unsigned(b""))
        .send()
        .await
        .unwrap();
    assert!(xml_values(&text(r).await, "UploadId").is_empty());
    // The upload is gone.
    let r = complete(&f.alice, key, &upload_id, &[(1, e1)]).await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(&text(r).await), "NoSuchUpload");
    f.emu.stop().await;
}

/// Bytes that never repeat at a 10 MiB period (unlike [`pattern`]): xorshift64.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `x-cells-hash` computed here from scratch: MD5 over the raw MD5s of 10 MiB blocks.
fn cells_hash(data: &[u8]) -> String {
    let digests: Vec<u8> = data
        .chunks(10 * 1024 * 1024)
        .flat_map(|c| md5::Md5::digest(c).to_vec())
        .collect();
    if data.is_empty() {
        return md5_hex(&md5::Md5::digest(b""));
    }
    md5_hex(&digests)
}

/// Multipart upload of `parts` at `key`; returns the completed node's (Etag, x-cells-hash).
/// With `forget_block_md5s`, the block MD5s recorded beside each part are removed before the
/// completion (as for parts stored before they were recorded).
async fn multipart_put(
    f: &Fixture,
    key: &str,
    parts: &[&[u8]],
    forget_block_md5s: bool,
) -> (String, String) {
    let upload_id = initiate(&f.alice, key, None).await;
    let mut etags = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let n = i as u32 + 1;
        etags.push((n, upload_part(&f.alice, key, &upload_id, n, p).await));
    }
    let upload_dir = f._dir.path().join("s3-multipart").join(&upload_id);
    for (i, p) in parts.iter().enumerate() {
        let record_path = upload_dir.join(format!("part-{:05}.json", i + 1));
        let mut record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&record_path).expect("part record")).unwrap();
        // The recorded block MD5s are those of the part's 10 MiB blocks.
        let expected: Vec<String> = p.chunks(10 * 1024 * 1024).map(md5_hex).collect();
        assert_eq!(record["block_md5s"], serde_json::json!(expected));
        if forget_block_md5s {
            record.as_object_mut().unwrap().remove("block_md5s");
            std::fs::write(&record_path, serde_json::to_vec(&record).unwrap()).unwrap();
        }
    }
    let r = complete(&f.alice, key, &upload_id, &etags).await;
    assert_eq!(r.status(), 200);
    let digests: Vec<u8> = parts
        .iter()
        .flat_map(|p| md5::Md5::digest(p).to_vec())
        .collect();
    let expected_etag = format!("{}-{}", md5_hex(&digests), parts.len());
    assert_eq!(
        xml_values(&text(r).await, "ETag"),
        vec![format!("\"{expected_etag}\"")]
    );
    let node = f.emu.state.store.stat("alice", key).unwrap();
    assert_eq!(node.etag, expected_etag);
    let whole: Vec<u8> = parts.concat();
    assert_eq!(node.size, whole.len() as u64);
    let r = f.alice.get(key, &[]).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), whole.as_slice());
    (node.etag, node.cells_hash.expect("x-cells-hash"))
}

#[tokio::test]
async fn multipart_cells_hash_equals_single_put_for_10_mib_parts() {
    const MIB: usize = 1024 * 1024;
    let f = fixture().await;
    let data = noise(30 * MIB + 777_777, 9);
    let expected = cells_hash(&data);

    // A single PUT: the reference.
    let put = f.alice.put("personal-files/h/single.bin", &data).await;
    assert_eq!(put.status(), 200);
    let single = f
        .emu
        .state
        .store
        .stat("alice", "personal-files/h/single.bin")
        .unwrap();
    assert_eq!(single.cells_hash.as_deref(), Some(expected.as_str()));

    // Parts of 10 MiB (one of 20 MiB) + a tail: the hash is built from the parts' block MD5s.
    let aligned: Vec<&[u8]> = vec![
        &data[..10 * MIB],
        &data[10 * MIB..30 * MIB],
        &data[30 * MIB..],
    ];
    let (_, hash) = multipart_put(&f, "personal-files/h/aligned.bin", &aligned, false).await;
    assert_eq!(hash, expected, "x-cells-hash from the parts' block MD5s");

    // The same parts whose block MD5s were not recorded: re-hashed, same value.
    let (_, hash) = multipart_put(&f, "personal-files/h/legacy.bin", &aligned, true).await;
    assert_eq!(
        hash, expected,
        "x-cells-hash re-hashed without recorded block MD5s"
    );

    // Parts that are not multiples of 10 MiB: block boundaries differ from the parts', the
    // content is re-hashed over the object's own 10 MiB blocks.
    let misaligned: Vec<&[u8]> = vec![
        &data[..15 * MIB],
        &data[15 * MIB..25 * MIB],
        &data[25 * MIB..],
    ];
    let (_, hash) = multipart_put(&f, "personal-files/h/misaligned.bin", &misaligned, false).await;
    assert_eq!(hash, expected, "x-cells-hash of misaligned parts");

    // A single part smaller than a block, and an empty last part after whole blocks.
    let (_, hash) = multipart_put(&f, "personal-files/h/one.bin", &[&data[..MIB]], false).await;
    assert_eq!(hash, cells_hash(&data[..MIB]));
    let (_, hash) = multipart_put(
        &f,
        "personal-files/h/empty-tail.bin",
        &[&data[..10 * MIB], &[]],
        false,
    )
    .await;
    assert_eq!(hash, cells_hash(&data[..10 * MIB]));
    f.emu.stop().await;
}

#[tokio::test]
async fn multipart_small_parts_abort_and_ownership() {
    let f = fixture().await;
    let key = "personal-files/mp/small.bin";
    let upload_id = initiate(&f.alice, key, Some(10)).await;
    let e1 = upload_part(&f.alice, key, &upload_id, 1, b"tiny").await;
    let e2 = upload_part(&f.alice, key, &upload_id, 2, b"tiny too").await;
    let r = complete(
        &f.alice,
        key,
        &upload_id,
        &[(1, e1.clone()), (2, e2.clone())],
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(&text(r).await), "EntityTooSmall");
    let r = complete(&f.alice, key, &upload_id, &[(2, e2), (1, e1)]).await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(&text(r).await), "InvalidPartOrder");

    // Another user cannot touch it.
    let bob_token = f
        .emu
        .state
        .auth
        .mint_pat("bob", PatExpiry::Fixed(Duration::from_secs(600)))
        .unwrap();
    let bob = S3Client::new(&f.emu.url, &bob_token);
    let r = bob
        .request(
            "DELETE",
            &format!("/io/{}?uploadId={upload_id}", encode_key(key)),
            &[],
            Payload::Unsigned(b""),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Abort removes the upload and the temporary node.
    assert_eq!(
        f.emu.state.store.stat("alice", key).unwrap().etag,
        "temporary"
    );
    let r = f
        .alice
        .request(
            "DELETE",
            &format!("/io/{}?uploadId={upload_id}", encode_key(key)),
            &[],
            Payload::Unsigned(b""),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(f.emu.state.store.stat("alice", key).is_err());
    let r = f
        .alice
        .request("GET", "/io?uploads", &[], Payload::Unsigned(b""))
        .send()
        .await
        .unwrap();
    assert!(xml_values(&text(r).await, "UploadId").is_empty());
    f.emu.stop().await;
}

fn common_prefixes(xml: &str) -> Vec<String> {
    xml_values(xml, "CommonPrefixes")
        .iter()
        .flat_map(|block| xml_values(block, "Prefix"))
        .collect()
}

#[tokio::test]
async fn list_objects_v2_quirks() {
    let f = fixture().await;
    for (key, body) in [
        ("personal-files/l/a.txt", &b"a"[..]),
        ("personal-files/l/.hidden", &b"dot"[..]),
        ("personal-files/l/sub/b.txt", &b"bb"[..]),
        ("personal-files/l/sub/deeper/c.txt", &b"ccc"[..]),
        ("personal-files/l/only-folders/x/y.txt", &b"y"[..]),
    ] {
        assert_eq!(f.alice.put(key, body).await.status(), 200);
    }

    // One level, dotfiles included, folders as common prefixes, the prefix appended.
    let r = f
        .alice
        .list_v2(&[("prefix", "personal-files/l/"), ("delimiter", "/")])
        .await;
    assert_eq!(r.status(), 200);
    let xml = text(r).await;
    let mut keys = xml_values(&xml, "Key");
    keys.sort();
    assert_eq!(
        keys,
        vec!["personal-files/l/.hidden", "personal-files/l/a.txt"]
    );
    let mut prefixes = common_prefixes(&xml);
    prefixes.sort();
    assert_eq!(
        prefixes,
        vec![
            "personal-files/l/",
            "personal-files/l/only-folders/",
            "personal-files/l/sub/"
        ]
    );
    assert_eq!(xml_values(&xml, "IsTruncated"), vec!["false"]);
    assert!(xml_values(&xml, "Size").contains(&"1".to_owned()));

    // No objects: the prefix is not appended.
    let r = f
        .alice
        .list_v2(&[
            ("prefix", "personal-files/l/only-folders/"),
            ("delimiter", "/"),
        ])
        .await;
    let xml = text(r).await;
    assert!(xml_values(&xml, "Key").is_empty());
    assert_eq!(
        common_prefixes(&xml),
        vec!["personal-files/l/only-folders/x/"]
    );

    // Empty delimiter: recursive.
    let r = f.alice.list_v2(&[("prefix", "personal-files/l/")]).await;
    let xml = text(r).await;
    let mut keys = xml_values(&xml, "Key");
    keys.sort();
    assert_eq!(
        keys,
        vec![
            "personal-files/l/.hidden",
            "personal-files/l/a.txt",
            "personal-files/l/only-folders/x/y.txt",
            "personal-files/l/sub/b.txt",
            "personal-files/l/sub/deeper/c.txt",
        ]
    );
    let prefixes = common_prefixes(&xml);
    assert!(prefixes.contains(&"personal-files/l/sub/deeper/".to_owned()));
    assert!(prefixes.contains(&"personal-files/l/".to_owned()));

    // max-keys=1: files only, not recursive, one of them.
    let r = f
        .alice
        .list_v2(&[("prefix", "personal-files/l/sub/"), ("max-keys", "1")])
        .await;
    let xml = text(r).await;
    assert_eq!(xml_values(&xml, "Key"), vec!["personal-files/l/sub/b.txt"]);
    assert_eq!(common_prefixes(&xml), vec!["personal-files/l/sub/"]);

    // max-keys is passed on as a node limit: the listing is cut, yet never truncated.
    let r = f
        .alice
        .list_v2(&[
            ("prefix", "personal-files/l/"),
            ("delimiter", "/"),
            ("max-keys", "2"),
        ])
        .await;
    let xml = text(r).await;
    let listed = xml_values(&xml, "Key").len() + common_prefixes(&xml).len();
    assert!(listed <= 3, "two nodes (+ the prefix itself): {xml}");
    assert_eq!(xml_values(&xml, "IsTruncated"), vec!["false"]);

    // A missing folder is an empty listing, not an error.
    let r = f
        .alice
        .list_v2(&[
            ("prefix", "personal-files/nothing-here/"),
            ("delimiter", "/"),
        ])
        .await;
    assert_eq!(r.status(), 200);
    let xml = text(r).await;
    assert!(xml_values(&xml, "Key").is_empty());
    assert!(common_prefixes(&xml).is_empty());

    // The root lists the workspaces as common prefixes.
    let r = f.alice.list_v2(&[("prefix", ""), ("delimiter", "/")]).await;
    let prefixes = common_prefixes(&text(r).await);
    assert!(
        prefixes.contains(&"personal-files/".to_owned()),
        "{prefixes:?}"
    );
    assert!(
        prefixes.contains(&"common-files/".to_owned()),
        "{prefixes:?}"
    );

    // ListBuckets: io and data; the data bucket answers like io.
    let r = f
        .alice
        .request("GET", "/", &[], Payload::Unsigned(b""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(xml_values(&text(r).await, "Name"), vec!["io", "data"]);
    let r = f
        .alice
        .request(
            "GET",
            "/data/personal-files/l/a.txt",
            &[],
            Payload::Unsigned(b""),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"a");
    f.emu.stop().await;
}
