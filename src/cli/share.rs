//! `cec share`: public links. `cec share PATH` creates one exactly as the official client
//! does (same request, same `Public link created at URL` line on stderr followed by an empty
//! line on stdout, so that scripts written for it keep working); options add an expiry, a
//! password, a download limit, a label, upload rights or another page template. `share ls`,
//! `share show`, `share update` and `share rm` manage the user's links, named by the shared
//! path, the link's Uuid or its public URL.
//!
//! Invariants:
//! - An update reads the link, changes only what was asked and sends the whole object back
//!   (the server rewrites the link from the request); a protected link stays protected
//!   unless `--no-password` (the request says `PasswordEnabled` each time).
//! - A link password is read from the terminal (no echo) or a file, never from the command
//!   line, and never printed.
//! - A path holding several links is ambiguous for `show`-less commands: the command stops
//!   and lists them rather than pick one.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use super::files::remote_path;
use super::{CliError, GlobalArgs, Session, connect};
use crate::api::CellsApi;
use crate::api::shares::{
    LinkResource, PutShareLinkRequest, ShareLink, TEMPLATE_DOWNLOAD, TEMPLATE_FOLDER,
    TEMPLATE_PREVIEW, new_link_body,
};

#[derive(Debug, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Examples:\n  cec share common-files/report.pdf\n  \
cec share personal-files/photos --expire 7d --max-downloads 10 --link-password\n  \
cec share ls\n  cec share update personal-files/photos --expire never\n  \
cec share rm personal-files/photos\n\n\
`cec share PATH` prints `Public link created at URL` on stderr, as the official client \
does; --json prints the whole link on stdout instead. A link password is asked on the \
terminal (--link-password) or read from a file (--password-file): never on the command line. \
Anyone with the URL downloads with `cec get URL`, no account needed."
)]
pub struct ShareArgs {
    #[command(subcommand)]
    pub command: Option<ShareCommand>,
    /// The file or folder to share: <workspace>/<path>
    #[arg(required = true)]
    pub path: Option<String>,
    #[command(flatten)]
    pub options: LinkOptions,
    /// Print the whole link as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ShareCommand {
    /// List your public links: path, URL, expiry, downloads used / allowed
    Ls(LsArgs),
    /// Show the link(s) of a path, or one link by Uuid or URL
    Show(ShowArgs),
    /// Change a link (reads it, changes what is asked, sends it back whole)
    Update(UpdateArgs),
    /// Delete a link: its URL stops working at once
    Rm(RmArgs),
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print the links as JSON (one array)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A shared <workspace>/<path>, a link Uuid or a public link URL
    pub link: String,
    /// Print as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// A shared <workspace>/<path>, a link Uuid or a public link URL
    pub link: String,
    #[command(flatten)]
    pub options: LinkOptions,
    /// Remove the link's password
    #[arg(long, conflicts_with_all = ["link_password", "password_file"])]
    pub no_password: bool,
    /// Remove the upload right
    #[arg(long, conflicts_with = "upload")]
    pub no_upload: bool,
    /// Print the updated link as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// A shared <workspace>/<path>, a link Uuid or a public link URL
    pub link: String,
}

/// The page a visitor of the link sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Template {
    /// The folder minisite (the default, for files too, as the official client)
    Folder,
    /// A file's preview page (files only)
    Preview,
    /// A file's direct download page, without preview (files only)
    Download,
}

impl Template {
    fn name(self) -> &'static str {
        match self {
            Template::Folder => TEMPLATE_FOLDER,
            Template::Preview => TEMPLATE_PREVIEW,
            Template::Download => TEMPLATE_DOWNLOAD,
        }
    }
}

/// The options of a link, for `share PATH` and `share update`.
#[derive(Debug, Args, Default)]
pub struct LinkOptions {
    /// The link dies after this time (30m, 12h, 7d) or at this date (2026-12-31: the end of
    /// that day, UTC; 2026-12-31T18:00:00Z); `never` on update removes the expiry
    #[arg(long, value_name = "WHEN")]
    pub expire: Option<String>,
    /// Protect the link with a password, asked on the terminal
    #[arg(long)]
    pub link_password: bool,
    /// Protect the link with the password in this file (first line)
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// The link dies after this many downloads (0: no limit)
    #[arg(long, value_name = "N")]
    pub max_downloads: Option<i64>,
    /// The link's label (default: the shared item's name)
    #[arg(long)]
    pub label: Option<String>,
    /// The link's description
    #[arg(long)]
    pub description: Option<String>,
    /// Let visitors upload into the shared folder (folders only)
    #[arg(long)]
    pub upload: bool,
    /// The page visitors see
    #[arg(long, value_enum)]
    pub template: Option<Template>,
}

pub async fn run_share(args: ShareArgs, global: &GlobalArgs) -> Result<(), CliError> {
    match args.command {
        Some(ShareCommand::Ls(a)) => run_ls(a, global).await,
        Some(ShareCommand::Show(a)) => run_show(a, global).await,
        Some(ShareCommand::Update(a)) => run_update(a, global).await,
        Some(ShareCommand::Rm(a)) => run_rm(a, global).await,
        None => {
            let path = args
                .path
                .ok_or_else(|| CliError::usage("give the path to share"))?;
            run_create(&path, args.options, args.json, global).await
        }
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `--expire` as Unix seconds (0: never), relative to `now`.
pub fn parse_expire(text: &str, now: i64) -> Result<i64, CliError> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("never") || t == "0" {
        return Ok(0);
    }
    let bad = || {
        CliError::usage(format!(
            "--expire {t:?}: give a duration (30m, 12h, 7d), a date (2026-12-31) or a date and time (2026-12-31T18:00:00Z)"
        ))
    };
    let at = if let Ok(d) = humantime::parse_duration(t) {
        if d < Duration::from_secs(60) {
            return Err(CliError::usage(format!(
                "--expire {t:?}: a link must live at least a minute"
            )));
        }
        now.saturating_add(d.as_secs() as i64)
    } else {
        let full = if t.len() == 10 {
            format!("{t}T23:59:59Z")
        } else {
            t.to_string()
        };
        let when = humantime::parse_rfc3339_weak(full.trim_end_matches('Z'))
            .or_else(|_| humantime::parse_rfc3339(&full))
            .map_err(|_| bad())?;
        when.duration_since(UNIX_EPOCH)
            .map_err(|_| bad())?
            .as_secs() as i64
    };
    if at <= now {
        return Err(CliError::usage(format!("--expire {t:?} is in the past")));
    }
    Ok(at)
}

/// The link password asked for by the options, if any.
fn link_password(options: &LinkOptions) -> Result<Option<String>, CliError> {
    if let Some(file) = &options.password_file {
        let text = std::fs::read_to_string(file).map_err(|e| {
            CliError::failure(format!(
                "cannot read the password file {}: {e}",
                file.display()
            ))
        })?;
        let pw = text.lines().next().unwrap_or("").to_string();
        if pw.is_empty() {
            return Err(CliError::usage(format!(
                "the password file {} is empty",
                file.display()
            )));
        }
        return Ok(Some(pw));
    }
    if options.link_password {
        return prompt_new_password().map(Some);
    }
    Ok(None)
}

fn prompt_new_password() -> Result<String, CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::usage(
            "--link-password asks on a terminal; without one, use --password-file FILE",
        ));
    }
    let read = |label: &str| {
        rpassword::prompt_password(label)
            .map_err(|e| CliError::failure(format!("cannot read the password: {e}")))
    };
    let first = read("Link password: ")?;
    if first.is_empty() {
        return Err(CliError::usage("the link password cannot be empty"));
    }
    let again = read("Link password (again): ")?;
    if again != first {
        return Err(CliError::usage("the two passwords differ"));
    }
    Ok(first)
}

async fn run_create(
    path: &str,
    options: LinkOptions,
    json: bool,
    global: &GlobalArgs,
) -> Result<(), CliError> {
    let remote = remote_path(path);
    if remote.is_empty() || !remote.contains('/') {
        return Err(CliError::usage(format!(
            "{path:?}: give a file or folder inside a workspace (<workspace>/<path>)"
        )));
    }
    // Everything asked locally before any request.
    let expire = options
        .expire
        .as_deref()
        .map(|e| parse_expire(e, now()))
        .transpose()?;
    if options.max_downloads.is_some_and(|n| n < 0) {
        return Err(CliError::usage("--max-downloads must be 0 or more"));
    }
    let password = link_password(&options)?;
    let session = connect(global).await?;
    let node = session.api.stat(&remote).await?.ok_or_else(|| {
        CliError::not_found(format!(
            "cannot find {remote} on the server: no link created"
        ))
    })?;
    if options.upload && !node.is_folder() {
        return Err(CliError::usage(
            "--upload is for folders: a file link cannot receive uploads",
        ));
    }
    if node.is_folder()
        && matches!(
            options.template,
            Some(Template::Preview | Template::Download)
        )
    {
        return Err(CliError::usage(
            "--template preview and download are for files",
        ));
    }
    let label = options
        .label
        .clone()
        .unwrap_or_else(|| node.name().to_string());
    // The official client's body, with what the options add.
    let mut body = new_link_body(&node.uuid, &label);
    if let Some(t) = options.template {
        body["ViewTemplateName"] = json!(t.name());
    }
    if options.upload {
        body["Permissions"] = json!(["Download", "Preview", "Upload"]);
    }
    if let Some(end) = expire.filter(|e| *e > 0) {
        body["AccessEnd"] = json!(end.to_string());
    }
    if let Some(n) = options.max_downloads.filter(|n| *n > 0) {
        body["MaxDownloads"] = json!(n.to_string());
    }
    if let Some(d) = options.description.as_deref().filter(|d| !d.is_empty()) {
        body["Description"] = json!(d);
    }
    let mut request = PutShareLinkRequest {
        share_link: body,
        ..Default::default()
    };
    if let Some(pw) = password {
        request.password_enabled = true;
        request.create_password = pw;
        request.share_link["PasswordRequired"] = json!(true);
    }
    let link = session.api.put_share_link(&request).await.map_err(|e| {
        let e = CliError::from(e);
        CliError::failure(format!("cannot create a link on {remote}: {}", e.message))
    })?;
    let url = link.public_url(&session.base_url);
    if json {
        print_json(&link_json(&link, &remote, &session.base_url))?;
    } else {
        // As the official client: the line on stderr, an empty line on stdout.
        eprintln!("Public link created at {url}");
        println!();
    }
    Ok(())
}

/// A link as JSON for the user: the server's object plus the absolute URL and the path.
fn link_json(link: &ShareLink, path: &str, base_url: &str) -> Value {
    let mut v = serde_json::to_value(link).unwrap_or(Value::Null);
    if let Value::Object(o) = &mut v {
        o.insert("PublicUrl".into(), json!(link.public_url(base_url)));
        if !path.is_empty() {
            o.insert("Path".into(), json!(path));
        }
    }
    v
}

fn print_json(v: &Value) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(v).map_err(|e| CliError::failure(e.to_string()))?;
    println!("{text}");
    Ok(())
}

/// The user's links, each with the path(s) it shares (one link is read once).
async fn all_links(session: &Session) -> Result<Vec<(String, ShareLink)>, CliError> {
    let resources = session.api.list_share_links().await?;
    let mut out: Vec<(String, ShareLink)> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for r in &resources {
        if seen.contains(&r.link_uuid) {
            continue;
        }
        seen.push(r.link_uuid.clone());
        let paths: Vec<&str> = resources
            .iter()
            .filter(|x| x.link_uuid == r.link_uuid)
            .map(|x| x.path.as_str())
            .collect();
        match session.api.get_share_link(&r.link_uuid).await {
            Ok(link) => out.push((paths.join(", "), link)),
            // Deleted meanwhile.
            Err(crate::api::ApiError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

fn expiry_text(access_end: i64, now: i64) -> String {
    if access_end == 0 {
        return "never".into();
    }
    let t = UNIX_EPOCH + Duration::from_secs(access_end.max(0) as u64);
    let date = humantime::format_rfc3339_seconds(t).to_string();
    if access_end <= now {
        format!("{date} (expired)")
    } else {
        date
    }
}

fn downloads_text(link: &ShareLink) -> String {
    if link.max_downloads > 0 {
        format!("{}/{}", link.current_downloads, link.max_downloads)
    } else {
        format!("{}/unlimited", link.current_downloads)
    }
}

async fn run_ls(args: LsArgs, global: &GlobalArgs) -> Result<(), CliError> {
    let session = connect(global).await?;
    let links = all_links(&session).await?;
    if args.json {
        let v: Vec<Value> = links
            .iter()
            .map(|(p, l)| link_json(l, p, &session.base_url))
            .collect();
        return print_json(&Value::Array(v));
    }
    if links.is_empty() {
        eprintln!("No public links");
        return Ok(());
    }
    let now = now();
    let mut out = std::io::stdout().lock();
    for (path, link) in &links {
        let mut flags = Vec::new();
        if link.password_required {
            flags.push("password");
        }
        if link.allows_upload() {
            flags.push("upload");
        }
        let _ = writeln!(
            out,
            "{}\t{}\texpires: {}\tdownloads: {}{}",
            super::files::shown_name(path, std::io::stdout().is_terminal()),
            link.public_url(&session.base_url),
            expiry_text(link.access_end, now),
            downloads_text(link),
            if flags.is_empty() {
                String::new()
            } else {
                format!("\t{}", flags.join(","))
            }
        );
    }
    Ok(())
}

fn looks_like_uuid(s: &str) -> bool {
    s.len() == 36
        && s.chars().enumerate().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// The links `arg` names: a link Uuid, a public URL, or a shared path (all its links).
async fn find_links(session: &Session, arg: &str) -> Result<Vec<(String, ShareLink)>, CliError> {
    let arg = arg.trim();
    if looks_like_uuid(arg) {
        let link = session.api.get_share_link(arg).await.map_err(|e| match e {
            crate::api::ApiError::NotFound(_) => {
                CliError::not_found(format!("no link with the id {arg}"))
            }
            e => e.into(),
        })?;
        let path = session
            .api
            .list_share_links()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.link_uuid == link.uuid)
            .map(|r| r.path)
            .collect::<Vec<_>>()
            .join(", ");
        return Ok(vec![(path, link)]);
    }
    if arg.starts_with("http://") || arg.starts_with("https://") {
        let address = crate::api::public_link::parse_link_url(arg).map_err(CliError::usage)?;
        let found: Vec<_> = all_links(session)
            .await?
            .into_iter()
            .filter(|(_, l)| l.link_hash == address.hash)
            .collect();
        if found.is_empty() {
            return Err(CliError::not_found(format!(
                "none of your links has the address {arg}"
            )));
        }
        return Ok(found);
    }
    let remote = remote_path(arg);
    let node = session
        .api
        .stat(&remote)
        .await?
        .ok_or_else(|| CliError::not_found(format!("cannot find {remote} on the server")))?;
    let resources: Vec<LinkResource> = session
        .api
        .list_share_links()
        .await?
        .into_iter()
        .filter(|r| r.node_uuid == node.uuid)
        .collect();
    let mut out = Vec::new();
    for r in resources {
        if out
            .iter()
            .any(|(_, l): &(String, ShareLink)| l.uuid == r.link_uuid)
        {
            continue;
        }
        out.push((
            remote.clone(),
            session.api.get_share_link(&r.link_uuid).await?,
        ));
    }
    if out.is_empty() {
        return Err(CliError::not_found(format!("{remote} has no public link")));
    }
    Ok(out)
}

/// The one link `arg` names, or an error listing them when there are several.
async fn find_link(session: &Session, arg: &str) -> Result<(String, ShareLink), CliError> {
    let mut links = find_links(session, arg).await?;
    if links.len() > 1 {
        let ids: Vec<String> = links
            .iter()
            .map(|(_, l)| format!("{} ({})", l.uuid, l.public_url(&session.base_url)))
            .collect();
        return Err(CliError::usage(format!(
            "{arg} has {} links; name one by its id: {}",
            links.len(),
            ids.join(", ")
        )));
    }
    Ok(links.remove(0))
}

fn print_link(path: &str, link: &ShareLink, base_url: &str) {
    let now = now();
    let perms = if link.permissions.is_empty() {
        "none".to_string()
    } else {
        link.permissions.join(", ")
    };
    let template = match link.view_template_name.as_str() {
        TEMPLATE_PREVIEW => "preview",
        TEMPLATE_DOWNLOAD => "download",
        TEMPLATE_FOLDER | "" => "folder",
        other => other,
    };
    println!("URL:         {}", link.public_url(base_url));
    let tty = std::io::stdout().is_terminal();
    println!("Path:        {}", super::files::shown_name(path, tty));
    println!(
        "Label:       {}",
        super::files::shown_name(&link.label, tty)
    );
    if !link.description.is_empty() {
        println!(
            "Description: {}",
            super::files::shown_name(&link.description, tty)
        );
    }
    println!("Id:          {}", link.uuid);
    println!("Expires:     {}", expiry_text(link.access_end, now));
    println!("Downloads:   {}", downloads_text(link));
    println!(
        "Password:    {}",
        if link.password_required { "yes" } else { "no" }
    );
    println!("Permissions: {perms}");
    println!("Template:    {template}");
}

async fn run_show(args: ShowArgs, global: &GlobalArgs) -> Result<(), CliError> {
    let session = connect(global).await?;
    let links = find_links(&session, &args.link).await?;
    if args.json {
        let v: Vec<Value> = links
            .iter()
            .map(|(p, l)| link_json(l, p, &session.base_url))
            .collect();
        return print_json(&if v.len() == 1 {
            v.into_iter().next().unwrap_or(Value::Null)
        } else {
            Value::Array(v)
        });
    }
    for (i, (path, link)) in links.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print_link(path, link, &session.base_url);
    }
    Ok(())
}

async fn run_update(args: UpdateArgs, global: &GlobalArgs) -> Result<(), CliError> {
    let o = &args.options;
    let expire = o
        .expire
        .as_deref()
        .map(|e| parse_expire(e, now()))
        .transpose()?;
    if o.max_downloads.is_some_and(|n| n < 0) {
        return Err(CliError::usage("--max-downloads must be 0 or more"));
    }
    if o.label.as_deref().is_some_and(|l| l.trim().is_empty()) {
        return Err(CliError::usage("--label cannot be empty"));
    }
    let password = link_password(o)?;
    let session = connect(global).await?;
    let (path, link) = find_link(&session, &args.link).await?;
    let mut changed = link.clone();
    if let Some(e) = expire {
        changed.access_end = e;
    }
    if let Some(n) = o.max_downloads {
        changed.max_downloads = n;
    }
    if let Some(l) = &o.label {
        changed.label = l.clone();
    }
    if let Some(d) = &o.description {
        changed.description = d.clone();
    }
    if let Some(t) = o.template {
        changed.view_template_name = t.name().to_string();
    }
    // Permissions come back recomputed (`pydio_unique_dl` drops Preview): rebuilt from
    // what is asked and what the link allowed.
    let upload = (link.allows_upload() || o.upload) && !args.no_upload;
    if o.upload || args.no_upload || o.template.is_some() {
        let mut p = vec!["Download".to_string(), "Preview".to_string()];
        if upload {
            p.push("Upload".into());
        }
        changed.permissions = p;
    }
    let mut request = PutShareLinkRequest {
        share_link: Value::Null,
        // Said each time: `false` on a protected link removes its password.
        password_enabled: link.password_required,
        ..Default::default()
    };
    if let Some(pw) = password {
        request.password_enabled = true;
        if link.password_required {
            request.update_password = pw;
        } else {
            request.create_password = pw;
        }
        changed.password_required = true;
    }
    if args.no_password {
        request.password_enabled = false;
        changed.password_required = false;
    }
    // The server counts downloads anew after an update: the counter is sent as it was.
    request.share_link = serde_json::to_value(&changed)
        .map_err(|e| CliError::failure(format!("cannot encode the link: {e}")))?;
    let updated = session.api.put_share_link(&request).await.map_err(|e| {
        let e = CliError::from(e);
        CliError::failure(format!(
            "cannot update the link {}: {}",
            link.uuid, e.message
        ))
    })?;
    if args.json {
        print_json(&link_json(&updated, &path, &session.base_url))?;
    } else {
        eprintln!(
            "Public link updated: {}",
            updated.public_url(&session.base_url)
        );
    }
    Ok(())
}

async fn run_rm(args: RmArgs, global: &GlobalArgs) -> Result<(), CliError> {
    let session = connect(global).await?;
    let (_, link) = find_link(&session, &args.link).await?;
    session.api.delete_share_link(&link.uuid).await?;
    eprintln!(
        "Public link removed: {}",
        link.public_url(&session.base_url)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_forms() {
        let now = 1_800_000_000;
        assert_eq!(parse_expire("7d", now).unwrap(), now + 7 * 86400);
        assert_eq!(parse_expire("12h", now).unwrap(), now + 12 * 3600);
        assert_eq!(parse_expire("never", now).unwrap(), 0);
        // 2027-01-15: the end of that day, UTC.
        assert_eq!(parse_expire("2027-01-15", now).unwrap(), 1_800_057_599);
        assert_eq!(
            parse_expire("2027-01-15T12:00:00Z", now).unwrap(),
            1_800_014_400
        );
        assert_eq!(parse_expire("2020-01-01", now).unwrap_err().code, 2);
        assert_eq!(parse_expire("soon", now).unwrap_err().code, 2);
        assert_eq!(parse_expire("10s", now).unwrap_err().code, 2);
    }

    #[test]
    fn uuids_are_told_from_paths() {
        assert!(looks_like_uuid("6a5e1c2d-0000-4000-8000-0123456789ab"));
        assert!(!looks_like_uuid("personal-files/a.txt"));
    }
}
