//! `cec scp -l/--links` against cells-emu through the real binary: links inside an uploaded
//! tree are stored as rclone's `NAME.rclonelink` files and a download recreates them; what
//! cannot be a link (NUL, over 4,095 bytes, a plain node of the same name) comes down as the
//! file it is; and a download never writes through a link, whether the server sent it (a
//! link `a` to a folder outside, then `a/passwd`) or it was there before. Without `--links`,
//! `--help` says what happens to links.

mod common;

use std::path::{Path, PathBuf};

use cec::api::CellsApi;
use common::*;

impl CliCtx {
    /// `cec scp --no-progress ARGS`.
    async fn scp(&self, args: &[&str]) -> Run {
        let mut c = self.cmd(&["scp", "--no-progress"]);
        c.args(args);
        run(c).await
    }

    async fn scp_ok(&self, args: &[&str]) -> Run {
        let r = self.scp(args).await;
        assert_eq!(r.code(), 0, "cec scp {args:?} failed: {}", r.all());
        r
    }

    /// `name` inside the home, created.
    fn made_dir(&self, name: &str) -> PathBuf {
        let d = self.dir(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn link_of(path: &Path) -> Option<PathBuf> {
    std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.file_type().is_symlink())
        .and_then(|_| std::fs::read_link(path).ok())
}

#[tokio::test]
async fn links_go_up_as_rclonelink_files_and_come_down_as_links() {
    let ctx = CliCtx::new().await;
    let src = ctx.made_dir("src");
    std::fs::create_dir(src.join("sub")).unwrap();
    std::fs::write(src.join("f"), "content").unwrap();
    std::os::unix::fs::symlink("f", src.join("l")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", src.join("abs")).unwrap();
    std::os::unix::fs::symlink("no/such", src.join("dangling")).unwrap();
    std::os::unix::fs::symlink("sub", src.join("dirlink")).unwrap();
    std::os::unix::fs::symlink("../f", src.join("sub/up")).unwrap();
    let r = ctx
        .scp_ok(&["-l", s(&src), "cells://personal-files/"])
        .await;
    assert!(!r.stderr.contains("not followed"), "{}", r.stderr);
    for (stored, target) in [
        ("src/l.rclonelink", "f"),
        ("src/abs.rclonelink", "/etc/hostname"),
        ("src/dangling.rclonelink", "no/such"),
        ("src/dirlink.rclonelink", "sub"),
        ("src/sub/up.rclonelink", "../f"),
    ] {
        assert_eq!(
            ctx.body(&format!("personal-files/{stored}"))
                .await
                .as_deref(),
            Some(target.as_bytes()),
            "{stored}"
        );
    }
    // Not followed: the folder the link points to is not uploaded twice.
    assert!(
        ctx.api()
            .stat("personal-files/src/dirlink")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        ctx.api()
            .stat("personal-files/src/l")
            .await
            .unwrap()
            .is_none()
    );

    let back = ctx.made_dir("back");
    ctx.scp_ok(&["--links", "cells://personal-files/src", s(&back)])
        .await;
    let down = back.join("src");
    assert_eq!(link_of(&down.join("l")), Some(PathBuf::from("f")));
    assert_eq!(
        link_of(&down.join("abs")),
        Some(PathBuf::from("/etc/hostname"))
    );
    assert_eq!(
        link_of(&down.join("dangling")),
        Some(PathBuf::from("no/such"))
    );
    assert_eq!(link_of(&down.join("dirlink")), Some(PathBuf::from("sub")));
    assert_eq!(link_of(&down.join("sub/up")), Some(PathBuf::from("../f")));
    assert_eq!(std::fs::read_to_string(down.join("l")).unwrap(), "content");
    assert!(!down.join("l.rclonelink").exists());
    // A single stored link downloads as the link.
    let one = ctx.made_dir("one");
    ctx.scp_ok(&["-l", "cells://personal-files/src/l.rclonelink", s(&one)])
        .await;
    assert_eq!(link_of(&one.join("l")), Some(PathBuf::from("f")));
}

#[tokio::test]
async fn what_cannot_be_a_link_comes_down_as_the_file_it_is() {
    let ctx = CliCtx::new().await;
    ctx.put("personal-files/w/nul.rclonelink", b"a\0b").await;
    ctx.put("personal-files/w/big.rclonelink", &[b'a'; 4096])
        .await;
    ctx.put("personal-files/w/a.rclonelink", b"/etc").await;
    ctx.put("personal-files/w/a/passwd", b"mine").await;
    let back = ctx.made_dir("back");
    ctx.scp_ok(&["-l", "cells://personal-files/w", s(&back)])
        .await;
    let w = back.join("w");
    assert_eq!(std::fs::read(w.join("nul.rclonelink")).unwrap(), b"a\0b");
    assert_eq!(std::fs::read(w.join("big.rclonelink")).unwrap().len(), 4096);
    // The plain folder wins its name; the link file is the file it is.
    assert!(std::fs::symlink_metadata(w.join("a")).unwrap().is_dir());
    assert_eq!(std::fs::read(w.join("a/passwd")).unwrap(), b"mine");
    assert_eq!(std::fs::read(w.join("a.rclonelink")).unwrap(), b"/etc");
    assert!(std::fs::symlink_metadata(w.join("nul")).is_err());
}

/// The server sends `a` as a link to a folder outside the target, then (next download)
/// `a/passwd`: nothing is written outside.
#[tokio::test]
async fn a_download_never_writes_through_a_link_the_server_sent() {
    let ctx = CliCtx::new().await;
    let outside = ctx.made_dir("outside");
    ctx.put("personal-files/evil/a.rclonelink", s(&outside).as_bytes())
        .await;
    let back = ctx.made_dir("back");
    ctx.scp_ok(&["-l", "cells://personal-files/evil", s(&back)])
        .await;
    assert_eq!(link_of(&back.join("evil/a")), Some(outside.clone()));
    ctx.api()
        .delete_nodes(&["personal-files/evil/a.rclonelink".to_string()], true)
        .await
        .unwrap();
    ctx.put("personal-files/evil/a/passwd", b"owned").await;
    ctx.put("personal-files/evil/a/deeper/x", b"owned").await;
    for args in [
        vec!["-l", "--force"],
        vec!["--force"],
        vec!["-l", "--update"],
    ] {
        let mut all = args.clone();
        all.extend(["cells://personal-files/evil", s(&back)]);
        let r = ctx.scp(&all).await;
        assert_eq!(r.code(), 1, "{args:?}: {}", r.all());
        assert!(r.stderr.contains("symbolic link"), "{args:?}: {}", r.stderr);
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            0,
            "{args:?}: written through the link"
        );
    }
    assert_eq!(link_of(&back.join("evil/a")), Some(outside));
}

/// A link that was there before (made by the user, not this tool) is not written through
/// either, with or without `--links`.
#[tokio::test]
async fn a_download_never_writes_through_a_link_that_was_there() {
    let ctx = CliCtx::new().await;
    let outside = ctx.made_dir("outside");
    ctx.put("personal-files/t/cfg/passwd", b"owned").await;
    ctx.put("personal-files/t/keep", b"fine").await;
    let back = ctx.made_dir("back");
    std::fs::create_dir(back.join("t")).unwrap();
    std::os::unix::fs::symlink(&outside, back.join("t/cfg")).unwrap();
    for args in [vec!["--force"], vec!["-l", "--force"]] {
        let mut all = args.clone();
        all.extend(["cells://personal-files/t", s(&back)]);
        let r = ctx.scp(&all).await;
        assert_eq!(r.code(), 1, "{args:?}: {}", r.all());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "{args:?}");
        assert_eq!(std::fs::read(back.join("t/keep")).unwrap(), b"fine");
    }
}

#[tokio::test]
async fn help_says_what_happens_to_links() {
    let ctx = CliCtx::new().await;
    let r = ctx.scp_ok(&["--help"]).await;
    assert!(r.stdout.contains("-l, --links"), "{}", r.stdout);
    assert!(r.stdout.contains("NAME.rclonelink"), "{}", r.stdout);
    // Without --links: what an upload does with a link.
    assert!(
        r.stdout.contains("a SOURCE that is a link is followed"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("skipped"), "{}", r.stdout);
}
