//! The remote file commands users know from the official client: `ls`, `mkdir`, `mv`, `cp`,
//! `rm` (recycle bin by default, `%` wildcard) and `restore`, all on paths
//! `<workspace>/<path>` (a `cells://` or `cells//` prefix is accepted and dropped).
//!
//! Invariants: output for scripts is stable (raw paths one per line, `--json`, fixed table
//! columns); "not found" exits with [`EXIT_NOT_FOUND`]; move, copy, delete and restore return
//! only once the server's job has finished.
//!
//! Names and paths from the server are printed by `ls` through [`shown_name`]: on a terminal
//! quoted as GNU `ls` does by default there (`--quoting-style=shell-escape`: `'a b'`,
//! `'a'$'\n''b'`), so that no control character or escape sequence reaches the terminal;
//! elsewhere (a pipe, a file) as they are, except that control characters become `?` (as
//! `ls -q`): a NUL or an escape sequence never reaches the output raw. `--json` escapes them.

use std::io::{IsTerminal, Write};

use clap::Args;
use serde_json::{Value, json};

use super::{CliError, EXIT_NOT_FOUND, GlobalArgs, connect};
use crate::api::{CellsApi, Node, Workspace, usermeta};
use crate::paths::parent_of;
use crate::sizes::human_size;

/// Strip the remote prefixes and the surrounding slashes of a user path.
pub fn remote_path(arg: &str) -> String {
    let p = arg
        .strip_prefix("cells://")
        .or_else(|| arg.strip_prefix("cells//"))
        .unwrap_or(arg);
    p.trim_matches('/').to_string()
}

/// `ls`: list a folder, the workspaces, or check existence.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// The folder or file to list; the workspaces when absent
    pub path: Option<String>,
    /// Show more information (Uuid, size, modification, internal hash)
    #[arg(short = 'd', long)]
    pub details: bool,
    /// List found paths, one per line (folders end with '/')
    #[arg(short = 'r', long)]
    pub raw: bool,
    /// Only check that the path exists: prints true/false, exit code 3 when missing
    #[arg(short = 'f', long)]
    pub exists: bool,
    /// Format each line with a template: {{.Type}} {{.Uuid}} {{.Name}} {{.Path}} {{.Hash}}
    /// {{.HumanSize}} {{.SizeBytes}} {{.TimeStamp}} {{.Date}}
    #[arg(long, value_name = "TEMPLATE")]
    pub format: Option<String>,
    /// Print the listing as JSON (one array of objects)
    #[arg(long)]
    pub json: bool,
    /// Long listing: size, modification, tags and a marker for nodes shared by a public link
    #[arg(short = 'l', long)]
    pub long: bool,
}

/// `mkdir`: create folders.
#[derive(Debug, Args)]
pub struct MkdirArgs {
    /// Folders to create (`<workspace>/<path>`)
    #[arg(required = true)]
    pub paths: Vec<String>,
    /// Create missing parents (an existing folder is never an error, as with the official
    /// client)
    #[arg(short = 'p', long)]
    pub parents: bool,
}

/// `mv` / `cp`: server-side move or copy.
#[derive(Debug, Args)]
pub struct MoveArgs {
    /// Source path(s), then the target: an existing folder receives the sources under their
    /// names, otherwise the target is the new full path of the single source
    #[arg(required = true, num_args = 2..)]
    pub paths: Vec<String>,
}

/// `rm`: delete to the recycle bin (default) or permanently.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Paths to delete; `<folder>/%` deletes every child of the folder
    #[arg(required = true)]
    pub paths: Vec<String>,
    /// Do not ask for confirmation
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Skip the recycle bin: delete permanently (cannot be undone)
    #[arg(short = 'p', long)]
    pub permanently: bool,
}

/// `restore`: bring nodes back from the recycle bin.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Paths in the recycle bin (`<ws>/recycle_bin/<name>`), or the original `<ws>/<name>`
    #[arg(required = true)]
    pub paths: Vec<String>,
    /// Instead of the recycle bin: make this version (an id from `cec versions PATH`) the
    /// current content of the one file PATH; the content it replaces remains a version
    #[arg(long, value_name = "ID")]
    pub version: Option<String>,
}

/// How `ls` prints one name (or path) from the server: see the module documentation.
pub fn shown_name(name: &str, terminal: bool) -> String {
    if !terminal {
        return name
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
    }
    let plain = |c: char| {
        c.is_alphanumeric() && !c.is_control()
            || "%+,-./:=@_".contains(c)
            || !c.is_ascii() && !c.is_control()
    };
    if !name.is_empty() && name.chars().all(plain) && !name.starts_with('~') {
        return name.to_string();
    }
    // GNU's shell-escape style: printable runs in single quotes, control characters as
    // $'\n' / $'\001' between them.
    let mut out = String::new();
    let mut quoted = String::new();
    let flush = |out: &mut String, quoted: &mut String| {
        if !quoted.is_empty() {
            out.push('\'');
            out.push_str(quoted);
            out.push('\'');
            quoted.clear();
        }
    };
    for c in name.chars() {
        if c.is_control() {
            flush(&mut out, &mut quoted);
            let escaped = match c {
                '\n' => "\\n".to_string(),
                '\t' => "\\t".to_string(),
                '\r' => "\\r".to_string(),
                '\x1b' => "\\E".to_string(),
                c if (c as u32) < 0x100 => format!("\\{:03o}", c as u32),
                c => format!("\\u{:04x}", c as u32),
            };
            out.push_str(&format!("$'{escaped}'"));
        } else if c == '\'' {
            flush(&mut out, &mut quoted);
            out.push_str("\"'\"");
        } else {
            quoted.push(c);
        }
    }
    flush(&mut out, &mut quoted);
    if out.is_empty() {
        out.push_str("''");
    }
    out
}

/// Kind label as the official client prints it.
fn type_label(node: &Node) -> &'static str {
    match node.meta.ws_scope() {
        Some("ROOM") => "Cell",
        Some(_) => "Workspace",
        None if node.is_folder() => "Folder",
        None => "File",
    }
}

/// A relative date (`3 minutes ago`).
pub fn human_age(mtime: i64) -> String {
    if mtime <= 0 {
        return "-".into();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let d = now - mtime;
    let (n, unit) = match d {
        ..=-1 => return "now".into(),
        0..=59 => return "now".into(),
        60..=3599 => (d / 60, "minute"),
        3600..=86_399 => (d / 3600, "hour"),
        86_400..=2_591_999 => (d / 86_400, "day"),
        2_592_000..=31_535_999 => (d / 2_592_000, "month"),
        _ => (d / 31_536_000, "year"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

fn node_json(node: &Node) -> Value {
    let mut v = json!({
        "type": type_label(node),
        "uuid": node.uuid,
        "name": node.name(),
        "path": node.path,
        "size": node.size,
        "mtime": node.mtime,
        "etag": node.etag,
    });
    if let Some(h) = node.cells_hash() {
        v["hash"] = json!(h);
    }
    let tags = usermeta::tags_of(node).unwrap_or_default();
    v["tags"] = json!(
        tags.split(',')
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
    );
    v["bookmark"] = json!(usermeta::is_bookmarked(node));
    v["shared"] = json!(usermeta::public_link_of(node).is_some());
    v
}

fn workspace_json(ws: &Workspace) -> Value {
    json!({
        "type": if ws.scope == "ROOM" { "Cell" } else { "Workspace" },
        "uuid": ws.uuid,
        "name": ws.slug,
        "path": ws.slug,
        "label": ws.label,
        "description": ws.description,
        "permissions": match (ws.can_read, ws.can_write) {
            (true, true) => "rw", (true, false) => "r", (false, true) => "w", _ => "",
        },
    })
}

/// Expand a `--format` template for one node.
fn render_template(template: &str, node: &Node, name: &str) -> String {
    let values = [
        ("Type", type_label(node).to_string()),
        ("Uuid", node.uuid.clone()),
        ("Name", name.to_string()),
        ("Path", node.path.clone()),
        ("Hash", node.cells_hash().unwrap_or("").to_string()),
        ("HumanSize", human_size(node.size)),
        ("SizeBytes", node.size.to_string()),
        ("TimeStamp", node.mtime.to_string()),
        ("Date", human_age(node.mtime)),
    ];
    let mut out = template.to_string();
    for (key, value) in values {
        for pattern in [format!("{{{{.{key}}}}}"), format!("{{{{ .{key} }}}}")] {
            out = out.replace(&pattern, &value);
        }
    }
    out
}

/// Print rows as aligned columns under a header.
pub fn print_table<R, S>(header: &[&str], rows: &[R])
where
    R: AsRef<[S]>,
    S: AsRef<str>,
{
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.as_ref().iter().enumerate() {
            widths[i] = widths[i].max(cell.as_ref().chars().count());
        }
    }
    let mut out = std::io::stdout().lock();
    let header: Vec<String> = header.iter().map(|h| h.to_uppercase()).collect();
    let _ = writeln!(out, "{}", table_line(&widths, &header));
    for row in rows {
        let _ = writeln!(out, "{}", table_line(&widths, row.as_ref()));
    }
}

/// One line of [`print_table`]: each cell but the last padded to its column's width plus two.
fn table_line<S: AsRef<str>>(widths: &[usize], cells: &[S]) -> String {
    let mut s = String::new();
    for (i, c) in cells.iter().enumerate() {
        let c = c.as_ref();
        s.push_str(c);
        if i + 1 < cells.len() {
            let pad = widths[i] - c.chars().count();
            s.push_str(&" ".repeat(pad + 2));
        }
    }
    s.trim_end().to_string()
}

pub async fn run_ls(args: LsArgs, global: &GlobalArgs) -> Result<(), CliError> {
    let modes = [
        args.details,
        args.raw,
        args.exists,
        args.format.is_some(),
        args.json,
        args.long,
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if modes > 1 {
        return Err(CliError::usage(
            "use at most one of --details, --raw, --exists, --format, --json, --long",
        ));
    }
    let session = connect(global).await?;
    let api = session.api.clone();
    let tty = std::io::stdout().is_terminal();
    let show = |name: &str| shown_name(name, tty);
    let path = remote_path(args.path.as_deref().unwrap_or(""));
    if path.is_empty() {
        if args.exists {
            println!("true");
            return Ok(());
        }
        let workspaces = api.list_workspaces().await?;
        return print_workspaces(&workspaces, &args, tty);
    }
    let node = api.stat(&path).await?;
    if args.exists {
        println!("{}", node.is_some());
        return if node.is_some() {
            Ok(())
        } else {
            Err(CliError {
                message: format!("{path} does not exist"),
                code: EXIT_NOT_FOUND,
            })
        };
    }
    let Some(node) = node else {
        return Err(CliError::not_found(format!(
            "could not list content, nothing found at {path}"
        )));
    };
    let children = if node.is_folder() {
        api.list_folder(&path).await?
    } else {
        vec![]
    };
    if args.json {
        let mut all = vec![node_json(&node)];
        all.extend(children.iter().map(node_json));
        println!(
            "{}",
            serde_json::to_string_pretty(&Value::Array(all)).unwrap_or_default()
        );
        return Ok(());
    }
    if args.raw || args.format.is_some() {
        let mut listed: Vec<&Node> = Vec::new();
        if !node.is_folder() {
            listed.push(&node);
        }
        listed.extend(children.iter());
        for n in listed {
            if let Some(t) = &args.format {
                println!("{}", show(&render_template(t, n, n.name())));
            } else if n.is_folder() {
                println!("{}/", show(&n.path));
            } else {
                println!("{}", show(&n.path));
            }
        }
        return Ok(());
    }
    let mut entries: Vec<(&Node, String)> = vec![(
        &node,
        if node.is_folder() {
            ".".to_string()
        } else {
            show(node.name())
        },
    )];
    entries.extend(children.iter().map(|c| (c, show(c.name()))));
    let count = entries.len();
    println!(
        "Found {count} node{} at {}:",
        if count == 1 { "" } else { "s" },
        show(&path)
    );
    if args.details {
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|(n, name)| {
                vec![
                    type_label(n).to_string(),
                    n.uuid.clone(),
                    name.clone(),
                    human_size(n.size),
                    human_age(n.mtime),
                    if n.is_folder() {
                        String::new()
                    } else {
                        n.cells_hash().unwrap_or("").to_string()
                    },
                ]
            })
            .collect();
        print_table(
            &["Type", "Uuid", "Name", "Size", "Modified", "Internal Hash"],
            &rows,
        );
    } else if args.long {
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|(n, name)| {
                vec![
                    type_label(n).to_string(),
                    human_size(n.size),
                    human_age(n.mtime),
                    if usermeta::public_link_of(n).is_some() {
                        "shared".into()
                    } else {
                        String::new()
                    },
                    show(&usermeta::tags_of(n).unwrap_or_default()),
                    name.clone(),
                ]
            })
            .collect();
        print_table(&["Type", "Size", "Modified", "Link", "Tags", "Name"], &rows);
    } else {
        // Cells borrowed from the entries: a 100,000-entry folder copies no name (issue 27).
        let rows: Vec<[&str; 2]> = entries
            .iter()
            .map(|(n, name)| [type_label(n), name.as_str()])
            .collect();
        print_table(&["Type", "Name"], &rows);
    }
    Ok(())
}

fn print_workspaces(workspaces: &[Workspace], args: &LsArgs, tty: bool) -> Result<(), CliError> {
    let show = |name: &str| shown_name(name, tty);
    if args.json {
        let all: Vec<Value> = workspaces.iter().map(workspace_json).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&Value::Array(all)).unwrap_or_default()
        );
        return Ok(());
    }
    if args.raw || args.format.is_some() {
        for ws in workspaces {
            match &args.format {
                Some(t) => println!("{}", show(&render_template(t, &ws.root, &ws.slug))),
                None => println!("{}/", show(&ws.slug)),
            }
        }
        return Ok(());
    }
    println!("Listing {} workspaces:", workspaces.len());
    if args.details {
        let rows: Vec<Vec<String>> = workspaces
            .iter()
            .map(|ws| {
                let v = workspace_json(ws);
                vec![
                    v["type"].as_str().unwrap_or("").to_string(),
                    ws.uuid.clone(),
                    show(&ws.slug),
                    show(&ws.label),
                    show(&ws.description),
                    v["permissions"].as_str().unwrap_or("").to_string(),
                ]
            })
            .collect();
        print_table(
            &[
                "Type",
                "Uuid",
                "Name",
                "Label",
                "Description",
                "Permissions",
            ],
            &rows,
        );
    } else {
        let rows: Vec<Vec<String>> = workspaces
            .iter()
            .map(|ws| {
                vec![
                    if ws.scope == "ROOM" {
                        "Cell"
                    } else {
                        "Workspace"
                    }
                    .to_string(),
                    show(&ws.slug),
                ]
            })
            .collect();
        print_table(&["Type", "Name"], &rows);
    }
    Ok(())
}

pub async fn run_mkdir(args: MkdirArgs, global: &GlobalArgs) -> Result<(), CliError> {
    let session = connect(global).await?;
    let api = session.api.clone();
    let mut to_create: Vec<String> = Vec::new();
    for arg in &args.paths {
        let path = remote_path(arg);
        if !path.contains('/') {
            return Err(CliError::usage(if arg.trim().is_empty() {
                "give a path inside a workspace (<workspace>/<folder>)".to_string()
            } else {
                format!("{arg}: give a path inside a workspace (<workspace>/<folder>)")
            }));
        }
        match api.stat(&path).await? {
            Some(n) if n.is_folder() => {
                // As the official client: an existing folder leaves nothing to do. The
                // server would accept its creation too, but we never ask it to.
                eprintln!("{path} already exists: nothing to do");
                continue;
            }
            Some(_) => {
                return Err(CliError::failure(format!(
                    "{path} already exists and is a file"
                )));
            }
            None => {}
        }
        // Collect the missing ancestors (only allowed with -p).
        let mut missing = vec![path.clone()];
        let mut parent = parent_of(&path).to_string();
        while parent.contains('/') {
            match api.stat(&parent).await? {
                Some(n) if n.is_folder() => break,
                Some(_) => {
                    return Err(CliError::failure(format!("{parent} is a file")));
                }
                None if args.parents => {
                    missing.push(parent.clone());
                    parent = parent_of(&parent).to_string();
                }
                None => {
                    return Err(CliError::not_found(format!(
                        "parent folder {parent} does not exist (use -p to create it)"
                    )));
                }
            }
        }
        if !parent.contains('/') && api.stat(&parent).await?.is_none() {
            return Err(CliError::not_found(format!(
                "workspace {parent} does not exist"
            )));
        }
        missing.reverse();
        for m in missing {
            if !to_create.contains(&m) {
                to_create.push(m);
            }
        }
    }
    if !to_create.is_empty() {
        api.create_folders(&to_create).await?;
    }
    for p in &to_create {
        eprintln!("Created folder {p}");
    }
    Ok(())
}

/// Resolve sources and target of `mv`/`cp`: `(sources, target, target_is_parent)`.
async fn move_plan(
    api: &dyn CellsApi,
    paths: &[String],
) -> Result<(Vec<String>, String, bool), CliError> {
    let (target, sources) = paths.split_last().expect("clap requires two paths");
    let target_raw = target.clone();
    let target = remote_path(target);
    let sources: Vec<String> = sources.iter().map(|s| remote_path(s)).collect();
    for s in &sources {
        if api.stat(s).await?.is_none() {
            return Err(CliError::not_found(format!("{s} does not exist")));
        }
    }
    let target_node = api.stat(&target).await?;
    match target_node {
        Some(t) if t.is_folder() => Ok((sources, target, true)),
        Some(_) => Err(CliError::failure(format!(
            "{target} already exists: remove it first"
        ))),
        None => {
            if sources.len() > 1 || target_raw.ends_with('/') {
                return Err(CliError::not_found(format!(
                    "target folder {target} does not exist"
                )));
            }
            let parent = parent_of(&target);
            if parent.is_empty() || !api.stat(parent).await?.is_some_and(|n| n.is_folder()) {
                return Err(CliError::not_found(format!(
                    "target folder {parent} does not exist"
                )));
            }
            Ok((sources, target, false))
        }
    }
}

pub async fn run_mv(args: MoveArgs, global: &GlobalArgs) -> Result<(), CliError> {
    let session = connect(global).await?;
    let api = session.api.clone();
    let (sources, target, parent) = move_plan(api.as_ref(), &args.paths).await?;
    api.move_nodes(&sources, &target, parent).await?;
    eprintln!("Moved {} to {target}", sources.join(", "));
    Ok(())
}

pub async fn run_cp(args: MoveArgs, global: &GlobalArgs) -> Result<(), CliError> {
    let session = connect(global).await?;
    let api = session.api.clone();
    let (sources, target, parent) = move_plan(api.as_ref(), &args.paths).await?;
    api.copy_nodes(&sources, &target, parent).await?;
    eprintln!("Copied {} to {target}", sources.join(", "));
    Ok(())
}

pub async fn run_rm(args: RmArgs, global: &GlobalArgs) -> Result<(), CliError> {
    if !args.force && std::io::stdin().is_terminal() {
        eprint!(
            "Delete {}{}? [y/N] ",
            args.paths.join(", "),
            if args.permanently { " permanently" } else { "" }
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "Yes") {
            eprintln!("Aborted");
            return Ok(());
        }
    }
    let session = connect(global).await?;
    let api = session.api.clone();
    let mut targets: Vec<String> = Vec::new();
    let mut missing = 0usize;
    for arg in &args.paths {
        let path = remote_path(arg);
        if path == "%" || path.ends_with("/%") {
            let folder = path.trim_end_matches('%').trim_end_matches('/').to_string();
            if folder.is_empty() || api.stat(&folder).await?.is_none() {
                eprintln!("Warning: {folder} not found: nothing deleted there");
                missing += 1;
                continue;
            }
            for child in api.list_folder(&folder).await? {
                if child.name() != "recycle_bin" {
                    targets.push(child.path.clone());
                }
            }
        } else if api.stat(&path).await?.is_none() {
            eprintln!("Warning: {path} not found: it could not be deleted");
            missing += 1;
        } else if !path.contains('/') {
            return Err(CliError::usage(format!(
                "{path} is a workspace root: it cannot be deleted"
            )));
        } else {
            targets.push(path);
        }
    }
    if targets.is_empty() {
        if missing > 0 {
            return Err(CliError::not_found("nothing to delete: not found"));
        }
        eprintln!("Nothing to delete");
        return Ok(());
    }
    api.delete_nodes(&targets, args.permanently).await?;
    let what = if targets.len() == 1 {
        "Node has"
    } else {
        "Nodes have"
    };
    if args.permanently {
        eprintln!("{what} been permanently removed");
    } else {
        eprintln!("{what} been moved to the recycle bin");
    }
    if missing > 0 {
        return Err(CliError::not_found(format!(
            "{missing} path(s) not found were skipped"
        )));
    }
    Ok(())
}

pub async fn run_restore(args: RestoreArgs, global: &GlobalArgs) -> Result<(), CliError> {
    if let Some(id) = &args.version {
        return super::versions::run_restore_version(&args.paths, id, global).await;
    }
    let session = connect(global).await?;
    let api = session.api.clone();
    let mut paths = Vec::new();
    for arg in &args.paths {
        let path = remote_path(arg);
        let in_bin = path.split('/').nth(1) == Some("recycle_bin");
        let candidate = if in_bin {
            path.clone()
        } else {
            let (ws, rest) = path.split_once('/').unwrap_or((&path, ""));
            let name = rest.rsplit('/').next().unwrap_or(rest);
            format!("{ws}/recycle_bin/{name}")
        };
        if api.stat(&candidate).await?.is_none() {
            return Err(CliError::not_found(format!(
                "{candidate} is not in the recycle bin"
            )));
        }
        paths.push(candidate);
    }
    api.restore_nodes(&paths).await?;
    eprintln!("Restored {}", paths.join(", "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_slashes_are_dropped() {
        assert_eq!(remote_path("cells://ws/a/b/"), "ws/a/b");
        assert_eq!(remote_path("cells//ws/a"), "ws/a");
        assert_eq!(remote_path("/ws/a"), "ws/a");
    }

    #[test]
    fn names_are_quoted_on_a_terminal_and_never_raw_control_characters() {
        assert_eq!(shown_name("plain-name_1.txt", true), "plain-name_1.txt");
        assert_eq!(shown_name("café", true), "café");
        assert_eq!(shown_name("a b", true), "'a b'");
        assert_eq!(shown_name("a\nb", true), "'a'$'\\n''b'");
        assert_eq!(shown_name("it's", true), "'it'\"'\"'s'");
        assert_eq!(shown_name("\x1b[31mred", true), "$'\\E''[31mred'");
        assert_eq!(shown_name("x\0", true), "'x'$'\\000'");
        assert_eq!(shown_name("a b\x1b[2J\0", false), "a b?[2J?");
    }
}
