//! The admin endpoints `cec idm` / `cec storage` call: served for an admin with bodies valid
//! against the official swagger; users, roles and workspaces searches filtered for a
//! standard user (as Cells v4's policies do), ACLs and datasources refused to them (403);
//! 401 without a token; strict about unknown request fields.

mod common;

use common::{Swagger, TestEmu};
use reqwest::Method;
use serde_json::{Value, json};

fn names(v: &Value, key: &str, field: &str) -> Vec<String> {
    v[key]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| x[field].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_lists_users_roles_workspaces_acls_and_datasources() {
    let emu = TestEmu::start().await;
    let sw = Swagger::load();
    let admin = emu.pat("admin");
    let search = json!({"Queries": [{"Login": "*"}]});

    let (st, v) = emu
        .rest(
            &sw,
            Method::POST,
            "/user",
            Some(&admin),
            Some(&search),
            "restUsersCollection",
        )
        .await;
    assert_eq!(st, 200);
    let mut users = names(&v, "Users", "Login");
    users.sort();
    assert_eq!(users, vec!["admin", "alice", "bob"]);
    assert!(!v.to_string().contains("secret-"), "a password leaked");

    let (st, v) = emu
        .rest(
            &sw,
            Method::POST,
            "/user",
            Some(&admin),
            Some(&json!({"Queries": [{"Login": "al*"}]})),
            "restUsersCollection",
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(names(&v, "Users", "Login"), vec!["alice"]);

    let (st, v) = emu
        .rest(
            &sw,
            Method::POST,
            "/role",
            Some(&admin),
            Some(&json!({"Queries": [{}]})),
            "restRolesCollection",
        )
        .await;
    assert_eq!(st, 200);
    let roles = names(&v, "Roles", "Uuid");
    assert!(roles.contains(&"ROOT_GROUP".to_string()) && roles.contains(&"ADMINS".to_string()));

    let (st, v) = emu
        .rest(
            &sw,
            Method::POST,
            "/workspace",
            Some(&admin),
            Some(&json!({"Queries": [{}]})),
            "restWorkspaceCollection",
        )
        .await;
    assert_eq!(st, 200);
    let slugs = names(&v, "Workspaces", "Slug");
    assert!(slugs.contains(&"personal-files".to_string()));
    assert!(slugs.contains(&"team-docs".to_string()));
    let root = v["Workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["Slug"] == "common-files")
        .and_then(|w| w["RootUUIDs"][0].as_str())
        .expect("root uuid")
        .to_string();

    let (st, v) = emu
        .rest(
            &sw,
            Method::POST,
            "/acl",
            Some(&admin),
            Some(&json!({"Queries": [{"NodeIDs": [root]}]})),
            "restACLCollection",
        )
        .await;
    assert_eq!(st, 200);
    let acls = v["ACLs"].as_array().expect("ACLs");
    assert!(!acls.is_empty());
    assert!(acls.iter().all(|a| a["NodeID"] == root.as_str()));
    let (st, v) = emu
        .rest(
            &sw,
            Method::POST,
            "/acl",
            Some(&admin),
            Some(&json!({"Queries": [{"NodeIDs": ["no-such-node"]}]})),
            "restACLCollection",
        )
        .await;
    assert_eq!(st, 200);
    assert!(v.get("ACLs").is_none(), "{v}");

    let (st, v) = emu
        .rest(
            &sw,
            Method::GET,
            "/config/datasource",
            Some(&admin),
            None,
            "restDataSourceCollection",
        )
        .await;
    assert_eq!(st, 200);
    let ds = names(&v, "DataSources", "Name");
    assert!(ds.contains(&"personal".to_string()) && ds.contains(&"common".to_string()));

    let params = json!({"dsName": "common"}).to_string();
    let (st, v) = emu
        .rest(
            &sw,
            Method::PUT,
            "/jobs/user/datasource-resync",
            Some(&admin),
            Some(&json!({"JsonParameters": params})),
            "restUserJobResponse",
        )
        .await;
    assert_eq!(st, 200);
    assert!(v["JobUuid"].as_str().is_some_and(|j| !j.is_empty()));
    let params = json!({"dsName": "nope"}).to_string();
    let (st, _) = emu
        .rest(
            &sw,
            Method::PUT,
            "/jobs/user/datasource-resync",
            Some(&admin),
            Some(&json!({"JsonParameters": params})),
            "restUserJobResponse",
        )
        .await;
    assert_eq!(st, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn standard_users_get_403_and_anonymous_401() {
    let emu = TestEmu::start().await;
    let sw = Swagger::load();
    let alice = emu.pat("alice");
    let calls: Vec<(Method, &str, Option<Value>)> = vec![
        (
            Method::POST,
            "/acl",
            Some(json!({"Queries": [{"NodeIDs": ["x"]}]})),
        ),
        (Method::GET, "/config/datasource", None),
        (
            Method::PUT,
            "/jobs/user/datasource-resync",
            Some(json!({"JsonParameters": "{\"dsName\":\"common\"}"})),
        ),
    ];
    for (m, path, body) in calls {
        let (st, _) = emu
            .rest(
                &sw,
                m.clone(),
                path,
                Some(&alice),
                body.as_ref(),
                "restError",
            )
            .await;
        assert_eq!(st, 403, "{m} {path} as a standard user");
        let (st, _) = emu
            .rest(&sw, m.clone(), path, None, body.as_ref(), "restError")
            .await;
        assert_eq!(st, 401, "{m} {path} without a token");
    }
    // The regular user jobs still work for a standard user.
    let (st, _) = emu
        .call(
            Method::POST,
            "/jobs/user",
            Some(&alice),
            Some(&json!({"JobIDs": ["x"]})),
        )
        .await;
    assert_eq!(st, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_fields_are_refused() {
    let emu = TestEmu::start().await;
    let admin = emu.pat("admin");
    let (st, text) = emu
        .call(
            Method::POST,
            "/user",
            Some(&admin),
            Some(&json!({"Queries": [{"Login": "*", "Bogus": 1}]})),
        )
        .await;
    assert_eq!(st, 500);
    assert!(text.contains("unknown field \\\"Bogus\\\""), "{text}");
    let (st, _) = emu
        .call(
            Method::POST,
            "/role",
            Some(&admin),
            Some(&json!({"Nope": true})),
        )
        .await;
    assert_eq!(st, 500);
}

#[tokio::test(flavor = "multi_thread")]
async fn standard_users_search_users_roles_and_workspaces_filtered_by_policies() {
    let emu = TestEmu::start().await;
    let sw = Swagger::load();
    let alice = emu.pat("alice");
    // Users: READ for profile:standard, so every user; editable only herself.
    let (st, v) = emu
        .rest(
            &sw,
            Method::POST,
            "/user",
            Some(&alice),
            Some(&json!({"Queries": [{"Login": "*"}]})),
            "restUsersCollection",
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let mut users = names(&v, "Users", "Login");
    users.sort();
    assert_eq!(users, vec!["admin", "alice", "bob"]);
    for u in v["Users"].as_array().unwrap() {
        let mine = u["Login"] == "alice";
        assert_eq!(
            u.get("PoliciesContextEditable").is_some(),
            mine,
            "only her own user is editable: {u}"
        );
    }
    // Roles: the built-in ones and her own user role, not the other users' roles.
    let (st, v) = emu
        .rest(
            &sw,
            Method::POST,
            "/role",
            Some(&alice),
            Some(&json!({"Queries": [{}]})),
            "restRolesCollection",
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let labels = names(&v, "Roles", "Label");
    assert!(labels.contains(&"Root Group".to_string()), "{labels:?}");
    assert!(
        labels.contains(&"User alice role".to_string()),
        "{labels:?}"
    );
    assert!(!labels.contains(&"User bob role".to_string()), "{labels:?}");
    assert!(
        v["Roles"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r.get("PoliciesContextEditable").is_none())
    );
    // Workspaces: every admin workspace (READ for profile:standard), none editable, and the
    // rights of team-docs say read-only as its ACLs do.
    let (st, v) = emu
        .rest(
            &sw,
            Method::POST,
            "/workspace",
            Some(&alice),
            Some(&json!({"Queries": [{}]})),
            "restWorkspaceCollection",
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let slugs = names(&v, "Workspaces", "Slug");
    assert!(
        slugs.contains(&"team-docs".to_string()) && slugs.contains(&"personal-files".to_string())
    );
    for w in v["Workspaces"].as_array().unwrap() {
        assert!(w.get("PoliciesContextEditable").is_none(), "{w}");
        let attrs: Value = serde_json::from_str(w["Attributes"].as_str().unwrap()).unwrap();
        let want = if w["Slug"] == "team-docs" { "r" } else { "rw" };
        assert_eq!(attrs["DEFAULT_RIGHTS"], want, "{w}");
    }
    // ANY / NONE policy queries are for admins only.
    for ty in ["ANY", "NONE"] {
        let (st, _) = emu
            .rest(
                &sw,
                Method::POST,
                "/workspace",
                Some(&alice),
                Some(&json!({"ResourcePolicyQuery": {"Type": ty}})),
                "restWorkspaceCollection",
            )
            .await;
        assert_eq!(st, 403, "{ty}");
    }
    let admin = emu.pat("admin");
    let (st, v) = emu
        .rest(
            &sw,
            Method::POST,
            "/workspace",
            Some(&admin),
            Some(&json!({"ResourcePolicyQuery": {"Type": "ANY"}})),
            "restWorkspaceCollection",
        )
        .await;
    assert_eq!(st, 200);
    assert!(
        v["Workspaces"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["PoliciesContextEditable"] == true)
    );
}
