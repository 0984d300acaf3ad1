//! Public links through the REST API (cells-share-versions.md §1.2-§1.7): create and update
//! (`PUT /a/share/link`), read (`GET /a/share/link/{Uuid}`), delete (`DELETE ...`) and the
//! user's shared resources (`POST /a/share/resources`), for [`HttpCellsApi`].
//!
//! Invariants:
//! - A link read from the server keeps every field it came with ([`ShareLink::other`]), so
//!   that an update sends back the whole object, as the server requires (it rewrites the hash
//!   document from the request: a field left out is a field lost).
//! - int64 fields travel as JSON strings and are read from strings or numbers.
//! - A link password never appears in a `Debug` output or an error.

use reqwest::Method;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value, json};

use super::http::HttpCellsApi;
use super::{ApiError, ApiResult};

/// Template of the folder minisite (the official client's choice, for files too).
pub const TEMPLATE_FOLDER: &str = "pydio_shared_folder";
/// Template of the file preview page.
pub const TEMPLATE_PREVIEW: &str = "pydio_unique_strip";
/// Template of the direct download page.
pub const TEMPLATE_DOWNLOAD: &str = "pydio_unique_dl";

/// A `restShareLink` as the server answers it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ShareLink {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uuid: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub link_hash: String,
    /// `/public/<hash>` (relative) unless the server has a share URL configured.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub link_url: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Sent back as received (`[{"Uuid"}]`).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub root_nodes: Vec<Value>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub permissions: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub view_template_name: String,
    /// Unix seconds after which the link is dead; 0 = never.
    #[serde(default, with = "int64", skip_serializing_if = "is_zero")]
    pub access_end: i64,
    /// 0 = unlimited.
    #[serde(default, with = "int64", skip_serializing_if = "is_zero")]
    pub max_downloads: i64,
    #[serde(default, with = "int64", skip_serializing_if = "is_zero")]
    pub current_downloads: i64,
    #[serde(default, skip_serializing_if = "is_false")]
    pub password_required: bool,
    /// The hidden user: must be sent back on update (empty makes a new one).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_login: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_uuid: String,
    /// Everything else (`Policies`, `PoliciesContextEditable`, `TargetUsers`, ...), kept to
    /// be sent back.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl ShareLink {
    /// The Uuids of the shared nodes.
    pub fn root_uuids(&self) -> Vec<String> {
        self.root_nodes
            .iter()
            .filter_map(|n| n.get("Uuid").and_then(Value::as_str))
            .map(str::to_string)
            .collect()
    }

    /// The public address: `LinkUrl` made absolute with `base_url` when relative (as the
    /// official client's `StandardizeLink`).
    pub fn public_url(&self, base_url: &str) -> String {
        let url = if self.link_url.is_empty() && !self.link_hash.is_empty() {
            format!("/public/{}", self.link_hash)
        } else {
            self.link_url.clone()
        };
        if url.starts_with('/') {
            format!("{}{url}", base_url.trim_end_matches('/'))
        } else {
            url
        }
    }

    pub fn allows_upload(&self) -> bool {
        self.permissions.iter().any(|p| p == "Upload")
    }
}

/// `restPutShareLinkRequest`. `share_link` is JSON so that a create can send exactly the
/// official client's body and an update the whole object read.
#[derive(Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutShareLinkRequest {
    pub share_link: Value,
    #[serde(skip_serializing_if = "is_false")]
    pub password_enabled: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub create_password: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub update_password: String,
}

impl std::fmt::Debug for PutShareLinkRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hide = |s: &str| if s.is_empty() { "" } else { "<hidden>" };
        f.debug_struct("PutShareLinkRequest")
            .field("share_link", &self.share_link)
            .field("password_enabled", &self.password_enabled)
            .field("create_password", &hide(&self.create_password))
            .field("update_password", &hide(&self.update_password))
            .finish()
    }
}

/// The `ShareLink` of a create, as the official client sends it (go-swagger's `null`s
/// included): Download + Preview, template `pydio_shared_folder`, one root by Uuid.
pub fn new_link_body(node_uuid: &str, label: &str) -> Value {
    json!({
        "Label": label,
        "Permissions": ["Download", "Preview"],
        "Policies": null,
        "PoliciesContextEditable": true,
        "RootNodes": [{"AppearsIn": null, "Commits": null, "Uuid": node_uuid}],
        "ViewTemplateName": TEMPLATE_FOLDER,
    })
}

/// One shared root node of `POST /a/share/resources` with the link on it (only `Uuid` and
/// `Label` are filled there: read the link for the rest).
#[derive(Debug, Clone, PartialEq)]
pub struct LinkResource {
    /// The user path of the shared node (`<ws-slug>/<path>`), as well as it can be told.
    pub path: String,
    pub node_uuid: String,
    pub link_uuid: String,
    pub label: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ResourcesAnswer {
    #[serde(default, deserialize_with = "null_as_default")]
    resources: Vec<ResourceIn>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ResourceIn {
    #[serde(default)]
    node: Option<NodeIn>,
    #[serde(default)]
    link: Option<LinkIn>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NodeIn {
    #[serde(default)]
    uuid: String,
    #[serde(default)]
    path: String,
    #[serde(default, deserialize_with = "null_as_default")]
    appears_in: Vec<AppearsIn>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AppearsIn {
    #[serde(default)]
    ws_slug: String,
    #[serde(default)]
    path: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LinkIn {
    #[serde(default)]
    uuid: String,
    #[serde(default)]
    label: String,
}

fn parse<T: serde::de::DeserializeOwned>(v: Value, what: &str) -> ApiResult<T> {
    serde_json::from_value(v)
        .map_err(|e| ApiError::InvalidResponse(format!("{what}: cannot decode the answer: {e}")))
}

/// A link Uuid is placed in a URL path: only the characters a Uuid has.
fn check_uuid(uuid: &str) -> ApiResult<()> {
    if uuid.is_empty()
        || uuid.len() > 64
        || !uuid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(ApiError::InvalidRequest(format!(
            "{uuid:?} is not a link id"
        )));
    }
    Ok(())
}

impl HttpCellsApi {
    /// `PUT /a/share/link`: create (no `Uuid` in the link) or update.
    pub async fn share_put_link(&self, request: &PutShareLinkRequest) -> ApiResult<ShareLink> {
        let body = serde_json::to_value(request)
            .map_err(|e| ApiError::InvalidRequest(format!("cannot encode the link: {e}")))?;
        let answer = self
            .rest_call(Method::PUT, "/share/link", Some(&body))
            .await?;
        parse(answer, "/share/link")
    }

    /// `GET /a/share/link/{Uuid}`.
    pub async fn share_get_link(&self, uuid: &str) -> ApiResult<ShareLink> {
        check_uuid(uuid)?;
        let path = format!("/share/link/{uuid}");
        let answer = self.rest_call(Method::GET, &path, None).await?;
        parse(answer, &path)
    }

    /// `DELETE /a/share/link/{Uuid}`.
    pub async fn share_delete_link(&self, uuid: &str) -> ApiResult<()> {
        check_uuid(uuid)?;
        let path = format!("/share/link/{uuid}");
        let answer = self.rest_call(Method::DELETE, &path, None).await?;
        match answer.get("Success") {
            Some(Value::Bool(false)) => Err(ApiError::InvalidResponse(format!(
                "{path}: the server did not delete the link"
            ))),
            _ => Ok(()),
        }
    }

    /// `POST /a/share/resources` for the links the user owns: one entry per shared root.
    pub async fn share_list_links(&self) -> ApiResult<Vec<LinkResource>> {
        let body = json!({"ShareType": "LINKS", "OwnedBySubject": true});
        let answer = self
            .rest_call(Method::POST, "/share/resources", Some(&body))
            .await?;
        let answer: ResourcesAnswer = parse(answer, "/share/resources")?;
        Ok(answer
            .resources
            .into_iter()
            .filter_map(|r| {
                let link = r.link?;
                let node = r.node?;
                // `Node.Path` is workspace-relative: the user path is the slug of the first
                // workspace it appears in, then its path there.
                let path = match node.appears_in.first() {
                    Some(a) if !a.ws_slug.is_empty() => {
                        let rel = a.path.trim_matches('/');
                        if rel.is_empty() {
                            a.ws_slug.clone()
                        } else {
                            format!("{}/{rel}", a.ws_slug)
                        }
                    }
                    _ => node.path.trim_matches('/').to_string(),
                };
                Some(LinkResource {
                    path,
                    node_uuid: node.uuid,
                    link_uuid: link.uuid,
                    label: link.label,
                })
            })
            .filter(|r| !r.link_uuid.is_empty())
            .collect())
    }
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// int64 as a JSON string (read from a string or a number).
mod int64 {
    use super::*;

    pub fn serialize<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        match Option::<Value>::deserialize(d)? {
            None | Some(Value::Null) => Ok(0),
            Some(Value::Number(n)) => n
                .as_i64()
                .ok_or_else(|| serde::de::Error::custom("not an int64")),
            Some(Value::String(s)) if s.is_empty() => Ok(0),
            Some(Value::String(s)) => s.parse().map_err(serde::de::Error::custom),
            Some(_) => Err(serde::de::Error::custom("not an int64")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_read_is_sent_back_whole() {
        let v = json!({"Uuid":"u","LinkHash":"h","LinkUrl":"/public/h","Label":"a",
            "RootNodes":[{"Uuid":"n"}],"Permissions":["Preview","Download"],
            "ViewTemplateName":"pydio_shared_folder","AccessEnd":"1700000000",
            "MaxDownloads":3,"PasswordRequired":true,"UserLogin":"l","UserUuid":"lu",
            "Policies":[{"id":"1","Action":"OWNER"}],"PoliciesContextEditable":true,
            "TargetUsers":{"x":{"Display":"X"}}});
        let link: ShareLink = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(link.max_downloads, 3);
        assert_eq!(link.access_end, 1_700_000_000);
        let back = serde_json::to_value(&link).unwrap();
        let mut expected = v;
        expected["MaxDownloads"] = json!("3");
        assert_eq!(back, expected);
        assert_eq!(
            link.public_url("https://h:8080/"),
            "https://h:8080/public/h"
        );
    }

    #[test]
    fn passwords_stay_out_of_debug() {
        let r = PutShareLinkRequest {
            share_link: json!({}),
            password_enabled: true,
            create_password: "s3cret".into(),
            update_password: String::new(),
        };
        assert!(!format!("{r:?}").contains("s3cret"));
    }
}
