//! Identity and time through the real mount: a node keeps its inode number across renames of
//! itself and of folders above it, after the kernel forgot it, and on another mount of the
//! same server; a file's modification time never moves backwards while nobody touches it.

mod mount_common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use mount_common::*;

fn ino(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .ino()
}

/// Make the kernel forget every inode it can (dentries and inodes of unused files).
fn drop_kernel_caches() {
    std::fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
}

#[test]
fn a_folder_rename_keeps_the_inode_numbers_of_the_folder_and_everything_below() {
    let h = Harness::start();
    let m = h.mount("mnt", &[]);
    let personal = h.personal(&m);
    std::fs::create_dir_all(personal.join("d/sub")).unwrap();
    std::fs::write(personal.join("d/f"), b"f").unwrap();
    std::fs::write(personal.join("d/sub/g"), b"g").unwrap();
    // Learn the Uuids as any later session would: from a listing.
    std::thread::sleep(Duration::from_millis(200));
    drop_kernel_caches();
    let before = [
        ino(&personal.join("d")),
        ino(&personal.join("d/f")),
        ino(&personal.join("d/sub")),
        ino(&personal.join("d/sub/g")),
    ];
    std::fs::rename(personal.join("d"), personal.join("e")).unwrap();
    let names = ["e", "e/f", "e/sub", "e/sub/g"];
    let after: Vec<u64> = names.iter().map(|n| ino(&personal.join(n))).collect();
    assert_eq!(after, before, "right after the rename");
    // Once the kernel has forgotten them, and the mount has listed the folders again.
    std::thread::sleep(Duration::from_millis(1500));
    drop_kernel_caches();
    let later: Vec<u64> = names.iter().map(|n| ino(&personal.join(n))).collect();
    assert_eq!(later, before, "after the kernel forgot them");
}

#[test]
fn a_file_has_the_same_inode_number_on_two_mounts() {
    let h = Harness::start();
    let a = h.mount("a", &[]);
    std::fs::create_dir(h.personal(&a).join("shared")).unwrap();
    std::fs::write(h.personal(&a).join("shared/doc.txt"), b"doc").unwrap();
    let b = h.mount(
        "b",
        &["--cache-dir", h.new_dir("cache-b").to_str().unwrap()],
    );
    // Mount a learns the Uuid from a listing once the kernel forgot what it created.
    drop_kernel_caches();
    std::thread::sleep(Duration::from_millis(1500));
    let on_a = ino(&h.personal(&a).join("shared/doc.txt"));
    let on_b = ino(&h.personal(&b).join("shared/doc.txt"));
    assert_eq!(on_a, on_b);
    assert_eq!(
        ino(&h.personal(&a).join("shared")),
        ino(&h.personal(&b).join("shared"))
    );
}

#[test]
fn a_files_time_never_runs_backwards_in_a_dot_folder() {
    use std::io::Write;
    let h = Harness::start();
    let mtime = |p: &Path| {
        let meta = std::fs::metadata(p).unwrap();
        (meta.mtime(), meta.mtime_nsec())
    };
    for (name, args) in [("default", &[][..]), ("wb", &["--write-back", "1"][..])] {
        let m = h.mount(name, args);
        let dir = h.personal(&m).join(format!(".dots-{name}"));
        std::fs::create_dir(&dir).unwrap();
        // Files written, looked at while open, then closed: a close is no change of content,
        // and each file's time seen by anyone must only go forward from there on.
        let mut files = Vec::new();
        for i in 0..5 {
            let path = dir.join(format!("f{i}"));
            let mut file = std::fs::File::create(&path).unwrap();
            file.write_all(b"content").unwrap();
            let seen = mtime(&path);
            drop(file);
            files.push((path, seen));
        }
        // Through the upload (write-back) and past the attribute timeout several times: the
        // server's time shows again.
        for _ in 0..12 {
            for (path, last) in &mut files {
                let now = mtime(path);
                assert!(
                    now >= *last,
                    "{name}: {} went from {last:?} back to {now:?}",
                    path.display()
                );
                *last = now;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}
