//! `cec info`: the active profile (or the non-persistent connection), the server it points
//! to, its version and whether the token works. Never prints a secret.
//!
//! Invariant: what is known locally (the profile, its server, user and auth type) is printed
//! before anything is asked of the server, so a profile whose token expired or whose server
//! is away still shows which one it is; the failure then comes last, with exit code 1.

use super::{CliError, GlobalArgs, connect};

pub async fn run_info(global: &GlobalArgs) -> Result<(), CliError> {
    let store = global.config_store();
    let path = store.path().display().to_string();
    let non_persistent = global.url.as_deref().is_some_and(|u| !u.trim().is_empty());
    let mut shown_profile = None;
    if !non_persistent {
        let id = global.profile.clone();
        let profile = tokio::task::spawn_blocking({
            let store = store.clone();
            move || store.load_profile(id.as_deref())
        })
        .await
        .map_err(|e| CliError::failure(e.to_string()))??;
        println!("Profile:      {} (from {path})", profile.id());
        println!("Server:       {}", profile.url);
        println!("User:         {}", profile.user);
        println!("Auth type:    {}", profile.auth_type_label());
        println!(
            "Secrets in:   {}",
            if profile.skip_keyring {
                "the config file (clear text)"
            } else {
                "the keyring"
            }
        );
        println!("Skip verify:  {}", profile.skip_verify);
        shown_profile = Some(profile.id());
    }
    let session = connect(global).await?;
    // Checks the token too (bootconf alone answers anonymous callers).
    let login = session
        .api
        .session_login()
        .await
        .map_err(|e| match &shown_profile {
            Some(id) => CliError::failure(format!("the token of profile {id} does not work: {e}")),
            None => CliError::from(e),
        })?;
    if shown_profile.is_none() {
        println!("Server:       {}", session.base_url);
        println!("User:         {login}");
        println!("Profile:      none (non-persistent, from flags or environment)");
    }
    println!("Token:        valid (signed in as {login})");
    let version = session.api.server_version().await?;
    println!("Server version: {version}");
    Ok(())
}
