//! What cec keeps of a node's `MetaStore` ([`NodeMeta`]), and the decoding of the server's
//! `treeNode` JSON into a [`Node`] straight from the answer's bytes ([`TreeNode`],
//! [`BulkAnswer`]), without a `serde_json::Value` tree per node: a folder of 100,000 entries
//! is 100,000 of these, so each keeps only what a listing needs (issue 27).
//!
//! Kept keys (everything else is skipped while parsing, never stored):
//! - `x-cells-hash`: the content hash `cec ls -d` shows;
//! - `usermeta-tags`, `bookmark`, `workspaces_shares`: tags, bookmark and public link (the
//!   mount's extended attributes, `cec ls -l`), read by [`super::usermeta`];
//! - the `ws_*` keys of a workspace root (slug, uuid, label, description, scope, permissions,
//!   skip_recycle), boxed: only the few roots carry them.
//!
//! Invariants:
//! - Decoding is as lenient as reading a JSON value was: a field of the wrong type reads as
//!   empty (strings), 0 (int64, which may come as a string or a number), absent (metadata);
//!   a node that is not an object is an empty node (no path), a `Nodes` that is not an array
//!   is an empty listing. A `MetaStore` value is JSON-decoded when it is a string holding JSON
//!   (`"\"a.txt\""` is `a.txt`), kept as sent otherwise; a later duplicate key wins.
//! - Tags and link ids are checked once, here ([`super::usermeta`] holds the rules): a node
//!   never carries tags over [`super::usermeta::MAX_TAGS_BYTES`] or holding NUL, nor a link id
//!   that is not a short alphanumeric id.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::{Node, NodeKind, usermeta};

/// The metadata of a node that cec reads (see the module's list); the rest is dropped when
/// the node is decoded. What most nodes lack is boxed: 32 bytes a node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeMeta {
    /// `x-cells-hash`: Cells' own content hash, when it is a string.
    pub cells_hash: Option<Box<str>>,
    /// Tags, bookmark, public link; `None` when the node has none of them.
    pub user: Option<Box<UserFields>>,
    /// The `ws_*` keys, on a workspace root only.
    pub workspace: Option<Box<WorkspaceMeta>>,
}

/// The user metadata a node carries (see [`super::usermeta`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserFields {
    /// `usermeta-tags`, comma-separated (an array of strings is joined); never empty, over
    /// the size bound or holding NUL.
    pub tags: Option<Box<str>>,
    /// `bookmark`: the caller bookmarked the node.
    pub bookmark: bool,
    /// The Uuid of the node's first public link (`workspaces_shares`, scope 3 or `LINK`).
    pub public_link: Option<Box<str>>,
}

/// The `ws_*` keys of a workspace root, each as text (`""` when absent; a value that is not
/// a string is kept as its JSON text).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkspaceMeta {
    pub slug: String,
    pub uuid: String,
    pub label: String,
    pub description: String,
    /// `ws_scope`, `None` when absent (its presence makes a node without `Type` a folder).
    pub scope: Option<String>,
    pub permissions: String,
    /// `ws_skip_recycle`: `true` or `"true"`.
    pub skip_recycle: bool,
}

/// The `MetaStore` keys cec reads; any other is [`MetaKey::Other`] and its value skipped.
#[derive(Deserialize)]
#[serde(field_identifier)]
enum MetaKey {
    #[serde(rename = "x-cells-hash")]
    CellsHash,
    #[serde(rename = "usermeta-tags")]
    Tags,
    #[serde(rename = "bookmark")]
    Bookmark,
    #[serde(rename = "workspaces_shares")]
    Shares,
    #[serde(rename = "ws_slug")]
    WsSlug,
    #[serde(rename = "ws_uuid")]
    WsUuid,
    #[serde(rename = "ws_label")]
    WsLabel,
    #[serde(rename = "ws_description")]
    WsDescription,
    #[serde(rename = "ws_scope")]
    WsScope,
    #[serde(rename = "ws_permissions")]
    WsPermissions,
    #[serde(rename = "ws_skip_recycle")]
    WsSkipRecycle,
    #[serde(other)]
    Other,
}

/// A `MetaStore` value as sent: a string holding JSON is decoded, anything else kept.
fn decoded(raw: Value) -> Value {
    match raw {
        Value::String(text) => serde_json::from_str(&text).unwrap_or(Value::String(text)),
        other => other,
    }
}

/// A `ws_*` value as text: a string as is, null as empty, anything else its JSON text.
fn meta_text(v: Value) -> String {
    match v {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl NodeMeta {
    /// Record one kept key's (decoded) value.
    fn set(&mut self, key: MetaKey, v: Value) {
        match key {
            MetaKey::CellsHash => {
                self.cells_hash = v.as_str().map(Into::into);
            }
            MetaKey::Tags => {
                let tags = match v {
                    Value::String(s) => Some(s),
                    Value::Array(items) => Some(
                        items
                            .iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(","),
                    ),
                    _ => None,
                };
                self.user().tags = tags.map(String::into_boxed_str);
            }
            MetaKey::Bookmark => {
                self.user().bookmark = match v {
                    Value::Null | Value::Bool(false) => false,
                    Value::String(s) => !s.is_empty() && s != "false",
                    _ => true,
                };
            }
            MetaKey::Shares => {
                self.user().public_link = first_public_link(&v).map(Into::into);
            }
            MetaKey::WsSlug => self.ws().slug = meta_text(v),
            MetaKey::WsUuid => self.ws().uuid = meta_text(v),
            MetaKey::WsLabel => self.ws().label = meta_text(v),
            MetaKey::WsDescription => self.ws().description = meta_text(v),
            MetaKey::WsScope => self.ws().scope = Some(meta_text(v)),
            MetaKey::WsPermissions => self.ws().permissions = meta_text(v),
            MetaKey::WsSkipRecycle => {
                self.ws().skip_recycle = match v {
                    Value::Bool(b) => b,
                    Value::String(s) => s == "true",
                    _ => false,
                }
            }
            MetaKey::Other => {}
        }
    }

    /// The user metadata, created at its first key (see [`TreeNode::into_node`]).
    fn user(&mut self) -> &mut UserFields {
        self.user.get_or_insert_with(Default::default)
    }

    /// The `ws_*` keys, created at the first one.
    fn ws(&mut self) -> &mut WorkspaceMeta {
        self.workspace.get_or_insert_with(Default::default)
    }

    /// `ws_scope`, when the node has one.
    pub fn ws_scope(&self) -> Option<&str> {
        self.workspace.as_ref()?.scope.as_deref()
    }
}

/// The Uuid of the first share of scope 3 (`LINK`) in a `workspaces_shares` value, when it is
/// a valid link id.
fn first_public_link(shares: &Value) -> Option<&str> {
    shares.as_array()?.iter().find_map(|share| {
        let scope = share.get("Scope")?;
        let is_link = scope.as_i64() == Some(3) || scope.as_str() == Some("LINK");
        let uuid = share.get("UUID")?.as_str()?;
        (is_link && usermeta::valid_link_id(uuid)).then_some(uuid)
    })
}

/// Visitor methods for the JSON types a lenient visitor does not read: each skips the value
/// and answers the default.
macro_rules! default_for {
    ($($kind:ident)*) => { $(default_for!(@one $kind);)* };
    (@one scalars) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> { Ok(Default::default()) }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> { Ok(Default::default()) }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> { Ok(Default::default()) }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> { Ok(Default::default()) }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> { Ok(Default::default()) }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> { Ok(Default::default()) }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> { Ok(Default::default()) }
    };
    (@one seq) => {
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Default::default())
        }
    };
    (@one map) => {
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Default::default())
        }
    };
}

impl<'de> Deserialize<'de> for NodeMeta {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NodeMeta;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a MetaStore object")
            }
            default_for!(scalars seq);
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NodeMeta, A::Error> {
                let mut meta = NodeMeta::default();
                while let Some(key) = map.next_key::<MetaKey>()? {
                    match key {
                        MetaKey::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                        key => meta.set(key, decoded(map.next_value::<Value>()?)),
                    }
                }
                Ok(meta)
            }
        }
        d.deserialize_any(V)
    }
}

/// The `treeNode` fields cec reads.
#[derive(Deserialize)]
#[serde(field_identifier)]
enum NodeKey {
    Uuid,
    Path,
    Type,
    Size,
    MTime,
    Etag,
    MetaStore,
    #[serde(other)]
    Other,
}

/// A `treeNode` as decoded from the server's JSON: a [`Node`] once [`TreeNode::into_node`].
#[derive(Default)]
pub(crate) struct TreeNode {
    uuid: String,
    path: String,
    kind: Option<NodeKind>,
    size: i64,
    mtime: i64,
    etag: String,
    meta: NodeMeta,
}

/// A string field: a JSON string, `""` for anything else.
fn text(v: Value) -> String {
    match v {
        Value::String(s) => s,
        _ => String::new(),
    }
}

impl<'de> Deserialize<'de> for TreeNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TreeNode;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a treeNode object")
            }
            default_for!(scalars seq);
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TreeNode, A::Error> {
                let mut n = TreeNode::default();
                while let Some(key) = map.next_key::<NodeKey>()? {
                    match key {
                        NodeKey::Uuid => n.uuid = text(map.next_value()?),
                        NodeKey::Path => n.path = text(map.next_value()?),
                        NodeKey::Etag => n.etag = text(map.next_value()?),
                        NodeKey::Type => {
                            n.kind = match map.next_value::<Value>()?.as_str() {
                                Some("COLLECTION") => Some(NodeKind::Folder),
                                Some("LEAF") => Some(NodeKind::File),
                                _ => None,
                            }
                        }
                        NodeKey::Size => n.size = int64(&map.next_value()?),
                        NodeKey::MTime => n.mtime = int64(&map.next_value()?),
                        NodeKey::MetaStore => n.meta = map.next_value()?,
                        NodeKey::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(n)
            }
        }
        d.deserialize_any(V)
    }
}

impl TreeNode {
    /// The node, its path without surrounding slashes and its tags checked (see
    /// [`usermeta::checked_tags`]).
    pub(crate) fn into_node(self) -> Node {
        let path = self.path.trim_matches('/');
        let path = if path.len() == self.path.len() {
            self.path
        } else {
            path.to_string()
        };
        let mut meta = self.meta;
        if let Some(user) = meta.user.as_deref_mut() {
            user.tags = user
                .tags
                .take()
                .and_then(|t| usermeta::checked_tags(&path, t.into()))
                .map(String::into_boxed_str);
        }
        // Keys that all said "nothing" leave no box behind.
        if meta.user.as_deref() == Some(&UserFields::default()) {
            meta.user = None;
        }
        let kind = match self.kind {
            Some(kind) => kind,
            None if meta.ws_scope().is_some() => NodeKind::Folder,
            None => NodeKind::File,
        };
        Node {
            uuid: self.uuid,
            path,
            kind,
            size: self.size.max(0) as u64,
            mtime: self.mtime,
            etag: self.etag,
            meta,
        }
    }
}

/// An int64 that the server may send as a string or a number (or omit: 0).
pub fn int64(v: &Value) -> i64 {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .unwrap_or(0),
        Value::String(s) => s.trim().parse().unwrap_or(0),
        _ => 0,
    }
}

/// The answer of `/meta/bulk/get`: its nodes and `Pagination.Total` (0 when absent).
#[derive(Default)]
pub(crate) struct BulkAnswer {
    pub(crate) nodes: Vec<TreeNode>,
    pub(crate) total: i64,
}

/// `Nodes`: an array of nodes, or nothing for anything else.
struct NodeList(Vec<TreeNode>);

impl<'de> Deserialize<'de> for NodeList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<TreeNode>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of treeNode")
            }
            default_for!(scalars map);
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<TreeNode>, A::Error> {
                let mut nodes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(n) = seq.next_element()? {
                    nodes.push(n);
                }
                Ok(nodes)
            }
        }
        d.deserialize_any(V).map(NodeList)
    }
}

/// The top-level keys of a bulk answer cec reads.
#[derive(Deserialize)]
#[serde(field_identifier)]
enum BulkKey {
    Nodes,
    Pagination,
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for BulkAnswer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BulkAnswer;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a bulk metadata answer")
            }
            default_for!(scalars seq);
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<BulkAnswer, A::Error> {
                let mut answer = BulkAnswer::default();
                while let Some(key) = map.next_key::<BulkKey>()? {
                    match key {
                        BulkKey::Nodes => answer.nodes = map.next_value::<NodeList>()?.0,
                        BulkKey::Pagination => {
                            let p: Value = map.next_value()?;
                            answer.total = p.get("Total").map(int64).unwrap_or(0);
                        }
                        BulkKey::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(answer)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn page(v: Value) -> BulkAnswer {
        serde_json::from_slice(v.to_string().as_bytes()).unwrap()
    }

    fn nodes(v: Value) -> Vec<Node> {
        page(v).nodes.into_iter().map(TreeNode::into_node).collect()
    }

    /// A page as Cells sends it, with fields and metadata cec does not read: the entries are
    /// those the value-tree decoding gave, the kept keys decoded, every other key gone.
    #[test]
    fn a_page_keeps_the_read_keys_and_drops_the_rest() {
        let answer = page(json!({
            "Pagination": {"Limit": 2, "Total": "5", "CurrentOffset": 0},
            "Unknown": {"deep": [1, 2, {"x": null}]},
            "Nodes": [
                {"Uuid": "u1", "Path": "/ws/d/a.txt/", "Type": "LEAF", "Size": "1234",
                 "MTime": 1700000000, "Etag": "e1", "Mode": 511, "Commits": [{"Uuid": "c"}],
                 "AppearsIn": [{"WsUuid": "w"}],
                 "MetaStore": {
                    "name": "\"a.txt\"", "ChildrenCount": "3", "weird": "not json",
                    "x-cells-hash": "\"h1\"", "usermeta-tags": "\"red,blue\"",
                    "bookmark": "true", "mime": "\"text/plain\"",
                    "workspaces_shares": "[{\"UUID\":\"r-1\",\"Scope\":2},{\"UUID\":\"l-1\",\"Scope\":3}]",
                    "pydio:meta-data-source-path": "\"a.txt\""}},
                {"Uuid": "u2", "Path": "ws/d/sub", "Type": "COLLECTION", "Size": 10,
                 "MetaStore": {"usermeta-tags": "[\"x\",\"y\"]", "bookmark": "\"false\""}}
            ]
        }));
        assert_eq!(answer.total, 5);
        let got: Vec<Node> = answer.nodes.into_iter().map(TreeNode::into_node).collect();
        assert_eq!(
            got,
            vec![
                Node {
                    uuid: "u1".into(),
                    path: "ws/d/a.txt".into(),
                    kind: NodeKind::File,
                    size: 1234,
                    mtime: 1_700_000_000,
                    etag: "e1".into(),
                    meta: NodeMeta {
                        cells_hash: Some("h1".into()),
                        user: Some(Box::new(UserFields {
                            tags: Some("red,blue".into()),
                            bookmark: true,
                            public_link: Some("l-1".into()),
                        })),
                        workspace: None,
                    },
                },
                Node {
                    uuid: "u2".into(),
                    path: "ws/d/sub".into(),
                    kind: NodeKind::Folder,
                    size: 10,
                    mtime: 0,
                    etag: String::new(),
                    meta: NodeMeta {
                        user: Some(Box::new(UserFields {
                            tags: Some("x,y".into()),
                            ..Default::default()
                        })),
                        ..Default::default()
                    },
                },
            ]
        );
    }

    /// Whatever the types, a page decodes as reading a value tree did: wrong types read as
    /// empty or 0, a node that is not an object has no path, a `Nodes` that is not an array
    /// lists nothing; a later duplicate key wins.
    #[test]
    fn decoding_is_lenient_about_types() {
        let got = nodes(json!({"Nodes": [
            "not a node", 7, null, [1],
            {"Uuid": 5, "Path": ["x"], "Type": 3, "Size": "-4", "MTime": "12 ", "Etag": {},
             "MetaStore": "not a map"},
            {"Path": "ws/big", "Size": 1.5e3, "MTime": 18446744073709551615u64,
             "MetaStore": {"bookmark": 0, "x-cells-hash": 42, "usermeta-tags": {"a": 1},
                           "workspaces_shares": [{"UUID": "l-2", "Scope": "LINK"}]}}
        ]}));
        assert_eq!(got.len(), 6);
        for empty in &got[..4] {
            assert_eq!(empty.path, "");
            assert_eq!(empty.meta, NodeMeta::default());
        }
        assert_eq!((got[4].uuid.as_str(), got[4].path.as_str()), ("", ""));
        assert_eq!(
            (got[4].size, got[4].mtime, got[4].kind),
            (0, 12, NodeKind::File)
        );
        assert_eq!(got[5].size, 1500);
        assert_eq!(got[5].mtime, i64::MAX);
        assert!(
            usermeta::is_bookmarked(&got[5]),
            "a bookmark that is not false/empty counts"
        );
        assert_eq!(got[5].meta.cells_hash, None);
        assert_eq!(usermeta::tags_of(&got[5]), None);
        assert_eq!(usermeta::public_link_of(&got[5]).as_deref(), Some("l-2"));
        assert!(nodes(json!({"Nodes": {"a": 1}})).is_empty());
        assert!(nodes(json!([1, 2])).is_empty());
        assert_eq!(page(json!({"Pagination": "x"})).total, 0);
        let twice: BulkAnswer =
            serde_json::from_str(r#"{"Nodes":[{"Path":"ws/a","Path":"ws/b"}]}"#).unwrap();
        assert_eq!(twice.nodes[0].path, "ws/b");
    }

    /// A workspace root keeps its `ws_*` keys (boxed); `ws_scope` makes a node without `Type`
    /// a folder; tags over the bound or with NUL and invalid link ids are dropped at parse.
    #[test]
    fn workspace_keys_and_checked_values() {
        let got = nodes(json!({"Nodes": [
            {"Uuid": "r", "Path": "my-files", "MetaStore": {
                "ws_slug": "\"my-files\"", "ws_uuid": "\"w-1\"", "ws_label": "\"My Files\"",
                "ws_scope": "\"ADMIN\"", "ws_permissions": "\"rw\"", "ws_skip_recycle": "true",
                "ws_description": 5}},
            {"Path": "ws/t", "MetaStore": {
                "usermeta-tags": "x".repeat(usermeta::MAX_TAGS_BYTES + 1),
                "workspaces_shares": [{"UUID": "../../x", "Scope": 3}]}},
            {"Path": "ws/n", "MetaStore": {"usermeta-tags": "\"a\\u0000b\""}},
            {"Path": "ws/e", "MetaStore": {"usermeta-tags": "\"\""}}
        ]}));
        assert_eq!(got[0].kind, NodeKind::Folder);
        assert_eq!(
            got[0].meta.workspace.as_deref(),
            Some(&WorkspaceMeta {
                slug: "my-files".into(),
                uuid: "w-1".into(),
                label: "My Files".into(),
                description: "5".into(),
                scope: Some("ADMIN".into()),
                permissions: "rw".into(),
                skip_recycle: true,
            })
        );
        for n in &got[1..] {
            assert_eq!(n.meta, NodeMeta::default(), "{}", n.path);
            assert_eq!(n.kind, NodeKind::File);
        }
    }
}
