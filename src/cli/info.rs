//! `cec info`: the active profile (or the non-persistent connection), the server it points
//! to, its version and whether the token works. Never prints a secret.

use super::{CliError, GlobalArgs, connect};

pub async fn run_info(global: &GlobalArgs) -> Result<(), CliError> {
    let store = global.config_store();
    let path = store.path().display().to_string();
    let session = connect(global).await?;
    // Checks the token too (bootconf alone answers anonymous callers).
    let login = session.api.session_login().await?;
    println!("Server:       {}", session.base_url);
    println!("User:         {login}");
    match &session.profile_id {
        Some(id) => {
            let profile = tokio::task::spawn_blocking(move || store.load())
                .await
                .map_err(|e| CliError::failure(e.to_string()))??
                .configs
                .get(id)
                .cloned();
            println!("Profile:      {id} (from {path})");
            if let Some(p) = profile {
                println!("Auth type:    {}", p.auth_type_label());
                println!(
                    "Secrets in:   {}",
                    if p.skip_keyring {
                        "the config file (clear text)"
                    } else {
                        "the keyring"
                    }
                );
                println!("Skip verify:  {}", p.skip_verify);
            }
        }
        None => println!("Profile:      none (non-persistent, from flags or environment)"),
    }
    let version = session.api.server_version().await?;
    println!("Server version: {version}");
    Ok(())
}
