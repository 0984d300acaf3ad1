//! Everyday tools inside the mount: `tar x` of a real `.crate`, `git init/add/commit` then a
//! clean `git status`, an editor's atomic save (temp file, fsync, rename over), `mv` of a
//! folder of 1000 files as one server move, and an unlinked file still readable through
//! its open handle.

mod mount_common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use mount_common::*;

/// A real archive from the local cargo registry (the `libc` crate: hundreds of files).
fn a_crate_archive() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cargo"));
    let cache = home.join("registry/cache");
    let mut found = Vec::new();
    for index in std::fs::read_dir(&cache).expect("no ~/.cargo/registry/cache") {
        for entry in std::fs::read_dir(index.unwrap().path()).unwrap() {
            let p = entry.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with("libc-0.2") && name.ends_with(".crate") {
                found.push(p);
            }
        }
    }
    found.sort();
    found
        .pop()
        .expect("a libc .crate in the cargo registry cache")
}

#[test]
fn tar_x_of_a_crate_matches_extraction_on_local_disk() {
    let h = Harness::start();
    let archive = a_crate_archive();
    let local = h.new_dir("local");
    sh(&local, &format!("tar xzf {}", archive.display()));
    let m = h.mount("mnt", &[]);
    let inside = h.personal(&m).join("unpacked");
    std::fs::create_dir(&inside).unwrap();
    sh(&inside, &format!("tar xzf {}", archive.display()));
    sh(
        h.dir.path(),
        &format!("diff -r {} {}", local.display(), inside.display()),
    );
    let count = sh(&inside, "find . -type f | wc -l");
    assert!(count.trim().parse::<u32>().unwrap() > 50, "{count}");
}

#[test]
fn git_init_add_commit_then_status_is_clean() {
    let h = Harness::start();
    let m = h.mount("mnt", &[]);
    let repo = h.personal(&m).join("repo");
    std::fs::create_dir(&repo).unwrap();
    std::fs::create_dir(repo.join("src")).unwrap();
    std::fs::write(repo.join("README.md"), "# hello\n").unwrap();
    std::fs::write(repo.join("src/main.rs"), "fn main() {}\n").unwrap();
    std::fs::write(repo.join(".gitignore"), "target/\n").unwrap();
    sh(
        &repo,
        "git init -q && git -c user.name=t -c user.email=t@example.com add -A \
         && git -c user.name=t -c user.email=t@example.com commit -q -m first",
    );
    let status = sh(&repo, "git status --porcelain");
    assert_eq!(status, "", "git status not clean:\n{status}");
    let log = sh(&repo, "git log --oneline");
    assert!(log.contains("first"), "{log}");
    // A second commit after a change, and the dotfiles exist on the server.
    std::fs::write(repo.join("README.md"), "# hello again\n").unwrap();
    sh(
        &repo,
        "git -c user.name=t -c user.email=t@example.com commit -q -am second",
    );
    assert_eq!(sh(&repo, "git status --porcelain"), "");
    assert!(
        h.block_on(h.api.head_object("personal-files/repo/.git/HEAD"))
            .is_ok(),
        ".git/HEAD not on the server"
    );
}

#[test]
fn an_editors_atomic_save_replaces_the_file() {
    let h = Harness::start();
    let m = h.mount("mnt", &[]);
    let dir = h.personal(&m);
    let doc = dir.join("notes.txt");
    std::fs::write(&doc, "version 1\n").unwrap();
    assert!(
        h.block_on(h.api.stat("personal-files/notes.txt"))
            .unwrap()
            .is_some()
    );
    // What vim/gedit/VS Code do: write a temp file, fsync it, rename it over the original.
    let tmp = dir.join(".notes.txt.swp");
    {
        let mut f = std::fs::File::create(&tmp).unwrap();
        f.write_all(b"version 2, saved atomically\n").unwrap();
        f.sync_all().unwrap();
    }
    std::fs::rename(&tmp, &doc).unwrap();
    assert_eq!(
        std::fs::read_to_string(&doc).unwrap(),
        "version 2, saved atomically\n"
    );
    assert!(!tmp.exists());
    let node = h
        .block_on(h.api.stat("personal-files/notes.txt"))
        .unwrap()
        .unwrap();
    assert_eq!(node.size, 28);
    assert_eq!(
        server_text(&h, "personal-files/notes.txt"),
        "version 2, saved atomically\n"
    );
}

fn server_text(h: &Harness, path: &str) -> String {
    use futures::StreamExt;
    h.block_on(async {
        let mut s = h.api.get_object(path, None).await.unwrap();
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c.unwrap());
        }
        String::from_utf8(out).unwrap()
    })
}

#[test]
fn mv_of_a_folder_of_1000_files_is_one_server_move() {
    let h = Harness::start();
    // Create the folder through the API (fast), then move it through the mount.
    let staging = h.new_dir("thousand");
    for i in 0..1000 {
        std::fs::write(staging.join(format!("f{i:04}.txt")), format!("file {i}\n")).unwrap();
    }
    let m = h.mount("mnt", &[]);
    let src = h.personal(&m).join("many");
    sh(
        h.dir.path(),
        &format!("cp -r {} {}", staging.display(), src.display()),
    );
    let uuid_of = |p: &str| {
        h.block_on(h.api.stat(p))
            .unwrap()
            .unwrap_or_else(|| panic!("{p} missing on the server"))
            .uuid
    };
    let folder_uuid = uuid_of("personal-files/many");
    let file_uuid = uuid_of("personal-files/many/f0500.txt");
    let started = std::time::Instant::now();
    std::fs::rename(&src, h.personal(&m).join("moved")).unwrap();
    let took = started.elapsed();
    // A server move keeps the Uuids (a copy + delete would make new ones).
    assert_eq!(uuid_of("personal-files/moved"), folder_uuid);
    assert_eq!(uuid_of("personal-files/moved/f0500.txt"), file_uuid);
    assert!(
        h.block_on(h.api.stat("personal-files/many"))
            .unwrap()
            .is_none(),
        "source still on the server"
    );
    let listed = h
        .block_on(h.api.list_folder("personal-files/moved"))
        .unwrap();
    assert_eq!(listed.len(), 1000);
    assert_eq!(
        std::fs::read_dir(h.personal(&m).join("moved"))
            .unwrap()
            .count(),
        1000
    );
    assert!(took.as_secs() < 30, "the move took {took:?}");
}

#[test]
fn an_unlinked_open_file_stays_readable_through_its_handle() {
    let h = Harness::start();
    let m = h.mount("mnt", &[]);
    let path = h.personal(&m).join("doomed.bin");
    write_pattern(&path, 3 << 20, 7);
    let expected = file_sha256(&path);
    let mut f = std::fs::File::open(&path).unwrap();
    let mut head = [0u8; 1000];
    f.read_exact(&mut head).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(!path.exists());
    assert!(
        h.block_on(h.api.stat("personal-files/doomed.bin"))
            .unwrap()
            .is_none()
    );
    // The whole content is still there through the open handle.
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut all = Vec::new();
    f.read_to_end(&mut all).unwrap();
    assert_eq!(all.len(), 3 << 20);
    use sha2::Digest;
    assert_eq!(hex::encode(sha2::Sha256::digest(&all)), expected);
}
