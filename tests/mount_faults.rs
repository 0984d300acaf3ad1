//! Server faults under a mount (cells-emu's fault injection): 5xx bursts, connections cut
//! mid-body, every token expired mid-upload, a server restart. Operations retry and either
//! succeed or fail with EIO; nothing written is lost.

mod mount_common;

use std::time::Duration;

use cells_emu::faults::RequestMatch;
use mount_common::*;

#[test]
fn a_burst_of_5xx_on_uploads_and_listings_is_retried() {
    let h = Harness::start();
    let m = h.mount("mnt", &[]);
    let dir = h.personal(&m);
    let faults = &h.state().faults;
    faults.fail_next(RequestMatch::new(Some("PUT"), "/io/"), 503, 2);
    faults.fail_next(RequestMatch::new(Some("POST"), "/a/meta/bulk/get"), 500, 2);
    let p = dir.join("after-503.bin");
    write_pattern(&p, 2 << 20, 3);
    let expected = file_sha256(&p);
    assert_eq!(server_sha256(&h, "personal-files/after-503.bin"), expected);
    let sub = dir.join("listed");
    std::fs::create_dir(&sub).unwrap();
    assert_eq!(std::fs::read_dir(&sub).unwrap().count(), 0);
}

#[test]
fn a_connection_cut_mid_download_is_retried_and_the_data_is_right() {
    let h = Harness::start();
    let m = h.mount("mnt", &[]);
    let p = h.personal(&m).join("cut.bin");
    write_pattern(&p, 8 << 20, 5);
    let expected = file_sha256(&p);
    // Drop the kernel's cached pages and our data cache by remounting.
    drop(m);
    let m = h.mount("mnt2", &["--cache-size", "0"]);
    h.state()
        .faults
        .cut_body_after(RequestMatch::new(Some("GET"), "/io/"), 100_000, 2);
    assert_eq!(file_sha256(&h.personal(&m).join("cut.bin")), expected);
}

#[test]
fn tokens_expired_mid_upload_and_a_server_restart_lose_nothing() {
    let mut h = Harness::start();
    let m = h.mount("mnt", &[]);
    let dir = h.personal(&m);
    // Every token expires while a large upload runs: a PAT cannot be refreshed, so the
    // upload fails with an error (EIO/EACCES) and the data is kept, never silently lost.
    let big = dir.join("big.bin");
    write_pattern(&h.dir.path().join("big.src"), 64 << 20, 9);
    let expected = file_sha256(&h.dir.path().join("big.src"));
    // Upload slowly so the expiry lands mid-upload.
    h.state().faults.add_latency(
        RequestMatch::new(Some("PUT"), "/io/"),
        Duration::from_millis(300),
        None,
    );
    let state = h.state().clone();
    let expirer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        state.expire_all_tokens();
    });
    let copy = std::process::Command::new("cp")
        .arg(h.dir.path().join("big.src"))
        .arg(&big)
        .output()
        .unwrap();
    expirer.join().unwrap();
    h.state().faults.clear();
    // The test's own client used the same (now expired) token: take a fresh one.
    let fresh = h
        .state()
        .auth
        .mint_pat(
            "alice",
            cells_emu::auth::PatExpiry::Fixed(Duration::from_secs(3600)),
        )
        .unwrap();
    h.api = std::sync::Arc::new(api_for(&h.url, &fresh));
    if copy.status.success() {
        // The upload finished before the expiry hit: then it must be complete and right.
        assert_eq!(server_sha256(&h, "personal-files/big.bin"), expected);
    } else {
        let err = String::from_utf8_lossy(&copy.stderr);
        assert!(
            err.contains("Input/output error") || err.contains("Permission denied"),
            "unexpected failure: {err}"
        );
        // The mount says what happened, and the data was kept locally.
        let status = h
            .cec()
            .args(["mount", "--status"])
            .arg(&m.path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&status.stdout);
        assert!(
            text.contains("big.bin"),
            "status does not mention the failed upload:\n{text}"
        );
    }
    drop(m);

    // A server restart between two operations: the mount keeps working afterwards.
    let h2_token = {
        h.restart_emulator(Duration::from_millis(500));
        h.state()
            .auth
            .mint_pat(
                "alice",
                cells_emu::auth::PatExpiry::Fixed(Duration::from_secs(3600)),
            )
            .unwrap()
    };
    h.token = h2_token.clone();
    h.api = std::sync::Arc::new(api_for(&h.url, &h2_token));
    let m = h.mount("mnt3", &[]);
    let p = h.personal(&m).join("before-restart.txt");
    std::fs::write(&p, b"written before the restart").unwrap();
    h.restart_emulator(Duration::from_secs(1));
    let q = h.personal(&m).join("after-restart.txt");
    std::fs::write(&q, b"written after the restart").unwrap();
    assert_eq!(
        std::fs::read_to_string(&p).unwrap(),
        "written before the restart"
    );
    let listed: Vec<_> = std::fs::read_dir(h.personal(&m))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        listed.iter().any(|n| n == "after-restart.txt"),
        "{listed:?}"
    );
}
