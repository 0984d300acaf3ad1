//! `cec config add oauth|token|client-auth` (and the older `cec configure oauth|token|login`),
//! `cec config ls|use|rm|check-keyring|relog` and `cec clear`.
//!
//! Adding a profile always: checks that the URL answers as a Cells server, authenticates,
//! learns the login from `/a/frontend/state`, then saves under `<user>@<host>:<port>` (secrets
//! in the keyring, or in the file with a warning). Interactive when values are missing and a
//! terminal is there; fully driven by flags/variables otherwise.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

use clap::{Args, Subcommand};

use super::{CliError, GlobalArgs};
use crate::api::http::{HttpCellsApi, HttpOptions, build_http_client};
use crate::auth::oauth::{self, PendingAuthorization};
use crate::auth::{StaticToken, TokenSet, now_secs};
use crate::config::{
    AUTH_TYPE_OAUTH, AUTH_TYPE_PAT, AUTH_TYPE_SESSION, ConfigStore, Profile, keyring,
};

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Add (or update) a profile
    Add(AddArgs),
    /// List the profiles
    Ls,
    /// Make a profile the active one
    Use(UseArgs),
    /// Remove a profile and its secrets
    Rm(RmArgs),
    /// Store, read back and delete a dummy value in the keyring
    CheckKeyring,
    /// Authenticate again for an existing profile (new OAuth login, new token or password)
    Relog(RelogArgs),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    #[command(subcommand)]
    pub method: AddMethod,
}

/// `cec configure ...`: the older spelling.
#[derive(Debug, Args)]
pub struct ConfigureArgs {
    #[command(subcommand)]
    pub method: LegacyMethod,
}

#[derive(Debug, Subcommand)]
pub enum AddMethod {
    /// OAuth2 in a browser (loopback callback) or headless (copy/paste of a code)
    Oauth(OAuthArgs),
    /// A Personal Access Token (from --token, CEC_TOKEN, --token-file or a prompt)
    Token,
    /// Login and password (from --login/--password, CEC_LOGIN/CEC_PASSWORD or prompts)
    ClientAuth,
}

#[derive(Debug, Subcommand)]
pub enum LegacyMethod {
    /// Same as `cec config add oauth`
    Oauth(OAuthArgs),
    /// Same as `cec config add token`
    Token,
    /// Same as `cec config add client-auth`
    #[command(alias = "client-auth")]
    Login,
}

#[derive(Debug, Clone, Default, Args)]
pub struct OAuthArgs {
    /// Do not open a browser: print the URL and read the code shown by the server
    #[arg(long)]
    pub no_browser: bool,
    /// Configure non-interactively from a currently valid access token (prefer CEC_ID_TOKEN)
    #[arg(
        long,
        env = "CEC_ID_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub id_token: Option<String>,
    /// With --id-token: the refresh token that goes with it (prefer CEC_REFRESH_TOKEN)
    #[arg(
        long,
        env = "CEC_REFRESH_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        requires = "id_token"
    )]
    pub refresh_token: Option<String>,
    /// With --id-token: seconds the access token stays valid
    #[arg(long, value_name = "SECONDS", requires = "id_token")]
    pub expires_in: Option<i64>,
}

#[derive(Debug, Args)]
pub struct UseArgs {
    /// The profile id (`<user>@<host>:<port>`) or label; prompts when omitted
    pub id: Option<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// The profile id or label (default: the active profile, after confirmation)
    pub id: Option<String>,
    /// Do not ask for confirmation
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct RelogArgs {
    /// The profile id or label (default: the active profile)
    pub id: Option<String>,
    #[command(flatten)]
    pub oauth: OAuthArgs,
}

#[derive(Debug, Args)]
pub struct ClearArgs {
    /// Do not ask for confirmation
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// What a configuration method produced, before the login is known.
struct Credentials {
    auth_type: &'static str,
    access_token: String,
    refresh_token: String,
    expires_at: i64,
    password: String,
    login: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("auth_type", &self.auth_type)
            .field("login", &self.login)
            .finish_non_exhaustive()
    }
}

pub async fn run_config(args: ConfigArgs, global: &GlobalArgs) -> Result<(), CliError> {
    match args.command {
        ConfigCommand::Add(add) => match add.method {
            AddMethod::Oauth(o) => add_profile(global, Method::OAuth(o), None).await,
            AddMethod::Token => add_profile(global, Method::Token, None).await,
            AddMethod::ClientAuth => add_profile(global, Method::Login, None).await,
        },
        ConfigCommand::Ls => list(global).await,
        ConfigCommand::Use(u) => use_profile(global, u.id).await,
        ConfigCommand::Rm(r) => remove(global, r).await,
        ConfigCommand::CheckKeyring => check_keyring().await,
        ConfigCommand::Relog(r) => relog(global, r).await,
    }
}

pub async fn run_configure(args: ConfigureArgs, global: &GlobalArgs) -> Result<(), CliError> {
    match args.method {
        LegacyMethod::Oauth(o) => add_profile(global, Method::OAuth(o), None).await,
        LegacyMethod::Token => add_profile(global, Method::Token, None).await,
        LegacyMethod::Login => add_profile(global, Method::Login, None).await,
    }
}

enum Method {
    OAuth(OAuthArgs),
    Token,
    Login,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::config::ConfigError> + Send + 'static,
) -> Result<T, CliError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CliError::failure(e.to_string()))?
        .map_err(CliError::from)
}

fn interactive() -> bool {
    std::io::stdin().is_terminal()
}

/// Read one line from stdin after printing `label` on stderr.
fn prompt_line(label: &str) -> Result<String, CliError> {
    eprint!("{label}: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::failure(format!("cannot read the answer: {e}")))?;
    Ok(line.trim().to_string())
}

/// Read a secret without echo (from the terminal).
fn prompt_secret(label: &str) -> Result<String, CliError> {
    if !interactive() {
        return prompt_line(label);
    }
    rpassword::prompt_password(format!("{label}: "))
        .map(|s| s.trim().to_string())
        .map_err(|e| CliError::failure(format!("cannot read the answer: {e}")))
}

fn need(value: Option<String>, what: &str, flag: &str, secret: bool) -> Result<String, CliError> {
    if let Some(v) = value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
    {
        return Ok(v);
    }
    if !interactive() {
        return Err(CliError::usage(format!("{what} is missing: pass {flag}")));
    }
    let v = if secret {
        prompt_secret(what)?
    } else {
        prompt_line(what)?
    };
    if v.is_empty() {
        return Err(CliError::usage(format!("{what} cannot be empty")));
    }
    Ok(v)
}

/// Add (or, with `existing`, re-authenticate) a profile.
async fn add_profile(
    global: &GlobalArgs,
    method: Method,
    existing: Option<Profile>,
) -> Result<(), CliError> {
    let url_input = match &existing {
        Some(p) => Some(p.url.clone()),
        None => global.url.clone(),
    };
    let skip_verify = global.skip_verify || existing.as_ref().is_some_and(|p| p.skip_verify);
    let http = build_http_client(skip_verify)?;
    let given = url_input
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty());
    let url = match given {
        Some(typed) => super::server_url::check(&http, &typed).await?,
        None if !interactive() => {
            return Err(CliError::usage(
                "Server URL is missing: pass --url (or CEC_URL)",
            ));
        }
        // At the prompt, a wrong URL is asked again (three tries).
        None => {
            let mut tries = 0;
            loop {
                tries += 1;
                let typed = prompt_line("Server URL")?;
                let checked = if typed.is_empty() {
                    Err(CliError::usage("the server URL cannot be empty"))
                } else {
                    super::server_url::check(&http, &typed).await
                };
                match checked {
                    Ok(url) => break url,
                    Err(e) if tries < 3 => eprintln!("{}; try again", e.message),
                    Err(e) => return Err(e),
                }
            }
        }
    };

    let creds = match method {
        Method::OAuth(o) => oauth_credentials(&http, &url, &o).await?,
        Method::Token => {
            let token = need(
                global.resolved_token()?,
                "Personal Access Token",
                "--token-file, CEC_TOKEN or --token",
                true,
            )?;
            Credentials {
                auth_type: AUTH_TYPE_PAT,
                access_token: token,
                refresh_token: String::new(),
                expires_at: 0,
                password: String::new(),
                login: String::new(),
            }
        }
        Method::Login => {
            let login = match &existing {
                Some(p) => p.user.clone(),
                None => need(
                    global.login.clone(),
                    "Login",
                    "--login (or CEC_LOGIN)",
                    false,
                )?,
            };
            let password = need(
                global.password.clone(),
                "Password",
                "CEC_PASSWORD (or --password)",
                true,
            )?;
            let (jwt, expires_at) = oauth::session_login(&http, &url, &login, &password)
                .await
                .map_err(|e| match (&e, &existing) {
                    // No profile yet: relog has nothing to act on; the answer is to retype.
                    (crate::api::ApiError::Auth(_), None) => CliError::failure(format!(
                        "the server refused the login or password of {login}: check them and \
                         run the command again"
                    )),
                    _ => CliError::from(e),
                })?;
            Credentials {
                auth_type: AUTH_TYPE_SESSION,
                access_token: jwt,
                refresh_token: String::new(),
                expires_at,
                password,
                login,
            }
        }
    };

    // Learn (or check) the login with the new token.
    let tokens = Arc::new(StaticToken::new(
        creds.access_token.clone(),
        "the token was refused: check it (or create a new one) and retry",
    ));
    let options = HttpOptions {
        client: Some(http.clone()),
        skip_verify,
        max_retries: 2,
        ..HttpOptions::default()
    };
    let api = HttpCellsApi::new(&url, tokens, options)?;
    let login = api.session_login().await?;
    if !creds.login.is_empty() && creds.login != login {
        tracing::debug!("session login differs from the given login");
    }

    let mut profile = existing.clone().unwrap_or_else(|| Profile {
        use_token_cache: true,
        ..Profile::default()
    });
    profile.auth_type = creds.auth_type.to_string();
    profile.url = url.clone();
    profile.user = login.clone();
    profile.skip_verify = skip_verify;
    profile.id_token.clear();
    profile.refresh_token.clear();
    profile.password.clear();
    match creds.auth_type {
        AUTH_TYPE_OAUTH => {
            profile.id_token = creds.access_token;
            profile.refresh_token = creds.refresh_token;
            profile.token_expires_at = creds.expires_at;
        }
        AUTH_TYPE_SESSION => {
            profile.password = creds.password;
            profile.token_expires_at = 0;
        }
        _ => {
            profile.id_token = creds.access_token;
            profile.token_expires_at = 0;
        }
    }
    profile.label = profile.default_label();
    profile.created_at_version = env!("CARGO_PKG_VERSION").to_string();
    if global.skip_keyring {
        profile.skip_keyring = true;
    } else if existing.is_none() {
        profile.skip_keyring = false;
    }
    let store = global.config_store();
    let replace = existing.as_ref().map(|p| p.id());
    let (id, warning) = blocking({
        let store = store.clone();
        move || {
            let _lock = store.lock()?;
            store.store_profile(&profile, true, replace.as_deref())
        }
    })
    .await?;
    if let Some(w) = warning {
        eprintln!("Warning: {w}");
    }
    println!(
        "Profile {id} saved in {} and active: {login} on {url}",
        store.path().display()
    );
    Ok(())
}

async fn oauth_credentials(
    http: &reqwest::Client,
    url: &str,
    args: &OAuthArgs,
) -> Result<Credentials, CliError> {
    if let Some(token) = args
        .id_token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        return Ok(Credentials {
            auth_type: AUTH_TYPE_OAUTH,
            access_token: token.to_string(),
            refresh_token: args.refresh_token.clone().unwrap_or_default(),
            expires_at: now_secs() + args.expires_in.unwrap_or(600),
            password: String::new(),
            login: String::new(),
        });
    }
    let set = interactive_oauth(http, url, args.no_browser).await?;
    Ok(Credentials {
        auth_type: AUTH_TYPE_OAUTH,
        access_token: set.access_token,
        refresh_token: set.refresh_token,
        expires_at: now_secs() + set.expires_in,
        password: String::new(),
        login: String::new(),
    })
}

/// The browser flow with the loopback callback, or the copy/paste flow through `/oauth2/oob`.
async fn interactive_oauth(
    http: &reqwest::Client,
    url: &str,
    no_browser: bool,
) -> Result<TokenSet, CliError> {
    if !no_browser {
        match oauth::bind_loopback().await {
            Ok(listener) => {
                let pending = PendingAuthorization::new(url, oauth::LOOPBACK_REDIRECT)?;
                eprintln!("Opening the login page in your browser:\n{}", pending.url);
                if webbrowser::open(&pending.url).is_ok() {
                    eprintln!(
                        "Waiting for the browser to come back to {}",
                        oauth::LOOPBACK_REDIRECT
                    );
                    let code = tokio::time::timeout(
                        std::time::Duration::from_secs(600),
                        oauth::wait_for_callback(listener, pending.state()),
                    )
                    .await
                    .map_err(|_| {
                        CliError::failure("no answer from the browser within 10 minutes")
                    })??;
                    let state = pending.state().to_string();
                    let _ = state;
                    return Ok(pending.exchange(http, url, &code).await?);
                }
                eprintln!("Could not open a browser: using the copy/paste flow instead.");
            }
            Err(_) => eprintln!(
                "Port {} is busy: using the copy/paste flow instead.",
                oauth::LOOPBACK_PORT
            ),
        }
    }
    let pending = PendingAuthorization::new(url, &oauth::oob_redirect(url))?;
    eprintln!(
        "Open this URL in a browser, log in, then paste the code the page shows:\n{}",
        pending.url
    );
    let code = prompt_line("Code")?;
    if code.is_empty() {
        return Err(CliError::usage("no code was pasted"));
    }
    Ok(pending.exchange(http, url, &code).await?)
}

/// Find a profile by id or label.
fn find_id(list: &crate::config::ConfigList, wanted: &str) -> Option<String> {
    if list.configs.contains_key(wanted) {
        return Some(wanted.to_string());
    }
    let by_label: Vec<&String> = list
        .configs
        .iter()
        .filter(|(_, p)| p.label == wanted)
        .map(|(id, _)| id)
        .collect();
    if by_label.len() == 1 {
        Some(by_label[0].clone())
    } else {
        None
    }
}

async fn list(global: &GlobalArgs) -> Result<(), CliError> {
    let store = global.config_store();
    let list = blocking(move || store.load()).await?;
    if list.configs.is_empty() {
        println!("No profile: run `cec config add oauth|token|client-auth`");
        return Ok(());
    }
    let rows: Vec<[String; 6]> = list
        .configs
        .iter()
        .map(|(id, p)| {
            [
                if *id == list.active_config_id {
                    "*".into()
                } else {
                    String::new()
                },
                id.clone(),
                if p.label.is_empty() {
                    p.default_label()
                } else {
                    p.label.clone()
                },
                p.user.clone(),
                p.url.clone(),
                p.auth_type_label().to_string(),
            ]
        })
        .collect();
    let header = ["ACTIVE", "ID", "LABEL", "USER", "URL", "TYPE"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", line(header.to_vec()));
    for row in &rows {
        println!("{}", line(row.iter().map(String::as_str).collect()));
    }
    Ok(())
}

async fn use_profile(global: &GlobalArgs, id: Option<String>) -> Result<(), CliError> {
    let store = global.config_store();
    let chosen = match id {
        Some(id) => id,
        None => {
            let list = blocking({
                let store = store.clone();
                move || store.load()
            })
            .await?;
            if list.configs.is_empty() {
                return Err(CliError::failure(
                    "no profile: run `cec config add oauth` (or `token`, `client-auth`) first",
                ));
            }
            if !interactive() {
                return Err(CliError::usage(
                    "which profile? pass its id (see `cec config ls`)",
                ));
            }
            let ids: Vec<&String> = list.configs.keys().collect();
            for (i, id) in ids.iter().enumerate() {
                eprintln!("  {}) {id}", i + 1);
            }
            let answer = prompt_line("Profile number")?;
            let n: usize = answer
                .parse()
                .map_err(|_| CliError::usage("not a profile number"))?;
            ids.get(n.wrapping_sub(1))
                .map(|s| s.to_string())
                .ok_or_else(|| CliError::usage("not a profile number"))?
        }
    };
    let active = blocking(move || {
        let _lock = store.lock()?;
        let mut list = store.load()?;
        let id = find_id(&list, &chosen)
            .ok_or_else(|| crate::config::ConfigError::UnknownProfile(chosen.clone()))?;
        list.active_config_id = id.clone();
        store.save(&list)?;
        Ok(id)
    })
    .await?;
    println!("The active profile is now {active}");
    Ok(())
}

async fn remove(global: &GlobalArgs, args: RmArgs) -> Result<(), CliError> {
    let store = global.config_store();
    let list = blocking({
        let store = store.clone();
        move || store.load()
    })
    .await?;
    let (id, explicit) = match &args.id {
        Some(wanted) => (
            find_id(&list, wanted).ok_or_else(|| {
                CliError::not_found(format!(
                    "no profile with id `{wanted}`: see `cec config ls`"
                ))
            })?,
            true,
        ),
        None if !list.active_config_id.is_empty() => (list.active_config_id.clone(), false),
        None => return Err(CliError::failure("no active profile to remove")),
    };
    if !explicit && !args.yes {
        if !interactive() {
            return Err(CliError::usage(format!(
                "remove the active profile {id}? pass its id or --yes"
            )));
        }
        let answer = prompt_line(&format!("Forget the profile {id}? [y/N]"))?;
        if !answer.eq_ignore_ascii_case("y") && !answer.eq_ignore_ascii_case("yes") {
            println!("Nothing removed");
            return Ok(());
        }
    }
    let removed = id.clone();
    let active = blocking(move || {
        let _lock = store.lock()?;
        store.remove_profile(&id)
    })
    .await?;
    println!("Removed {removed}");
    if !active.is_empty() {
        println!("The active profile is {active}");
    }
    Ok(())
}

async fn check_keyring() -> Result<(), CliError> {
    println!("Checking the keyring service {}", keyring::SERVICE);
    let result = tokio::task::spawn_blocking(keyring::check)
        .await
        .map_err(|e| CliError::failure(e.to_string()))?;
    match result {
        Ok(()) => {
            println!("The keyring is here and working.");
            Ok(())
        }
        Err(e) => Err(CliError::failure(format!(
            "the keyring is not usable ({e}): secrets would be stored in clear text in the config file"
        ))),
    }
}

async fn relog(global: &GlobalArgs, args: RelogArgs) -> Result<(), CliError> {
    let store = global.config_store();
    let wanted = args.id.clone();
    let profile = blocking(move || {
        let list = store.load()?;
        let id = match wanted {
            Some(w) => find_id(&list, &w).ok_or(crate::config::ConfigError::UnknownProfile(w))?,
            None if !list.active_config_id.is_empty() => list.active_config_id.clone(),
            None => return Err(crate::config::ConfigError::NoActiveProfile),
        };
        let mut p = list
            .configs
            .get(&id)
            .cloned()
            .ok_or(crate::config::ConfigError::UnknownProfile(id.clone()))?;
        // Secrets are about to be replaced: a missing keyring entry is fine here.
        let _ = store.fill_secrets(&id, &mut p);
        Ok(p)
    })
    .await?;
    let method = match profile.normalized_auth_type() {
        AUTH_TYPE_OAUTH => Method::OAuth(args.oauth),
        AUTH_TYPE_SESSION => Method::Login,
        _ => Method::Token,
    };
    add_profile(global, method, Some(profile)).await
}

/// `cec clear`: every profile and its keyring entry.
pub async fn run_clear(args: ClearArgs, global: &GlobalArgs) -> Result<(), CliError> {
    let store: ConfigStore = global.config_store();
    if !args.yes && interactive() {
        let answer = prompt_line("Forget every profile and its secrets? [y/N]")?;
        if !answer.eq_ignore_ascii_case("y") && !answer.eq_ignore_ascii_case("yes") {
            println!("Nothing removed");
            return Ok(());
        }
    }
    let path = store.path().display().to_string();
    let count = blocking(move || {
        let _lock = store.lock()?;
        let list = store.load()?;
        let n = list.configs.len();
        for id in list.configs.keys() {
            store.remove_profile(id)?;
        }
        Ok(n)
    })
    .await?;
    println!("Removed {count} profile(s) from {path}");
    Ok(())
}
