//! Sample content for demos and manual use: a few folders, text files, a small PNG, unicode
//! names and a dotfile, in every user's `personal-files` and in the shared workspaces; and,
//! so that a newcomer sees what Cells has beyond a bucket, in each `personal-files`: a file
//! with several versions (`Documents/report.md`), tagged files (`report.md`, `budget.csv`,
//! the latter also bookmarked) and a file shared by a public link (`Photos/pixel.png`).
//!
//! Invariant: seeding goes through the public store API (so indexes, hashes and events are
//! exactly those of real uploads) and only ever happens on a fresh data directory.

use crate::store::{Store, StoreError};

/// A valid 1×1 PNG.
const TINY_PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xf0,
    0x1f, 0x00, 0x05, 0x00, 0x01, 0xff, 0x89, 0x99, 0x3d, 0x1d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// Seed the sample content (idempotent only in the sense that existing paths are
/// overwritten; [`crate::AppState::open`] calls it on a fresh data directory only).
pub fn seed(store: &Store) -> anyhow::Result<()> {
    let users: Vec<(String, bool)> = store
        .idm()
        .users()
        .map(|u| (u.login.clone(), u.admin))
        .collect();
    for (login, _) in &users {
        let p = |rel: &str| format!("personal-files/{rel}");
        put(
            store,
            login,
            &p("Welcome.txt"),
            format!("Hello {login}, this is your personal space on the Cells emulator.\n")
                .as_bytes(),
        )?;
        put(
            store,
            login,
            &p("Documents/notes.md"),
            b"# Notes\n\n- buy milk\n- write the report\n",
        )?;
        put(
            store,
            login,
            &p("Documents/budget.csv"),
            b"month,amount\njan,120\nfeb,95\nmar,143\n",
        )?;
        put(store, login, &p("Photos/pixel.png"), TINY_PNG)?;
        put(
            store,
            login,
            &p("Photos/Été à Paris/café.txt"),
            "Un café, s'il vous plaît ☕\n".as_bytes(),
        )?;
        put(store, login, &p(".hidden-config"), b"secret=false\n")?;
        folder(store, login, &p("Empty folder"))?;
        seed_cells_features(store, login)?;
    }
    if let Some((login, _)) = users.first() {
        put(
            store,
            login,
            "common-files/README.txt",
            b"Files shared by everybody.\n",
        )?;
        put(
            store,
            login,
            "common-files/Projects/plan.txt",
            b"1. design\n2. build\n3. test\n",
        )?;
        let blob: Vec<u8> = (0..256 * 1024u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        put(store, login, "common-files/Projects/data.bin", &blob)?;
    }
    if let Some((admin, _)) = users.iter().find(|(_, a)| *a) {
        put(
            store,
            admin,
            "team-docs/Handbook.md",
            b"# Team handbook\n\nRead-only for users.\n",
        )?;
        put(
            store,
            admin,
            "team-docs/Policies/holidays.txt",
            b"25 days a year.\n",
        )?;
    }
    Ok(())
}

/// Paths (in `personal-files`) of the sample file with versions, the tagged files and the
/// shared file, with their tags.
pub const VERSIONED_FILE: &str = "personal-files/Documents/report.md";
pub const TAGGED_FILES: &[(&str, &str)] = &[
    ("personal-files/Documents/report.md", "report,draft"),
    ("personal-files/Documents/budget.csv", "finance,2026"),
];
pub const BOOKMARKED_FILE: &str = "personal-files/Documents/budget.csv";
pub const SHARED_FILE: &str = "personal-files/Photos/pixel.png";

/// Versions, tags, a bookmark and a public link in `login`'s personal files, recorded the
/// way the server's versioning job, `/user-meta/update` and `/share/link` record them.
fn seed_cells_features(store: &Store, login: &str) -> anyhow::Result<()> {
    let err = |what: &str, e: StoreError| anyhow::anyhow!("seeding {what}: {e}");
    crate::versions::init(store).map_err(|e| err("versions", e))?;
    crate::shares::init(store).map_err(|e| err("shares", e))?;
    crate::usermeta::init(store).map_err(|e| err("user metadata", e))?;
    let uuid_of = |path: &str| {
        store
            .stat(login, path)
            .map(|n| n.uuid)
            .map_err(|e| err(path, e))
    };
    // Three versions: the versioning job records one per content change.
    for (i, text) in [
        "# Report\n\nFirst draft.\n",
        "# Report\n\nFirst draft.\n\n## Figures\n\nTo come.\n",
        "# Report\n\nSecond draft, figures in.\n\n## Figures\n\n42.\n",
    ]
    .iter()
    .enumerate()
    {
        put(store, login, VERSIONED_FILE, text.as_bytes())?;
        let uuid = uuid_of(VERSIONED_FILE)?;
        crate::versions::record(store, &uuid).map_err(|e| err(&format!("version {i}"), e))?;
    }
    for (path, tags) in TAGGED_FILES {
        let value = serde_json::Value::String(tags.to_string()).to_string();
        crate::usermeta::put_value(store, login, &uuid_of(path)?, crate::usermeta::TAGS, &value)
            .map_err(|e| err(path, e))?;
    }
    crate::usermeta::put_value(
        store,
        login,
        &uuid_of(BOOKMARKED_FILE)?,
        crate::usermeta::BOOKMARK,
        "\"true\"",
    )
    .map_err(|e| err(BOOKMARKED_FILE, e))?;
    let link_uuid = uuid::Uuid::new_v4().to_string();
    let (hidden_login, hidden_uuid) = crate::shares::new_hidden_user();
    let link = crate::shares::Link {
        policies: crate::shares::default_policies(&link_uuid, login, &hidden_login),
        uuid: link_uuid,
        hash: uuid::Uuid::new_v4().simple().to_string()[..crate::shares::HASH_LENGTH].to_string(),
        owner: login.to_string(),
        label: "pixel.png".into(),
        description: "A public link made by the sample data".into(),
        roots: vec![uuid_of(SHARED_FILE)?],
        template: "pydio_unique_strip".into(),
        access_end: 0,
        max_downloads: 0,
        downloads: 0,
        password: None,
        read: true,
        write: false,
        download_disabled: false,
        hidden_login,
        hidden_uuid,
        restrict_to_target_users: false,
        target_users: None,
    };
    crate::shares::save(store, &link).map_err(|e| err(SHARED_FILE, e))?;
    Ok(())
}

fn put(store: &Store, login: &str, path: &str, bytes: &[u8]) -> anyhow::Result<()> {
    store
        .put_bytes(login, path, bytes, None)
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("seeding {path}: {e}"))
}

fn folder(store: &Store, login: &str, path: &str) -> anyhow::Result<()> {
    match store.create_folders(login, path) {
        Ok(_) | Err(StoreError::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(anyhow::anyhow!("seeding {path}: {e}")),
    }
}
