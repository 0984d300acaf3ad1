//! Profiles, compatible with the official Cells client (`cec`, pydio/cells-client): the same
//! file (`<config dir>/pydio/cells-client/config.json`), the same JSON shape
//! (`{"ActiveConfigID": ..., "Configs": {"<user>@<host>:<port>": {...}}}`), the same ids and
//! labels, and secrets in the OS keyring under the same service, account and value formats
//! (see [`keyring`]).
//!
//! Invariants:
//! - The file is written atomically (temporary file in the same directory, fsync, rename),
//!   mode 0600, in a 0700 directory; unknown keys (written by another client) are kept.
//! - Every read-modify-write of the file happens under [`ConfigStore::lock`], an exclusive
//!   advisory lock on `config.json.lock`, so two `cec` processes never lose each other's
//!   updates (and a refresh token is consumed by one process only).
//! - A profile's secrets live in the keyring unless `skipKeyring` is set, in which case they
//!   are in the file (the user has been warned). [`Profile`]'s `Debug` never prints them.

pub mod keyring;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file name inside the config directory.
pub const CONFIG_FILE_NAME: &str = "config.json";
/// Authentication types as the official client writes them (`cells-sdk-go/apiv1`).
pub const AUTH_TYPE_PAT: &str = "pat";
pub const AUTH_TYPE_OAUTH: &str = "oauth2";
pub const AUTH_TYPE_SESSION: &str = "session";

/// Errors about the local configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read or write the configuration at {path}: {message}")]
    Io { path: String, message: String },
    #[error("the configuration file {path} is not valid JSON: {message}")]
    Parse { path: String, message: String },
    #[error(
        "no profile is configured: run `cec config add oauth` (or `token`, `client-auth`) first, or pass --url with --token"
    )]
    NoActiveProfile,
    #[error("no profile with id `{0}`: see `cec config ls`")]
    UnknownProfile(String),
    #[error(
        "the secrets of profile `{id}` are not in the keyring ({reason}): run `cec config relog`"
    )]
    MissingSecret { id: String, reason: String },
    #[error("keyring: {0}")]
    Keyring(String),
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> ConfigError {
    ConfigError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// The whole `config.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConfigList {
    #[serde(rename = "ActiveConfigID", default)]
    pub active_config_id: String,
    #[serde(rename = "Configs", default)]
    pub configs: BTreeMap<String, Profile>,
    /// Keys we do not know, kept as they were.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl ConfigList {
    pub fn active(&self) -> Option<&Profile> {
        self.configs.get(&self.active_config_id)
    }
}

/// One profile (the official client's `CecConfig`, i.e. the SDK's `SdkConfig` plus a label).
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Profile {
    #[serde(rename = "authType", default, skip_serializing_if = "String::is_empty")]
    pub auth_type: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub user: String,
    /// The PAT, or the OAuth access token (the SDK's historical name).
    #[serde(rename = "idToken", default, skip_serializing_if = "String::is_empty")]
    pub id_token: String,
    #[serde(
        rename = "refreshToken",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub refresh_token: String,
    /// Unix seconds.
    #[serde(rename = "tokenExpiresAt", default, skip_serializing_if = "is_zero")]
    pub token_expires_at: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub password: String,
    #[serde(rename = "skipVerify", default)]
    pub skip_verify: bool,
    #[serde(rename = "useTokenCache", default)]
    pub use_token_cache: bool,
    #[serde(rename = "CustomHeaders", default)]
    pub custom_headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub label: String,
    #[serde(rename = "skipKeyring", default)]
    pub skip_keyring: bool,
    #[serde(rename = "createdAtVersion", default)]
    pub created_at_version: String,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |s: &str| if s.is_empty() { "" } else { "<hidden>" };
        f.debug_struct("Profile")
            .field("auth_type", &self.auth_type)
            .field("url", &self.url)
            .field("user", &self.user)
            .field("id_token", &hidden(&self.id_token))
            .field("refresh_token", &hidden(&self.refresh_token))
            .field("token_expires_at", &self.token_expires_at)
            .field("password", &hidden(&self.password))
            .field("skip_verify", &self.skip_verify)
            .field("label", &self.label)
            .field("skip_keyring", &self.skip_keyring)
            .finish()
    }
}

impl Profile {
    /// `<user>@<host>:<port>`, the port defaulting by scheme, as the official client builds it.
    pub fn id(&self) -> String {
        profile_id(&self.url, &self.user)
    }

    /// `<user>@<host>`.
    pub fn default_label(&self) -> String {
        let host = url::Url::parse(&self.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        format!("{}@{}", self.user, host)
    }

    /// The auth type, with the legacy names of older official clients mapped to today's.
    pub fn normalized_auth_type(&self) -> &str {
        match self.auth_type.as_str() {
            "Personal Access Token" => AUTH_TYPE_PAT,
            "Client Credentials" => AUTH_TYPE_SESSION,
            "OAuth2" => AUTH_TYPE_OAUTH,
            other => other,
        }
    }

    /// A human label for the auth type.
    pub fn auth_type_label(&self) -> &'static str {
        match self.normalized_auth_type() {
            AUTH_TYPE_PAT => "PAT",
            AUTH_TYPE_OAUTH => "OAuth2",
            AUTH_TYPE_SESSION => "Login/Password",
            _ => "Unknown",
        }
    }

    /// The keyring account: `<url>::<user>`.
    pub fn keyring_account(&self) -> String {
        keyring::account(&self.url, &self.user)
    }

    /// The secret value as the keyring stores it for this auth type.
    pub fn keyring_value(&self) -> String {
        match self.normalized_auth_type() {
            AUTH_TYPE_OAUTH => keyring::join_oauth_value(&self.id_token, &self.refresh_token),
            AUTH_TYPE_SESSION => self.password.clone(),
            _ => self.id_token.clone(),
        }
    }

    /// Fill the secrets from a keyring value.
    pub fn apply_keyring_value(&mut self, value: &str) {
        match self.normalized_auth_type() {
            AUTH_TYPE_OAUTH => {
                let (access, refresh) = keyring::split_oauth_value(value);
                self.id_token = access;
                self.refresh_token = refresh;
            }
            AUTH_TYPE_SESSION => self.password = value.to_string(),
            _ => self.id_token = value.to_string(),
        }
    }

    /// The same profile without its secrets (what goes to the file when the keyring holds them).
    pub fn without_secrets(&self) -> Profile {
        let mut p = self.clone();
        p.id_token.clear();
        p.refresh_token.clear();
        p.password.clear();
        p
    }

    pub fn has_secret(&self) -> bool {
        match self.normalized_auth_type() {
            AUTH_TYPE_OAUTH => !self.refresh_token.is_empty() || !self.id_token.is_empty(),
            AUTH_TYPE_SESSION => !self.password.is_empty(),
            _ => !self.id_token.is_empty(),
        }
    }
}

/// `<user>@<host>:<port>` for a server URL and a login.
pub fn profile_id(server_url: &str, user: &str) -> String {
    match url::Url::parse(server_url) {
        Ok(u) => {
            let port = u
                .port()
                .map(|p| p.to_string())
                .unwrap_or_else(|| match u.scheme() {
                    "http" => "80".into(),
                    "https" => "443".into(),
                    _ => String::new(),
                });
            format!("{}@{}:{}", user, u.host_str().unwrap_or_default(), port)
        }
        Err(_) => format!("{user}@{server_url}:"),
    }
}

/// Normalise a server URL to `scheme://host[:port]` (no path, no trailing slash), as the
/// official client does. Errors name what is wrong in one sentence.
pub fn clean_url(input: &str) -> Result<String, String> {
    let trimmed = input.trim();
    let u = url::Url::parse(trimmed)
        .map_err(|e| format!("`{trimmed}` is not a valid server URL ({e})"))?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(format!(
            "`{trimmed}` is not a valid server URL: the scheme must be http or https"
        ));
    }
    let host = u
        .host_str()
        .ok_or_else(|| format!("`{trimmed}` is not a valid server URL: it has no host"))?;
    let mut out = format!("{}://{}", u.scheme(), host);
    if let Some(port) = u.port() {
        out.push_str(&format!(":{port}"));
    }
    Ok(out)
}

/// The official client's default config directory: `<user config dir>/pydio/cells-client`
/// on Linux, `<user config dir>/Pydio/cells-client` elsewhere.
pub fn default_config_dir() -> PathBuf {
    let vendor = if cfg!(target_os = "linux") {
        "pydio"
    } else {
        "Pydio"
    };
    let base = directories::BaseDirs::new()
        .map(|b| b.config_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from("."));
    base.join(vendor).join("cells-client")
}

/// Resolve `--config`: a directory holding `config.json` (the official client's meaning), or,
/// when it names a `.json` file or an existing file, that file.
pub fn resolve_config_path(flag: Option<&Path>) -> PathBuf {
    match flag {
        None => default_config_dir().join(CONFIG_FILE_NAME),
        Some(p) => {
            let is_json = p.extension().map(|e| e == "json").unwrap_or(false);
            if is_json || p.is_file() {
                p.to_path_buf()
            } else {
                p.join(CONFIG_FILE_NAME)
            }
        }
    }
}

/// Where profiles live and how secrets are kept.
#[derive(Debug, Clone)]
pub struct ConfigStore {
    path: PathBuf,
    /// `--skip-keyring`: never touch the keyring.
    skip_keyring: bool,
}

/// Holds the cross-process lock on the configuration until dropped.
pub struct ConfigLock {
    _file: File,
}

impl ConfigStore {
    pub fn new(path: PathBuf, skip_keyring: bool) -> ConfigStore {
        ConfigStore { path, skip_keyring }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn skip_keyring(&self) -> bool {
        self.skip_keyring
    }

    fn dir(&self) -> PathBuf {
        self.path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."))
    }

    fn ensure_dir(&self) -> Result<PathBuf, ConfigError> {
        // Missing folders are made 0700; an existing one is never changed (`--config
        // /etc/cells.json` must not lock /etc): the file itself is 0600.
        let dir = self.dir();
        if !dir.exists() {
            create_private_dir(&dir).map_err(|e| io_err(&dir, e))?;
        }
        Ok(dir)
    }

    /// Take the exclusive cross-process lock (blocking). Hold it across read-modify-write.
    pub fn lock(&self) -> Result<ConfigLock, ConfigError> {
        let dir = self.ensure_dir()?;
        let name = format!(
            "{}.lock",
            self.path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| CONFIG_FILE_NAME.into())
        );
        let lock_path = dir.join(name);
        let file = open_private(&lock_path).map_err(|e| io_err(&lock_path, e))?;
        fs4::fs_std::FileExt::lock_exclusive(&file).map_err(|e| io_err(&lock_path, e))?;
        Ok(ConfigLock { _file: file })
    }

    /// Read the file (an empty list when it does not exist). Secrets are not loaded.
    pub fn load(&self) -> Result<ConfigList, ConfigError> {
        let data = match std::fs::read(&self.path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(ConfigList::default());
            }
            Err(e) => return Err(io_err(&self.path, e)),
        };
        if data.iter().all(u8::is_ascii_whitespace) {
            return Ok(ConfigList::default());
        }
        let list: ConfigList = serde_json::from_slice(&data).map_err(|e| ConfigError::Parse {
            path: self.path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(list)
    }

    /// Write the whole file atomically, 0600 in a 0700 directory.
    pub fn save(&self, list: &ConfigList) -> Result<(), ConfigError> {
        let dir = self.ensure_dir()?;
        let data = serde_json::to_vec_pretty(list).map_err(|e| io_err(&self.path, e))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".config.json.")
            .tempfile_in(&dir)
            .map_err(|e| io_err(&dir, e))?;
        set_mode(tmp.path(), 0o600).map_err(|e| io_err(tmp.path(), e))?;
        tmp.write_all(&data).map_err(|e| io_err(&self.path, e))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| io_err(&self.path, e))?;
        tmp.persist(&self.path)
            .map_err(|e| io_err(&self.path, e.error))?;
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// A profile by id (or the active one), with its secrets filled from the keyring when it
    /// keeps them there.
    pub fn load_profile(&self, id: Option<&str>) -> Result<Profile, ConfigError> {
        let list = self.load()?;
        let id = match id {
            Some(id) => id.to_string(),
            None => {
                if list.active_config_id.is_empty() {
                    return Err(ConfigError::NoActiveProfile);
                }
                list.active_config_id.clone()
            }
        };
        let mut profile = list
            .configs
            .get(&id)
            .cloned()
            .ok_or_else(|| ConfigError::UnknownProfile(id.clone()))?;
        self.fill_secrets(&id, &mut profile)?;
        Ok(profile)
    }

    /// Fill the secrets of a profile read from the file.
    pub fn fill_secrets(&self, id: &str, profile: &mut Profile) -> Result<(), ConfigError> {
        if profile.skip_keyring || (self.skip_keyring && profile.has_secret()) {
            return Ok(());
        }
        match keyring::get(&profile.keyring_account()) {
            Ok(Some(value)) => {
                profile.apply_keyring_value(&value);
                Ok(())
            }
            Ok(None) if profile.has_secret() => Ok(()),
            Ok(None) => Err(ConfigError::MissingSecret {
                id: id.to_string(),
                reason: "no entry".into(),
            }),
            Err(e) if profile.has_secret() => {
                tracing::debug!("keyring unavailable, using the secrets of the file: {e}");
                Ok(())
            }
            Err(e) => Err(ConfigError::MissingSecret {
                id: id.to_string(),
                reason: e,
            }),
        }
    }

    /// Store a profile (with its secrets) under its id. Secrets go to the keyring unless it is
    /// skipped or unusable, in which case they go to the file with `skipKeyring` set and the
    /// returned warning says so. The caller holds [`ConfigStore::lock`] when it matters.
    pub fn store_profile(
        &self,
        profile: &Profile,
        make_active: bool,
        replace_id: Option<&str>,
    ) -> Result<(String, Option<String>), ConfigError> {
        let mut list = self.load()?;
        let (persisted, warning) = self.split_secrets(profile);
        let id = profile.id();
        if let Some(old) = replace_id
            && old != id
        {
            list.configs.remove(old);
            if list.active_config_id == old {
                list.active_config_id = id.clone();
            }
        }
        list.configs.insert(id.clone(), persisted);
        if make_active || list.active_config_id.is_empty() {
            list.active_config_id = id.clone();
        }
        self.save(&list)?;
        Ok((id, warning))
    }

    /// What to write to the file for this profile, writing the secrets to the keyring first.
    fn split_secrets(&self, profile: &Profile) -> (Profile, Option<String>) {
        let mut persisted = profile.clone();
        if self.skip_keyring || profile.skip_keyring {
            persisted.skip_keyring = true;
            let warning = if self.skip_keyring {
                Some(format!(
                    "--skip-keyring: the secrets are stored in clear text in {}",
                    self.path.display()
                ))
            } else {
                None
            };
            return (persisted, warning);
        }
        match keyring::set(&profile.keyring_account(), &profile.keyring_value()) {
            Ok(()) => (profile.without_secrets(), None),
            Err(e) => {
                persisted.skip_keyring = true;
                (
                    persisted,
                    Some(format!(
                        "could not use the keyring ({e}): the secrets are stored in clear text in {}",
                        self.path.display()
                    )),
                )
            }
        }
    }

    /// Remove a profile and its keyring entry. Returns the new active id.
    pub fn remove_profile(&self, id: &str) -> Result<String, ConfigError> {
        let mut list = self.load()?;
        let profile = list
            .configs
            .remove(id)
            .ok_or_else(|| ConfigError::UnknownProfile(id.to_string()))?;
        if !profile.skip_keyring
            && !self.skip_keyring
            && let Err(e) = keyring::delete(&profile.keyring_account())
        {
            // The profile goes anyway: an unreachable keyring must not pin it forever.
            tracing::warn!("could not delete the keyring entry of {id}: {e}");
        }
        if list.active_config_id == id {
            list.active_config_id = list.configs.keys().next().cloned().unwrap_or_default();
        }
        self.save(&list)?;
        Ok(list.active_config_id)
    }
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

fn open_private(path: &Path) -> std::io::Result<File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn an_existing_folder_keeps_its_mode_and_missing_ones_are_private() {
        // Issue 23: "--config DIR/file.json chmods an existing parent directory to 0700".
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let tmp = tempfile::tempdir().unwrap();
        let existing = tmp.path().join("etc");
        std::fs::create_dir(&existing).unwrap();
        set_mode(&existing, 0o755).unwrap();
        let store = ConfigStore::new(existing.join("cells.json"), true);
        drop(store.lock().unwrap());
        assert_eq!(mode(&existing), 0o755);
        let store = ConfigStore::new(tmp.path().join("a/b/cells.json"), true);
        drop(store.lock().unwrap());
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
        assert_eq!(mode(&tmp.path().join("a/b")), 0o700);
    }

    #[test]
    fn ids_and_urls_follow_the_official_rules() {
        assert_eq!(
            profile_id("https://files.example.com", "alice"),
            "alice@files.example.com:443"
        );
        assert_eq!(
            profile_id("http://127.0.0.1:8080", "bob"),
            "bob@127.0.0.1:8080"
        );
        assert_eq!(
            clean_url(" https://h.example.com:8443/some/path/ ").unwrap(),
            "https://h.example.com:8443"
        );
        assert!(clean_url("ftp://x").is_err());
        assert!(clean_url("not a url").is_err());
    }

    #[test]
    fn debug_hides_secrets() {
        let p = Profile {
            id_token: "tok-SECRET".into(),
            refresh_token: "rt-SECRET".into(),
            password: "pw-SECRET".into(),
            ..Profile::default()
        };
        assert!(!format!("{p:?}").contains("SECRET"));
    }
}
