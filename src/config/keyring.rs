//! Secrets in the OS keyring, in the official Cells client's formats: service
//! `com.pydio.cells-client`, account `<url>::<login>`, value the PAT, the password, or
//! `<access token>__//__<refresh token>` for OAuth.
//!
//! Invariants:
//! - These functions block (on Linux they talk D-Bus to the Secret Service through a private
//!   runtime): call them from a plain thread or `tokio::task::spawn_blocking`, never from an
//!   async task.
//! - Errors are one sentence and never contain the secret.

/// The keyring service of the official client.
pub const SERVICE: &str = "com.pydio.cells-client";
const ACCOUNT_SEPARATOR: &str = "::";
const VALUE_SEPARATOR: &str = "__//__";

/// `<url>::<login>`.
pub fn account(url: &str, login: &str) -> String {
    format!("{url}{ACCOUNT_SEPARATOR}{login}")
}

/// `<access>__//__<refresh>`.
pub fn join_oauth_value(access: &str, refresh: &str) -> String {
    format!("{access}{VALUE_SEPARATOR}{refresh}")
}

/// The inverse of [`join_oauth_value`]; a value without separator is an access token alone.
pub fn split_oauth_value(value: &str) -> (String, String) {
    match value.split_once(VALUE_SEPARATOR) {
        Some((a, r)) => (a.to_string(), r.to_string()),
        None => (value.to_string(), String::new()),
    }
}

fn entry(account: &str) -> Result<keyring::Entry, String> {
    keyring::Entry::new(SERVICE, account).map_err(describe)
}

fn describe(e: keyring::Error) -> String {
    match e {
        keyring::Error::NoStorageAccess(inner) => format!("no keyring is reachable ({inner})"),
        keyring::Error::PlatformFailure(inner) => format!("the keyring failed ({inner})"),
        keyring::Error::NoEntry => "no such entry".into(),
        other => other.to_string(),
    }
}

/// Store a secret.
pub fn set(account: &str, secret: &str) -> Result<(), String> {
    entry(account)?.set_password(secret).map_err(describe)
}

/// Read a secret; `Ok(None)` when there is no entry.
pub fn get(account: &str) -> Result<Option<String>, String> {
    match entry(account)?.get_password() {
        Ok(v) => Ok(Some(v)),
        Err(keyring::Error::NoEntry) => Ok(None),
        Err(e) => Err(describe(e)),
    }
}

/// Delete a secret; a missing entry is not an error.
pub fn delete(account: &str) -> Result<(), String> {
    match entry(account)?.delete_credential() {
        Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
        Err(e) => Err(describe(e)),
    }
}

/// Write, read back and delete a test value, as `cec config check-keyring` does.
pub fn check() -> Result<(), String> {
    let test_account = account("https://test.example.com", "john.doe");
    let test_value = "A very complicated value !!#%<{}//\\q";
    set(&test_account, test_value)?;
    let read = get(&test_account);
    let _ = delete(&test_account);
    match read? {
        Some(v) if v == test_value => Ok(()),
        Some(_) => Err("the keyring returned a different value than the one stored".into()),
        None => Err("the keyring lost the value just stored".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_match_the_official_client() {
        assert_eq!(
            account("https://h.example.com", "alice"),
            "https://h.example.com::alice"
        );
        let v = join_oauth_value("AT", "RT");
        assert_eq!(v, "AT__//__RT");
        assert_eq!(split_oauth_value(&v), ("AT".into(), "RT".into()));
    }
}
