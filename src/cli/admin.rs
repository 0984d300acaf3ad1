//! Admin commands of the official client: `cec idm list-users | list-groups | list-roles |
//! list-workspaces | list-acls` and `cec storage list-datasources | resync-ds`, over the
//! admin REST endpoints of the swagger (`POST /a/user`, `/a/role`, `/a/workspace`, `/a/acl`,
//! `GET /a/config/datasource`, `PUT /a/jobs/user/datasource-resync`).
//!
//! Invariants: only swagger fields are sent; a 403 becomes one sentence saying the account
//! lacks admin rights (exit 1); `--json` prints the server's objects as a JSON array.

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use super::{CliError, GlobalArgs, connect};
use crate::api::ApiError;

#[derive(Debug, Args)]
pub struct IdmArgs {
    #[command(subcommand)]
    pub command: IdmCommand,
}

#[derive(Debug, Subcommand)]
pub enum IdmCommand {
    /// List users
    ListUsers(ListArgs),
    /// List user groups
    ListGroups(ListArgs),
    /// List roles
    ListRoles(ListArgs),
    /// List workspaces (admin view)
    ListWorkspaces(ListArgs),
    /// List the ACLs of one or more nodes
    ListAcls(AclArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print the objects as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AclArgs {
    /// Node UUID to search ACLs for (repeatable)
    #[arg(short = 'n', long = "uuid", required = true, value_name = "UUID")]
    pub uuids: Vec<String>,
    /// Print the ACLs as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StorageArgs {
    #[command(subcommand)]
    pub command: StorageCommand,
}

#[derive(Debug, Subcommand)]
pub enum StorageCommand {
    /// List configured datasources
    ListDatasources(DatasourceArgs),
    /// Launch a resync job on a datasource
    ResyncDs(ResyncArgs),
}

#[derive(Debug, Args)]
pub struct DatasourceArgs {
    /// Only the names, one per line
    #[arg(short = 'r', long)]
    pub raw: bool,
    /// Print the datasources as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ResyncArgs {
    /// Name of the datasource
    pub name: String,
}

fn admin_error(what: &str, url: &str, e: ApiError) -> CliError {
    match e {
        ApiError::Forbidden(_) => CliError::failure(format!(
            "[Forbidden access] you do not have the permission to {what} at {url}"
        )),
        other => {
            let mut c = CliError::from(other);
            c.message = format!("could not {what}: {}", c.message);
            c
        }
    }
}

fn array<'a>(v: &'a Value, key: &str) -> Vec<&'a Value> {
    v.get(key)
        .and_then(|a| a.as_array())
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(|x| x.as_str()).unwrap_or("")
}

fn print_json(items: &[&Value]) {
    println!(
        "{}",
        serde_json::to_string_pretty(&Value::Array(items.iter().map(|v| (*v).clone()).collect()))
            .unwrap_or_default()
    );
}

fn print_list(items: &[String], singular: &str, plural: &str) {
    match items.len() {
        0 => println!("No {singular} found."),
        1 => println!("Found 1 {singular}:"),
        n => println!("Found {n} {plural}:"),
    }
    for i in items {
        println!("  - {i}");
    }
}

pub async fn run_idm(args: IdmArgs, global: &GlobalArgs) -> Result<(), CliError> {
    let session = connect(global).await?;
    let api = session.api.clone();
    let url = session.base_url.clone();
    let groups = matches!(args.command, IdmCommand::ListGroups(_));
    match args.command {
        IdmCommand::ListUsers(a) | IdmCommand::ListGroups(a) => {
            let what = if groups { "list groups" } else { "list users" };
            let v = api
                .rest_call(
                    Method::POST,
                    "/user",
                    Some(&json!({"Queries": [{"Login": "*"}]})),
                )
                .await
                .map_err(|e| admin_error(what, &url, e))?;
            let (key, field, one, many) = if groups {
                ("Groups", "GroupLabel", "group", "groups")
            } else {
                ("Users", "Login", "user", "users")
            };
            let items = array(&v, key);
            if a.json {
                print_json(&items);
            } else {
                let names: Vec<String> = items.iter().map(|u| s(u, field).to_string()).collect();
                print_list(&names, one, many);
            }
        }
        IdmCommand::ListRoles(a) => {
            let v = api
                .rest_call(Method::POST, "/role", Some(&json!({"Queries": [{}]})))
                .await
                .map_err(|e| admin_error("list roles", &url, e))?;
            let items = array(&v, "Roles");
            if a.json {
                print_json(&items);
            } else {
                let names: Vec<String> = items
                    .iter()
                    .map(|r| format!("{} ({})", s(r, "Label"), s(r, "Uuid")))
                    .collect();
                print_list(&names, "role", "roles");
            }
        }
        IdmCommand::ListWorkspaces(a) => {
            let v = api
                .rest_call(Method::POST, "/workspace", Some(&json!({"Queries": [{}]})))
                .await
                .map_err(|e| admin_error("list workspaces", &url, e))?;
            let items = array(&v, "Workspaces");
            if a.json {
                print_json(&items);
            } else {
                let names: Vec<String> = items
                    .iter()
                    .map(|w| format!("{} ({})", s(w, "Label"), s(w, "Slug")))
                    .collect();
                print_list(&names, "workspace", "workspaces");
            }
        }
        IdmCommand::ListAcls(a) => {
            let v = api
                .rest_call(
                    Method::POST,
                    "/acl",
                    Some(&json!({"Queries": [{"NodeIDs": a.uuids}]})),
                )
                .await
                .map_err(|e| admin_error("list ACLs", &url, e))?;
            let items = array(&v, "ACLs");
            if a.json {
                print_json(&items);
            } else if items.is_empty() {
                println!("No ACL found.");
            } else {
                println!("Found {} ACLs:", items.len());
                let rows: Vec<Vec<String>> = items
                    .iter()
                    .map(|acl| {
                        let action = acl.get("Action").cloned().unwrap_or(Value::Null);
                        vec![
                            s(acl, "NodeID").to_string(),
                            s(acl, "RoleID").to_string(),
                            s(&action, "Name").to_string(),
                            s(acl, "WorkspaceID").to_string(),
                        ]
                    })
                    .collect();
                super::files::print_table(&["Uuid", "Role ID", "Action Name", "WS ID"], &rows);
            }
        }
    }
    Ok(())
}

pub async fn run_storage(args: StorageArgs, global: &GlobalArgs) -> Result<(), CliError> {
    let session = connect(global).await?;
    let api = session.api.clone();
    let url = session.base_url.clone();
    match args.command {
        StorageCommand::ListDatasources(a) => {
            let v = api
                .rest_call(Method::GET, "/config/datasource", None)
                .await
                .map_err(|e| admin_error("list the datasources", &url, e))?;
            let items = array(&v, "DataSources");
            if a.json {
                print_json(&items);
            } else if a.raw {
                for ds in &items {
                    if !s(ds, "Name").is_empty() {
                        println!("{}", s(ds, "Name"));
                    }
                }
            } else {
                let names: Vec<String> = items.iter().map(|d| s(d, "Name").to_string()).collect();
                print_list(&names, "datasource", "datasources");
            }
        }
        StorageCommand::ResyncDs(a) => {
            let params = json!({"dsName": a.name}).to_string();
            let v = api
                .rest_call(
                    Method::PUT,
                    "/jobs/user/datasource-resync",
                    Some(&json!({"JsonParameters": params})),
                )
                .await
                .map_err(|e| admin_error(&format!("resync {}", a.name), &url, e))?;
            println!("Starting resync on {} (job {})", a.name, s(&v, "JobUuid"));
        }
    }
    Ok(())
}
