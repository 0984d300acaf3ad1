//! `cec mount --status MOUNTPOINT` shows the progress of pending uploads: bytes sent of the
//! size and a rate while an upload runs, and in write-back the time until it starts
//! (FUSE, root).

mod mount_common;

use std::time::{Duration, Instant};

use cells_emu::faults::RequestMatch;
use mount_common::*;
use serde_json::Value;

fn status_json(h: &Harness, m: &Mounted) -> Value {
    let out = h
        .cec()
        .args(["mount", "--status", "--json"])
        .arg(&m.path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_running_upload_shows_bytes_sent_of_its_size() {
    let h = Harness::start();
    let mut m = h.mount("progress", &[]);
    let len: u64 = 48 << 20;
    let src = h.dir.path().join("big.src");
    write_pattern(&src, len, 3);
    // The server takes its time before it reads an upload's body: the client's bytes wait in
    // the socket buffers meanwhile, then flow.
    h.state().faults.add_latency(
        RequestMatch::new(Some("PUT"), "/io/"),
        Duration::from_secs(4),
        None,
    );
    let target = h.personal(&m).join("big.bin");
    let copy = std::thread::spawn(move || {
        std::process::Command::new("cp")
            .arg(&src)
            .arg(&target)
            .status()
            .unwrap()
    });
    let mut samples = Vec::new();
    let end = Instant::now() + Duration::from_secs(40);
    while !copy.is_finished() && Instant::now() < end {
        let status = status_json(&h, &m);
        if let Some(p) = status["pending_uploads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["path"] == "personal-files/big.bin")
        {
            samples.push(p.clone());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(copy.join().unwrap().success());
    h.state().faults.clear();
    let sent: Vec<u64> = samples
        .iter()
        .filter_map(|p| p["sent_bytes"].as_u64())
        .collect();
    assert!(
        sent.windows(2).all(|w| w[0] <= w[1]),
        "bytes sent went back: {sent:?}"
    );
    let mid = samples
        .iter()
        .find(|p| {
            p["bytes"] == len
                && p["sent_bytes"].as_u64().is_some_and(|s| s > 0 && s < len)
                && p["rate_bytes_per_sec"].as_u64().is_some()
        })
        .unwrap_or_else(|| panic!("no sample of a running upload: {samples:?}"));
    assert!(mid["starts_in_secs"].is_null(), "{mid}");
    // Once done, nothing is pending.
    let status = status_json(&h, &m);
    assert_eq!(status["pending_uploads"], serde_json::json!([]), "{status}");
    m.unmount();
}

#[test]
fn a_write_back_upload_shows_the_time_until_it_starts() {
    let h = Harness::start();
    let mut m = h.mount("write-back", &["--write-back", "30"]);
    std::fs::write(h.personal(&m).join("later.txt"), b"in a while").unwrap();
    let status = status_json(&h, &m);
    let p = &status["pending_uploads"][0];
    assert_eq!(p["path"], "personal-files/later.txt", "{status}");
    let starts_in = p["starts_in_secs"]
        .as_u64()
        .unwrap_or_else(|| panic!("no start time: {status}"));
    assert!((20..=30).contains(&starts_in), "{status}");
    assert_eq!(p["sent_bytes"], 0, "{status}");
    // The human form says it too.
    let out = h
        .cec()
        .args(["mount", "--status"])
        .arg(&m.path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("personal-files/later.txt (10 B): starts in "),
        "{text}"
    );
    m.unmount();
}
