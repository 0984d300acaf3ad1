//! `cec mount --status` without a mountpoint lists every cec mount, one line each, with its
//! server, profile, pending uploads and cache use (FUSE, root).

mod mount_common;

use mount_common::*;

#[test]
fn status_without_a_mountpoint_lists_every_cec_mount() {
    let h = Harness::start();
    let mut a = h.mount("list-a", &["--write-back", "30"]);
    // b uses a stored profile (a and c give --url/--token).
    let add = h
        .cec()
        .args(["config", "add", "token", "--skip-keyring", "--url", &h.url])
        .env("CEC_URL", "")
        .output()
        .unwrap();
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    let b_path = h.new_dir("list-b");
    let cache_b = h.dir.path().join("cache-b");
    let mut b = h.mount_with_env(
        &b_path,
        &["--cache-dir", cache_b.to_str().unwrap()],
        &[("CEC_URL", ""), ("CEC_TOKEN", "")],
    );
    // One write-back upload stays pending on a for 30 s.
    std::fs::write(h.personal(&a).join("pending.txt"), b"not yet uploaded").unwrap();
    let out = h.cec().args(["mount", "--status"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line_of = |m: &Mounted| {
        let wanted = m.path.display().to_string();
        text.lines()
            .find(|l| l.split("  ").next() == Some(wanted.as_str()))
            .unwrap_or_else(|| panic!("{wanted} not listed: {text}"))
            .to_string()
    };
    let la = line_of(&a);
    let lb = line_of(&b);
    assert!(la.contains(&format!("server {}", h.url)), "{la}");
    assert!(la.contains("pending uploads 1 (16 B)"), "{la}");
    assert!(lb.contains("pending uploads 0"), "{lb}");
    assert!(la.contains("profile (none)"), "{la}");
    assert!(lb.contains("profile alice@"), "{lb}");
    // Each pending upload follows its mount's line, with its progress.
    assert!(
        text.contains("    personal-files/pending.txt (16 B): starts in "),
        "{text}"
    );
    assert!(la.contains("cache ") && lb.contains("cache "), "{text}");
    a.unmount();
    b.unmount();
}
