//! Identity and workspaces: the users (login, password, admin flag) and the fixed set of
//! workspaces with each user's rights on them.
//!
//! Workspaces (all with scope `ADMIN`, as on a fresh Cells install plus two extras):
//! - `personal-files` ("My Files"): one private root per user (`personal/<login>`), rw;
//! - `common-files` ("Common Files"): one root shared by everybody, rw;
//! - `team-docs` ("Team Docs"): shared, read-only for users, rw for admins;
//! - `scratch` ("Scratch"): shared, rw, `ws_skip_recycle` (deletes are permanent).
//!
//! Invariants: a workspace's uuid is derived from its slug (stable across restarts); internal
//! paths of roots never overlap between workspaces, except `personal/<login>` which is
//! per-user; users are persisted in the index database (passwords as salted SHA-256), the
//! config's users are (re)created at every start with the config's passwords.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// What a user may do in a workspace (`ws_permissions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    Read,
    Write,
    ReadWrite,
}

impl Permission {
    /// `"r"`, `"w"` or `"rw"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "r",
            Permission::Write => "w",
            Permission::ReadWrite => "rw",
        }
    }

    pub fn can_read(self) -> bool {
        matches!(self, Permission::Read | Permission::ReadWrite)
    }

    pub fn can_write(self) -> bool {
        matches!(self, Permission::Write | Permission::ReadWrite)
    }
}

/// Where a workspace's root lives in the datasource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkspaceRoot {
    /// One root per user: `<prefix>/<login>`.
    PerUser(String),
    /// One root for everybody.
    Shared(String),
}

/// Who may do what in a workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Everybody reads and writes.
    Everybody,
    /// Everybody reads; admins also write.
    ReadOnlyForUsers,
}

/// A workspace definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceDef {
    pub slug: String,
    pub label: String,
    pub description: String,
    /// `"ADMIN"` or `"ROOM"`.
    pub scope: String,
    pub skip_recycle: bool,
    pub root: WorkspaceRoot,
    pub access: Access,
}

impl WorkspaceDef {
    /// Stable uuid derived from the slug.
    pub fn uuid(&self) -> String {
        derived_uuid(&format!("workspace:{}", self.slug))
    }

    /// Internal path of this workspace's root for `login`.
    pub fn root_internal(&self, login: &str) -> String {
        match &self.root {
            WorkspaceRoot::PerUser(prefix) => format!("{prefix}/{login}"),
            WorkspaceRoot::Shared(p) => p.clone(),
        }
    }

    /// The rights of a user on this workspace (`None`: invisible).
    pub fn permission(&self, admin: bool) -> Option<Permission> {
        match self.access {
            Access::Everybody => Some(Permission::ReadWrite),
            Access::ReadOnlyForUsers if admin => Some(Permission::ReadWrite),
            Access::ReadOnlyForUsers => Some(Permission::Read),
        }
    }
}

/// A UUID-shaped id derived deterministically from a string (MD5 with version-4 bits set).
pub fn derived_uuid(seed: &str) -> String {
    let mut bytes: [u8; 16] = md5::Md5::digest(seed.as_bytes()).into();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    uuid::Uuid::from_bytes(bytes).to_string()
}

/// The fixed workspace list.
pub fn default_workspaces() -> Vec<WorkspaceDef> {
    vec![
        WorkspaceDef {
            slug: "personal-files".into(),
            label: "My Files".into(),
            description: "Personal files".into(),
            scope: "ADMIN".into(),
            skip_recycle: false,
            root: WorkspaceRoot::PerUser("personal".into()),
            access: Access::Everybody,
        },
        WorkspaceDef {
            slug: "common-files".into(),
            label: "Common Files".into(),
            description: "Data shared by all users".into(),
            scope: "ADMIN".into(),
            skip_recycle: false,
            root: WorkspaceRoot::Shared("common".into()),
            access: Access::Everybody,
        },
        WorkspaceDef {
            slug: "team-docs".into(),
            label: "Team Docs".into(),
            description: "Read-only documents, written by admins".into(),
            scope: "ADMIN".into(),
            skip_recycle: false,
            root: WorkspaceRoot::Shared("team-docs".into()),
            access: Access::ReadOnlyForUsers,
        },
        WorkspaceDef {
            slug: "scratch".into(),
            label: "Scratch".into(),
            description: "Shared scratch space without recycle bin".into(),
            scope: "ADMIN".into(),
            skip_recycle: true,
            root: WorkspaceRoot::Shared("scratch".into()),
            access: Access::Everybody,
        },
    ]
}

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub login: String,
    pub admin: bool,
    /// Hex salt and salted SHA-256 of the password.
    salt: String,
    password_hash: String,
}

impl User {
    /// A user with a fresh salt.
    pub fn new(login: &str, password: &str, admin: bool) -> User {
        let salt = hex::encode(rand::random::<[u8; 16]>());
        let password_hash = hash_password(&salt, password);
        User {
            login: login.to_string(),
            admin,
            salt,
            password_hash,
        }
    }

    /// Rebuild from persisted fields.
    pub fn from_parts(login: String, admin: bool, salt: String, password_hash: String) -> User {
        User {
            login,
            admin,
            salt,
            password_hash,
        }
    }

    /// `(salt, hash)` for persistence.
    pub fn secret_parts(&self) -> (&str, &str) {
        (&self.salt, &self.password_hash)
    }

    /// Constant-time-ish password check.
    pub fn check_password(&self, password: &str) -> bool {
        let h = hash_password(&self.salt, password);
        h.len() == self.password_hash.len()
            && h.bytes()
                .zip(self.password_hash.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

fn hash_password(salt: &str, password: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    hex::encode(h.finalize())
}

/// Users and workspaces.
#[derive(Debug, Clone)]
pub struct Idm {
    users: BTreeMap<String, User>,
    workspaces: Vec<WorkspaceDef>,
}

impl Idm {
    pub fn new(users: impl IntoIterator<Item = User>) -> Idm {
        Idm {
            users: users.into_iter().map(|u| (u.login.clone(), u)).collect(),
            workspaces: default_workspaces(),
        }
    }

    /// A user by login.
    pub fn user(&self, login: &str) -> Option<&User> {
        self.users.get(login)
    }

    /// All users.
    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    /// True if `login` exists and is an admin.
    pub fn is_admin(&self, login: &str) -> bool {
        self.users.get(login).is_some_and(|u| u.admin)
    }

    /// Check a login/password pair.
    pub fn authenticate(&self, login: &str, password: &str) -> Option<&User> {
        self.users.get(login).filter(|u| u.check_password(password))
    }

    /// All workspace definitions.
    pub fn all_workspaces(&self) -> &[WorkspaceDef] {
        &self.workspaces
    }

    /// The workspaces `login` can see with their rights (empty for an unknown login).
    pub fn workspaces_of(&self, login: &str) -> Vec<(WorkspaceDef, Permission)> {
        let Some(user) = self.users.get(login) else {
            return Vec::new();
        };
        self.workspaces
            .iter()
            .filter_map(|w| w.permission(user.admin).map(|p| (w.clone(), p)))
            .collect()
    }
}
