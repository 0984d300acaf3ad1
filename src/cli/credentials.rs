//! Secrets handed over by a service manager rather than typed or stored in a profile: the
//! systemd credential `cec-token` (`LoadCredential=cec-token:/etc/cec/NAME.token`), which
//! systemd exposes as the file `$CREDENTIALS_DIRECTORY/cec-token`, readable by the service
//! only and never placed on a command line or in the environment.
//!
//! Invariants: a credential is read only when `$CREDENTIALS_DIRECTORY` is set (systemd sets
//! it only for units that load credentials); an unreadable or empty credential is an error
//! that names the file, never its content.

use std::path::{Path, PathBuf};

use super::CliError;

/// The credential name the units and `mount.cec` use for the Personal Access Token.
pub const TOKEN_CREDENTIAL: &str = "cec-token";

/// The directory systemd puts this service's credentials in, if any.
pub fn credentials_directory() -> Option<PathBuf> {
    std::env::var_os("CREDENTIALS_DIRECTORY")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `$CREDENTIALS_DIRECTORY/<name>`, if systemd gave this process credentials. Names are
/// single path components (systemd's own rule).
pub fn credential_path(name: &str) -> Result<Option<PathBuf>, CliError> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(CliError::usage(format!(
            "{name:?} is not a credential name (one file name, as in LoadCredential=NAME:PATH)"
        )));
    }
    Ok(credentials_directory().map(|dir| dir.join(name)))
}

/// The token from the `cec-token` credential, when the process runs with credentials and
/// that one exists.
pub fn token_from_credentials() -> Result<Option<String>, CliError> {
    match credential_path(TOKEN_CREDENTIAL)? {
        Some(path) if path.exists() => read_token_file(&path).map(Some),
        _ => Ok(None),
    }
}

/// The first line of a token file, trimmed; an error naming the file (never its content).
pub fn read_token_file(path: &Path) -> Result<String, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::failure(format!(
            "cannot read the token file {}: {e}",
            path.display()
        ))
    })?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(CliError::failure(format!(
            "the token file {} is empty",
            path.display()
        )));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_names_are_single_components() {
        assert!(credential_path("../etc/passwd").is_err());
        assert!(credential_path("a/b").is_err());
        assert!(credential_path("").is_err());
        assert!(credential_path("cec-token").is_ok());
    }

    #[test]
    fn token_files_give_their_first_line_and_refuse_empty_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "  secret-value \nsecond line\n").unwrap();
        assert_eq!(read_token_file(&path).unwrap(), "secret-value");
        std::fs::write(&path, "\n").unwrap();
        let err = read_token_file(&path).unwrap_err();
        assert!(err.message.contains("empty"), "{}", err.message);
        let missing = read_token_file(&dir.path().join("missing")).unwrap_err();
        assert!(
            missing.message.contains("cannot read"),
            "{}",
            missing.message
        );
    }
}
