//! `cec update [--check] [--allow-downgrade] [--manifest-url URL]`: fetch the release
//! manifest, download the binary built for this platform, verify its SHA-256, check that it
//! runs and reports the announced version, and replace the running binary atomically.
//!
//! The manifest (JSON):
//! ```json
//! { "version": "0.2.0",
//!   "platforms": { "linux-x86_64": { "url": "cec-0.2.0-linux-x86_64", "sha256": "<hex>" } } }
//! ```
//! Platform keys are `<os>-<arch>` as Rust names them (`linux-x86_64`, `linux-aarch64`,
//! `macos-aarch64`, ...); a relative `url` is resolved against the manifest's URL.
//!
//! Invariants:
//! - The running binary is never modified in place: the new one is written beside it
//!   (same directory, so same filesystem), fsynced, checked, then renamed over it, and the
//!   directory fsynced. Any failure before the rename removes the temporary file and leaves
//!   the old binary as it was; after the rename the new binary is complete and verified.
//! - Certificates are always verified (`--skip-verify` does not apply: the manifest's
//!   checksums are only as trustworthy as the connection that brought them).
//! - A version older than the running one is refused unless `--allow-downgrade`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;
use sha2::Digest;

use super::CliError;

/// Environment variable holding the manifest URL (also read at build time, so a release
/// build can bake its default in).
pub const MANIFEST_URL_ENV: &str = "CEC_UPDATE_MANIFEST_URL";

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
    /// The release manifest (JSON); default: $CEC_UPDATE_MANIFEST_URL, or the one this build was made with
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
    pub sha256: String,
}

/// This platform's key in the manifest.
pub fn platform_key() -> String {
    format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
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

pub async fn run_update(args: UpdateArgs) -> Result<(), CliError> {
    let manifest_url = args
        .manifest_url
        .clone()
        .filter(|u| !u.trim().is_empty())
        .or_else(|| option_env!("CEC_UPDATE_MANIFEST_URL").map(str::to_string))
        .ok_or_else(|| {
            CliError::usage(format!(
                "no release manifest configured: pass --manifest-url URL or set {MANIFEST_URL_ENV}"
            ))
        })?;
    let manifest_url = url::Url::parse(manifest_url.trim())
        .map_err(|e| CliError::usage(format!("{manifest_url:?} is not a URL: {e}")))?;
    let http = crate::api::http::build_http_client(false)?;
    let manifest = fetch_manifest(&http, &manifest_url).await?;
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
    let expected = parse_sha256(&release.sha256)?;
    let binary_url = manifest_url.join(&release.url).map_err(|e| {
        CliError::failure(format!(
            "bad binary URL {:?} in the manifest: {e}",
            release.url
        ))
    })?;
    let target = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map_err(|e| CliError::failure(format!("cannot locate this executable: {e}")))?;
    if installed_by_package(&target, Path::new(DPKG_FILE_LIST)) {
        return Err(CliError::failure(format!(
            "{} belongs to the Debian package cec: update it with the package manager (apt install --only-upgrade cec), not cec update",
            target.display()
        )));
    }
    let mut staged = StagedBinary::create(&target)?;
    download_to(&http, &binary_url, staged.file_mut()?, &expected).await?;
    staged.finish_and_check(&target, &manifest.version)?;
    staged.install(&target)?;
    println!(
        "cec updated from {current} to {} ({})",
        manifest.version,
        target.display()
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

/// GET with at most 5 redirects (the project's client follows none by itself), refusing a
/// redirect from https to http.
async fn get(http: &reqwest::Client, url: &url::Url) -> Result<reqwest::Response, CliError> {
    let mut url = url.clone();
    for _ in 0..6 {
        let response = http
            .get(url.clone())
            .timeout(Duration::from_secs(600))
            .send()
            .await
            .map_err(|e| CliError::failure(format!("cannot fetch {url}: {e}")))?;
        if response.status().is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| CliError::failure(format!("{url}: redirect without a location")))?;
            let next = url
                .join(location)
                .map_err(|e| CliError::failure(format!("{url}: bad redirect: {e}")))?;
            if url.scheme() == "https" && next.scheme() != "https" {
                return Err(CliError::failure(format!(
                    "{url}: refusing a redirect from https to {}",
                    next.scheme()
                )));
            }
            url = next;
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

async fn fetch_manifest(http: &reqwest::Client, url: &url::Url) -> Result<Manifest, CliError> {
    let body = get(http, url)
        .await?
        .bytes()
        .await
        .map_err(|e| CliError::failure(format!("cannot read the manifest {url}: {e}")))?;
    serde_json::from_slice(&body)
        .map_err(|e| CliError::failure(format!("the manifest at {url} is not valid: {e}")))
}

/// Stream the binary into `file`, hashing as it comes; fail on a size over the cap or a
/// digest that differs from the manifest's.
async fn download_to(
    http: &reqwest::Client,
    url: &url::Url,
    file: &mut std::fs::File,
    expected: &[u8; 32],
) -> Result<(), CliError> {
    use futures::StreamExt;
    let response = get(http, url).await?;
    let mut hasher = sha2::Sha256::new();
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
        hasher.update(&chunk);
        file.write_all(&chunk)
            .map_err(|e| CliError::failure(format!("cannot write the new binary: {e}")))?;
    }
    let digest = hasher.finalize();
    if digest.as_slice() != expected {
        return Err(CliError::failure(format!(
            "checksum mismatch for {url}: got sha256 {}, the manifest says {}; the binary was not replaced",
            hex::encode(digest),
            hex::encode(expected)
        )));
    }
    Ok(())
}

/// A new binary being written beside the old one; removed on drop unless installed.
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
            .write(true)
            .create_new(true)
            .mode(0o700)
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

    /// fsync and close (a file open for writing cannot be run), give it the old binary's
    /// permission bits, and check that it runs and reports `version`.
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
}
