//! Tags, bookmarks and public links as extended attributes of the real mount (issue 25):
//! `getfattr -d` shows them with the Uuid and Etag, `setfattr` stores tags and bookmarks on the
//! server before it returns (checked through the emulator's REST API with another client, not
//! through the mount), the public URL is read-only (EPERM), another client's change shows up
//! after its event, and hostile values are bounded.

mod mount_common;

use std::ffi::CString;
use std::path::Path;
use std::time::Duration;

use cec::api::CellsApi;
use mount_common::*;
use serde_json::{Value, json};

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn cpath(p: &Path) -> CString {
    c(p.to_str().unwrap())
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// `setxattr(2)`: `Err(errno)` on failure.
fn setx(p: &Path, name: &str, value: &[u8]) -> Result<(), i32> {
    let r = unsafe {
        libc::setxattr(
            cpath(p).as_ptr(),
            c(name).as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 { Ok(()) } else { Err(errno()) }
}

fn removex(p: &Path, name: &str) -> Result<(), i32> {
    let r = unsafe { libc::removexattr(cpath(p).as_ptr(), c(name).as_ptr()) };
    if r == 0 { Ok(()) } else { Err(errno()) }
}

/// `getxattr(2)` with a 64 KiB buffer.
fn getx(p: &Path, name: &str) -> Result<String, i32> {
    let mut buf = vec![0u8; 65536];
    let r = unsafe {
        libc::getxattr(
            cpath(p).as_ptr(),
            c(name).as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if r < 0 {
        return Err(errno());
    }
    buf.truncate(r as usize);
    Ok(String::from_utf8(buf).unwrap())
}

/// `getfattr -d` (all `user.*` attributes, values quoted).
fn dump(p: &Path) -> String {
    sh(
        p.parent().unwrap(),
        &format!(
            "getfattr -d --absolute-names {:?}",
            p.to_str().unwrap().to_string()
        ),
    )
}

/// The node's `MetaStore` as the server's REST API gives it to another client, each value
/// JSON-decoded (read raw: cec's own nodes keep only the keys it reads, already typed).
fn server_meta(h: &Harness, path: &str) -> serde_json::Map<String, Value> {
    let stat = rest(
        h,
        reqwest::Method::GET,
        &format!("/tree/stat/{path}"),
        &h.token,
        Value::Null,
    );
    assert!(
        stat["Node"].is_object(),
        "{path} is not on the server: {stat}"
    );
    let store = stat["Node"]["MetaStore"].as_object().cloned();
    store
        .unwrap_or_default()
        .into_iter()
        .map(|(k, raw)| match &raw {
            Value::String(text) => (k, serde_json::from_str(text).unwrap_or(raw)),
            _ => (k, raw),
        })
        .collect()
}

fn uuid_of(h: &Harness, path: &str) -> String {
    h.block_on(h.api.stat(path)).unwrap().expect("exists").uuid
}

fn put(h: &Harness, path: &str, content: &'static [u8]) {
    h.block_on(h.api.put_object(
        path,
        bytes::Bytes::from_static(content),
        &Default::default(),
    ))
    .unwrap();
}

/// A REST call to the emulator with `token` (another client than the mount).
fn rest(h: &Harness, method: reqwest::Method, path: &str, token: &str, body: Value) -> Value {
    h.block_on(async {
        let resp = reqwest::Client::new()
            .request(method, format!("{}/a{path}", h.url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    })
}

#[test]
fn tags_and_bookmark_are_stored_on_the_server_and_shown_by_getfattr() {
    let h = Harness::start();
    let m = h.mount("mnt", &[]);
    let file = h.personal(&m).join("invoice.pdf");
    std::fs::write(&file, b"%PDF").unwrap();
    let folder = h.personal(&m).join("Taxes");
    std::fs::create_dir(&folder).unwrap();

    // Tags: normalised, stored on the server before setfattr returns.
    sh(
        &h.personal(&m),
        "setfattr -n user.cells.tags -v 'invoice, 2026' invoice.pdf",
    );
    assert_eq!(
        server_meta(&h, "personal-files/invoice.pdf").get("usermeta-tags"),
        Some(&json!("invoice,2026"))
    );
    assert_eq!(getx(&file, "user.cells.tags").unwrap(), "invoice,2026");
    let d = dump(&file);
    assert!(d.contains("user.cells.tags=\"invoice,2026\""), "{d}");
    assert!(d.contains("user.cells.uuid=\""), "{d}");
    assert!(d.contains("user.cells.etag=\""), "{d}");
    assert!(!d.contains("user.cells.share"), "not shared: {d}");
    assert!(!d.contains("user.cells.bookmark"), "not bookmarked: {d}");

    // Folders too.
    setx(&folder, "user.cells.tags", b"archive").unwrap();
    assert_eq!(
        server_meta(&h, "personal-files/Taxes").get("usermeta-tags"),
        Some(&json!("archive"))
    );

    // Bookmark: set, seen on the server, cleared.
    setx(&file, "user.cells.bookmark", b"1").unwrap();
    assert_eq!(
        server_meta(&h, "personal-files/invoice.pdf").get("bookmark"),
        Some(&json!("true"))
    );
    assert_eq!(getx(&file, "user.cells.bookmark").unwrap(), "1");
    assert!(dump(&file).contains("user.cells.bookmark=\"1\""));
    sh(
        &h.personal(&m),
        "setfattr -x user.cells.bookmark invoice.pdf",
    );
    assert_eq!(
        server_meta(&h, "personal-files/invoice.pdf").get("bookmark"),
        None
    );
    assert_eq!(getx(&file, "user.cells.bookmark"), Err(libc::ENODATA));

    // Removing the tags clears them on the server; removing again: ENODATA.
    removex(&file, "user.cells.tags").unwrap();
    assert_eq!(
        server_meta(&h, "personal-files/invoice.pdf").get("usermeta-tags"),
        None
    );
    assert_eq!(getx(&file, "user.cells.tags"), Err(libc::ENODATA));
    assert_eq!(removex(&file, "user.cells.tags"), Err(libc::ENODATA));

    // Unknown names keep their behaviour: Cells stores no arbitrary attributes.
    assert_eq!(setx(&file, "user.other", b"x"), Err(libc::EOPNOTSUPP));
    assert_eq!(getx(&file, "user.other"), Err(libc::ENODATA));
}

#[test]
fn the_public_url_of_a_shared_file_is_shown_and_read_only() {
    let h = Harness::start();
    put(&h, "personal-files/photo.png", b"png");
    put(&h, "personal-files/plain.txt", b"txt");
    let uuid = uuid_of(&h, "personal-files/photo.png");
    let link = rest(
        &h,
        reqwest::Method::PUT,
        "/share/link",
        &h.token,
        json!({"ShareLink": {"Label": "photo", "RootNodes": [{"Uuid": uuid}],
            "Permissions": ["Preview", "Download"], "ViewTemplateName": "pydio_unique_strip"}}),
    );
    let expected = format!("{}{}", h.url, link["LinkUrl"].as_str().unwrap());
    assert!(expected.contains("/public/"), "{expected}");
    let m = h.mount("mnt", &[]);
    let photo = h.personal(&m).join("photo.png");
    assert_eq!(getx(&photo, "user.cells.share").unwrap(), expected);
    let d = dump(&photo);
    assert!(
        d.contains(&format!("user.cells.share=\"{expected}\"")),
        "{d}"
    );
    // Read-only: EPERM, as for the Uuid and the Etag (not EACCES: no permission change
    // would make it writable; the link is made with `cec share`).
    assert_eq!(
        setx(&photo, "user.cells.share", b"https://evil.example/x"),
        Err(libc::EPERM)
    );
    assert_eq!(removex(&photo, "user.cells.share"), Err(libc::EPERM));
    assert_eq!(setx(&photo, "user.cells.uuid", b"x"), Err(libc::EPERM));
    assert_eq!(getx(&photo, "user.cells.share").unwrap(), expected);
    // Not shared: absent.
    let plain = h.personal(&m).join("plain.txt");
    assert_eq!(getx(&plain, "user.cells.share"), Err(libc::ENODATA));
    assert!(!dump(&plain).contains("user.cells.share"));
}

#[test]
fn another_clients_tags_show_up_after_the_event() {
    let h = Harness::start();
    put(&h, "common-files/plan.txt", b"plan");
    let uuid = uuid_of(&h, "common-files/plan.txt");
    // Long TTLs: only the event can make the change visible this fast.
    let m = h.mount("mnt", &["--attr-timeout", "60s", "--dir-cache-time", "60s"]);
    let file = m.path.join("common-files/plan.txt");
    assert!(std::fs::read_dir(m.path.join("common-files")).is_ok());
    assert_eq!(getx(&file, "user.cells.tags"), Err(libc::ENODATA));
    std::thread::sleep(Duration::from_millis(500));

    // Bob tags the file from another client (the emulator's REST API).
    let bob = h
        .state()
        .auth
        .mint_pat(
            "bob",
            cells_emu::auth::PatExpiry::Fixed(Duration::from_secs(3600)),
        )
        .unwrap();
    let put_tags = |value: &str| {
        rest(
            &h,
            reqwest::Method::PUT,
            "/user-meta/update",
            &bob,
            json!({"Operation": "PUT", "MetaDatas": [{"NodeUuid": uuid, "Namespace": "usermeta-tags",
                "JsonValue": Value::String(value.into()).to_string(),
                "Policies": [{"Resource": uuid, "Action": "READ", "Subject": "*", "Effect": "allow"}]}]}),
        )
    };
    put_tags("from-bob");
    let took = eventually(Duration::from_secs(5), "bob's tags in the mount", || {
        getx(&file, "user.cells.tags").as_deref() == Ok("from-bob")
    });
    eprintln!("bob's tags seen after {took:?}");
    assert!(dump(&file).contains("user.cells.tags=\"from-bob\""));
    put_tags("from-bob,again");
    eventually(
        Duration::from_secs(5),
        "bob's new tags in the mount",
        || getx(&file, "user.cells.tags").as_deref() == Ok("from-bob,again"),
    );
}

#[test]
fn hostile_tag_values_are_refused_both_ways() {
    let h = Harness::start();
    put(&h, "personal-files/a.txt", b"a");
    put(&h, "personal-files/b.txt", b"b");
    // The server holds a 100 KB tags value on b.txt (a hostile or broken server).
    let huge = "x".repeat(100_000);
    cells_emu::usermeta::put_value(
        &h.state().store,
        "alice",
        &uuid_of(&h, "personal-files/b.txt"),
        cells_emu::usermeta::TAGS,
        &Value::String(huge).to_string(),
    )
    .unwrap();
    let m = h.mount("mnt", &[]);
    let a = h.personal(&m).join("a.txt");
    let b = h.personal(&m).join("b.txt");
    // From the server: ignored, never passed to programs.
    assert_eq!(getx(&b, "user.cells.tags"), Err(libc::ENODATA));
    let d = dump(&b);
    assert!(!d.contains("user.cells.tags"), "{d}");
    assert!(d.contains("user.cells.uuid"), "{d}");
    // From the user: past 4 KiB, ERANGE (setxattr(2): a value over the filesystem's limit),
    // and nothing reaches the server.
    assert_eq!(
        setx(&a, "user.cells.tags", "y".repeat(5000).as_bytes()),
        Err(libc::ERANGE)
    );
    assert_eq!(setx(&a, "user.cells.tags", b"bad\0tag"), Err(libc::EINVAL));
    assert_eq!(
        server_meta(&h, "personal-files/a.txt").get("usermeta-tags"),
        None
    );
    // A buffer too small for a value: ERANGE, as getxattr(2) says.
    setx(&a, "user.cells.tags", b"0123456789").unwrap();
    let mut small = [0u8; 4];
    let r = unsafe {
        libc::getxattr(
            cpath(&a).as_ptr(),
            c("user.cells.tags").as_ptr(),
            small.as_mut_ptr().cast(),
            small.len(),
        )
    };
    assert_eq!((r, errno()), (-1, libc::ERANGE));
}

#[test]
fn a_file_not_uploaded_yet_cannot_be_tagged() {
    let h = Harness::start();
    let m = h.mount("mnt", &[]);
    let path = h.personal(&m).join("open.txt");
    let f = std::fs::File::create(&path).unwrap();
    // Open, never closed: not on the server; the mount must not claim it stored the tags.
    assert_eq!(setx(&path, "user.cells.tags", b"x"), Err(libc::EBUSY));
    drop(f);
    // Uploaded at close (an empty new file: when the kernel releases it, just after).
    eventually(Duration::from_secs(5), "tags set once uploaded", || {
        setx(&path, "user.cells.tags", b"x").is_ok()
    });
    assert_eq!(
        server_meta(&h, "personal-files/open.txt").get("usermeta-tags"),
        Some(&json!("x"))
    );
}

#[test]
fn the_demo_mount_shows_tags_a_bookmark_and_a_public_link() {
    // A newcomer's `cec mount --demo` shows the three features at once (issue 25); the
    // versions of Documents/report.md are checked in the emulator's `sample_data` test.
    let h = Harness::start();
    let mut m = h.mount("demo", &["--demo"]);
    let docs = h.personal(&m).join("Documents");
    assert_eq!(
        getx(&docs.join("report.md"), "user.cells.tags").as_deref(),
        Ok("report,draft")
    );
    let budget = dump(&docs.join("budget.csv"));
    assert!(
        budget.contains("user.cells.tags=\"finance,2026\""),
        "{budget}"
    );
    assert!(budget.contains("user.cells.bookmark=\"1\""), "{budget}");
    let url = getx(&h.personal(&m).join("Photos/pixel.png"), "user.cells.share").unwrap();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.contains("/public/"),
        "{url}"
    );
    m.unmount();
}
