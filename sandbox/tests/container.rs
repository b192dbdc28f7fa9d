//! The container executor end to end with runc and the busybox test image.
//! These need root; each test says so loudly and skips when not root.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Dirs, dirs, require_root, test_image};
use weft_sandbox::image::{UnpackOptions, unpack};
use weft_sandbox::{
    CancellationToken, ContainerTask, ErrorClass, GpuDevice, Limits, Outcome, Sandbox,
    SandboxConfig, Task, TaskKind,
};

/// Slack for runc's own start and stop on a shared 2-core machine.
const MARGIN: Duration = Duration::from_secs(2);

type Setup = common::ContainerSetup;

fn setup() -> Setup {
    common::container_setup()
}

impl Setup {
    fn task(&self, name: &str, script: &str, d: &Dirs) -> Task {
        Task {
            name: name.to_string(),
            kind: TaskKind::Container(ContainerTask {
                rootfs: self.rootfs.clone(),
                args: vec!["sh".into(), "-c".into(), script.into()],
                env: self.image.environment(&[]),
                workdir: None,
                gpus: vec![],
            }),
            inputs: d.inputs.clone(),
            outputs: d.outputs.clone(),
            scratch: None,
            limits: Limits {
                timeout: Duration::from_secs(30),
                ..Limits::default()
            },
        }
    }

    async fn run(&self, task: Task) -> Outcome {
        self.sandbox.run(task, CancellationToken::new()).await
    }

    fn runtime_root(&self) -> PathBuf {
        self.state.path().join("sandbox/runc")
    }

    /// Asserts no container, bundle or process of this setup is left.
    fn assert_nothing_left(&self, marker: &str) {
        let listed = Command::new("runc")
            .arg("--root")
            .arg(self.runtime_root())
            .args(["list", "-q"])
            .output()
            .expect("runc list");
        assert!(listed.status.success());
        assert_eq!(
            String::from_utf8_lossy(&listed.stdout).trim(),
            "",
            "containers left"
        );
        let bundles: Vec<_> = std::fs::read_dir(self.state.path().join("sandbox/bundles"))
            .expect("bundle dir")
            .collect();
        assert!(bundles.is_empty(), "bundles left: {bundles:?}");
        let ps = Command::new("ps")
            .args(["-eo", "args"])
            .output()
            .expect("ps");
        let ps = String::from_utf8_lossy(&ps.stdout);
        assert!(
            !ps.lines().any(|l| l.contains(marker)),
            "process left:\n{ps}"
        );
    }
}

fn lines(out: &Outcome) -> Vec<String> {
    out.stdout.text().lines().map(str::to_string).collect()
}

#[tokio::test]
async fn busybox_runs_with_the_image_command() {
    if !require_root("busybox_runs_with_the_image_command") {
        return;
    }
    let s = setup();
    let d = dirs();
    let mut task = s.task("hello", "", &d);
    if let TaskKind::Container(c) = &mut task.kind {
        c.args = s.image.command_line(&[], &[]);
    }
    let out = s.run(task).await;
    assert!(out.succeeded(), "{out:?}");
    assert_eq!(out.stdout.text(), "hello from busybox\n");
    assert!(out.peak_memory.is_some_and(|m| m > 0), "{out:?}");
    s.assert_nothing_left("weft-hello-");
}

#[tokio::test]
async fn a_container_sees_its_folders_and_nothing_else() {
    if !require_root("a_container_sees_its_folders_and_nothing_else") {
        return;
    }
    let s = setup();
    let d = dirs();
    std::fs::write(d.inputs.join("data.txt"), "input data\n").expect("write");
    let script = "cat /inputs/data.txt; cat /etc/weft-release; \
                  test -e /etc/motd && echo motd || echo no-motd; \
                  echo result > /outputs/result.txt && echo outputs=ok; \
                  touch /inputs/x 2>/dev/null && echo inputs=rw || echo inputs=ro; \
                  touch /bin/x 2>/dev/null && echo root=rw || echo root=ro; \
                  echo t > /tmp/t && echo tmp=ok; \
                  grep CapEff /proc/self/status; grep NoNewPrivs /proc/self/status; \
                  hostname; id -u";
    let out = s.run(s.task("folders", script, &d)).await;
    assert!(out.succeeded(), "{out:?}");
    let l = lines(&out);
    assert_eq!(
        l,
        [
            "input data",
            "weft busybox test image",
            "no-motd",
            "outputs=ok",
            "inputs=ro",
            "root=ro",
            "tmp=ok",
            "CapEff:\t0000000000000000",
            "NoNewPrivs:\t1",
            "weft",
            "0",
        ],
        "{}",
        out.stderr.text()
    );
    assert_eq!(
        std::fs::read_to_string(d.outputs.join("result.txt")).expect("output"),
        "result\n"
    );
    assert!(!d.inputs.join("x").exists());
    assert!(!s.rootfs.join("bin/x").exists());
}

#[tokio::test]
async fn a_container_has_no_network() {
    if !require_root("a_container_has_no_network") {
        return;
    }
    let s = setup();
    let d = dirs();
    // A server the host can reach; the container must not.
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let host_ok = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
    assert!(host_ok, "the host reaches its own server");
    let script = format!(
        "nc -w 2 127.0.0.1 {port} </dev/null; echo nc=$?; \
         wget -T 2 -q -O /dev/null http://10.0.0.1/; echo wget=$?; \
         ls /sys/class/net; \
         unshare -n true 2>/dev/null; echo unshare=$?"
    );
    let out = s.run(s.task("nonet", &script, &d)).await;
    assert!(out.succeeded(), "{out:?}");
    let l = lines(&out);
    let value = |k: &str| {
        l.iter()
            .find_map(|x| x.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k} in {l:?}"))
            .to_string()
    };
    assert_ne!(value("nc"), "0", "{l:?}");
    assert_ne!(value("wget"), "0", "{l:?}");
    assert_ne!(value("unshare"), "0", "namespaces cannot be created: {l:?}");
    assert!(l.contains(&"lo".to_string()), "{l:?}");
    assert_eq!(
        l.iter().filter(|x| !x.contains('=')).count(),
        1,
        "only the loopback device: {l:?}"
    );
    listener.set_nonblocking(true).expect("nonblocking");
    let mut accepted = 0;
    while listener.accept().is_ok() {
        accepted += 1;
    }
    assert_eq!(accepted, 1, "only the host's own connection arrived");
}

#[tokio::test]
async fn a_container_past_its_deadline_is_killed_and_nothing_remains() {
    if !require_root("a_container_past_its_deadline_is_killed_and_nothing_remains") {
        return;
    }
    let s = setup();
    let d = dirs();
    let mut task = s.task("sleeper", "echo started; sleep 1234; echo never", &d);
    task.limits.timeout = Duration::from_secs(1);
    let started = Instant::now();
    let out = s.run(task).await;
    let took = started.elapsed();
    assert_eq!(out.class(), Some(ErrorClass::Timeout), "{out:?}");
    assert_eq!(out.stdout.text(), "started\n");
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(took < Duration::from_secs(1) + MARGIN, "took {took:?}");
    s.assert_nothing_left("sleep 1234");
}

#[tokio::test]
async fn cancelling_or_dropping_a_run_kills_the_container() {
    if !require_root("cancelling_or_dropping_a_run_kills_the_container") {
        return;
    }
    let s = setup();
    let d = dirs();
    let cancel = CancellationToken::new();
    let run = {
        let sb = s.sandbox.clone();
        let task = s.task("cancelled", "sleep 2345", &d);
        let cancel = cancel.clone();
        tokio::spawn(async move { sb.run(task, cancel).await })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    let asked = Instant::now();
    cancel.cancel();
    let out = run.await.expect("joined");
    assert_eq!(out.class(), Some(ErrorClass::Cancelled), "{out:?}");
    assert!(asked.elapsed() < MARGIN, "took {:?}", asked.elapsed());
    s.assert_nothing_left("sleep 2345");

    // The caller's future dropped half-way: the run cleans up by itself.
    let run = {
        let sb = s.sandbox.clone();
        let task = s.task("dropped", "sleep 3456", &d);
        tokio::spawn(async move { sb.run(task, CancellationToken::new()).await })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    let ps = Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .expect("ps");
    assert!(
        String::from_utf8_lossy(&ps.stdout).contains("sleep 3456"),
        "the container was running"
    );
    run.abort();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ps = Command::new("ps")
            .args(["-eo", "args"])
            .output()
            .expect("ps");
        let gone = !String::from_utf8_lossy(&ps.stdout).contains("sleep 3456");
        let bundles_gone = std::fs::read_dir(s.state.path().join("sandbox/bundles"))
            .expect("bundles")
            .next()
            .is_none();
        if gone && bundles_gone {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dropped run left its container"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The runtime's record goes with the bundle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.assert_nothing_left("sleep 3456");
}

#[tokio::test]
async fn exceeding_the_memory_limit_is_a_memory_limit() {
    if !require_root("exceeding_the_memory_limit_is_a_memory_limit") {
        return;
    }
    let s = setup();
    let d = dirs();
    // The shell holds 100 MB in a variable under a 32 MiB limit.
    let mut task = s.task(
        "hog",
        "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived ${#x}",
        &d,
    );
    task.limits.memory = Some(32 << 20);
    let out = s.run(task).await;
    assert_eq!(out.class(), Some(ErrorClass::MemoryLimit), "{out:?}");
    assert!(!out.stdout.text().contains("survived"));
    let peak = out.peak_memory.expect("peak");
    assert!(peak <= 33 << 20 && peak > 16 << 20, "peak {peak}");
    s.assert_nothing_left("weft-hog-");

    // The same under a generous limit.
    let mut task = s.task(
        "small",
        "x=$(head -c 1000000 /dev/zero | tr '\\0' a); echo ${#x}",
        &d,
    );
    task.limits.memory = Some(64 << 20);
    let out = s.run(task).await;
    assert!(out.succeeded(), "{out:?}");
    assert_eq!(out.stdout.text(), "1000000\n");
}

#[tokio::test]
async fn assigned_gpus_get_their_device_nodes_and_variables() {
    if !require_root("assigned_gpus_get_their_device_nodes_and_variables") {
        return;
    }
    common::logs();
    let state = tempfile::tempdir().expect("tmp");
    let rootfs = state.path().join("rootfs");
    let image = unpack(test_image(), &rootfs, &UnpackOptions::default()).expect("unpacks");
    // Stand-in device nodes (the numbers of /dev/null) where a driver would
    // put /dev/nvidia3 and /dev/nvidiactl; the GPU of minor 5 has no node.
    let dev = state.path().join("dev");
    std::fs::create_dir(&dev).expect("mkdir");
    for name in ["nvidia3", "nvidiactl"] {
        let path = std::ffi::CString::new(dev.join(name).to_str().expect("utf-8")).expect("cstr");
        // SAFETY: `path` is a valid NUL-terminated string; mknod has no
        // other preconditions.
        let rc = unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
        assert_eq!(rc, 0, "mknod {name}: {}", std::io::Error::last_os_error());
        // as the driver makes them (the umask narrowed mknod's mode)
        std::fs::set_permissions(
            dev.join(name),
            std::os::unix::fs::PermissionsExt::from_mode(0o666),
        )
        .expect("chmod");
    }
    let mut config = SandboxConfig::new(state.path().join("sandbox"));
    config.dev_dir = dev;
    let sb = Sandbox::new(config).expect("sandbox");
    let d = dirs();
    let task = Task {
        name: "gpu".into(),
        kind: TaskKind::Container(ContainerTask {
            rootfs,
            args: vec![
                "sh".into(),
                "-c".into(),
                "test -c /dev/nvidia3 && echo has3; test -e /dev/nvidia5 || echo no5; \
                 test -c /dev/nvidiactl && echo hasctl; echo x > /dev/nvidia3 && echo usable; \
                 echo $CUDA_VISIBLE_DEVICES $NVIDIA_VISIBLE_DEVICES $CUDA_DEVICE_ORDER"
                    .into(),
            ],
            env: image.environment(&[("CUDA_VISIBLE_DEVICES".into(), "7".into())]),
            workdir: Some("/tmp".into()),
            // by minor number; the task counts its devices from 0
            gpus: vec![GpuDevice { minor: 3 }, GpuDevice { minor: 5 }],
        }),
        inputs: d.inputs.clone(),
        outputs: d.outputs.clone(),
        scratch: None,
        limits: Limits::default(),
    };
    let out = sb.run(task, CancellationToken::new()).await;
    assert!(out.succeeded(), "{out:?}");
    assert_eq!(
        lines(&out),
        ["has3", "no5", "hasctl", "usable", "0 0 PCI_BUS_ID"],
        "{}",
        out.stderr.text()
    );
    assert!(
        out.notes
            .iter()
            .any(|n| n.contains("nvidia5") && n.contains("not present")),
        "{:?}",
        out.notes
    );
}

#[tokio::test]
async fn bad_container_tasks_are_refused_clearly() {
    if !require_root("bad_container_tasks_are_refused_clearly") {
        return;
    }
    let s = setup();
    let d = dirs();
    let mut task = s.task("nocmd", "", &d);
    if let TaskKind::Container(c) = &mut task.kind {
        c.args = vec![];
    }
    let out = s.run(task).await;
    assert_eq!(out.class(), Some(ErrorClass::InvalidTask), "{out:?}");

    let mut task = s.task("missing", "", &d);
    if let TaskKind::Container(c) = &mut task.kind {
        c.args = vec!["no-such-program".into()];
    }
    let out = s.run(task).await;
    assert_eq!(out.class(), Some(ErrorClass::InvalidTask), "{out:?}");
    assert!(
        out.failure
            .as_ref()
            .is_some_and(|f| f.message.contains("no-such-program")),
        "{out:?}"
    );
    s.assert_nothing_left("weft-missing-");

    let mut task = s.task("noroot", "true", &d);
    if let TaskKind::Container(c) = &mut task.kind {
        c.rootfs = s.state.path().join("nope");
    }
    let out = s.run(task).await;
    assert_eq!(out.class(), Some(ErrorClass::InvalidTask), "{out:?}");

    let mut task = s.task("exit", "echo bye >&2; exit 7", &d);
    task.limits.timeout = Duration::from_secs(10);
    let out = s.run(task).await;
    assert_eq!(
        (out.exit_code, out.failure.clone()),
        (Some(7), None),
        "{out:?}"
    );
    assert_eq!(out.stderr.text(), "bye\n");
}

#[tokio::test]
async fn a_missing_runtime_is_runtime_missing() {
    // Needs no root: the runtime is never started.
    let state = tempfile::tempdir().expect("tmp");
    let mut config = SandboxConfig::new(state.path());
    config.oci_runtime = Some(Path::new("/nonexistent/runc").to_path_buf());
    let sb = Sandbox::new(config).expect("sandbox");
    assert_eq!(sb.executors().container, None);
    assert!(sb.executors().wasm.contains("wasmtime"));
    let d = dirs();
    let task = Task {
        name: "c".into(),
        kind: TaskKind::Container(ContainerTask {
            rootfs: d.tmp.path().to_path_buf(),
            args: vec!["true".into()],
            env: vec![],
            workdir: None,
            gpus: vec![],
        }),
        inputs: d.inputs.clone(),
        outputs: d.outputs.clone(),
        scratch: None,
        limits: Limits::default(),
    };
    let out = sb.run(task, CancellationToken::new()).await;
    assert_eq!(out.class(), Some(ErrorClass::RuntimeMissing), "{out:?}");
    let msg = &out.failure.as_ref().expect("failure").message;
    assert!(
        msg.contains("/nonexistent/runc") && msg.contains("install runc"),
        "{msg}"
    );
}

#[tokio::test]
async fn the_runtime_is_reported_for_adverts() {
    if !require_root("the_runtime_is_reported_for_adverts") {
        return;
    }
    let s = setup();
    let rt = s.sandbox.executors().container.expect("runtime");
    assert_eq!(rt.name, "runc");
    assert!(rt.version.starts_with("runc version"), "{}", rt.version);
    assert!(rt.path.is_absolute());
}
