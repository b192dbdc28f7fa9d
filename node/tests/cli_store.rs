//! The `weft` binary's artifact commands, run as a user would run them.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Weft {
    home: PathBuf,
}

impl Weft {
    fn new(dir: &Path) -> Weft {
        Weft {
            home: dir.join("home"),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_weft"));
        c.arg("--home").arg(&self.home).args(args);
        c.env_remove("WEFT_HOME");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run weft")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "weft {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8 stdout")
    }
}

fn blake3_file(path: &Path) -> String {
    let mut hasher = blake3::Hasher::new();
    let mut f = fs::File::open(path).expect("open");
    std::io::copy(&mut f, &mut hasher).expect("hash");
    hasher.finalize().to_hex().to_string()
}

/// Writes `len` bytes of cheap, non-repeating data.
fn write_data(path: &Path, len: u64, seed: u64) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(fs::File::create(path).expect("create"));
    let mut x = seed | 1;
    let mut left = len;
    let mut buf = vec![0u8; 1 << 16];
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).expect("write");
        left -= n as u64;
    }
    f.flush().expect("flush");
}

#[test]
fn add_prints_the_blake3_of_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let weft = Weft::new(dir.path());
    for (name, len) in [("zero", 0u64), ("one", 1), ("gib", 1 << 30)] {
        let f = dir.path().join(name);
        write_data(&f, len, len + 3);
        let id = weft.ok(&["add", f.to_str().expect("utf8")]);
        assert_eq!(id.trim(), blake3_file(&f), "{name}");
        fs::remove_file(&f).expect("rm");
    }
    assert_eq!(weft.ok(&["store", "verify"]).trim(), "ok");
}

#[test]
fn directories_round_trip_through_add_and_get() {
    let dir = tempfile::tempdir().expect("tempdir");
    let weft = Weft::new(dir.path());
    let src = dir.path().join("data");
    fs::create_dir_all(src.join("nested/deeper/deepest")).expect("mkdir");
    fs::create_dir_all(src.join("empty-dir")).expect("mkdir");
    fs::write(src.join("nested/deeper/deepest/leaf.txt"), b"leaf").expect("write");
    fs::write(src.join("empty-file"), b"").expect("write");
    fs::write(src.join("tool.sh"), b"#!/bin/sh\necho tool\n").expect("write");
    fs::set_permissions(src.join("tool.sh"), fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::create_dir_all(src.join("many")).expect("mkdir");
    for i in 0..1000 {
        fs::write(src.join(format!("many/f{i:04}.txt")), format!("file {i}\n")).expect("write");
    }
    let src_s = src.to_str().expect("utf8");
    let id = weft.ok(&["add", src_s]).trim().to_string();
    assert_eq!(weft.ok(&["add", src_s]).trim(), id, "same tree, same id");

    let out = dir.path().join("out");
    weft.ok(&["get", &id, "-o", out.to_str().expect("utf8")]);
    let diff = Command::new("diff")
        .arg("-r")
        .arg(&src)
        .arg(&out)
        .output()
        .expect("diff");
    assert!(
        diff.status.success(),
        "diff -r: {}",
        String::from_utf8_lossy(&diff.stdout)
    );
    let mode = fs::metadata(out.join("tool.sh"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "executable bit kept");

    // by prefix and by tag, and cat of one file
    weft.ok(&["tag", "set", "datasets/many:v1", &id[..10]]);
    let out2 = dir.path().join("out2");
    weft.ok(&[
        "get",
        "datasets/many:v1",
        "-o",
        out2.to_str().expect("utf8"),
    ]);
    assert_eq!(
        fs::read(out2.join("many/f0007.txt")).expect("read"),
        b"file 7\n"
    );
    let leaf = weft.ok(&[
        "add",
        src.join("nested/deeper/deepest/leaf.txt")
            .to_str()
            .expect("utf8"),
    ]);
    assert_eq!(weft.ok(&["cat", leaf.trim()]), "leaf");

    let ls: serde_json::Value = serde_json::from_str(&weft.ok(&["ls", "--json"])).expect("ls json");
    let tree = ls
        .as_array()
        .expect("array")
        .iter()
        .find(|a| a["id"] == id.as_str())
        .expect("tree listed");
    assert_eq!(tree["kind"], "tree");
    assert_eq!(tree["tags"][0], "datasets/many:v1");
}

#[test]
fn errors_name_the_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let weft = Weft::new(dir.path());
    let out = weft.run(&["get", "datasets/none:v1", "-o", "x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no tag named datasets/none:v1"));
    let out = weft.run(&["tag", "set", "bad name", "abcd"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid tag name"));
    let out = weft.run(&["add", "/nonexistent/file"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/file"));
}

#[test]
fn verify_names_a_corrupted_blob() {
    let dir = tempfile::tempdir().expect("tempdir");
    let weft = Weft::new(dir.path());
    let f = dir.path().join("f");
    write_data(&f, 300_000, 9);
    let id = weft
        .ok(&["add", f.to_str().expect("utf8")])
        .trim()
        .to_string();
    let blob = weft.home.join("store/blobs").join(&id[..2]).join(&id);
    let mut bytes = fs::read(&blob).expect("read blob");
    bytes[123_456] ^= 0x40;
    fs::set_permissions(&blob, fs::Permissions::from_mode(0o644)).expect("chmod");
    fs::write(&blob, bytes).expect("corrupt");
    let out = weft.run(&["store", "verify"]);
    assert!(!out.status.success(), "verify must fail");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));
}

/// Kills `weft add` at spread-out moments of a large import; after each kill
/// the store must verify clean and collect clean.
#[test]
fn killed_imports_leave_a_consistent_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let weft = Weft::new(dir.path());
    let f = dir.path().join("big");
    write_data(&f, 96 << 20, 42);
    let f_s = f.to_str().expect("utf8");
    let expected = blake3_file(&f);

    // time one whole import in a scratch home to place the kills
    let scratch = Weft::new(&dir.path().join("scratch"));
    let t = Instant::now();
    scratch.ok(&["add", f_s]);
    let full = t.elapsed();

    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for round in 0..10u32 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // kill points spread over the import, with some jitter
        let frac = (f64::from(round) + (seed % 1000) as f64 / 1000.0) / 10.0;
        let delay = full.mul_f64(frac * 1.1);
        let mut child = weft
            .cmd(&["add", f_s, "--tag", "big/file:v1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();

        let verify = weft.run(&["store", "verify"]);
        assert!(
            verify.status.success(),
            "round {round} (kill after {delay:?}): verify failed: {}",
            String::from_utf8_lossy(&verify.stdout)
        );
        let tmp_left = fs::read_dir(weft.home.join("store/tmp"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(tmp_left, 0, "temp files cleaned on open");
        // the blob is either absent or whole
        let ls = weft.ok(&["ls", "--all", "--json"]);
        if ls.contains(&expected) {
            let cat = weft.run(&["cat", &expected]);
            assert!(cat.status.success());
            assert_eq!(cat.stdout.len() as u64, 96 << 20);
        }
        let gc = weft.run(&["gc"]);
        assert!(gc.status.success(), "gc after round {round}");
        assert!(weft.run(&["store", "verify"]).status.success());
    }
    // a final uninterrupted import still works and matches
    assert_eq!(weft.ok(&["add", f_s]).trim(), expected);
    assert!(full < Duration::from_secs(120));
}
