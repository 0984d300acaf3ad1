//! Opening the store: the data directory (0700: the index holds password hashes), the
//! index's schema (WAL), the users of the configuration, the workspace roots, and the
//! clean-up of what a crash left (uploads in `tmp/`, blobs no node references). Also the
//! users of an existing data directory read without opening the store ([`load_idm`]).
//!
//! Invariants:
//! - Opening is safe after any crash: what was committed is kept, the rest is removed.
//! - The configuration's users are (re)created with its passwords at every open.

use std::path::Path;
use std::sync::Mutex;

use crate::EmuConfig;
use crate::idm::Idm;

use super::{Store, ensure_folders_internal, normalize_path, now_secs};

impl Store {
    /// Open (or create) the store under `config.data_dir`, create the users of the config and
    /// their workspace roots. Seeding sample content is the caller's ([`crate::AppState::open`]
    /// does it when `config.sample` and [`Store::is_fresh`]), so that the store never depends on
    /// the modules built on it.
    pub fn open(config: &EmuConfig) -> anyhow::Result<Store> {
        use anyhow::Context;
        let data_dir = config.data_dir.clone();
        for sub in ["", "blobs", "tmp"] {
            std::fs::create_dir_all(data_dir.join(sub))
                .with_context(|| format!("creating {}", data_dir.join(sub).display()))?;
        }
        // The index holds password hashes and the token database lives here too.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("restricting {}", data_dir.display()))?;
        }
        // Uploads interrupted by a crash are garbage.
        if let Ok(rd) = std::fs::read_dir(data_dir.join("tmp")) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let db = rusqlite::Connection::open(data_dir.join("index.sqlite"))
            .context("opening the index")?;
        db.busy_timeout(std::time::Duration::from_secs(10))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS nodes (
                uuid TEXT PRIMARY KEY,
                ipath TEXT NOT NULL UNIQUE,
                parent TEXT NOT NULL,
                kind INTEGER NOT NULL,
                size INTEGER NOT NULL,
                mtime INTEGER NOT NULL,
                etag TEXT NOT NULL,
                mime TEXT,
                cells_hash TEXT,
                meta TEXT NOT NULL,
                content_id TEXT
            );
            DROP INDEX IF EXISTS nodes_parent;
            CREATE INDEX IF NOT EXISTS nodes_parent_name ON nodes(parent, ipath);
            CREATE INDEX IF NOT EXISTS nodes_parent_mtime ON nodes(parent, mtime, ipath);
            CREATE TABLE IF NOT EXISTS users (
                login TEXT PRIMARY KEY, admin INTEGER NOT NULL, salt TEXT NOT NULL, hash TEXT NOT NULL
            );
            CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT NOT NULL);",
        )?;
        // Users: the config's users are (re)created with the config's passwords.
        for (login, password) in &config.users {
            let login = normalize_path(login).map_err(|e| anyhow::anyhow!("{e}"))?;
            anyhow::ensure!(
                !login.is_empty() && !login.contains('/'),
                "invalid login {login:?}"
            );
            let user = crate::idm::User::new(&login, password, config.admins.contains(&login));
            let (salt, hash) = user.secret_parts();
            db.execute(
                "INSERT INTO users (login, admin, salt, hash) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(login) DO UPDATE SET admin = ?2, salt = ?3, hash = ?4",
                rusqlite::params![login, user.admin as i64, salt, hash],
            )?;
        }
        let idm = Idm::new(read_users(&db)?);
        let fresh = {
            use rusqlite::OptionalExtension;
            db.query_row("SELECT v FROM kv WHERE k = 'initialized'", [], |r| {
                r.get::<_, String>(0)
            })
            .optional()?
            .is_none()
        };
        let (changes, _) = tokio::sync::broadcast::channel(4096);
        let store = Store {
            data_dir,
            idm,
            db: Mutex::new(db),
            changes,
            fresh,
        };
        // Workspace roots.
        {
            let db = store.lock();
            for ws in store.idm.all_workspaces() {
                let roots: Vec<String> = match &ws.root {
                    crate::idm::WorkspaceRoot::Shared(p) => vec![p.clone()],
                    crate::idm::WorkspaceRoot::PerUser(_) => store
                        .idm
                        .users()
                        .map(|u| ws.root_internal(&u.login))
                        .collect(),
                };
                for root in roots {
                    ensure_folders_internal(&db, &root, &mut Vec::new())
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                }
            }
            db.execute(
                "INSERT OR REPLACE INTO kv (k, v) VALUES ('initialized', ?1)",
                [now_secs().to_string()],
            )?;
        }
        store.collect_orphan_blobs();
        Ok(store)
    }

    /// Remove blobs no node references (left by a crash between writing a blob and
    /// indexing it, or between re-indexing and unlinking the old one).
    fn collect_orphan_blobs(&self) {
        let referenced: std::collections::HashSet<String> = {
            let db = self.lock();
            let Ok(mut stmt) =
                db.prepare("SELECT content_id FROM nodes WHERE content_id IS NOT NULL")
            else {
                return;
            };
            let Ok(rows) = stmt.query_map([], |r| r.get::<_, String>(0)) else {
                return;
            };
            rows.flatten().collect()
        };
        let Ok(shards) = std::fs::read_dir(self.data_dir.join("blobs")) else {
            return;
        };
        for shard in shards.flatten() {
            let Ok(files) = std::fs::read_dir(shard.path()) else {
                continue;
            };
            for f in files.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if !referenced.contains(&name) {
                    tracing::info!(blob = %name, "removing unreferenced blob");
                    let _ = std::fs::remove_file(f.path());
                }
            }
        }
    }
}

fn read_users(db: &rusqlite::Connection) -> anyhow::Result<Vec<crate::idm::User>> {
    let mut stmt = db.prepare("SELECT login, admin, salt, hash FROM users")?;
    let users = stmt
        .query_map([], |r| {
            Ok(crate::idm::User::from_parts(
                r.get(0)?,
                r.get::<_, i64>(1)? != 0,
                r.get(2)?,
                r.get(3)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(users)
}

/// The users of an existing data directory, read without opening the store (no side
/// effects: safe while a server runs on it). Used by the admin CLI.
pub fn load_idm(data_dir: &Path) -> anyhow::Result<Idm> {
    use anyhow::Context;
    let path = data_dir.join("index.sqlite");
    anyhow::ensure!(
        path.exists(),
        "{} is not a cells-emu data directory (no index.sqlite)",
        data_dir.display()
    );
    let db =
        rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .context("opening the index")?;
    db.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(Idm::new(read_users(&db)?))
}
