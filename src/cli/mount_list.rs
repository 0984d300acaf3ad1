//! `cec mount --status` without a mountpoint: every cec mount (`fuse.cec`, or `fuse` from a
//! `cells:` source, in `/proc/self/mountinfo`) with one line each: mountpoint, server, profile,
//! pending uploads (count and bytes) and cache use, then one line per pending upload with its
//! progress, asked of each mount's control socket. A mount that does not answer
//! (another user's, or a dead one) is listed with the reason. Kept apart from the status of
//! one mount (`mount::MountStatus`'s display), which other work extends.

use std::path::PathBuf;

use super::CliError;
use crate::mount::{self, human_bytes};

/// The mountpoints of the cec mounts this process sees, in mount order.
fn cec_mountpoints() -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            // `fuse.cec`; without fusermount3 the kernel records plain `fuse`, with the
            // source cec gives its mounts (`cells:<user>@<host>`).
            let fstype = *fields.get(dash + 1)?;
            let source = fields.get(dash + 2).copied().unwrap_or("");
            let cec = fstype == "fuse.cec" || (fstype == "fuse" && source.starts_with("cells:"));
            cec.then(|| {
                fields
                    .get(4)
                    .map(|mp| PathBuf::from(mount::unescape_mountinfo(mp)))
            })
            .flatten()
        })
        .collect()
}

/// Print one line per cec mount (`json`: a list of their statuses, each with `mountpoint`,
/// and `error` for a mount that does not answer).
pub fn show_all(json: bool) -> Result<(), CliError> {
    let mounts = cec_mountpoints();
    if json {
        let list: Vec<serde_json::Value> = mounts
            .iter()
            .map(|mp| match mount::query_status(mp) {
                Ok(s) => serde_json::to_value(s).expect("a status is JSON"),
                Err(e) => serde_json::json!({
                    "mountpoint": mp.display().to_string(),
                    "error": format!("{e:#}"),
                }),
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&list).expect("a list is JSON")
        );
        return Ok(());
    }
    if mounts.is_empty() {
        println!("no cec mount");
        return Ok(());
    }
    for mp in mounts {
        match mount::query_status(&mp) {
            Ok(s) => {
                let pending: u64 = s.pending_uploads.iter().map(|p| p.bytes).sum();
                println!(
                    "{}  server {}  profile {}  pending uploads {} ({})  cache {} of {}",
                    s.mountpoint,
                    s.server,
                    s.profile.as_deref().unwrap_or("(none)"),
                    s.pending_uploads.len(),
                    human_bytes(pending),
                    human_bytes(s.cache_used_bytes),
                    human_bytes(s.cache_limit_bytes)
                );
                for p in &s.pending_uploads {
                    println!(
                        "    {} ({}): {}",
                        p.path,
                        human_bytes(p.bytes),
                        p.progress()
                    );
                }
            }
            Err(e) => println!("{}  not answering: {e:#}", mp.display()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(
            mount::unescape_mountinfo("/mnt/my\\040cells"),
            "/mnt/my cells"
        );
        assert_eq!(mount::unescape_mountinfo("/a\\134b"), "/a\\b");
        assert_eq!(mount::unescape_mountinfo("/plain"), "/plain");
    }
}
