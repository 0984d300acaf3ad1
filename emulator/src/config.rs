//! The emulator's configuration: where it keeps its data, where it listens, its users and the
//! knobs tests turn (job delay, token lifetime, fault injection).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct EmuConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// `(login, password)` pairs; created at first start, passwords updated on later starts.
    pub users: Vec<(String, String)>,
    /// Logins with the admin profile.
    pub admins: Vec<String>,
    /// Seed a little realistic content at first start.
    pub sample: bool,
    /// Serve the fault-injection control endpoint and honour its rules.
    pub faults: bool,
    /// How long a move/copy/delete/restore job stays queued/running before it acts.
    pub job_delay: Duration,
    /// Lifetime of OAuth access tokens (`expires_in`).
    pub access_token_ttl: Duration,
}

impl EmuConfig {
    /// A configuration for tests: loopback on a free port, users `alice`/`bob` with password
    /// `secret-<login>`, admin `admin`, short job delay.
    pub fn for_tests(data_dir: impl Into<PathBuf>) -> EmuConfig {
        EmuConfig {
            data_dir: data_dir.into(),
            listen: "127.0.0.1:0".parse().expect("loopback address"),
            users: vec![
                ("alice".into(), "secret-alice".into()),
                ("bob".into(), "secret-bob".into()),
                ("admin".into(), "secret-admin".into()),
            ],
            admins: vec!["admin".into()],
            sample: false,
            faults: true,
            job_delay: Duration::from_millis(50),
            access_token_ttl: Duration::from_secs(600),
        }
    }
}
