//! `cec get URL [LOCAL]` (and `cec scp URL LOCAL`): a public link's file or folder
//! downloaded with no profile at all (an empty home, no token), through the link's public
//! WebDAV view: file and folder links against cells-emu, the password (file, wrong, missing
//! without a terminal), the dead links (expired, removed, download limit reached), and a
//! hostile public view (names with `..` or `/`, hrefs elsewhere, a body cut short) that must
//! never write outside the target nor leave a partial file under its final name.

mod common;
mod hostile;

use std::collections::BTreeSet;
use std::path::Path;

use cec::api::CellsApi;
use cec::api::shares::{PutShareLinkRequest, new_link_body};
use common::*;
use hostile::{HostileServer, Response};

impl CliCtx {
    /// A context whose server already holds a few files.
    async fn seeded() -> CliCtx {
        let ctx = CliCtx::new().await;
        ctx.put("personal-files/report.pdf", b"the report").await;
        ctx.put("personal-files/photos/a.jpg", b"jpeg-a").await;
        ctx.put("personal-files/photos/trip/b.jpg", b"jpeg-b, longer")
            .await;
        ctx
    }

    /// A link on `path` made through the API (`edit` adds fields to the link), its URL.
    async fn link(&self, path: &str, edit: impl FnOnce(&mut PutShareLinkRequest)) -> String {
        let node = self.api().stat(path).await.unwrap().unwrap();
        let mut req = PutShareLinkRequest {
            share_link: new_link_body(&node.uuid, node.name()),
            ..Default::default()
        };
        edit(&mut req);
        let link = self.api().put_share_link(&req).await.expect("link");
        link.public_url(&self.server.url)
    }

    /// `cec get` as a visitor, in `dir`.
    async fn get(&self, dir: &Path, args: &[&str]) -> Run {
        let mut c = cec_cmd(self.home.path());
        c.current_dir(dir).arg("get").args(args);
        run(c).await
    }
}

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn get_downloads_a_file_link_without_any_profile() {
    let ctx = CliCtx::seeded().await;
    let url = ctx.link("personal-files/report.pdf", |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    // Into the current folder by default, under the file's name.
    let r = ctx.get(dir.path(), &[&url]).await;
    assert_eq!(r.code(), 0, "{}", r.all());
    assert_eq!(names(dir.path()), set(&["report.pdf"]));
    assert_eq!(
        std::fs::read(dir.path().join("report.pdf")).unwrap(),
        b"the report"
    );
    // Exists: refused without --force, replaced with it.
    let r = ctx.get(dir.path(), &[&url]).await;
    assert_ne!(r.code(), 0, "{}", r.all());
    std::fs::write(dir.path().join("report.pdf"), "old").unwrap();
    let r = ctx.get(dir.path(), &["--force", &url]).await;
    assert_eq!(r.code(), 0, "{}", r.all());
    assert_eq!(
        std::fs::read(dir.path().join("report.pdf")).unwrap(),
        b"the report"
    );
    // Named by LOCAL.
    let r = ctx.get(dir.path(), &[&url, "copy.pdf"]).await;
    assert_eq!(r.code(), 0, "{}", r.all());
    assert_eq!(
        std::fs::read(dir.path().join("copy.pdf")).unwrap(),
        b"the report"
    );
    // `cec scp URL LOCAL` does the same.
    let mut c = cec_cmd(ctx.home.path());
    c.current_dir(dir.path()).args(["scp", &url, "sub/"]);
    let r = run(c).await;
    assert_eq!(r.code(), 0, "{}", r.all());
    assert_eq!(
        std::fs::read(dir.path().join("sub/report.pdf")).unwrap(),
        b"the report"
    );
    assert_eq!(
        names(dir.path()),
        set(&["report.pdf", "copy.pdf", "sub"]),
        "a temporary file was left"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn get_downloads_a_folder_link_whole() {
    let ctx = CliCtx::seeded().await;
    let url = ctx.link("personal-files/photos", |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let r = ctx.get(dir.path(), &[&url, "out/"]).await;
    assert_eq!(r.code(), 0, "{}", r.all());
    let root = dir.path().join("out").join("photos");
    assert_eq!(names(&root), set(&["a.jpg", "trip"]));
    assert_eq!(std::fs::read(root.join("a.jpg")).unwrap(), b"jpeg-a");
    assert_eq!(
        std::fs::read(root.join("trip/b.jpg")).unwrap(),
        b"jpeg-b, longer"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn get_asks_for_the_password_of_a_protected_link() {
    let ctx = CliCtx::seeded().await;
    let url = ctx
        .link("personal-files/report.pdf", |r| {
            r.password_enabled = true;
            r.create_password = "open sesame".into();
        })
        .await;
    let dir = tempfile::tempdir().unwrap();
    // No terminal, no file: a clear usage error.
    let r = ctx.get(dir.path(), &[&url]).await;
    assert_eq!(r.code(), 2, "{}", r.all());
    assert!(r.stderr.contains("--password-file"), "{}", r.stderr);
    // A wrong password.
    let wrong = dir.path().join("wrong.txt");
    std::fs::write(&wrong, "nope\n").unwrap();
    let r = ctx
        .get(
            dir.path(),
            &["--password-file", wrong.to_str().unwrap(), &url],
        )
        .await;
    assert_eq!(r.code(), 1, "{}", r.all());
    assert!(r.stderr.contains("refused the password"), "{}", r.stderr);
    assert!(!r.all().contains("nope"), "{}", r.all());
    // The right one.
    let good = dir.path().join("good.txt");
    std::fs::write(&good, "open sesame\n").unwrap();
    let r = ctx
        .get(
            dir.path(),
            &["--password-file", good.to_str().unwrap(), &url],
        )
        .await;
    assert_eq!(r.code(), 0, "{}", r.all());
    assert!(!r.all().contains("open sesame"));
    assert_eq!(
        std::fs::read(dir.path().join("report.pdf")).unwrap(),
        b"the report"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn get_of_a_dead_link_says_why() {
    let ctx = CliCtx::seeded().await;
    let dir = tempfile::tempdir().unwrap();
    // Expired.
    let expired = ctx
        .link("personal-files/report.pdf", |r| {
            r.share_link["AccessEnd"] = serde_json::json!("1000000000");
        })
        .await;
    let r = ctx.get(dir.path(), &[&expired]).await;
    assert_eq!(r.code(), 3, "{}", r.all());
    assert!(r.stderr.contains("This link has expired"), "{}", r.stderr);
    // Download limit: one download, then dead.
    let limited = ctx
        .link("personal-files/report.pdf", |r| {
            r.share_link["MaxDownloads"] = serde_json::json!("1");
        })
        .await;
    let r = ctx.get(dir.path(), &[&limited]).await;
    assert_eq!(r.code(), 0, "{}", r.all());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let r = ctx.get(dir.path(), &["--force", &limited]).await;
    assert_eq!(r.code(), 3, "{}", r.all());
    assert!(r.stderr.contains("maximum downloads"), "{}", r.stderr);
    // Removed.
    let removed = ctx.link("personal-files/report.pdf", |_| {}).await;
    let hash = removed.rsplit('/').next().unwrap().to_string();
    let uuid = ctx
        .api()
        .list_share_links()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.link_uuid)
        .collect::<Vec<_>>();
    for u in uuid {
        let l = ctx.api().get_share_link(&u).await.unwrap();
        if l.link_hash == hash {
            ctx.api().delete_share_link(&u).await.unwrap();
        }
    }
    let r = ctx.get(dir.path(), &[&removed, "again.pdf"]).await;
    assert_eq!(r.code(), 3, "{}", r.all());
    assert!(r.stderr.contains("Cannot find this link"), "{}", r.stderr);
    assert!(!dir.path().join("again.pdf").exists());
    // Not a link at all.
    let r = ctx
        .get(dir.path(), &[&format!("{}/ws/x", ctx.server.url)])
        .await;
    assert_ne!(r.code(), 0, "{}", r.all());
    assert!(r.stderr.contains("not a public link"), "{}", r.stderr);
}

fn multistatus(entries: &[(&str, bool, u64)]) -> String {
    let mut x = String::from(r#"<?xml version="1.0"?><D:multistatus xmlns:D="DAV:">"#);
    for (href, folder, size) in entries {
        let props = if *folder {
            "<D:resourcetype><D:collection/></D:resourcetype>".to_string()
        } else {
            format!("<D:resourcetype/><D:getcontentlength>{size}</D:getcontentlength>")
        };
        x.push_str(&format!(
            "<D:response><D:href>{href}</D:href><D:propstat><D:prop>{props}</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"
        ));
    }
    x.push_str("</D:multistatus>");
    x
}

/// A public view whose folder lists names that climb, hold a `/`, or live elsewhere; one
/// good file. Whatever is asked for besides, the answer is a payload.
fn hostile_view(req: &hostile::Request) -> Option<Response> {
    let base = "/public/evil0000000/dav/";
    if req.method == "PROPFIND" {
        let xml = if req.path == base {
            multistatus(&[
                (base, true, 0),
                ("/public/evil0000000/dav/good.txt", false, 4),
                ("/public/evil0000000/dav/..", false, 7),
                ("/public/evil0000000/dav/../escape.txt", false, 7),
                ("/public/evil0000000/dav/a%2Fb.txt", false, 7),
                ("/etc/passwd", false, 7),
                ("http://elsewhere.example/x.txt", false, 7),
                ("/public/evil0000000/dav/sub/", true, 0),
            ])
        } else if req.path == "/public/evil0000000/dav/sub"
            || req.path == "/public/evil0000000/dav/sub/"
        {
            multistatus(&[
                ("/public/evil0000000/dav/sub/", true, 0),
                ("/public/evil0000000/dav/sub/..%2F..%2Fup.txt", false, 7),
            ])
        } else {
            return Some(Response::bytes(404, "text/plain", "no"));
        };
        return Some(Response::bytes(207, "text/xml", xml));
    }
    if req.method == "GET" && req.path == "/public/evil0000000/dav/good.txt" {
        return Some(Response::bytes(200, "text/plain", "good"));
    }
    Some(Response::bytes(200, "text/plain", "PAYLOAD"))
}

#[tokio::test(flavor = "multi_thread")]
async fn get_from_a_hostile_view_writes_only_checked_names_inside_the_target() {
    let server = HostileServer::start(hostile_view).await;
    let home = tempfile::tempdir().unwrap();
    let parent = home.path().join("parent");
    let target = parent.join("target");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(parent.join("keep.txt"), "keep").unwrap();
    let mut c = cec_cmd(home.path());
    c.current_dir(&target)
        .args(["get", &format!("{}/public/evil0000000", server.url)]);
    let r = run(c).await;
    // The bad names fail the command, each said; the good file is there.
    assert_eq!(r.code(), 1, "{}", r.all());
    assert!(r.stderr.contains("invalid name"), "{}", r.stderr);
    let top = target.join("evil0000000");
    assert_eq!(names(&top), set(&["good.txt", "sub"]), "{}", r.all());
    assert_eq!(std::fs::read(top.join("good.txt")).unwrap(), b"good");
    assert!(names(&top.join("sub")).is_empty());
    // Nothing outside the target.
    assert_eq!(names(&parent), set(&["keep.txt", "target"]));
    assert_eq!(names(&target), set(&["evil0000000"]));
    assert!(!home.path().join("escape.txt").exists());
    assert!(!home.path().join("up.txt").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn get_never_leaves_a_cut_download_under_its_final_name() {
    let server = HostileServer::start(|req| {
        if req.method == "PROPFIND" {
            return Some(Response::bytes(
                207,
                "text/xml",
                multistatus(&[
                    ("/public/cut000000000/dav/", true, 0),
                    ("/public/cut000000000/dav/big.bin", false, 100_000),
                ]),
            ));
        }
        // 100,000 bytes announced, 10 sent, then the connection is cut; every time.
        Some(Response::writer(200, Some(100_000), |mut s| {
            Box::pin(async move {
                use tokio::io::AsyncWriteExt;
                let _ = s.write_all(b"0123456789").await;
                let _ = s.flush().await;
            })
        }))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut c = cec_cmd(home.path());
    c.current_dir(dir.path()).args([
        "get",
        &format!("{}/public/cut000000000", server.url),
        "f.bin",
    ]);
    let r = run(c).await;
    assert_eq!(r.code(), 1, "{}", r.all());
    assert!(
        names(dir.path()).is_empty(),
        "left behind: {:?}",
        names(dir.path())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn get_of_an_endless_tree_stops() {
    // Every folder holds a folder `d` (and the view says so forever).
    let server = HostileServer::start(|req| {
        if req.method == "PROPFIND" {
            let me = if req.path.ends_with('/') {
                req.path.clone()
            } else {
                format!("{}/", req.path)
            };
            return Some(Response::bytes(
                207,
                "text/xml",
                multistatus(&[
                    (&me, true, 0),
                    (&format!("{me}d/"), true, 0),
                    (&format!("{me}f.txt"), false, 1),
                ]),
            ));
        }
        Some(Response::bytes(200, "text/plain", "x"))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut c = cec_cmd(home.path());
    c.current_dir(dir.path())
        .args(["get", &format!("{}/public/deep00000000", server.url)]);
    let r = run(c).await;
    assert_eq!(r.code(), 1, "{}", r.all());
    assert!(r.stderr.contains("deeper than"), "{}", r.stderr);
    let propfinds = server
        .requests()
        .iter()
        .filter(|r| r.method == "PROPFIND")
        .count();
    assert!(propfinds < 300, "{propfinds} listings");
}
