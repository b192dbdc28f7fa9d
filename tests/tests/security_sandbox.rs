//! Attacks by a task on the node that runs it, through real nodes: a
//! container leaving a setuid copy of a shell in `/outputs`, a container
//! probing io_uring, and a task filling its disk quota (a task failure,
//! never retried on another node). Container tests need root and say so.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use weft_node::store::records::BlobKind;
use weft_protocol::TagName;
use weft_protocol::sched::{JobId, JobState, JobStatus, Submission};
use weft_tests::{Cluster, ClusterOptions, job};

/// Bytes each node lets a task write to /outputs and /tmp together.
const QUOTA: u64 = 2 << 20;

fn is_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    eprintln!("SKIPPED {test}: task folders' quota volumes and containers need root");
    false
}

/// A cluster of `n` nodes: node 0, where jobs are submitted, and `n - 1`
/// workers with a small task disk quota.
async fn cluster(n: usize) -> Cluster {
    let mut c = Cluster::start(1, ClusterOptions::default())
        .await
        .expect("cluster");
    for _ in 1..n {
        c.add_node(|config| config.sandbox.task_disk_quota = QUOTA)
            .await
            .expect("node");
    }
    c.wait_until(
        Duration::from_secs(20),
        "all nodes see each other",
        |c| async move {
            for (i, _) in c.running() {
                if c.peers_of(i).await.len() < n - 1 {
                    return false;
                }
            }
            true
        },
    )
    .await
    .expect("mesh");
    c
}

async fn submit(c: &Cluster, yaml: &str) -> JobId {
    c.node(0)
        .sched()
        .submit(Submission {
            spec: job(yaml),
            local: false,
            run: None,
        })
        .await
        .expect("submit")
        .id
}

async fn wait_done(c: &Cluster, id: &JobId) -> JobStatus {
    let s = c
        .node(0)
        .sched()
        .wait(id.clone(), Duration::from_secs(60))
        .await
        .expect("status");
    assert!(s.state.is_terminal(), "job {id} not done: {s:#?}");
    s
}

fn import_image(c: &Cluster) {
    weft_tests::import_test_image_everywhere(c, "images/busybox:test").expect("import");
}

/// A WASI command that writes 64 KiB blocks to `/outputs/big` until a write
/// fails (ENOSPC at the quota), then exits 1.
const FILL_WAT: &str = r#"
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 2)
  (data (i32.const 0) "big")
  (func (export "_start")
    (if (call $path_open (i32.const 4) (i32.const 0) (i32.const 0) (i32.const 3)
          (i32.const 9) (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 0) (i32.const 16))
      (then (call $exit (i32.const 2))))
    (i32.store (i32.const 32) (i32.const 65536))
    (i32.store (i32.const 36) (i32.const 65536))
    (loop $again
      (br_if $again
        (i32.eqz (call $fd_write (i32.load (i32.const 16)) (i32.const 32) (i32.const 1) (i32.const 40)))))
    (call $exit (i32.const 1))))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_filling_task_fails_once_with_disk_quota_and_is_not_retried_elsewhere() {
    if !is_root("a_disk_filling_task_fails_once_with_disk_quota_and_is_not_retried_elsewhere") {
        return;
    }
    let c = cluster(3).await;
    let wasm = wat::parse_str(FILL_WAT).expect("wat");
    let name = TagName::new("test/fill:v1").expect("tag");
    for (_, n) in c.running() {
        let (h, _) = n.store().add_bytes(&wasm, BlobKind::Raw).expect("add");
        n.store().set_tag(&name, Some(h)).expect("tag");
    }
    // kept off the submitting node, so a retry would have two more to go to
    let id = submit(
        &c,
        "apiVersion: weft/v1\nkind: Job\nmetadata: {name: fill}\nspec:\n  task:\n    wasm: {module: test/fill:v1}\n  constraints: {worker: \"yes\"}\n  outputs: [{path: /outputs/big}]\n  cache: false\n  timeout: 60s\n",
    )
    .await;
    let s = wait_done(&c, &id).await;
    assert_eq!(s.state, JobState::Failed, "{s:#?}");
    let error = s
        .result
        .as_ref()
        .and_then(|r| r.error.clone())
        .expect("an error");
    assert_eq!(error.0, "disk-quota", "{s:#?}");
    assert!(error.1.contains(&QUOTA.to_string()), "{}", error.1);
    assert_eq!(s.attempt, 1, "retried: {s:#?}");
    // still one attempt a moment later (no late re-placement either)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = c.node(0).sched().status(id.clone()).await.expect("status");
    assert_eq!(
        (again.state, again.attempt),
        (JobState::Failed, 1),
        "{again:#?}"
    );
    // the executor's quota volume is gone with the task, and with it the bytes
    let executor = s.node.clone().expect("executor");
    let (_, node) = c
        .running()
        .find(|(_, n)| n.peer_id() == executor)
        .expect("member");
    let tasks = node.home().work_dir().join("tasks");
    c.wait_until(
        Duration::from_secs(10),
        "the task's volume is unmounted",
        |_| {
            let tasks = tasks.clone();
            async move {
                let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
                !mounts.contains(tasks.to_str().unwrap_or("?"))
            }
        },
    )
    .await
    .expect("volume released");
    c.stop().await;
}

/// The task folders under `work/tasks` holding `/outputs/NAME` now.
fn find_output(work: &Path, name: &str) -> Option<PathBuf> {
    let tasks = std::fs::read_dir(work.join("tasks")).ok()?;
    tasks
        .flatten()
        .map(|t| t.path().join("volume/outputs").join(name))
        .find(|p| p.exists())
}

fn run_as_nobody(program: &Path) -> std::process::Output {
    std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        // a shell of the local user execs it (setpriv's own exec is not one)
        .args(["/bin/sh", "-c", "exec \"$0\" -c 'id -u'"])
        .arg(program)
        .output()
        .expect("setpriv")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setuid_shell_left_by_a_container_gives_a_local_user_nothing() {
    if !is_root("a_setuid_shell_left_by_a_container_gives_a_local_user_nothing") {
        return;
    }
    let c = cluster(2).await;
    import_image(&c);
    let id = submit(
        &c,
        "apiVersion: weft/v1\nkind: Job\nmetadata: {name: setuid}\nspec:\n  task:\n    container: {image: images/busybox:test, command: [sh, -c, \"cp /bin/busybox /outputs/sh && chmod 4755 /outputs/sh && touch /outputs/ready && sleep 600\"]}\n  constraints: {worker: \"yes\"}\n  cache: false\n  timeout: 10m\n",
    )
    .await;
    // while it runs, find the file on the executor's disk
    let started = Instant::now();
    let (work, sh) = loop {
        let found = c.running().find_map(|(_, n)| {
            let work = n.home().work_dir();
            find_output(&work, "ready").map(|r| (work, r.with_file_name("sh")))
        });
        if let Some(f) = found {
            break f;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the container never wrote its file"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let meta = std::fs::metadata(&sh).expect("setuid copy");
    assert_eq!(meta.mode() & 0o4000, 0o4000, "the task set the setuid bit");
    assert_eq!(
        meta.uid(),
        100_000,
        "owned by the container's mapped root, not host root"
    );
    let work_mode = std::fs::metadata(&work).expect("work").permissions().mode() & 0o777;
    assert_eq!(work_mode, 0o700, "task folders live under a private folder");
    // a local user cannot reach it at all
    let out = run_as_nobody(&sh);
    assert!(!out.status.success(), "nobody reached the task folder");
    // and even with every folder opened to them, it runs as themselves
    let mut p = sh.parent().map(Path::to_path_buf);
    while let Some(dir) = p {
        let mode = std::fs::metadata(&dir).expect("meta").permissions().mode();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode | 0o711))
            .expect("chmod");
        if dir == work {
            break;
        }
        p = dir.parent().map(Path::to_path_buf);
    }
    let mut p = work.parent().map(Path::to_path_buf);
    while let Some(dir) = p {
        let mode = std::fs::metadata(&dir).expect("meta").permissions().mode();
        if mode & 0o001 == 0 {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode | 0o711))
                .expect("chmod");
        }
        p = dir.parent().map(Path::to_path_buf);
    }
    let out = run_as_nobody(&sh);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "65534",
        "the setuid bit took effect"
    );
    c.node(0).sched().cancel(id).await.expect("cancel");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_io_uring_probe_in_a_container_is_refused() {
    if !is_root("an_io_uring_probe_in_a_container_is_refused") {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let src = dir.path().join("probe.c");
    std::fs::write(
        &src,
        "#include <errno.h>\n#include <stdio.h>\n#include <string.h>\n#include <sys/syscall.h>\n#include <unistd.h>\n\
         int main(void){char p[120];memset(p,0,sizeof p);long r=syscall(SYS_io_uring_setup,4,p);\
         printf(\"io_uring_setup %ld %d\\n\",r,r<0?errno:0);return 0;}\n",
    )
    .expect("probe.c");
    let bin = dir.path().join("probe");
    match std::process::Command::new("gcc")
        .args(["-static", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
    {
        Ok(o) if o.status.success() => {}
        other => {
            eprintln!(
                "SKIPPED an_io_uring_probe_in_a_container_is_refused: gcc -static unavailable: {other:?}"
            );
            return;
        }
    }
    let c = cluster(2).await;
    import_image(&c);
    let probe = std::fs::read(&bin).expect("probe");
    let name = TagName::new("test/probe:v1").expect("tag");
    for (_, n) in c.running() {
        let (h, _) = n.store().add_bytes(&probe, BlobKind::Raw).expect("add");
        n.store().set_tag(&name, Some(h)).expect("tag");
    }
    let id = submit(
        &c,
        "apiVersion: weft/v1\nkind: Job\nmetadata: {name: probe}\nspec:\n  task:\n    container: {image: images/busybox:test, command: [sh, -c, \"cp /inputs/probe /tmp/p && chmod 755 /tmp/p && /tmp/p > /outputs/result\"]}\n  inputs: [{from: test/probe:v1, path: /inputs/probe}]\n  constraints: {worker: \"yes\"}\n  outputs: [{path: /outputs/result}]\n  cache: false\n  timeout: 60s\n",
    )
    .await;
    let s = wait_done(&c, &id).await;
    assert_eq!(s.state, JobState::Succeeded, "{s:#?}");
    let (_, out) = s
        .result
        .as_ref()
        .and_then(|r| r.outputs.first().cloned())
        .expect("an output");
    let executor = s.node.clone().expect("executor");
    let (_, node) = c
        .running()
        .find(|(_, n)| n.peer_id() == executor)
        .expect("member");
    let text = std::fs::read_to_string(node.store().blob_path(&out))
        .expect("result in the executor's store");
    assert_eq!(
        text.trim(),
        format!("io_uring_setup -1 {}", libc::EPERM),
        "{text}"
    );
    c.stop().await;
}
