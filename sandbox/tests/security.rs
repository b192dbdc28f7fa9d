//! What a task must not reach on its host: container root is not host root,
//! a setuid file left in `/outputs` is inert, the seccomp allow-list refuses
//! io_uring and friends, `/proc` and `/sys` paths are masked, a disk quota
//! bounds `/outputs` and `/tmp`, and WASM modules are size-capped and their
//! compiles bounded by the deadline and cancellable. Container tests need
//! root and say so loudly when skipped.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::require_root;
use weft_sandbox::{
    CancellationToken, ContainerTask, ErrorClass, IdMap, Limits, Outcome, Sandbox, SandboxConfig,
    Task, TaskFolders, TaskKind, WasmModule, WasmTask,
};

const QUOTA: u64 = 2 << 20;

type Setup = common::ContainerSetup;

fn setup() -> Setup {
    let setup = common::container_setup();
    assert_eq!(
        SandboxConfig::new(setup.state.path().join("sandbox")).userns,
        Some(IdMap::DEFAULT),
        "user namespaces are the default"
    );
    setup
}

impl Setup {
    /// Folders for one task as the node makes them: under a 0700 folder,
    /// outputs and tmp on a quota volume owned by the mapped root.
    fn folders(&self, name: &str, quota: Option<u64>) -> TaskFolders {
        TaskFolders::prepare(
            &self.state.path().join("tasks").join(name),
            quota,
            self.sandbox.container_ids(),
        )
        .expect("task folders")
    }

    fn task(&self, name: &str, script: &str, f: &TaskFolders) -> Task {
        Task {
            name: name.to_string(),
            kind: TaskKind::Container(ContainerTask {
                rootfs: self.rootfs.clone(),
                args: vec!["sh".into(), "-c".into(), script.into()],
                env: self.image.environment(&[]),
                workdir: None,
                gpus: vec![],
            }),
            inputs: f.inputs().to_path_buf(),
            outputs: f.outputs().to_path_buf(),
            scratch: Some(f.tmp().to_path_buf()),
            limits: Limits {
                timeout: Duration::from_secs(30),
                disk_quota: f.quota(),
                ..Limits::default()
            },
        }
    }

    async fn run(&self, task: Task) -> Outcome {
        self.sandbox.run(task, CancellationToken::new()).await
    }
}

/// Lets every user pass through `path` and its parents up to `top` (what a
/// careless operator might do), so the test checks the file itself.
fn open_the_way(top: &Path, path: &Path) {
    let mut p = path.to_path_buf();
    while p.starts_with(top) {
        if p.is_dir() {
            let mode = std::fs::metadata(&p).expect("meta").permissions().mode();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode | 0o711))
                .expect("chmod");
        }
        if !p.pop() {
            break;
        }
    }
}

#[tokio::test]
async fn a_setuid_file_left_in_outputs_gives_a_local_user_nothing() {
    if !require_root("a_setuid_file_left_in_outputs_gives_a_local_user_nothing") {
        return;
    }
    let s = setup();
    let f = s.folders("setuid", Some(16 << 20));
    assert!(f.quota().is_some(), "root mounts the quota volume");
    let out = s
        .run(s.task(
            "setuid",
            "cp /bin/busybox /outputs/sh && chmod 4755 /outputs/sh && ls -ln /outputs/sh",
            &f,
        ))
        .await;
    assert!(out.succeeded(), "{out:?}");
    let sh = f.outputs().join("sh");
    let meta = std::fs::metadata(&sh).expect("the copy is there");
    assert_eq!(
        meta.mode() & 0o4000,
        0o4000,
        "the task did set the setuid bit"
    );
    assert_ne!(meta.uid(), 0, "the file is not owned by host root");
    assert_eq!(
        meta.uid(),
        IdMap::DEFAULT.host_base,
        "owned by the mapped root"
    );
    // No local user can even reach it (0700 task folder) ...
    let reach = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        // a shell of the local user execs it (setpriv's own exec is not one)
        .args(["/bin/sh", "-c", "exec \"$0\" -c 'id -u'"])
        .arg(&sh)
        .output()
        .expect("setpriv");
    let modes: Vec<String> = sh
        .ancestors()
        .filter_map(|a| {
            std::fs::metadata(a)
                .ok()
                .map(|m| format!("{} {:o} {}", a.display(), m.mode(), m.uid()))
        })
        .collect();
    assert!(
        !reach.status.success(),
        "a local user reached the task folder: {}\n{modes:#?}",
        String::from_utf8_lossy(&reach.stdout)
    );
    // ... and with the way opened, running it does not change its euid:
    // the volume is nosuid (and the owner is not root anyway).
    open_the_way(s.state.path(), &sh);
    let run = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        // a shell of the local user execs it (setpriv's own exec is not one)
        .args(["/bin/sh", "-c", "exec \"$0\" -c 'id -u'"])
        .arg(&sh)
        .output()
        .expect("setpriv");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        "65534",
        "euid changed"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let vol = f.outputs().parent().expect("volume");
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(4) == vol.to_str())
        .expect("the quota volume is mounted");
    assert!(line.contains("nosuid") && line.contains("nodev"), "{line}");
}

#[tokio::test]
async fn container_root_is_an_unprivileged_host_id() {
    if !require_root("container_root_is_an_unprivileged_host_id") {
        return;
    }
    let s = setup();
    let f = s.folders("userns", None);
    std::fs::write(f.inputs().join("in"), "input\n").expect("input");
    let out = s
        .run(s.task(
            "userns",
            "cat /proc/self/uid_map; cat /proc/self/gid_map; id -u; cat /inputs/in; \
             echo x > /outputs/file; echo y > /tmp/t && echo tmp-ok",
            &f,
        ))
        .await;
    assert!(out.succeeded(), "{out:?}");
    let text = out.stdout.text();
    let maps: Vec<Vec<&str>> = text
        .lines()
        .take(2)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        maps,
        [["0", "100000", "65536"], ["0", "100000", "65536"]],
        "{text}"
    );
    assert!(text.contains("\n0\ninput\ntmp-ok"), "{text}");
    let meta = std::fs::metadata(f.outputs().join("file")).expect("output");
    assert_eq!((meta.uid(), meta.gid()), (100_000, 100_000));
    // the node (host root) reads outputs as they are
    assert_eq!(
        std::fs::read(f.outputs().join("file")).expect("read"),
        b"x\n"
    );
}

/// A static C program that tries each syscall a task must not have and
/// prints `name errno` (0 when it was allowed).
const PROBE_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/io_uring.h>
#include <linux/keyctl.h>

static void report(const char *name, long rc) {
    printf("%s %d\n", name, rc < 0 ? errno : 0);
}

int main(void) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    report("getpid", syscall(SYS_getpid));
    report("io_uring_setup", syscall(SYS_io_uring_setup, 4, &p));
    report("keyctl", syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0));
    report("add_key", syscall(SYS_add_key, "user", "weft", "x", 1, KEY_SPEC_SESSION_KEYRING));
    report("unshare", syscall(SYS_unshare, CLONE_NEWUSER));
    report("mount", syscall(SYS_mount, "none", "/tmp", "tmpfs", 0, 0));
    report("bpf", syscall(SYS_bpf, 0, 0, 0));
    report("userfaultfd", syscall(SYS_userfaultfd, 0));
    report("perf_event_open", syscall(SYS_perf_event_open, 0, 0, -1, -1, 0));
    report("ptrace", syscall(SYS_ptrace, 0, 0, 0, 0));
    report("setns", syscall(SYS_setns, 0, 0));
    report("clone_newns", syscall(SYS_clone, CLONE_NEWNS | SIGCHLD, 0, 0, 0, 0));
    report("clone3", syscall(SYS_clone3, 0, 0));
    fflush(stdout);
    return 0;
}
"#;

/// Builds the probe with `gcc -static` into `dir`; `None` (with the reason
/// printed) when there is no compiler or static libc.
fn build_probe(dir: &Path) -> Option<PathBuf> {
    let src = dir.join("probe.c");
    let bin = dir.join("probe");
    std::fs::write(&src, PROBE_C).expect("write probe.c");
    match Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
    {
        Ok(o) if o.status.success() => Some(bin),
        Ok(o) => {
            eprintln!(
                "SKIPPED the syscall probe: gcc -static failed:\n{}",
                String::from_utf8_lossy(&o.stderr)
            );
            None
        }
        Err(e) => {
            eprintln!("SKIPPED the syscall probe: no gcc ({e}); apt-get install gcc libc6-dev");
            None
        }
    }
}

#[tokio::test]
async fn io_uring_keyrings_bpf_mounts_and_namespaces_are_refused_in_a_container() {
    if !require_root("io_uring_keyrings_bpf_mounts_and_namespaces_are_refused_in_a_container") {
        return;
    }
    let s = setup();
    let f = s.folders("probe", None);
    let Some(bin) = build_probe(f.inputs()) else {
        return;
    };
    assert!(bin.starts_with(f.inputs()));
    let out = s.run(s.task("probe", "/inputs/probe", &f)).await;
    assert!(out.succeeded(), "{out:?}");
    let text = out.stdout.text();
    let errno = |name: &str| -> i32 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no line for {name}:\n{text}"))
    };
    assert_eq!(
        errno("getpid"),
        0,
        "the probe works: an allowed call succeeds"
    );
    for name in [
        "io_uring_setup",
        "keyctl",
        "add_key",
        "unshare",
        "mount",
        "bpf",
        "userfaultfd",
        "perf_event_open",
        "ptrace",
        "setns",
        "clone_newns",
    ] {
        assert_eq!(errno(name), libc::EPERM, "{name}:\n{text}");
    }
    assert_eq!(
        errno("clone3"),
        libc::ENOSYS,
        "clone3 looks unknown, so libc falls back to clone"
    );
}

#[tokio::test]
async fn masked_proc_and_sys_paths_are_not_readable() {
    if !require_root("masked_proc_and_sys_paths_are_not_readable") {
        return;
    }
    let s = setup();
    let f = s.folders("masked", None);
    let out = s
        .run(s.task(
            "masked",
            "head -c 16 /proc/kcore | wc -c; cat /proc/interrupts | wc -c; cat /proc/keys | wc -c; \
             ls -A /sys/devices/virtual/powercap 2>/dev/null | wc -l; ls -A /sys/firmware | wc -l; \
             echo 1 > /proc/sysrq-trigger || echo sysrq-refused",
            &f,
        ))
        .await;
    assert!(out.succeeded(), "{out:?}");
    let lines: Vec<String> = out
        .stdout
        .text()
        .lines()
        .map(|l| l.trim().to_string())
        .collect();
    assert_eq!(
        lines,
        ["0", "0", "0", "0", "0", "sysrq-refused"],
        "{}",
        out.stderr.text()
    );
    // what the mask hides is there on this host
    assert!(std::fs::read_to_string("/proc/interrupts").is_ok_and(|t| !t.is_empty()));
    if !Path::new("/sys/devices/virtual/powercap").exists() {
        eprintln!(
            "note: this host has no /sys/devices/virtual/powercap; its mask is checked by the config tests"
        );
    }
}

#[tokio::test]
async fn a_container_filling_its_quota_fails_with_disk_quota() {
    if !require_root("a_container_filling_its_quota_fails_with_disk_quota") {
        return;
    }
    let s = setup();
    let f = s.folders("fill", Some(QUOTA));
    assert_eq!(f.quota(), Some(QUOTA));
    let vol = f.outputs().parent().expect("volume");
    let out = s
        .run(s.task(
            "fill",
            "dd if=/dev/zero of=/outputs/big bs=65536 count=1000 2>/dev/null; \
             dd if=/dev/zero of=/tmp/more bs=65536 count=1000 2>/dev/null; exit 0",
            &f,
        ))
        .await;
    assert_eq!(out.class(), Some(ErrorClass::DiskQuota), "{out:?}");
    assert!(!out.succeeded());
    let written = std::fs::metadata(f.outputs().join("big"))
        .map(|m| m.len())
        .unwrap_or(0)
        + std::fs::metadata(f.tmp().join("more"))
            .map(|m| m.len())
            .unwrap_or(0);
    assert!(
        written <= QUOTA,
        "{written} bytes stored past a quota of {QUOTA}"
    );
    assert!(written > QUOTA / 2, "the task did write: {written}");
    let st = nix_statvfs(vol);
    assert_eq!(st.0, QUOTA, "the volume is the quota's size");
    // a task within its quota is not flagged
    let g = s.folders("fits", Some(QUOTA));
    let ok = s
        .run(s.task(
            "fits",
            "dd if=/dev/zero of=/outputs/f bs=65536 count=4 2>/dev/null",
            &g,
        ))
        .await;
    assert!(ok.succeeded(), "{ok:?}");
    // released: the volume and what was on it are gone
    let mut f = f;
    f.release();
    assert!(!f.outputs().exists());
}

/// (size, available) of the filesystem holding `p`.
fn nix_statvfs(p: &Path) -> (u64, u64) {
    let c = std::ffi::CString::new(p.to_str().expect("utf-8")).expect("cstr");
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is NUL-terminated; `st` is writable memory for one statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    assert_eq!(rc, 0, "statvfs: {}", std::io::Error::last_os_error());
    // SAFETY: statvfs returned 0.
    let st = unsafe { st.assume_init() };
    (st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize)
}

/// A WASI command that writes 64 KiB blocks to `/outputs/big` until a
/// write fails, then prints `E` and the WASI errno as one byte.
const FILL_WAT: &str = r#"
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 0) "big")
  (func (export "_start")
    (local $err i32)
    ;; preopens: 3 = /inputs, 4 = /outputs; O_CREAT|O_TRUNC, all rights
    (local.set $err
      (call $path_open (i32.const 4) (i32.const 0) (i32.const 0) (i32.const 3)
        (i32.const 9) (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 0) (i32.const 16)))
    (if (local.get $err) (then (call $say (local.get $err)) (return)))
    ;; iovec at 32: 64 KiB from 65536
    (i32.store (i32.const 32) (i32.const 65536))
    (i32.store (i32.const 36) (i32.const 65536))
    (block $done
      (loop $again
        (local.set $err
          (call $fd_write (i32.load (i32.const 16)) (i32.const 32) (i32.const 1) (i32.const 40)))
        (br_if $done (local.get $err))
        (br $again)))
    (call $say (local.get $err)))
  (func $say (param $errno i32)
    (i32.store8 (i32.const 48) (i32.const 69))
    (i32.store8 (i32.const 49) (local.get $errno))
    (i32.store (i32.const 52) (i32.const 48))
    (i32.store (i32.const 56) (i32.const 2))
    (drop (call $fd_write (i32.const 1) (i32.const 52) (i32.const 1) (i32.const 60)))))
"#;

/// WASI's ENOSPC.
const WASI_ENOSPC: u8 = 51;

#[tokio::test]
async fn a_wasm_task_filling_its_quota_gets_enospc_and_fails_with_disk_quota() {
    if !require_root("a_wasm_task_filling_its_quota_gets_enospc_and_fails_with_disk_quota") {
        return;
    }
    common::logs();
    let state = tempfile::tempdir().expect("tmp");
    let sandbox = common::sandbox_in(&state.path().join("sandbox"), false);
    let f = TaskFolders::prepare(&state.path().join("task"), Some(QUOTA), None).expect("folders");
    let task = Task {
        name: "fill".into(),
        kind: TaskKind::Wasm(WasmTask {
            module: common::wat(FILL_WAT),
            args: vec![],
            env: vec![],
        }),
        inputs: f.inputs().to_path_buf(),
        outputs: f.outputs().to_path_buf(),
        scratch: Some(f.tmp().to_path_buf()),
        limits: Limits {
            timeout: Duration::from_secs(30),
            disk_quota: f.quota(),
            ..Limits::default()
        },
    };
    let out = sandbox.run(task, CancellationToken::new()).await;
    assert_eq!(
        out.stdout.bytes,
        [b'E', WASI_ENOSPC],
        "the task saw ENOSPC: {out:?}"
    );
    assert_eq!(out.class(), Some(ErrorClass::DiskQuota), "{out:?}");
    let len = std::fs::metadata(f.outputs().join("big"))
        .expect("written")
        .len();
    assert!(len <= QUOTA && len > QUOTA / 2, "{len}");
}

#[test]
fn a_module_over_the_cap_is_refused_without_reading_it() {
    let dir = tempfile::tempdir().expect("tmp");
    // 64 GiB, sparse: reading it whole would take minutes and the memory
    let big = dir.path().join("big.wasm");
    std::fs::File::create(&big)
        .expect("create")
        .set_len(64 << 30)
        .expect("set_len");
    let started = Instant::now();
    let e = WasmModule::from_file_capped(&big, 256 << 20).expect_err("refused");
    assert_eq!(e.class(), ErrorClass::InvalidTask, "{e}");
    assert!(e.to_string().contains("68719476736 bytes"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let e = WasmModule::from_file(&big).expect_err("the default cap applies");
    assert_eq!(e.class(), ErrorClass::InvalidTask);
    // a file whose size says nothing (a pipe that never ends) is read only
    // up to the cap
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().expect("utf-8")).expect("cstr");
    // SAFETY: `c` is a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut w = std::fs::OpenOptions::new()
                .write(true)
                .open(&fifo)
                .expect("open fifo");
            let block = vec![0u8; 1 << 16];
            while w.write_all(&block).is_ok() {}
        })
    };
    let e = WasmModule::from_file_capped(&fifo, 1 << 20).expect_err("refused at the cap");
    assert_eq!(e.class(), ErrorClass::InvalidTask, "{e}");
    writer.join().expect("writer ends when the reader goes");
}

#[tokio::test]
async fn a_module_over_the_sandbox_cap_is_an_invalid_task() {
    let state = tempfile::tempdir().expect("tmp");
    let mut config = SandboxConfig::new(state.path());
    config.max_module_bytes = 64;
    let sandbox = Sandbox::new(config).expect("sandbox");
    let d = common::dirs();
    let module = common::wat(
        "(module (func (export \"_start\") nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop))",
    );
    assert!(module.bytes().len() > 64);
    let out = sandbox
        .run(
            common::wasm_task("big", module, &[], &d),
            CancellationToken::new(),
        )
        .await;
    assert_eq!(out.class(), Some(ErrorClass::InvalidTask), "{out:?}");
    assert!(
        out.failure
            .expect("failure")
            .message
            .contains("limit of 64 bytes")
    );
    let path = d.tmp.path().join("m.wasm");
    std::fs::write(&path, [0u8; 65]).expect("write");
    assert_eq!(
        sandbox.read_module(&path).expect_err("capped").class(),
        ErrorClass::InvalidTask
    );
}

/// A module that takes seconds to compile: many functions with long bodies.
/// `salt` makes its bytes (and so its cache key) unique.
fn slow_module(salt: u32) -> WasmModule {
    let mut wat = String::from("(module (memory 1)\n");
    for f in 0..400 {
        wat.push_str(&format!(
            "(func $f{f} (param i32) (result i32) (local.get 0)\n"
        ));
        for k in 0..400 {
            wat.push_str(&format!(
                "(i32.add (i32.const {})) (i32.mul (local.get 0)) (i32.store (i32.const {}) (local.get 0)) (i32.add (i32.load (i32.const {})))\n",
                k * 7 + f + salt,
                (k % 64) * 4,
                (k % 64) * 4
            ));
        }
        wat.push_str(")\n");
    }
    wat.push_str("(func (export \"_start\") (drop (call $f0 (i32.const 1)))))");
    common::wat(&wat)
}

#[tokio::test]
async fn a_slow_compile_is_cancelled_or_timed_out_and_blocks_nothing() {
    common::logs();
    let state = tempfile::tempdir().expect("tmp");
    let sandbox = common::sandbox_in(state.path(), false);
    let d = common::dirs();
    let slow = slow_module(1);

    // cancelled half-way through compiling: back at once
    let cancel = CancellationToken::new();
    let run = {
        let sandbox = sandbox.clone();
        let task = common::wasm_task("cancelled", slow.clone(), &[], &d);
        let cancel = cancel.clone();
        tokio::spawn(async move { sandbox.run(task, cancel).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let asked = Instant::now();
    cancel.cancel();
    let out = run.await.expect("run");
    assert_eq!(out.class(), Some(ErrorClass::Cancelled), "{out:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "cancel took {:?}",
        asked.elapsed()
    );
    assert_eq!(
        sandbox.wasm_cache_stats().compiles,
        0,
        "the module compiled before the cancel: make slow_module slower"
    );

    // another slow module past its deadline: a timeout, counted from the start
    let mut task = common::wasm_task("late", slow_module(2), &[], &d);
    task.limits.timeout = Duration::from_millis(300);
    let started = Instant::now();
    let out = sandbox.run(task, CancellationToken::new()).await;
    assert_eq!(out.class(), Some(ErrorClass::Timeout), "{out:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // meanwhile other tasks compile and run: no lock held by those compiles
    let started = Instant::now();
    let quick = common::wat("(module (func (export \"_start\")))");
    let out = sandbox
        .run(
            common::wasm_task("quick", quick.clone(), &[], &d),
            CancellationToken::new(),
        )
        .await;
    assert!(out.succeeded(), "{out:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // and a cached module starts from memory
    let out = sandbox
        .run(
            common::wasm_task("quick2", quick, &[], &d),
            CancellationToken::new(),
        )
        .await;
    assert!(out.succeeded(), "{out:?}");
    assert!(sandbox.wasm_cache_stats().memory_hits >= 1);
    // the abandoned compile still ends and fills the cache for a retry
    let mut task = common::wasm_task("retry", slow, &[], &d);
    task.limits.timeout = Duration::from_secs(120);
    let out = sandbox.run(task, CancellationToken::new()).await;
    assert!(out.succeeded(), "{out:?}");
}
