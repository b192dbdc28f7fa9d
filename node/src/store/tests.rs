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

fn set_hook(store: &Store, hook: impl Fn(import::Hook<'_>) + Send + Sync + 'static) {
    *store.inner.hook.lock().expect("hook lock") = Some(Arc::new(hook));
}

#[test]
fn gc_during_an_import_waits_for_its_pin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let src = dir.path().join("src");
    write(&src.join("a"), &pseudo_random(300 * 1024, 1));
    write(&src.join("b/c"), b"small");
    // GC starts while the import is between its last blob and its pin
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let done_rx = Mutex::new(done_rx);
    let gc_store = store.clone();
    let started = Arc::new(Mutex::new(None));
    let started_in_hook = started.clone();
    set_hook(&store, move |at| {
        if let import::Hook::BeforeKeep = at {
            let s = gc_store.clone();
            let tx = done_tx.clone();
            *started_in_hook.lock().expect("lock") = Some(std::thread::spawn(move || {
                let report = s.gc(&[]).expect("gc");
                let _ = tx.send(());
                report
            }));
            // GC must wait for the import's critical section to end
            assert!(
                done_rx
                    .lock()
                    .expect("lock")
                    .recv_timeout(std::time::Duration::from_millis(200))
                    .is_err(),
                "gc ran inside an import"
            );
        }
    });
    let keep = Keep {
        pin: Some(1),
        tag: Some(tag("out/result:v1")),
    };
    let out = store
        .add_path_kept(&src, &AddOptions::default(), &keep, &())
        .expect("add");
    let gc = started
        .lock()
        .expect("lock")
        .take()
        .expect("the hook ran")
        .join()
        .expect("gc thread");
    assert_eq!(gc.removed, 0, "{gc:?}");
    assert!(
        store
            .list_pins()
            .expect("pins")
            .iter()
            .any(|p| p.id == out.id)
    );
    assert_eq!(store.tag(&tag("out/result:v1")).expect("tag"), Some(out.id));
    for h in store.closure([out.id]).expect("closure") {
        assert!(store.has(&h).expect("has"), "{h} lost");
    }
    assert!(store.verify().expect("verify").is_empty());
}

#[test]
fn a_failed_import_leaves_a_blob_another_import_used_meanwhile() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let shared = pseudo_random(300 * 1024, 2);
    let a = dir.path().join("a");
    write(&a.join("1-shared"), &shared);
    write(&a.join("2-vanishes"), b"gone before it is read");
    let b = dir.path().join("b");
    write(&b.join("same"), &shared);
    // after import A stored the shared file (a new blob), import B stores
    // the same bytes and pins its tree; then A fails and rolls back
    let other = store.clone();
    let b_done: Arc<Mutex<Option<AddOutcome>>> = Arc::new(Mutex::new(None));
    let b_out = b_done.clone();
    let vanishing = a.join("2-vanishes");
    set_hook(&store, move |at| {
        if let import::Hook::FileImported(p) = at
            && p.ends_with("1-shared")
            && b_out.lock().expect("lock").is_none()
        {
            let s = other.clone();
            let b = b.clone();
            let out = std::thread::spawn(move || {
                s.add_path_kept(
                    &b,
                    &AddOptions::default(),
                    &Keep {
                        pin: Some(1),
                        tag: None,
                    },
                    &(),
                )
            })
            .join()
            .expect("thread")
            .expect("import b");
            *b_out.lock().expect("lock") = Some(out);
            fs::remove_file(&vanishing).expect("rm");
        }
    });
    let err = store
        .add_path(&a, &AddOptions::default(), &())
        .expect_err("a file vanished");
    assert!(err.to_string().contains("2-vanishes"), "{err}");
    let b_out = b_done.lock().expect("lock").clone().expect("b ran");
    let shared_id = Hash::of(&shared);
    assert!(
        store.has(&shared_id).expect("has"),
        "rollback removed a blob B uses"
    );
    assert!(store.verify().expect("verify").is_empty());
    // and a rollback that nobody overlaps still cleans up after itself
    let c = dir.path().join("c");
    write(&c.join("1-own"), &pseudo_random(300 * 1024, 3));
    write(&c.join("2-vanishes"), b"x");
    let vanishing = c.join("2-vanishes");
    set_hook(&store, move |at| {
        if let import::Hook::FileImported(p) = at
            && p.ends_with("1-own")
        {
            let _ = fs::remove_file(&vanishing);
        }
    });
    store
        .add_path(&c, &AddOptions::default(), &())
        .expect_err("a file vanished");
    let own = Hash::of(&pseudo_random(300 * 1024, 3));
    assert!(!store.has(&own).expect("has"), "rollback left its own blob");
    assert!(!store.blob_path(&own).exists());
    assert!(
        store
            .list_pins()
            .expect("pins")
            .iter()
            .any(|p| p.id == b_out.id)
    );
}

#[test]
fn remove_blob_makes_the_record_removal_durable_before_unlinking() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let data = pseudo_random(100 * 1024, 4);
    let (h, _) = store.add_bytes(&data, BlobKind::Raw).expect("add");
    store.flush().expect("flush");
    let meta = dir.path().join("store/meta");
    // at the moment of unlinking, the database on disk (read by a second,
    // read-only copy of it) no longer has the record
    let copy = dir.path().join("meta-copy");
    let checked = Arc::new(Mutex::new(false));
    let seen = checked.clone();
    let blobs_path = store.blob_path(&h);
    *store.inner.unlink_check.lock().expect("lock") = Some(Box::new(move |id: &Hash| {
        assert!(blobs_path.exists(), "unlinked before the check");
        let _ = fs::remove_dir_all(&copy);
        copy_dir(&meta, &copy);
        let db = sled::Config::new().path(&copy).open().expect("open copy");
        let blobs = db.open_tree("blobs").expect("tree");
        assert!(
            blobs.get(records::hash_key(id)).expect("get").is_none(),
            "the record removal was not durable before the unlink"
        );
        *seen.lock().expect("lock") = true;
    }));
    store.remove_blob(&h).expect("remove");
    assert!(*checked.lock().expect("lock"));
    assert!(!store.blob_path(&h).exists());
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for e in fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            fs::copy(e.path(), &dest).expect("copy");
        }
    }
}

#[test]
fn an_import_beneath_a_folder_refuses_links_and_stores_the_same_tree() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let host = dir.path().join("host");
    write(&host.join("etc/passwd"), b"root:x:0:0:host secret");
    let outputs = dir.path().join("outputs");
    write(
        &outputs.join("model/weights"),
        &pseudo_random(300 * 1024, 5),
    );
    write(&outputs.join("model/config"), b"{}");
    symlink("../host", outputs.join("x")).expect("symlink");
    symlink("/", outputs.join("root")).expect("symlink");
    symlink("weights", outputs.join("model2")).expect("symlink");
    fs::create_dir_all(outputs.join("mixed")).expect("mkdir");
    symlink("../../host/etc/passwd", outputs.join("mixed/passwd")).expect("symlink");
    let keep = Keep::default();
    for (rel, link) in [
        ("x/etc/passwd", "x"),
        ("root/etc/passwd", "root"),
        ("x", "x"),
        ("mixed", "mixed/passwd"),
    ] {
        let err = store
            .add_beneath(&outputs, Path::new(rel), &keep, &())
            .expect_err(rel);
        match err {
            StoreError::Symlink { path } => assert_eq!(path, outputs.join(link), "{rel}"),
            other => panic!("{rel}: {other}"),
        }
    }
    assert!(
        !store
            .has(&Hash::of(b"root:x:0:0:host secret"))
            .expect("has")
    );
    assert_eq!(store.stats().expect("stats"), (0, 0), "nothing stored");
    let err = store
        .add_beneath(&outputs, Path::new("../host/etc/passwd"), &keep, &())
        .expect_err("escape");
    assert!(matches!(err, StoreError::Escapes { .. }), "{err}");
    let beneath = store
        .add_beneath(&outputs, Path::new("model"), &keep, &())
        .expect("plain folder");
    let by_path = store
        .add_path(&outputs.join("model"), &AddOptions::default(), &())
        .expect("add");
    assert_eq!(beneath.id, by_path.id);
    assert_eq!(beneath.files, 2);
    // the fallback walk (kernels without openat2) refuses the same
    let b = beneath::Beneath::open_without_openat2(&outputs).expect("open");
    let err = store
        .add_beneath_for_test(&b, Path::new("x/etc/passwd"))
        .expect_err("fallback followed a link");
    assert!(matches!(err, StoreError::Symlink { .. }), "{err}");
    let special = dir.path().join("fifo-out");
    fs::create_dir_all(&special).expect("mkdir");
    let fifo = std::ffi::CString::new(special.join("p").as_os_str().as_encoded_bytes()).expect("c");
    // SAFETY: a valid NUL-terminated path
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let err = store
        .add_beneath(&special, Path::new(""), &keep, &())
        .expect_err("fifo");
    assert!(matches!(err, StoreError::Special { .. }), "{err}");
}

/// Unmounts on drop.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn an_import_onto_a_full_disk_is_reported_as_such_and_leaves_nothing() {
    // SAFETY: geteuid has no preconditions
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: mounting a small file system needs root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let tmp = dir.path().join("store/tmp");
    fs::create_dir_all(&tmp).expect("mkdir");
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&tmp)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED: cannot mount a tmpfs here");
        return;
    }
    let _mounted = Mounted(tmp.clone());
    let store = open(dir.path());
    let outputs = dir.path().join("outputs");
    write(&outputs.join("big"), &pseudo_random(1 << 20, 6));
    let err = store
        .add_beneath(&outputs, Path::new(""), &Keep::default(), &())
        .expect_err("the disk is full");
    match &err {
        StoreError::NoSpace { path } => assert!(path.starts_with(&tmp), "{err}"),
        other => panic!("not reported as a full disk: {other}"),
    }
    assert!(err.to_string().contains("no space left"), "{err}");
    assert_eq!(store.stats().expect("stats"), (0, 0));
    assert_eq!(
        fs::read_dir(&tmp).expect("tmp").count(),
        0,
        "temp files left"
    );
}
