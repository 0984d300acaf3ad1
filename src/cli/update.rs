//! `cec update [--check] [--allow-downgrade] [--manifest-url URL]`: fetch the release
//! manifest, download the binary built for this platform and its minisign signature, verify
//! the signature with the project's release key (built into this binary), check that the
//! verified binary runs and reports the announced version, and replace the running binary
//! atomically.
//!
//! The manifest (JSON; see docs/SECURITY.md, "Updates", for how a release is signed):
//! ```json
//! { "version": "0.2.0",
//!   "platforms": { "linux-x86_64": { "url": "cec-0.2.0-linux-x86_64", "sha256": "<hex>" } } }
//! ```
//! Platform keys are `<os>-<arch>` as Rust names them (`linux-x86_64`, `linux-aarch64`,
//! `macos-aarch64`, ...); a relative `url` is resolved against the manifest's URL. The
//! signature is at `url` + `.minisig` (or at the platform's optional `minisig` URL); its
//! trusted comment must read `cec <version> <platform>`, so that a signed binary cannot be
//! offered under another version or platform than the one it was signed for. `sha256` is
//! optional and checked when present (cec 0.1.0 requires it: keep it in manifests).
//!
//! Invariants:
//! - The manifest is not trusted: only the signature, checked with the key built into this
//!   binary, decides whether a binary is installed.
//! - Nothing downloaded is executed before its signature holds: the binary is written to a
//!   private (0600) file beside the running one (same directory, so same filesystem),
//!   fsynced, verified over the bytes in that file, and only then made executable, run with
//!   `--version`, and renamed over the old one, and the directory fsynced. Any failure before
//!   the rename removes the temporary file and leaves the old binary as it was.
//! - https only, at every redirect; certificates are always verified (`--skip-verify` does
//!   not apply).
//! - A version older than the running one is refused unless `--allow-downgrade`.
//! - Debug builds only (`cfg(debug_assertions)`), for the tests: `CEC_UPDATE_TEST_PUBLIC_KEY`
//!   replaces the trusted key and `CEC_UPDATE_TEST_LOOPBACK_HTTP=1` allows plain http to a
//!   loopback host. Release builds do not contain the code that reads them.

use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use minisign_verify::{PublicKey, Signature};
use serde::Deserialize;
use sha2::Digest;

use super::CliError;

/// Environment variable holding the manifest URL (also read at build time, so a release
/// build can bake its default in).
pub const MANIFEST_URL_ENV: &str = "CEC_UPDATE_MANIFEST_URL";

/// The project's release key: a minisign (ed25519) public key, key id CA50AA6AC7D1D770.
/// Only binaries signed with its secret key are installed. The secret key never enters the
/// repository (docs/SECURITY.md, "Updates", says where it lives and how releases are signed);
/// replacing this constant is how the key is rotated.
pub const RELEASE_PUBLIC_KEY: &str = "RWRw19HHaqpQypwCaBtmBOSo+B+BvkKIuXWjZx25w8jWJVmcPKXTNxpL";

/// Debug builds only: a minisign public key (base64, or a whole `.pub` file) trusted instead
/// of [`RELEASE_PUBLIC_KEY`], so that the tests can sign releases with a key of their own.
///
/// Why an environment variable read only under `cfg(debug_assertions)` rather than a flag or
/// a cargo feature: integration tests run the ordinary debug binary (`CARGO_BIN_EXE_cec`),
/// which a cargo feature could not be switched on for without building the package twice,
/// while every binary that reaches users is a release build (`cargo build --release`, the
/// Debian package), where this code is not compiled at all: no environment, flag or file can
/// then make cec trust another key. (A release profile that forces `debug-assertions = true`
/// would bring it back; the project's profiles do not, and must not.)
pub const TEST_PUBLIC_KEY_ENV: &str = "CEC_UPDATE_TEST_PUBLIC_KEY";

/// Debug builds only: `1` allows plain `http://` to a loopback host (127.0.0.0/8, ::1,
/// localhost), for the tests' release server. Same reasoning as [`TEST_PUBLIC_KEY_ENV`];
/// without it, debug builds refuse http as release builds do.
pub const TEST_LOOPBACK_HTTP_ENV: &str = "CEC_UPDATE_TEST_LOOPBACK_HTTP";

/// Largest binary accepted (a guard against a runaway download).
const MAX_BINARY_BYTES: u64 = 512 << 20;

/// Arguments of `cec update`.
#[derive(Debug, Clone, Args)]
pub struct UpdateArgs {
    /// Only report whether a newer release exists (exit 0 either way)
    #[arg(long)]
    pub check: bool,
    /// Install the manifest's release even when it is older than this binary
    #[arg(long)]
    pub allow_downgrade: bool,
    /// The release manifest (an https URL); default: $CEC_UPDATE_MANIFEST_URL, or the one this build was made with
    ///
    /// This cec has no built-in update source: the project publishes no release feed yet, so
    /// `cec update` needs the https URL of a release manifest from whoever distributes your
    /// cec (its format: docs/RUN-AT-BOOT.md, "Updates"). Whatever the manifest says, only a
    /// binary signed with the cec release key built into this binary is installed
    /// (docs/SECURITY.md, "Updates"). A cec installed by the Debian package is updated with
    /// apt instead.
    #[arg(long, env = MANIFEST_URL_ENV, value_name = "URL")]
    pub manifest_url: Option<String>,
}

/// The release manifest.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub version: String,
    #[serde(default)]
    pub notes: Option<String>,
    pub platforms: BTreeMap<String, PlatformRelease>,
}

/// One platform's binary.
#[derive(Debug, Clone, Deserialize)]
pub struct PlatformRelease {
    pub url: String,
    /// Checked when present; not what makes the binary trusted (the manifest is not signed).
    #[serde(default)]
    pub sha256: Option<String>,
    /// The minisign signature's URL; default: `url` + `.minisig`.
    #[serde(default)]
    pub minisig: Option<String>,
}

/// This platform's key in the manifest.
pub fn platform_key() -> String {
    format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}

/// The trusted comment a release's signature must carry.
pub fn expected_trusted_comment(version: &str, platform: &str) -> String {
    format!("cec {} {platform}", version.trim().trim_start_matches('v'))
}

/// What to do with the manifest's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    UpToDate,
    Upgrade,
    Downgrade,
}

/// Compare the manifest's version with ours.
pub fn decide(current: &str, offered: &str) -> Result<Decision, CliError> {
    let parse = |v: &str| {
        semver::Version::parse(v.trim().trim_start_matches('v')).map_err(|e| {
            CliError::failure(format!("{v:?} is not a version (major.minor.patch): {e}"))
        })
    };
    let (current, offered) = (parse(current)?, parse(offered)?);
    Ok(match offered.cmp(&current) {
        std::cmp::Ordering::Equal => Decision::UpToDate,
        std::cmp::Ordering::Greater => Decision::Upgrade,
        std::cmp::Ordering::Less => Decision::Downgrade,
    })
}

/// What this build trusts: the key releases are signed with, and whether plain http to a
/// loopback host is allowed (never in a release build).
struct Trust {
    key: PublicKey,
    key_id: String,
    loopback_http: bool,
}

impl Trust {
    fn of_this_build() -> Result<Trust, CliError> {
        let key_text = test_public_key().unwrap_or_else(|| RELEASE_PUBLIC_KEY.to_string());
        let loopback_http = test_loopback_http();
        // A whole `.pub` file (comment line + key) or the key line alone.
        let key_line = key_text
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or_default()
            .to_string();
        let key = PublicKey::from_base64(&key_line).map_err(|e| {
            CliError::failure(format!(
                "the update key {key_line:?} is not a minisign public key ({e}); cannot verify releases"
            ))
        })?;
        Ok(Trust {
            key,
            key_id: minisign_key_id(&key_line).unwrap_or_else(|| "?".into()),
            loopback_http,
        })
    }
}

/// Debug builds: the key from [`TEST_PUBLIC_KEY_ENV`], if set.
#[cfg(debug_assertions)]
fn test_public_key() -> Option<String> {
    let key = std::env::var(TEST_PUBLIC_KEY_ENV).ok()?;
    if key.trim().is_empty() {
        return None;
    }
    eprintln!(
        "warning: debug build: trusting the update key from {TEST_PUBLIC_KEY_ENV} instead of the release key"
    );
    Some(key)
}

/// Release builds: the release key, always.
#[cfg(not(debug_assertions))]
fn test_public_key() -> Option<String> {
    None
}

/// Debug builds: whether [`TEST_LOOPBACK_HTTP_ENV`] is `1`.
#[cfg(debug_assertions)]
fn test_loopback_http() -> bool {
    std::env::var(TEST_LOOPBACK_HTTP_ENV).is_ok_and(|v| v.trim() == "1")
}

/// Release builds: https only, always.
#[cfg(not(debug_assertions))]
fn test_loopback_http() -> bool {
    false
}

/// The key id minisign prints (16 hex digits) of a base64 public key or signature line: both
/// start with a 2-byte algorithm and the 8-byte key id (little-endian).
fn minisign_key_id(base64_line: &str) -> Option<String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(base64_line.trim())
        .ok()?;
    let id: [u8; 8] = bytes.get(2..10)?.try_into().ok()?;
    Some(format!("{:016X}", u64::from_le_bytes(id)))
}

/// Whether `url` may be fetched: https always; plain http only to a loopback host and only
/// when `loopback_http` (debug builds, on request). Anything else is refused, since what
/// comes over http can be changed by anyone on the way.
pub fn check_transport(url: &url::Url, loopback_http: bool) -> Result<(), String> {
    let loopback = match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback_http && loopback => Ok(()),
        "http" => Err(format!(
            "refusing {url}: cec update fetches releases over https only (over plain http anyone on the way can change what is sent); use the manifest's https:// URL"
        )),
        other => Err(format!(
            "refusing {url}: {other}: URLs are not supported; cec update fetches releases over https only"
        )),
    }
}

pub async fn run_update(args: UpdateArgs) -> Result<(), CliError> {
    let manifest_url = args
        .manifest_url
        .clone()
        .filter(|u| !u.trim().is_empty())
        .or_else(|| option_env!("CEC_UPDATE_MANIFEST_URL").map(str::to_string))
        .ok_or_else(|| {
            CliError::usage(format!(
                "no release manifest configured: this cec has no built-in update source (the project publishes no release feed yet). Pass --manifest-url URL or set {MANIFEST_URL_ENV} to the https URL of the release manifest given by whoever distributes your cec (format: docs/RUN-AT-BOOT.md, \"Updates\"); a cec installed by the Debian package is updated with apt instead"
            ))
        })?;
    let manifest_url = url::Url::parse(manifest_url.trim())
        .map_err(|e| CliError::usage(format!("{manifest_url:?} is not a URL: {e}")))?;
    let trust = Trust::of_this_build()?;
    check_transport(&manifest_url, trust.loopback_http).map_err(CliError::usage)?;
    let http = crate::api::http::build_http_client(false)?;
    let manifest = fetch_manifest(&http, &manifest_url, &trust).await?;
    let current = env!("CARGO_PKG_VERSION");
    let decision = decide(current, &manifest.version)?;
    let release = manifest.platforms.get(&platform_key());

    if args.check {
        match decision {
            Decision::UpToDate => println!("cec {current} is up to date"),
            Decision::Upgrade => println!(
                "cec {} is available (this is {current}){}; run `cec update`",
                manifest.version,
                if release.is_none() {
                    format!(", but not for {}", platform_key())
                } else {
                    String::new()
                }
            ),
            Decision::Downgrade => println!(
                "cec {current} is newer than the release manifest's {}",
                manifest.version
            ),
        }
        return Ok(());
    }
    match decision {
        Decision::UpToDate => {
            println!("cec {current} is up to date");
            return Ok(());
        }
        Decision::Downgrade if !args.allow_downgrade => {
            return Err(CliError::failure(format!(
                "the release manifest offers {}, older than this cec {current}; refusing to downgrade (pass --allow-downgrade to do it anyway)",
                manifest.version
            )));
        }
        _ => {}
    }
    let release = release.ok_or_else(|| {
        CliError::failure(format!(
            "release {} has no binary for this platform ({})",
            manifest.version,
            platform_key()
        ))
    })?;
    let expected_sha = release.sha256.as_deref().map(parse_sha256).transpose()?;
    let resolve = |what: &str, reference: &str| {
        let url = manifest_url.join(reference).map_err(|e| {
            CliError::failure(format!("bad {what} URL {reference:?} in the manifest: {e}"))
        })?;
        check_transport(&url, trust.loopback_http)
            .map_err(|e| CliError::failure(format!("the manifest's {what} URL: {e}")))?;
        Ok::<_, CliError>(url)
    };
    let binary_url = resolve("binary", &release.url)?;
    let signature_url = match &release.minisig {
        Some(reference) => resolve("signature", reference)?,
        None => resolve("signature", &format!("{}.minisig", release.url))?,
    };
    let target = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map_err(|e| CliError::failure(format!("cannot locate this executable: {e}")))?;
    if installed_by_package(&target, Path::new(DPKG_FILE_LIST)) {
        return Err(CliError::failure(format!(
            "{} belongs to the Debian package cec: update it with the package manager (apt install --only-upgrade cec), not cec update",
            target.display()
        )));
    }
    // The signature first: without one there is nothing to download.
    let signature = fetch_signature(&http, &signature_url, &trust).await?;
    let mut staged = StagedBinary::create(&target)?;
    download_to(&http, &binary_url, staged.file_mut()?, &trust).await?;
    verify_release(
        staged.file_mut()?,
        &binary_url,
        &trust,
        &signature,
        &expected_trusted_comment(&manifest.version, &platform_key()),
        expected_sha.as_ref(),
    )?;
    // Verified: only now may it be made executable and run.
    staged.finish_and_check(&target, &manifest.version)?;
    staged.install(&target)?;
    println!(
        "cec updated from {current} to {} ({}; signed with release key {})",
        manifest.version,
        target.display(),
        trust.key_id
    );
    Ok(())
}

/// dpkg's list of the files the `cec` package installed.
const DPKG_FILE_LIST: &str = "/var/lib/dpkg/info/cec.list";

/// Whether `target` is one of the files in dpkg's list `dpkg_list` (replacing it would put
/// the package database out of step with the disk).
pub fn installed_by_package(target: &Path, dpkg_list: &Path) -> bool {
    let Ok(list) = std::fs::read_to_string(dpkg_list) else {
        return false;
    };
    list.lines().any(|line| {
        let listed = Path::new(line.trim());
        listed == target
            || listed
                .canonicalize()
                .is_ok_and(|canonical| canonical == target)
    })
}

fn parse_sha256(text: &str) -> Result<[u8; 32], CliError> {
    let bytes = hex::decode(text.trim()).ok().filter(|b| b.len() == 32);
    bytes
        .map(|b| {
            let mut out = [0u8; 32];
            out.copy_from_slice(&b);
            out
        })
        .ok_or_else(|| {
            CliError::failure(format!(
                "the manifest's sha256 {text:?} is not 64 hexadecimal digits"
            ))
        })
}

/// GET with at most 5 redirects (the project's client follows none by itself), every hop
/// subject to [`check_transport`].
async fn get(
    http: &reqwest::Client,
    url: &url::Url,
    trust: &Trust,
) -> Result<reqwest::Response, CliError> {
    let mut url = url.clone();
    for _ in 0..6 {
        check_transport(&url, trust.loopback_http).map_err(CliError::failure)?;
        let response = http
            .get(url.clone())
            .timeout(Duration::from_secs(600))
            .send()
            .await
            .map_err(|e| {
                CliError::failure(format!(
                    "cannot fetch {url}: {}",
                    crate::api::http::describe_reqwest_error(&e)
                ))
            })?;
        if response.status().is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| CliError::failure(format!("{url}: redirect without a location")))?;
            url = url
                .join(location)
                .map_err(|e| CliError::failure(format!("{url}: bad redirect: {e}")))?;
            continue;
        }
        if !response.status().is_success() {
            return Err(CliError::failure(format!(
                "cannot fetch {url}: HTTP {}",
                response.status()
            )));
        }
        return Ok(response);
    }
    Err(CliError::failure(format!("{url}: too many redirects")))
}

/// GET a small document whole, refusing one over its cap.
async fn get_small(
    http: &reqwest::Client,
    url: &url::Url,
    trust: &Trust,
    cap: crate::api::body::Cap,
) -> Result<Vec<u8>, CliError> {
    let response = get(http, url, trust).await?;
    let body = crate::api::body::read_capped(response, cap)
        .await
        .map_err(|e| CliError::failure(format!("{url}: {e}")))?;
    Ok(body.to_vec())
}

async fn fetch_manifest(
    http: &reqwest::Client,
    url: &url::Url,
    trust: &Trust,
) -> Result<Manifest, CliError> {
    let body = get_small(http, url, trust, crate::api::body::MANIFEST).await?;
    serde_json::from_slice(&body)
        .map_err(|e| CliError::failure(format!("the manifest at {url} is not valid: {e}")))
}

/// The release binary's minisign signature; its absence is an error (cec installs only
/// signed binaries).
async fn fetch_signature(
    http: &reqwest::Client,
    url: &url::Url,
    trust: &Trust,
) -> Result<ReleaseSignature, CliError> {
    let body = get_small(http, url, trust, crate::api::body::SIGNATURE)
        .await
        .map_err(|e| {
            CliError::failure(format!(
                "no signature for this release ({}): cec installs only binaries signed with its release key; nothing was downloaded and the installed cec was not changed",
                e.message
            ))
        })?;
    let text = String::from_utf8_lossy(&body);
    let signature = Signature::decode(&text).map_err(|e| {
        CliError::failure(format!(
            "{url} is not a minisign signature ({e}); nothing was downloaded and the installed cec was not changed"
        ))
    })?;
    let key_id = text
        .lines()
        .nth(1)
        .and_then(minisign_key_id)
        .unwrap_or_else(|| "?".into());
    Ok(ReleaseSignature { signature, key_id })
}

/// A decoded signature and the id of the key that made it (for messages).
struct ReleaseSignature {
    signature: Signature,
    key_id: String,
}

/// Stream the binary into `file`; fail on a size over the cap. Nothing is trusted yet.
async fn download_to(
    http: &reqwest::Client,
    url: &url::Url,
    file: &mut std::fs::File,
    trust: &Trust,
) -> Result<(), CliError> {
    use futures::StreamExt;
    let response = get(http, url, trust).await?;
    let mut written: u64 = 0;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|e| CliError::failure(format!("download of {url} broke: {e}")))?;
        written += chunk.len() as u64;
        if written > MAX_BINARY_BYTES {
            return Err(CliError::failure(format!(
                "{url} is larger than {MAX_BINARY_BYTES} bytes; refusing it"
            )));
        }
        file.write_all(&chunk)
            .map_err(|e| CliError::failure(format!("cannot write the new binary: {e}")))?;
    }
    file.sync_all()
        .map_err(|e| CliError::failure(format!("cannot flush the new binary: {e}")))?;
    Ok(())
}

/// Verify the bytes of `file` (read back from its start: exactly what would be installed)
/// against `signature` with the trusted key, then the signature's trusted comment (which the
/// signature covers) against `expected_comment`, then the manifest's checksum if it gave one.
fn verify_release(
    file: &mut std::fs::File,
    url: &url::Url,
    trust: &Trust,
    signature: &ReleaseSignature,
    expected_comment: &str,
    expected_sha: Option<&[u8; 32]>,
) -> Result<(), CliError> {
    const UNCHANGED: &str =
        "the binary was not installed, nor run; the installed cec was not changed";
    let refused = |why: String| CliError::failure(format!("{why}; {UNCHANGED}"));
    let mut verifier = trust.key.verify_stream(&signature.signature).map_err(|e| match e {
        minisign_verify::Error::UnexpectedKeyId => refused(format!(
            "the signature of {url} was made with another key (key id {}), not cec's release key ({})",
            signature.key_id,
            trust.key_id
        )),
        minisign_verify::Error::UnsupportedLegacyMode => refused(format!(
            "the signature of {url} is in minisign's legacy format, which cec does not accept: sign releases with `minisign -S` without -l"
        )),
        e => refused(format!("cannot verify the signature of {url}: {e}")),
    })?;
    let mut hasher = sha2::Sha256::new();
    file.seek(std::io::SeekFrom::Start(0))
        .map_err(|e| CliError::failure(format!("cannot read back the new binary: {e}")))?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| CliError::failure(format!("cannot read back the new binary: {e}")))?;
        if n == 0 {
            break;
        }
        verifier.update(&buf[..n]);
        hasher.update(&buf[..n]);
    }
    verifier.finalize().map_err(|e| match e {
        minisign_verify::Error::InvalidSignature => refused(format!(
            "the signature does not match {url}: the binary (or its signature) was altered, or signed by someone else"
        )),
        e => refused(format!("cannot verify the signature of {url}: {e}")),
    })?;
    let signed_for = signature.signature.trusted_comment().trim();
    if signed_for != expected_comment {
        return Err(refused(format!(
            "{url} is validly signed, but for {signed_for:?}, not {expected_comment:?}: the manifest offers it as another version or platform than it was released as"
        )));
    }
    if let Some(expected) = expected_sha {
        let digest = hasher.finalize();
        if digest.as_slice() != expected {
            return Err(refused(format!(
                "checksum mismatch for {url}: got sha256 {}, the manifest says {}",
                hex::encode(digest),
                hex::encode(expected)
            )));
        }
    }
    Ok(())
}

/// A new binary being written beside the old one, private (0600, not executable) until
/// verified; removed on drop unless installed.
struct StagedBinary {
    path: PathBuf,
    file: Option<std::fs::File>,
    installed: bool,
}

impl StagedBinary {
    fn create(target: &Path) -> Result<StagedBinary, CliError> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = target.parent().ok_or_else(|| {
            CliError::failure(format!("{} has no parent directory", target.display()))
        })?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "cec".into());
        let path = dir.join(format!(".{name}.update-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| {
                CliError::failure(format!(
                    "cannot write beside {} ({e}); installed by a package? update it with the package manager, or run as a user who may write there",
                    target.display()
                ))
            })?;
        Ok(StagedBinary {
            path,
            file: Some(file),
            installed: false,
        })
    }

    fn file_mut(&mut self) -> Result<&mut std::fs::File, CliError> {
        self.file
            .as_mut()
            .ok_or_else(|| CliError::failure("internal: the staged binary is already closed"))
    }

    /// Once its signature holds (never before): fsync and close (a file open for writing
    /// cannot be run), give it the old binary's permission bits, and check that it runs and
    /// reports `version`.
    fn finish_and_check(&mut self, target: &Path, version: &str) -> Result<(), CliError> {
        use std::os::unix::fs::PermissionsExt;
        let file = self
            .file
            .take()
            .ok_or_else(|| CliError::failure("internal: the staged binary is already closed"))?;
        file.sync_all()
            .map_err(|e| CliError::failure(format!("cannot flush the new binary: {e}")))?;
        drop(file);
        let mode = std::fs::metadata(target)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o755)
            | 0o500;
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(mode)).map_err(
            |e| CliError::failure(format!("cannot make the new binary executable: {e}")),
        )?;
        let reported = run_version_of(&self.path)?;
        let wanted = version.trim().trim_start_matches('v');
        if !reported
            .split_whitespace()
            .any(|w| w.trim_start_matches('v') == wanted)
        {
            return Err(CliError::failure(format!(
                "the downloaded binary reports {:?}, not version {wanted}; the binary was not replaced",
                reported.trim()
            )));
        }
        Ok(())
    }

    /// Rename over the old binary (atomic on one filesystem) and fsync the directory.
    fn install(mut self, target: &Path) -> Result<(), CliError> {
        std::fs::rename(&self.path, target)
            .map_err(|e| CliError::failure(format!("cannot replace {}: {e}", target.display())))?;
        self.installed = true;
        if let Some(dir) = target.parent()
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// Run `BINARY --version` (at most 20 s) and return what it printed.
fn run_version_of(binary: &Path) -> Result<String, CliError> {
    let mut child = std::process::Command::new(binary)
        .arg("--version")
        .env_remove("CEC_TOKEN")
        .env_remove("CEC_PASSWORD")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| {
            CliError::failure(format!(
                "the downloaded binary does not start on this machine ({e}); the binary was not replaced"
            ))
        })?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CliError::failure(
                    "the downloaded binary did not answer --version within 20 s; the binary was not replaced",
                ));
            }
        }
    };
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        use std::io::Read;
        let _ = stdout.read_to_string(&mut out);
    }
    if !status.success() {
        return Err(CliError::failure(format!(
            "the downloaded binary fails to run ({status}); the binary was not replaced"
        )));
    }
    Ok(out)
}

impl Drop for StagedBinary {
    fn drop(&mut self) {
        if !self.installed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_as_semver() {
        assert_eq!(decide("0.1.0", "0.1.0").unwrap(), Decision::UpToDate);
        assert_eq!(decide("0.1.0", "0.2.0").unwrap(), Decision::Upgrade);
        assert_eq!(decide("0.1.0", "v0.10.0").unwrap(), Decision::Upgrade);
        assert_eq!(decide("0.2.0", "0.1.9").unwrap(), Decision::Downgrade);
        assert_eq!(decide("1.0.0", "1.0.0-rc.1").unwrap(), Decision::Downgrade);
        assert!(decide("0.1.0", "latest").is_err());
    }

    #[test]
    fn a_binary_in_dpkgs_list_belongs_to_the_package() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("cec.list");
        std::fs::write(&list, "/.\n/usr\n/usr/bin\n/usr/bin/cec\n/sbin/mount.cec\n").unwrap();
        assert!(installed_by_package(Path::new("/usr/bin/cec"), &list));
        assert!(!installed_by_package(
            Path::new("/home/a/.local/bin/cec"),
            &list
        ));
        assert!(!installed_by_package(
            Path::new("/usr/bin/cec"),
            &dir.path().join("missing.list")
        ));
    }

    #[test]
    fn checksums_must_be_64_hex_digits() {
        assert!(parse_sha256(&"ab".repeat(32)).is_ok());
        assert!(parse_sha256("abc").is_err());
        assert!(parse_sha256(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn only_https_is_fetched_and_http_only_to_loopback_on_request() {
        let url = |u: &str| url::Url::parse(u).unwrap();
        // Release semantics (no opt-in): http is refused, loopback or not.
        assert!(check_transport(&url("https://example.org/m.json"), false).is_ok());
        for refused in [
            "http://example.org/m.json",
            "http://127.0.0.1:8080/m.json",
            "http://localhost/m.json",
            "ftp://example.org/m.json",
            "file:///tmp/m.json",
        ] {
            let err = check_transport(&url(refused), false).unwrap_err();
            assert!(err.contains("https only"), "{refused}: {err}");
        }
        // The debug-only opt-in: loopback hosts only.
        assert!(check_transport(&url("http://127.0.0.1:8080/m.json"), true).is_ok());
        assert!(check_transport(&url("http://[::1]:8080/m.json"), true).is_ok());
        assert!(check_transport(&url("http://localhost/m.json"), true).is_ok());
        assert!(check_transport(&url("http://example.org/m.json"), true).is_err());
        assert!(check_transport(&url("http://10.0.0.1/m.json"), true).is_err());
    }

    #[test]
    fn the_built_in_release_key_is_a_minisign_key_with_its_documented_id() {
        assert!(PublicKey::from_base64(RELEASE_PUBLIC_KEY).is_ok());
        assert_eq!(
            minisign_key_id(RELEASE_PUBLIC_KEY).as_deref(),
            Some("CA50AA6AC7D1D770")
        );
    }

    #[test]
    fn a_release_is_signed_for_its_version_and_platform() {
        assert_eq!(
            expected_trusted_comment("v0.2.0", "linux-x86_64"),
            "cec 0.2.0 linux-x86_64"
        );
    }
}
