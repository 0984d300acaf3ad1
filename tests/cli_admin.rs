//! `cec idm list-*` and `cec storage list-datasources | resync-ds` against cells-emu: the
//! official client's output for an admin, `--json`; for a standard user the listings Cells v4
//! filters by policy (users, groups, roles, workspaces) and a clear refusal (exit 1, no token
//! in the message) for the admin-only ones.

mod common;

use common::*;

async fn cec(server: &TestServer, token: &str, home: &std::path::Path, args: &[&str]) -> Run {
    let mut c = cec_cmd(home);
    c.env("CEC_URL", &server.url)
        .env("CEC_TOKEN", token)
        .args(args);
    run(c).await
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_commands_list_for_an_admin() {
    let server = spawn_emulator().await;
    let home = tempfile::tempdir().unwrap();
    let admin = mint_pat(&server, "admin");
    let ok = |r: &Run| assert_eq!(r.code(), 0, "{}", r.all());

    let r = cec(&server, &admin, home.path(), &["idm", "list-users"]).await;
    ok(&r);
    assert!(r.stdout.starts_with("Found 3 users:"), "{}", r.stdout);
    for u in ["alice", "bob", "admin"] {
        assert!(r.stdout.contains(&format!("  - {u}\n")), "{}", r.stdout);
    }
    let r = cec(
        &server,
        &admin,
        home.path(),
        &["idm", "list-users", "--json"],
    )
    .await;
    ok(&r);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v.as_array().unwrap().len(), 3);

    let r = cec(&server, &admin, home.path(), &["idm", "list-groups"]).await;
    ok(&r);
    assert_eq!(r.stdout.trim(), "No group found.");

    let r = cec(&server, &admin, home.path(), &["idm", "list-roles"]).await;
    ok(&r);
    assert!(r.stdout.contains("Root Group (ROOT_GROUP)"), "{}", r.stdout);

    let r = cec(
        &server,
        &admin,
        home.path(),
        &["idm", "list-workspaces", "--json"],
    )
    .await;
    ok(&r);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    let root = v
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["Slug"] == "common-files")
        .and_then(|w| w["RootUUIDs"][0].as_str())
        .expect("common-files root")
        .to_string();
    let r = cec(&server, &admin, home.path(), &["idm", "list-workspaces"]).await;
    ok(&r);
    assert!(
        r.stdout.contains("Common Files (common-files)"),
        "{}",
        r.stdout
    );

    let r = cec(
        &server,
        &admin,
        home.path(),
        &["idm", "list-acls", "-n", &root],
    )
    .await;
    ok(&r);
    assert!(
        r.stdout.contains("ROOT_GROUP") && r.stdout.contains("read"),
        "{}",
        r.stdout
    );
    let r = cec(&server, &admin, home.path(), &["idm", "list-acls"]).await;
    assert_eq!(r.code(), 2, "--uuid is required");

    let r = cec(
        &server,
        &admin,
        home.path(),
        &["storage", "list-datasources", "-r"],
    )
    .await;
    ok(&r);
    let names: Vec<&str> = r.stdout.lines().collect();
    assert!(
        names.contains(&"common") && names.contains(&"personal"),
        "{names:?}"
    );
    let r = cec(
        &server,
        &admin,
        home.path(),
        &["storage", "resync-ds", "common"],
    )
    .await;
    ok(&r);
    assert!(
        r.stdout.contains("Starting resync on common"),
        "{}",
        r.stdout
    );
    let r = cec(
        &server,
        &admin,
        home.path(),
        &["storage", "resync-ds", "nope"],
    )
    .await;
    assert_eq!(r.code(), 3, "{}", r.all());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standard_user_lists_what_policies_allow_and_is_refused_the_rest() {
    let server = spawn_emulator().await;
    let home = tempfile::tempdir().unwrap();
    let alice = mint_pat(&server, "alice");
    // What a standard user may list, filtered by the server (as Cells v4's policies do).
    let r = cec(&server, &alice, home.path(), &["idm", "list-users"]).await;
    assert_eq!(r.code(), 0, "{}", r.all());
    assert!(r.stdout.contains("  - bob\n"), "{}", r.stdout);
    let r = cec(&server, &alice, home.path(), &["idm", "list-roles"]).await;
    assert_eq!(r.code(), 0, "{}", r.all());
    assert!(!r.stdout.contains("User bob role"), "{}", r.stdout);
    for args in [vec!["idm", "list-groups"], vec!["idm", "list-workspaces"]] {
        let r = cec(&server, &alice, home.path(), &args).await;
        assert_eq!(r.code(), 0, "{args:?}: {}", r.all());
    }
    for args in [
        vec!["idm", "list-acls", "-n", "x"],
        vec!["storage", "list-datasources"],
        vec!["storage", "resync-ds", "common"],
    ] {
        let r = cec(&server, &alice, home.path(), &args).await;
        assert_eq!(r.code(), 1, "{args:?}: {}", r.all());
        assert!(r.stderr.contains("Forbidden"), "{args:?}: {}", r.stderr);
        assert!(!r.all().contains(&alice));
    }
}
