//! The gateway driven by S3 clients nobody here wrote: boto3 (Debian `python3-boto3`) and
//! rclone (Debian `rclone`). Each uploads (single and multipart), downloads a range, copies
//! server-side, lists and deletes, and the results are checked on both sides. These tests
//! fail (not skip) when the tool is missing: `.ci/run` installs both.

use std::time::Duration;

use cells_emu::auth::PatExpiry;
use cells_emu::{EmuConfig, RunningEmulator};
use md5::Digest as _;

async fn start() -> (RunningEmulator, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let emu = cells_emu::start(EmuConfig::for_tests(dir.path().join("emu")))
        .await
        .expect("start emulator");
    let token = emu
        .state
        .auth
        .mint_pat("alice", PatExpiry::Fixed(Duration::from_secs(3600)))
        .expect("mint PAT");
    (emu, dir, token)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2] ^ seed)
        .collect()
}

async fn run(cmd: &mut tokio::process::Command) -> (bool, String) {
    let out = tokio::time::timeout(Duration::from_secs(240), cmd.output())
        .await
        .expect("tool timed out")
        .expect("tool could not be started (is it installed? .ci/run installs it)");
    let text = format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

const BOTO3_SCRIPT: &str = r#"
import hashlib, os, sys
import boto3
from botocore.config import Config
from boto3.s3.transfer import TransferConfig

endpoint, token, workdir = sys.argv[1], sys.argv[2], sys.argv[3]
try:
    # Newer botocore adds flexible checksums (aws-chunked trailers) that Cells refuses.
    cfg = Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                 request_checksum_calculation="when_required",
                 response_checksum_validation="when_required")
except TypeError:
    cfg = Config(s3={"addressing_style": "path"}, signature_version="s3v4")
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=token,
                  aws_secret_access_key="gatewaysecret", region_name="us-east-1", config=cfg)

small = b"hello from boto3\n" * 100
s3.put_object(Bucket="io", Key="personal-files/boto/small.txt", Body=small)
head = s3.head_object(Bucket="io", Key="personal-files/boto/small.txt")
assert head["ContentLength"] == len(small), head
assert head["ETag"].strip('"') == hashlib.md5(small).hexdigest(), head

part = s3.get_object(Bucket="io", Key="personal-files/boto/small.txt", Range="bytes=17-33")
assert part["ResponseMetadata"]["HTTPStatusCode"] == 206, part["ResponseMetadata"]
assert part["Body"].read() == small[17:34]

big_path = os.path.join(workdir, "big.bin")
big = open(big_path, "rb").read()
tc = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024,
                    max_concurrency=3)
s3.upload_file(big_path, "io", "personal-files/boto/big.bin", Config=tc)
head = s3.head_object(Bucket="io", Key="personal-files/boto/big.bin")
assert head["ContentLength"] == len(big), head
assert head["ETag"].strip('"').endswith("-3"), head
out_path = os.path.join(workdir, "big.out")
s3.download_file("io", "personal-files/boto/big.bin", out_path, Config=tc)
assert open(out_path, "rb").read() == big

s3.copy_object(Bucket="io", Key="common-files/boto/copy.txt",
               CopySource={"Bucket": "io", "Key": "personal-files/boto/small.txt"})
assert s3.get_object(Bucket="io", Key="common-files/boto/copy.txt")["Body"].read() == small

listing = s3.list_objects_v2(Bucket="io", Prefix="personal-files/boto/", Delimiter="/")
keys = sorted(o["Key"] for o in listing.get("Contents", []))
assert keys == ["personal-files/boto/big.bin", "personal-files/boto/small.txt"], listing
assert listing["IsTruncated"] is False

s3.delete_object(Bucket="io", Key="personal-files/boto/small.txt")
try:
    s3.head_object(Bucket="io", Key="personal-files/boto/small.txt")
    raise SystemExit("deleted object still there")
except s3.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] in ("404", "NoSuchKey"), e.response

names = sorted(b["Name"] for b in s3.list_buckets()["Buckets"])
assert names == ["data", "io"], names
print("BOTO3-OK")
"#;

#[tokio::test]
async fn boto3_drives_the_gateway() {
    let (emu, dir, token) = start().await;
    let work = dir.path().join("boto");
    std::fs::create_dir_all(&work).unwrap();
    let big = pattern(12 * 1024 * 1024 + 4321, 5);
    std::fs::write(work.join("big.bin"), &big).unwrap();
    let script = work.join("drive.py");
    std::fs::write(&script, BOTO3_SCRIPT).unwrap();

    let (ok, output) = run(tokio::process::Command::new("python3")
        .arg(&script)
        .arg(&emu.url)
        .arg(&token)
        .arg(&work)
        .env_remove("AWS_CA_BUNDLE")
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"))
    .await;
    assert!(ok && output.contains("BOTO3-OK"), "{output}");

    // Checked on the server side too.
    let node = emu
        .state
        .store
        .stat("alice", "personal-files/boto/big.bin")
        .expect("uploaded");
    assert_eq!(node.size, big.len() as u64);
    assert!(
        emu.state
            .store
            .stat("alice", "personal-files/boto/small.txt")
            .is_err()
    );
    assert!(
        emu.state
            .store
            .stat("alice", "common-files/boto/copy.txt")
            .is_ok()
    );
    emu.stop().await;
}

fn rclone(emu: &RunningEmulator, token: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("rclone");
    cmd.env_remove("AWS_CA_BUNDLE")
        .env("RCLONE_CONFIG", "/dev/null")
        .env("RCLONE_CONFIG_EMU_TYPE", "s3")
        .env("RCLONE_CONFIG_EMU_PROVIDER", "Other")
        .env("RCLONE_CONFIG_EMU_ENDPOINT", &emu.url)
        .env("RCLONE_CONFIG_EMU_ACCESS_KEY_ID", token)
        .env("RCLONE_CONFIG_EMU_SECRET_ACCESS_KEY", "gatewaysecret")
        .env("RCLONE_CONFIG_EMU_REGION", "us-east-1")
        .env("RCLONE_S3_FORCE_PATH_STYLE", "true")
        .env("RCLONE_S3_NO_CHECK_BUCKET", "true")
        .env("RCLONE_S3_UPLOAD_CUTOFF", "5M")
        .env("RCLONE_S3_CHUNK_SIZE", "5M")
        .arg("--retries")
        .arg("1")
        .arg("--low-level-retries")
        .arg("1");
    cmd
}

#[tokio::test]
async fn rclone_drives_the_gateway() {
    let (emu, dir, token) = start().await;
    let work = dir.path().join("rclone");
    std::fs::create_dir_all(&work).unwrap();
    let small = b"hello from rclone\n".repeat(50);
    let big = pattern(11 * 1024 * 1024 + 99, 9);
    std::fs::write(work.join("small.txt"), &small).unwrap();
    std::fs::write(work.join("big.bin"), &big).unwrap();

    // Upload: single PUT and multipart.
    for (local, remote) in [
        ("small.txt", "emu:io/personal-files/rc/small.txt"),
        ("big.bin", "emu:io/personal-files/rc/big.bin"),
    ] {
        let (ok, out) = run(rclone(&emu, &token)
            .arg("copyto")
            .arg(work.join(local))
            .arg(remote))
        .await;
        assert!(ok, "upload {local}: {out}");
    }
    let node = emu
        .state
        .store
        .stat("alice", "personal-files/rc/big.bin")
        .expect("multipart upload landed");
    assert_eq!(node.size, big.len() as u64);
    assert!(node.etag.ends_with("-3"), "multipart etag {}", node.etag);

    // Ranged download.
    let (ok, out) = run(rclone(&emu, &token)
        .arg("cat")
        .arg("--offset")
        .arg("1048570")
        .arg("--count")
        .arg("20")
        .arg("emu:io/personal-files/rc/big.bin"))
    .await;
    assert!(ok, "{out}");
    let (ok, out) = run(rclone(&emu, &token)
        .arg("cat")
        .arg("--offset")
        .arg("18")
        .arg("--count")
        .arg("18")
        .arg("emu:io/personal-files/rc/small.txt"))
    .await;
    assert!(ok, "{out}");
    assert!(
        out.contains("stdout:\nhello from rclone\n\nstderr"),
        "{out}"
    );

    // Full download matches.
    let (ok, out) = run(rclone(&emu, &token)
        .arg("copyto")
        .arg("emu:io/personal-files/rc/big.bin")
        .arg(work.join("big.out")))
    .await;
    assert!(ok, "{out}");
    let got = std::fs::read(work.join("big.out")).unwrap();
    assert_eq!(
        hex::encode(md5::Md5::digest(&got)),
        hex::encode(md5::Md5::digest(&big))
    );

    // Server-side copy.
    let (ok, out) = run(rclone(&emu, &token)
        .arg("copyto")
        .arg("emu:io/personal-files/rc/small.txt")
        .arg("emu:io/common-files/rc/copied.txt"))
    .await;
    assert!(ok, "{out}");
    assert!(
        emu.state
            .store
            .stat("alice", "common-files/rc/copied.txt")
            .is_ok()
    );

    // List.
    let (ok, out) = run(rclone(&emu, &token)
        .arg("lsf")
        .arg("emu:io/personal-files/rc/"))
    .await;
    assert!(ok, "{out}");
    assert!(
        out.contains("big.bin") && out.contains("small.txt"),
        "{out}"
    );

    // Delete.
    let (ok, out) = run(rclone(&emu, &token)
        .arg("deletefile")
        .arg("emu:io/personal-files/rc/small.txt"))
    .await;
    assert!(ok, "{out}");
    assert!(
        emu.state
            .store
            .stat("alice", "personal-files/rc/small.txt")
            .is_err()
    );
    emu.stop().await;
}
