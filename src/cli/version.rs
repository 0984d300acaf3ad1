//! `cec version`: the client's version, and the server's version for the active profile (or
//! the non-persistent connection) when one is configured and reachable.

use std::time::Duration;

use super::{CliError, GlobalArgs, connect_with};
use crate::api::http::HttpOptions;

pub async fn run_version(global: &GlobalArgs) -> Result<(), CliError> {
    println!("cec version {}", env!("CARGO_PKG_VERSION"));
    let configured = global.url.is_some() || global.config_store().path().exists();
    if !configured {
        return Ok(());
    }
    let options = HttpOptions {
        max_retries: 1,
        ..HttpOptions::default()
    };
    let server = tokio::time::timeout(Duration::from_secs(20), async {
        let session = connect_with(global, options).await?;
        Ok::<_, CliError>((
            session.base_url.clone(),
            session.api.server_version().await?,
        ))
    })
    .await;
    match server {
        Ok(Ok((url, v))) => println!("Server {url}: Pydio Cells {v}"),
        Ok(Err(e)) => println!("Server: unknown ({})", e.message),
        Err(_) => println!("Server: unknown (no answer within 20 s)"),
    }
    Ok(())
}
