//! Round trips of a real mount (issue 30), counted by the emulator itself: a latency rule of
//! 0 ms with a huge count is decremented by every request the emulator serves (REST, gateway,
//! OIDC, events), so the requests a command costs are the count it consumed.

mod mount_common;

use std::time::Duration;

use cells_emu::faults::RequestMatch;
use mount_common::*;

const COUNTING: u64 = 1 << 40;

/// Requests the emulator served since [`start_counting`].
fn served(h: &Harness) -> u64 {
    served_under(h, "/")
}

/// Requests under `prefix` the emulator served since [`start_counting_under`].
fn served_under(h: &Harness, prefix: &str) -> u64 {
    let rules = h.state().faults.rules();
    let rule = rules
        .iter()
        .find(|r| r.matcher.path_prefix == prefix)
        .expect("the counting rule");
    COUNTING - rule.remaining.expect("counted")
}

fn start_counting(h: &Harness) {
    start_counting_under(h, "/");
}

fn start_counting_under(h: &Harness, prefix: &str) {
    h.state().faults.add_latency(
        RequestMatch::new(None, prefix),
        Duration::ZERO,
        Some(COUNTING),
    );
}

/// Issue 30: "`bootconf` is fetched twice at mount start" (once to check that the URL is a
/// Cells server, once more for the websocket endpoint). The check's answer serves both.
#[test]
fn a_mount_fetches_the_bootconf_once() {
    let h = Harness::start();
    start_counting_under(&h, "/a/frontend/bootconf");
    let m = h.mount("mnt", &[]);
    assert!(h.personal(&m).is_dir());
    assert_eq!(served_under(&h, "/a/frontend/bootconf"), 1);
}

/// SEMANTICS: "a dot-folder whose entries expired is revalidated with one request" (issue
/// 30: a second `git status` 2 s after the first cost 42 requests, `.git`'s folders re-listed
/// one by one).
#[test]
fn a_second_git_status_within_seconds_costs_a_handful_of_requests() {
    // The default mode: with `--write-back`, the first status's own index write is uploaded
    // and renamed in the background a second later, and when that lands during the second
    // status, its events make the mount list `.git` again (4 to 16 requests in all here; the
    // latency bench measures 4 at 20 ms).
    let h = Harness::start();
    start_counting(&h);
    let m = h.mount("mnt", &[]);
    let repo = h.personal(&m).join("repo");
    for d in 0..5 {
        let dir = repo.join(format!("src{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..10 {
            std::fs::write(dir.join(format!("m{f}.c")), format!("{d} {f}\n")).unwrap();
        }
    }
    sh(
        &repo,
        "git init -q && git -c user.name=t -c user.email=t@example.com add -A \
         && git -c user.name=t -c user.email=t@example.com commit -q -m first",
    );
    assert_eq!(sh(&repo, "git status --porcelain"), "");
    std::thread::sleep(Duration::from_secs(2));
    // git's own lock churn: `git status` creates `.git/index.lock` and, the index being
    // unchanged, deletes it (an upload, a delete and the delete job's polls), counted apart.
    let churn: Vec<(Option<&str>, &str)> = vec![
        (Some("PUT"), "/io/"),
        (None, "/a/tree/delete"),
        (None, "/a/jobs/"),
    ];
    for (method, prefix) in &churn {
        h.state().faults.add_latency(
            RequestMatch::new(*method, prefix),
            Duration::ZERO,
            Some(COUNTING),
        );
    }
    let before = served(&h);
    assert_eq!(sh(&repo, "git status --porcelain"), "");
    let sent = served(&h) - before;
    let lock_churn: u64 = h
        .state()
        .faults
        .rules()
        .iter()
        .skip(1)
        .map(|r| COUNTING - r.remaining.expect("counted"))
        .sum();
    eprintln!("second git status: {sent} requests, {lock_churn} of them git's index.lock");
    assert!(
        sent - lock_churn <= 5,
        "a second git status 2 s after the first: {} requests besides git's index.lock \
         ({sent} in all)",
        sent - lock_churn
    );
}

/// Waits until the mount says its change events are connected.
fn wait_events_connected(h: &Harness, m: &Mounted) {
    eventually(Duration::from_secs(30), "events connected", || {
        String::from_utf8_lossy(&h.mount_status(&m.path).stdout)
            .contains("events:          connected")
    });
}

/// Issue 30: "Negative answers are cached like positive ones (the kernel's negative entries
/// with a timeout, invalidated by change events and by the mount's own creates)". Probing
/// one missing name five times reaches the daemon once; a creation elsewhere shows at once
/// all the same (its event withdraws the kernel's entry); so does the mount's own creation.
#[test]
fn the_kernel_keeps_a_missing_name_until_it_appears() {
    let h = Harness::start();
    let m = h.mount_with_env(&h.new_dir("mnt"), &[], &[("CEC_LOG", "debug")]);
    wait_events_connected(&h, &m);
    let dir = h.personal(&m).join("probe");
    std::fs::create_dir(&dir).unwrap();
    // Every lookup answer the daemon gives for the name is logged (at debug level).
    let negatives = |m: &Mounted| {
        m.log_text()
            .matches("no such file or directory: personal-files/probe/missing")
            .count()
    };
    for _ in 0..5 {
        assert!(!dir.join("missing").exists());
    }
    assert_eq!(negatives(&m), 1, "{}", m.log_text());

    // Made elsewhere: its event withdraws the negative entry.
    let src = h.dir.path().join("elsewhere");
    std::fs::write(&src, b"made elsewhere").unwrap();
    h.block_on(h.api.put_object_from_file(
        "personal-files/probe/missing",
        &src,
        14,
        &cec::api::UploadOptions::default(),
    ))
    .unwrap();
    eventually(Duration::from_secs(5), "the remote file shows", || {
        dir.join("missing").exists()
    });

    // Made here, after a negative answer: seen at once.
    assert!(!dir.join("mine").exists());
    std::fs::write(dir.join("mine"), b"mine").unwrap();
    assert_eq!(std::fs::read(dir.join("mine")).unwrap(), b"mine");
    std::fs::create_dir(dir.join("sub")).unwrap();
    assert!(dir.join("sub").is_dir());
}

/// Issue 30: "After `index.lock` is renamed onto `index`, the next read fetched `index`
/// again although this mount had just uploaded that content: keep content the mount wrote,
/// across its renames." Written, closed (uploaded), renamed, read back by a new open: no
/// GET, for a plain name and under a dot-folder (whose entries carry no Uuid).
#[test]
fn content_this_mount_wrote_is_read_back_without_a_download_after_its_rename() {
    let h = Harness::start();
    let m = h.mount("mnt", &[]);
    let repo = h.personal(&m).join("repo");
    std::fs::create_dir_all(repo.join(".git")).unwrap();
    let body: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    for (lock, name) in [(".git/index.lock", ".git/index"), ("notes.tmp", "notes")] {
        std::fs::write(repo.join(lock), &body).unwrap();
        std::fs::rename(repo.join(lock), repo.join(name)).unwrap();
        h.state().faults.clear();
        h.state().faults.add_latency(
            RequestMatch::new(Some("GET"), "/io/"),
            Duration::ZERO,
            Some(COUNTING),
        );
        assert_eq!(std::fs::read(repo.join(name)).unwrap(), body, "{name}");
        let rules = h.state().faults.rules();
        let gets = COUNTING - rules[0].remaining.unwrap();
        assert_eq!(
            gets, 0,
            "{name}: downloads of content this mount just wrote"
        );
    }
}
