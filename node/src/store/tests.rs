use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use weft_protocol::{ArtifactRef, Hash, TagName};

use super::*;

fn open(dir: &Path) -> Store {
    Store::open(&dir.join("store"), "node-a").expect("open store")
}

fn tag(s: &str) -> TagName {
    TagName::new(s).expect("tag")
}

fn write(path: &Path, bytes: &[u8]) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).expect("mkdir");
    }
    fs::write(path, bytes).expect("write");
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn file_ids_are_blake3_for_all_sizes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    // around the small-file cutoff and the chunk-group edges
    for len in [
        0usize,
        1,
        1024,
        16 * 1024,
        16 * 1024 + 1,
        256 * 1024,
        256 * 1024 + 1,
        3 << 20,
    ] {
        let data = pseudo_random(len, len as u64);
        let f = dir.path().join(format!("f{len}"));
        write(&f, &data);
        let out = store
            .add_path(&f, &AddOptions::default(), &())
            .expect("add");
        assert_eq!(out.id, Hash::of(&data), "len {len}");
        assert_eq!(out.size, len as u64);
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut store.open_blob(&out.id).expect("open"), &mut back)
            .expect("read");
        assert_eq!(back, data);
    }
    assert!(store.verify().expect("verify").is_empty());
}

#[test]
fn trees_round_trip_and_dedupe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let src = dir.path().join("src");
    write(&src.join("a/b/c.txt"), b"deep");
    write(&src.join("empty"), b"");
    write(&src.join("same1"), b"same");
    write(&src.join("same2"), b"same");
    fs::create_dir_all(src.join("emptydir")).expect("mkdir");
    write(&src.join("run.sh"), b"#!/bin/sh\necho hi\n");
    fs::set_permissions(src.join("run.sh"), fs::Permissions::from_mode(0o755)).expect("chmod");

    let first = store
        .add_path(&src, &AddOptions::default(), &())
        .expect("add");
    assert_eq!(first.kind, "tree");
    assert_eq!(first.files, 5);
    let again = store
        .add_path(&src, &AddOptions::default(), &())
        .expect("add again");
    assert_eq!(first.id, again.id);
    assert_eq!(again.new_blobs, 0);

    let tree = store.read_tree(&first.id).expect("tree");
    let same1 = tree.get("same1").expect("same1").hash;
    assert_eq!(same1, tree.get("same2").expect("same2").hash);
    assert!(tree.get("run.sh").expect("run.sh").executable);
    assert!(!tree.get("empty").expect("empty").executable);

    let out = dir.path().join("out");
    store
        .export(&first.id, &out, ExportOptions::default(), &())
        .expect("export");
    assert_eq!(fs::read(out.join("a/b/c.txt")).expect("read"), b"deep");
    assert_eq!(fs::read(out.join("empty")).expect("read"), b"");
    assert!(out.join("emptydir").is_dir());
    let mode = fs::metadata(out.join("run.sh"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111);
    // exporting over a non-empty directory is refused
    let err = store
        .export(&first.id, &out, ExportOptions::default(), &())
        .expect_err("exists");
    assert!(matches!(err, StoreError::Exists { .. }));
}

#[test]
fn symlinks_special_files_and_bad_names_are_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let src = dir.path().join("src");
    write(&src.join("ok.txt"), b"fine");
    std::os::unix::fs::symlink("ok.txt", src.join("link")).expect("symlink");
    let err = store
        .add_path(&src, &AddOptions::default(), &())
        .expect_err("symlink");
    assert!(
        matches!(err, StoreError::Symlink { ref path } if path.ends_with("link")),
        "{err}"
    );
    assert!(err.to_string().contains("--follow-symlinks"));
    assert!(store.list(true).expect("list").is_empty(), "nothing stored");

    let followed = store
        .add_path(
            &src,
            &AddOptions {
                follow_symlinks: true,
            },
            &(),
        )
        .expect("follow");
    let tree = store.read_tree(&followed.id).expect("tree");
    assert_eq!(tree.get("link").expect("link").hash, Hash::of(b"fine"));

    let fifo = dir.path().join("fifo-dir");
    fs::create_dir_all(&fifo).expect("mkdir");
    let c = std::ffi::CString::new(fifo.join("p").to_string_lossy().as_bytes()).expect("cstr");
    // SAFETY: c is a valid NUL-terminated path
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let err = store
        .add_path(&fifo, &AddOptions::default(), &())
        .expect_err("fifo");
    assert!(err.to_string().contains("named pipe"), "{err}");

    let bad = dir.path().join("bad-dir");
    fs::create_dir_all(&bad).expect("mkdir");
    let name = std::ffi::OsStr::from_bytes_for_test(b"caf\xe9");
    write(&bad.join(name), b"x");
    let err = store
        .add_path(&bad, &AddOptions::default(), &())
        .expect_err("utf8");
    assert!(matches!(err, StoreError::NonUtf8 { .. }), "{err}");
}

trait FromBytesForTest {
    fn from_bytes_for_test(b: &[u8]) -> &std::ffi::OsStr;
}

impl FromBytesForTest for std::ffi::OsStr {
    fn from_bytes_for_test(b: &[u8]) -> &std::ffi::OsStr {
        std::os::unix::ffi::OsStrExt::from_bytes(b)
    }
}

#[test]
fn prefixes_resolve_and_ambiguity_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let f = dir.path().join("f");
    write(&f, b"hello");
    let id = store
        .add_path(&f, &AddOptions::default(), &())
        .expect("add")
        .id;
    let hex = id.to_hex();
    assert_eq!(store.resolve_str(&hex[..6]).expect("prefix"), id);
    assert!(
        matches!(store.resolve_str("0000"), Err(StoreError::NotFound(_)))
            || hex.starts_with("0000")
    );
    // find two stored ids sharing a first hex digit to provoke ambiguity
    let mut ids = vec![id];
    let mut i = 0u32;
    let clash = loop {
        let g = dir.path().join(format!("g{i}"));
        write(&g, format!("content {i}").as_bytes());
        let h = store
            .add_path(&g, &AddOptions::default(), &())
            .expect("add")
            .id;
        if let Some(other) = ids.iter().find(|o| o.to_hex()[..4] == h.to_hex()[..4]) {
            break (*other, h);
        }
        ids.push(h);
        i += 1;
    };
    let err = store
        .resolve_str(&clash.0.to_hex()[..4])
        .expect_err("ambiguous");
    assert!(matches!(err, StoreError::Ambiguous { .. }), "{err}");
}

#[test]
fn tags_keep_history_and_resolve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let a = store.add_bytes(b"a", records::BlobKind::Raw).expect("a").0;
    let b = store.add_bytes(b"b", records::BlobKind::Raw).expect("b").0;
    let t = tag("models/m:prod");
    store.set_tag(&t, Some(a)).expect("set");
    store.set_tag(&t, Some(b)).expect("set");
    assert_eq!(store.tag(&t).expect("tag"), Some(b));
    assert_eq!(
        store
            .resolve(&ArtifactRef::Tag(t.clone()))
            .expect("resolve"),
        b
    );
    let hist = store.tag_history(&t).expect("history");
    assert_eq!(
        hist.iter().map(|v| v.target).collect::<Vec<_>>(),
        vec![Some(a), Some(b)]
    );
    store.remove_tag(&t).expect("rm");
    assert_eq!(store.tag(&t).expect("tag"), None);
    assert_eq!(store.tag_history(&t).expect("history").len(), 3);
    assert!(store.list_tags().expect("ls").is_empty());
    assert!(matches!(store.remove_tag(&t), Err(StoreError::NoTag(_))));
}

#[test]
fn gc_keeps_pins_tags_and_tree_children() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let src = dir.path().join("src");
    write(&src.join("x"), b"child of a pinned tree");
    let tree = store
        .add_path(&src, &AddOptions::default(), &())
        .expect("tree")
        .id;
    store.pin(&tree, 1).expect("pin");
    let tagged = store
        .add_bytes(b"tagged", records::BlobKind::Raw)
        .expect("t")
        .0;
    store.set_tag(&tag("d/t:v1"), Some(tagged)).expect("tag");
    let loose = store
        .add_bytes(b"loose", records::BlobKind::Raw)
        .expect("l")
        .0;

    let report = store.gc(&[]).expect("gc");
    assert_eq!(report.removed, 1);
    assert!(!store.has(&loose).expect("has"));
    assert!(!store.blob_path(&loose).exists());
    assert!(store.has(&tree).expect("has"));
    assert!(
        store
            .has(&Hash::of(b"child of a pinned tree"))
            .expect("has")
    );
    assert!(store.has(&tagged).expect("has"));

    store.unpin(&tree).expect("unpin");
    let report = store.gc(&[]).expect("gc");
    assert_eq!(report.removed, 2);
    assert!(store.verify().expect("verify").is_empty());
}

#[test]
fn gc_removes_orphan_files_and_open_cleans_tmp() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path());
        let orphan = store.blob_path(&Hash::of(b"orphan"));
        write(&orphan, b"orphan");
        write(&store.tmp_dir().join("leftover.data"), b"half");
        let report = store.gc(&[]).expect("gc");
        assert_eq!(report.orphan_files, 1);
        assert!(!orphan.exists());
    }
    let store = open(dir.path());
    assert_eq!(fs::read_dir(store.tmp_dir()).expect("tmp").count(), 0);
}

#[test]
fn verify_names_corrupt_blobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let f = dir.path().join("f");
    write(&f, &pseudo_random(100_000, 7));
    let id = store
        .add_path(&f, &AddOptions::default(), &())
        .expect("add")
        .id;
    let other = store
        .add_bytes(b"fine", records::BlobKind::Raw)
        .expect("ok")
        .0;
    let path = store.blob_path(&id);
    let mut bytes = fs::read(&path).expect("read");
    bytes[5000] ^= 1;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
    fs::write(&path, bytes).expect("corrupt");
    let problems = store.verify().expect("verify");
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].id, id);
    assert_ne!(problems[0].id, other);
}

#[test]
fn second_open_reports_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _store = open(dir.path());
    let err = Store::open(&dir.path().join("store"), "x");
    // sled allows the same process to reopen; another process is refused
    // (covered by the CLI tests); here we only check that opening works twice
    // in one process or fails with the lock error
    if let Err(e) = err {
        assert!(matches!(e, StoreError::Locked { .. }), "{e}");
    }
}
