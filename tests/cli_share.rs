//! `cec share` against cells-emu, through the real binary with a PAT in `CEC_TOKEN`: the
//! official client's create (its request and its `Public link created at URL` line), each
//! option (expiry, password from a file, download limit, label, description, upload,
//! template, --json), `share ls / show / update / rm` by path, Uuid and URL, and the errors
//! (unknown path, a link removed, several links on one path). Each public effect is checked
//! on the link's public WebDAV view, as a visitor sees it.

mod common;

use common::*;
use serde_json::Value;

impl CliCtx {
    /// A context whose server already holds a few files.
    async fn seeded() -> CliCtx {
        let ctx = CliCtx::new().await;
        ctx.put("personal-files/report.pdf", b"the report").await;
        ctx.put("personal-files/photos/a.jpg", b"jpeg-a").await;
        ctx
    }

    async fn json(&self, args: &[&str]) -> Value {
        let r = self.ok(args).await;
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
    }

    fn password_file(&self, pw: &str) -> String {
        let p = self.home.path().join(format!("pw-{pw}"));
        std::fs::write(&p, format!("{pw}\n")).unwrap();
        p.to_string_lossy().into_owned()
    }

    /// GET `<url>/dav/<name>` as a visitor: status and body.
    async fn visit(&self, url: &str, name: &str, password: Option<&str>) -> (u16, String) {
        let mut req = reqwest::Client::new().get(format!("{url}/dav/{name}"));
        if let Some(pw) = password {
            req = req.basic_auth("x", Some(pw));
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }
}

/// The URL of `Public link created at URL`.
fn created_url(r: &Run) -> String {
    let line = r
        .stderr
        .lines()
        .find(|l| l.starts_with("Public link created at "))
        .unwrap_or_else(|| panic!("no link line: {}", r.all()));
    line.trim_start_matches("Public link created at ")
        .to_string()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn i64_of(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap(),
        Value::Number(n) => n.as_i64().unwrap(),
        _ => 0,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn share_creates_a_link_as_the_official_client() {
    let ctx = CliCtx::seeded().await;
    let r = ctx.ok(&["share", "personal-files/report.pdf"]).await;
    // The official client's line on stderr, an empty line on stdout.
    let url = created_url(&r);
    assert_eq!(r.stdout, "\n", "{}", r.all());
    let prefix = format!("{}/public/", ctx.server.url);
    assert!(url.starts_with(&prefix), "{url}");
    let hash = url.trim_start_matches(&prefix);
    assert_eq!(hash.len(), 12, "{url}");
    // The link as the official client makes it: label = base name, folder template,
    // Preview + Download.
    let v = ctx
        .json(&["share", "show", "personal-files/report.pdf", "--json"])
        .await;
    assert_eq!(v["Label"], "report.pdf");
    assert_eq!(v["ViewTemplateName"], "pydio_shared_folder");
    assert_eq!(v["Permissions"], serde_json::json!(["Preview", "Download"]));
    assert_eq!(v["PublicUrl"], url.as_str());
    assert!(v.get("AccessEnd").is_none() && v.get("MaxDownloads").is_none());
    // A visitor downloads it.
    assert_eq!(
        ctx.visit(&url, "report.pdf", None).await,
        (200, "the report".to_string())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn share_options_reach_the_link() {
    let ctx = CliCtx::seeded().await;
    let pw = ctx.password_file("s3cret-pw");
    let before = now();
    let v = ctx
        .json(&[
            "share",
            "personal-files/report.pdf",
            "--expire",
            "7d",
            "--max-downloads",
            "3",
            "--label",
            "Q3 report",
            "--description",
            "for the board",
            "--template",
            "preview",
            "--password-file",
            &pw,
            "--json",
        ])
        .await;
    let end = i64_of(&v["AccessEnd"]);
    assert!(
        (before + 7 * 86400..=now() + 7 * 86400).contains(&end),
        "AccessEnd {end}"
    );
    assert_eq!(i64_of(&v["MaxDownloads"]), 3);
    assert_eq!(v["Label"], "Q3 report");
    assert_eq!(v["Description"], "for the board");
    assert_eq!(v["ViewTemplateName"], "pydio_unique_strip");
    assert_eq!(v["PasswordRequired"], true);
    assert_eq!(v["Path"], "personal-files/report.pdf");
    let url = v["PublicUrl"].as_str().unwrap().to_string();
    // The password protects the public view, and never reaches the output.
    assert_eq!(ctx.visit(&url, "report.pdf", None).await.0, 401);
    assert_eq!(ctx.visit(&url, "report.pdf", Some("wrong")).await.0, 401);
    assert_eq!(
        ctx.visit(&url, "report.pdf", Some("s3cret-pw")).await,
        (200, "the report".to_string())
    );
    assert!(!v.to_string().contains("s3cret-pw"));

    // A date: the end of that day, UTC.
    let v = ctx
        .json(&[
            "share",
            "personal-files/report.pdf",
            "--expire",
            "2099-12-31",
            "--template",
            "download",
            "--json",
        ])
        .await;
    assert_eq!(i64_of(&v["AccessEnd"]), 4_102_444_799);
    assert_eq!(v["ViewTemplateName"], "pydio_unique_dl");
    assert_eq!(v["Permissions"], serde_json::json!(["Download"]));

    // Upload: folders only.
    let v = ctx
        .json(&["share", "personal-files/photos", "--upload", "--json"])
        .await;
    let perms: Vec<&str> = v["Permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(perms.contains(&"Upload"), "{perms:?}");
    let r = ctx
        .cec(&["share", "personal-files/report.pdf", "--upload"])
        .await;
    assert_eq!(r.code(), 2, "{}", r.all());
    // Bad options are refused before any request.
    for bad in [
        &["--expire", "yesterday"][..],
        &["--expire", "2001-01-01"],
        &["--max-downloads", "-1"],
    ] {
        let mut args = vec!["share", "personal-files/report.pdf"];
        args.extend_from_slice(bad);
        let r = ctx.cec(&args).await;
        assert_eq!(r.code(), 2, "{bad:?}: {}", r.all());
    }
    // Three links were made, no more.
    let all = ctx.json(&["share", "ls", "--json"]).await;
    assert_eq!(all.as_array().unwrap().len(), 3, "{all}");
}

#[tokio::test(flavor = "multi_thread")]
async fn share_of_an_unknown_path_creates_nothing() {
    let ctx = CliCtx::seeded().await;
    let r = ctx.cec(&["share", "personal-files/nope.txt"]).await;
    assert_eq!(r.code(), 3, "{}", r.all());
    assert!(r.stderr.contains("personal-files/nope.txt"), "{}", r.stderr);
    assert!(!r.stderr.contains("Public link created"), "{}", r.stderr);
    let all = ctx.json(&["share", "ls", "--json"]).await;
    assert_eq!(all, serde_json::json!([]));
    let r = ctx
        .cec(&["share", "show", "personal-files/report.pdf"])
        .await;
    assert_eq!(r.code(), 3, "{}", r.all());
}

#[tokio::test(flavor = "multi_thread")]
async fn share_ls_and_show_tell_path_url_expiry_and_downloads() {
    let ctx = CliCtx::seeded().await;
    let a = created_url(
        &ctx.ok(&["share", "personal-files/report.pdf", "--max-downloads", "3"])
            .await,
    );
    let b = created_url(
        &ctx.ok(&["share", "personal-files/photos", "--expire", "2099-12-31"])
            .await,
    );
    // One download through the link counts.
    assert_eq!(ctx.visit(&a, "report.pdf", None).await.0, 200);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let r = ctx.ok(&["share", "ls"]).await;
    let line_a = r
        .stdout
        .lines()
        .find(|l| l.starts_with("personal-files/report.pdf\t"))
        .unwrap_or_else(|| panic!("{}", r.stdout));
    assert!(line_a.contains(&a), "{line_a}");
    assert!(line_a.contains("downloads: 1/3"), "{line_a}");
    assert!(line_a.contains("expires: never"), "{line_a}");
    let line_b = r
        .stdout
        .lines()
        .find(|l| l.starts_with("personal-files/photos\t"))
        .unwrap_or_else(|| panic!("{}", r.stdout));
    assert!(line_b.contains(&b), "{line_b}");
    assert!(line_b.contains("expires: 2099-12-31T23:59:59Z"), "{line_b}");
    assert!(line_b.contains("downloads: 0/unlimited"), "{line_b}");

    let all = ctx.json(&["share", "ls", "--json"]).await;
    assert_eq!(all.as_array().unwrap().len(), 2);

    // show: by path, by Uuid, by URL: the same link.
    let by_path = ctx
        .json(&["share", "show", "personal-files/report.pdf", "--json"])
        .await;
    let uuid = by_path["Uuid"].as_str().unwrap().to_string();
    let by_uuid = ctx.json(&["share", "show", &uuid, "--json"]).await;
    let by_url = ctx.json(&["share", "show", &a, "--json"]).await;
    assert_eq!(by_uuid["Uuid"], by_path["Uuid"]);
    assert_eq!(by_url["Uuid"], by_path["Uuid"]);
    assert_eq!(by_uuid["Path"], "personal-files/report.pdf");
    assert_eq!(i64_of(&by_path["CurrentDownloads"]), 1);
    let text = ctx.ok(&["share", "show", &uuid]).await.stdout;
    assert!(text.contains(&format!("URL:         {a}")), "{text}");
    assert!(text.contains("Downloads:   1/3"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn share_update_sends_the_whole_link_back() {
    let ctx = CliCtx::seeded().await;
    let pw = ctx.password_file("first-pw");
    let url = created_url(
        &ctx.ok(&[
            "share",
            "personal-files/report.pdf",
            "--password-file",
            &pw,
            "--max-downloads",
            "4",
            "--expire",
            "2099-12-31",
        ])
        .await,
    );
    // A label change keeps the address, the password, the limit and the expiry.
    let v = ctx
        .json(&[
            "share",
            "update",
            "personal-files/report.pdf",
            "--label",
            "Renamed",
            "--json",
        ])
        .await;
    assert_eq!(v["Label"], "Renamed");
    assert_eq!(v["PublicUrl"], url.as_str());
    assert_eq!(v["PasswordRequired"], true);
    assert_eq!(i64_of(&v["MaxDownloads"]), 4);
    assert_eq!(i64_of(&v["AccessEnd"]), 4_102_444_799);
    assert_eq!(ctx.visit(&url, "report.pdf", None).await.0, 401);
    assert_eq!(ctx.visit(&url, "report.pdf", Some("first-pw")).await.0, 200);
    // Change the password, then remove it; remove the expiry; change the limit.
    let pw2 = ctx.password_file("second-pw");
    ctx.ok(&["share", "update", &url, "--password-file", &pw2])
        .await;
    assert_eq!(ctx.visit(&url, "report.pdf", Some("first-pw")).await.0, 401);
    assert_eq!(
        ctx.visit(&url, "report.pdf", Some("second-pw")).await.0,
        200
    );
    let v = ctx
        .json(&[
            "share",
            "update",
            "personal-files/report.pdf",
            "--no-password",
            "--expire",
            "never",
            "--max-downloads",
            "0",
            "--template",
            "download",
            "--json",
        ])
        .await;
    assert!(v.get("PasswordRequired").is_none(), "{v}");
    assert!(v.get("AccessEnd").is_none(), "{v}");
    assert!(v.get("MaxDownloads").is_none(), "{v}");
    assert_eq!(v["ViewTemplateName"], "pydio_unique_dl");
    assert_eq!(v["Label"], "Renamed");
    assert_eq!(ctx.visit(&url, "report.pdf", None).await.0, 200);
    // Upload on and off for a folder link.
    ctx.ok(&["share", "personal-files/photos"]).await;
    let v = ctx
        .json(&[
            "share",
            "update",
            "personal-files/photos",
            "--upload",
            "--json",
        ])
        .await;
    assert!(v["Permissions"].to_string().contains("Upload"), "{v}");
    let v = ctx
        .json(&[
            "share",
            "update",
            "personal-files/photos",
            "--no-upload",
            "--json",
        ])
        .await;
    assert!(!v["Permissions"].to_string().contains("Upload"), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn share_rm_kills_the_link_and_ambiguity_is_refused() {
    let ctx = CliCtx::seeded().await;
    let first = created_url(&ctx.ok(&["share", "personal-files/report.pdf"]).await);
    let second = created_url(&ctx.ok(&["share", "personal-files/report.pdf"]).await);
    assert_ne!(first, second);
    // Two links on one path: update and rm want one of them, by id or URL.
    for args in [
        &["share", "rm", "personal-files/report.pdf"][..],
        &[
            "share",
            "update",
            "personal-files/report.pdf",
            "--label",
            "x",
        ],
    ] {
        let r = ctx.cec(args).await;
        assert_eq!(r.code(), 2, "{args:?}: {}", r.all());
        assert!(r.stderr.contains("has 2 links"), "{}", r.stderr);
    }
    let shown = ctx
        .json(&["share", "show", "personal-files/report.pdf", "--json"])
        .await;
    assert_eq!(shown.as_array().unwrap().len(), 2);

    ctx.ok(&["share", "rm", &first]).await;
    let (status, body) = ctx.visit(&first, "report.pdf", None).await;
    assert_eq!(status, 404);
    assert!(body.contains("Cannot find this link"), "{body}");
    assert_eq!(ctx.visit(&second, "report.pdf", None).await.0, 200);
    // Gone: show, update and rm say so (exit 3).
    for args in [
        &["share", "show", &first][..],
        &["share", "rm", &first],
        &["share", "update", &first, "--label", "x"],
    ] {
        let r = ctx.cec(args).await;
        assert_eq!(r.code(), 3, "{args:?}: {}", r.all());
    }
    ctx.ok(&["share", "rm", "personal-files/report.pdf"]).await;
    assert_eq!(ctx.visit(&second, "report.pdf", None).await.0, 404);
    let r = ctx.cec(&["share", "rm", "personal-files/report.pdf"]).await;
    assert_eq!(r.code(), 3, "{}", r.all());
    assert!(r.stderr.contains("has no public link"), "{}", r.stderr);
}
