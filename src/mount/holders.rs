//! Which processes keep a mount busy: what `cec unmount` names when the kernel refuses to
//! unmount ("target is busy"), as `fuser -m` or `lsof` would.
//!
//! A process holds a mount when its current directory, its root directory, one of its open
//! files or one of its mapped files lies under the mountpoint. This is read from
//! `/proc/<pid>/{cwd,root,fd/*,maps}` (Linux only; other systems report nobody).
//!
//! Invariants:
//! - Only reads `/proc`: never opens anything under the mountpoint (a hung or dead mount
//!   cannot hang the scan), never signals a process.
//! - A process whose `/proc` entries cannot be read (another user's, when not root) is left
//!   out: the caller says that the list may be incomplete.

use std::path::Path;

/// A process that uses a mount, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// `/proc/<pid>/comm`.
    pub command: String,
    /// How it holds the mount: "current directory", "root directory", "open file PATH",
    /// "mapped file PATH" (the first few).
    pub uses: Vec<String>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} ({}): {}",
            self.pid,
            self.command,
            self.uses.join(", ")
        )
    }
}

/// How many uses of one process are listed (a build may hold thousands of files).
#[cfg(target_os = "linux")]
const USES_SHOWN: usize = 3;

/// The processes (other than this one) that use the mount at `mountpoint` (absolute).
pub fn holders(mountpoint: &Path) -> Vec<Holder> {
    #[cfg(target_os = "linux")]
    {
        holders_in(Path::new("/proc"), mountpoint)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = mountpoint;
        Vec::new()
    }
}

#[cfg(target_os = "linux")]
fn holders_in(proc_root: &Path, mountpoint: &Path) -> Vec<Holder> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut found: Vec<Holder> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter_map(|pid| holder(&proc_root.join(pid.to_string()), pid, mountpoint))
        .collect();
    found.sort_by_key(|h| h.pid);
    found
}

#[cfg(target_os = "linux")]
fn holder(dir: &Path, pid: u32, mountpoint: &Path) -> Option<Holder> {
    let under = |p: &Path| p.starts_with(mountpoint);
    let mut uses = Vec::new();
    let mut more = 0usize;
    let mut add = |uses: &mut Vec<String>, text: String| {
        if uses.len() < USES_SHOWN {
            if !uses.contains(&text) {
                uses.push(text);
            }
        } else {
            more += 1;
        }
    };
    if std::fs::read_link(dir.join("cwd")).is_ok_and(|p| under(&p)) {
        add(&mut uses, "current directory".into());
    }
    if std::fs::read_link(dir.join("root")).is_ok_and(|p| under(&p)) {
        add(&mut uses, "root directory".into());
    }
    if let Ok(fds) = std::fs::read_dir(dir.join("fd")) {
        for fd in fds.filter_map(Result::ok) {
            if let Ok(target) = std::fs::read_link(fd.path())
                && under(&target)
            {
                add(&mut uses, format!("open file {}", target.display()));
            }
        }
    }
    if let Ok(maps) = std::fs::read_to_string(dir.join("maps")) {
        for line in maps.lines() {
            // address perms offset dev inode [path]: the path is the sixth field on.
            let path: std::path::PathBuf = line
                .split_whitespace()
                .skip(5)
                .collect::<Vec<_>>()
                .join(" ")
                .into();
            if path.is_absolute() && under(&path) {
                add(&mut uses, format!("mapped file {}", path.display()));
            }
        }
    }
    if uses.is_empty() {
        return None;
    }
    if more > 0 {
        uses.push(format!("{more} more"));
    }
    let command = std::fs::read_to_string(dir.join("comm"))
        .map(|c| c.trim_end().to_string())
        .unwrap_or_else(|_| "?".into());
    Some(Holder { pid, command, uses })
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_child_in_a_directory_and_one_with_a_file_open_are_found() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        std::fs::write(root.join("held.txt"), b"x").unwrap();
        let mut in_dir = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(&root)
            .spawn()
            .unwrap();
        let mut with_file = std::process::Command::new("sleep")
            .arg("30")
            .current_dir("/")
            .stdin(std::fs::File::open(root.join("held.txt")).unwrap())
            .spawn()
            .unwrap();
        let found = holders(&root);
        let _ = in_dir.kill();
        let _ = with_file.kill();
        let _ = in_dir.wait();
        let _ = with_file.wait();
        let by_pid = |pid: u32| found.iter().find(|h| h.pid == pid).cloned();
        let a = by_pid(in_dir.id()).expect("the child in the directory");
        assert_eq!(a.command, "sleep");
        assert_eq!(a.uses, vec!["current directory".to_string()]);
        let b = by_pid(with_file.id()).expect("the child with the file open");
        assert_eq!(
            b.uses,
            vec![format!("open file {}", root.join("held.txt").display())]
        );
        assert!(
            b.to_string()
                .starts_with(&format!("pid {} (sleep): open file", with_file.id())),
            "{b}"
        );
        assert!(holders(&root.join("elsewhere")).is_empty());
    }
}
