//! Long-running container services end to end with runc and the busybox
//! test image: reached only by entering their network namespace, logged,
//! stopped and cleaned up. These need root; each test says so loudly and
//! skips when not root.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{ContainerSetup, require_root};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_sandbox::ErrorClass;
use weft_sandbox::service::{ContainerService, LOG_BYTES, ServiceContainer};

/// How long a service may take to start listening on a loaded machine.
const READY: Duration = Duration::from_secs(15);

/// Slack for runc's own start and stop on a shared 2-core machine.
const MARGIN: Duration = Duration::from_secs(3);

/// A shell script that serves `/tmp/www` (made first, with `healthz`,
/// `index.html` and whatever `extra` writes) on `port` with busybox httpd.
fn httpd(port: u16, extra: &str) -> String {
    format!(
        "mkdir -p /tmp/www && echo ok > /tmp/www/healthz && \
         echo '<h1>weft</h1>' > /tmp/www/index.html && {extra} \
         echo serving; exec busybox httpd -f -p {port} -h /tmp/www"
    )
}

fn service(s: &ContainerSetup, name: &str, script: &str) -> ServiceContainer {
    let mut spec = ServiceContainer::new(
        name,
        s.rootfs.clone(),
        vec!["sh".into(), "-c".into(), script.into()],
    );
    spec.env = s.image.environment(&[]);
    spec
}

/// A port nothing on the host listens on right now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Waits until the service accepts connections on `port`.
async fn wait_ready(svc: &ContainerService, port: u16) {
    let started = Instant::now();
    loop {
        match svc.connect(port).await {
            Ok(_) => return,
            Err(e) => {
                assert!(
                    started.elapsed() < READY,
                    "port {port} never answered: {e}\nlogs:\n{}",
                    svc.logs()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// One HTTP/1.0 GET through the service's namespace: status and body.
async fn get(svc: &ContainerService, port: u16, path: &str) -> (u16, String) {
    let mut s = svc.connect(port).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: svc\r\n\r\n").as_bytes())
        .await
        .expect("send");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The TCP sockets in the host's network namespace (this process's
/// `/proc/net/tcp` and `tcp6`), on any address: local port, remote port
/// and state (`0A` listening, `01` established).
fn host_sockets() -> Vec<(u16, u16, String)> {
    let mut found = Vec::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(t) = std::fs::read_to_string(f) else {
            continue;
        };
        for l in t.lines().skip(1) {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let port_of = |i: usize| {
                cols.get(i)
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
            };
            if let (Some(local), Some(remote), Some(state)) = (port_of(1), port_of(2), cols.get(3))
            {
                found.push((local, remote, state.to_string()));
            }
        }
    }
    found
}

fn host_listens_on(port: u16) -> bool {
    host_sockets()
        .iter()
        .any(|(local, _, state)| *local == port && state == "0A")
}

/// Whether the host's namespace holds a connection from `local` to `remote`.
fn host_has_connection(local: u16, remote: u16) -> bool {
    host_sockets()
        .iter()
        .any(|(l, r, _)| (*l, *r) == (local, remote) || (*l, *r) == (remote, local))
}

/// Asserts no runtime state, bundle, root mount, cgroup or process of
/// container `id` is left.
fn assert_nothing_left(s: &ContainerSetup, id: &str) {
    let listed = Command::new("runc")
        .arg("--root")
        .arg(s.state.path().join("sandbox/runc"))
        .args(["list", "-q"])
        .output()
        .expect("runc list");
    assert!(listed.status.success());
    assert!(
        !String::from_utf8_lossy(&listed.stdout).contains(id),
        "runtime state left for {id}"
    );
    let bundles: Vec<_> = std::fs::read_dir(s.state.path().join("sandbox/bundles"))
        .expect("bundle dir")
        .collect();
    assert!(bundles.is_empty(), "bundles left: {bundles:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.lines().any(|l| l.contains(id)),
        "a mount of {id} is left"
    );
    for base in ["/sys/fs/cgroup/weft", "/sys/fs/cgroup/memory/weft"] {
        assert!(
            !PathBuf::from(base).join(id).exists(),
            "the cgroup of {id} is left"
        );
    }
}

/// Whether a process whose command line contains `marker` runs.
fn process_runs(marker: &str) -> bool {
    let ps = Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .expect("ps");
    String::from_utf8_lossy(&ps.stdout)
        .lines()
        .any(|l| l.contains(marker) && !l.contains("ps -eo"))
}

#[tokio::test]
async fn a_service_answers_only_inside_its_own_network_namespace() {
    if !require_root("a_service_answers_only_inside_its_own_network_namespace") {
        return;
    }
    let s = common::container_setup();
    let port = free_port();
    let inputs = s.state.path().join("inputs");
    std::fs::create_dir_all(&inputs).expect("mkdir");
    std::fs::write(inputs.join("model"), "iris v7\n").expect("write");
    let extra = "cp /inputs/model /tmp/www/model && \
                 (touch /inputs/x 2>/dev/null && echo inputs=rw || echo inputs=ro) && \
                 echo lo=$(cat /sys/class/net/lo/flags) && echo ifaces=$(ls /sys/class/net) && ";
    let mut spec = service(&s, "web", &httpd(port, extra));
    spec.inputs = Some(inputs.clone());
    spec.memory = Some(128 << 20);
    let svc = ContainerService::start(&s.sandbox, spec)
        .await
        .expect("service starts");
    assert!(svc.is_running());
    wait_ready(&svc, port).await;

    assert_eq!(get(&svc, port, "/healthz").await, (200, "ok\n".to_string()));
    assert_eq!(
        get(&svc, port, "/index.html").await,
        (200, "<h1>weft</h1>\n".to_string())
    );
    assert_eq!(
        get(&svc, port, "/model").await,
        (200, "iris v7\n".to_string()),
        "/inputs is readable"
    );
    assert_eq!(get(&svc, port, "/missing").await.0, 404);
    let logs = svc.logs();
    assert!(logs.contains("inputs=ro"), "{logs}");
    assert!(!inputs.join("x").exists(), "/inputs is read-only");
    // The loopback is up (IFF_UP | IFF_LOOPBACK) and is the only device.
    assert!(logs.contains("lo=0x9\n"), "{logs}");
    assert!(logs.contains("ifaces=lo\n"), "{logs}");

    // Nothing listens on the port in the host's namespace, on any address
    // (and a host listener is seen where there is one).
    let control = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let control_port = control.local_addr().expect("addr").port();
    assert!(host_listens_on(control_port));
    let client = std::net::TcpStream::connect(("127.0.0.1", control_port)).expect("connect");
    let client_port = client.local_addr().expect("addr").port();
    assert!(host_has_connection(client_port, control_port));
    assert!(!host_listens_on(port), "the port is published on the host");
    let host = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    );
    assert!(host.is_err(), "the host reached the service's port");

    // The memory limit is the service's cgroup's (v2 or v1 layout), unless
    // the host lacks the controller and the service says so.
    let limit = [
        PathBuf::from("/sys/fs/cgroup/weft")
            .join(svc.id())
            .join("memory.max"),
        PathBuf::from("/sys/fs/cgroup/memory/weft")
            .join(svc.id())
            .join("memory.limit_in_bytes"),
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok());
    match limit {
        Some(max) => assert_eq!(max.trim(), (128u64 << 20).to_string()),
        None => assert!(
            svc.notes()
                .iter()
                .any(|n| n.contains("memory limit not applied")),
            "no memory cgroup and no note: {:?}",
            svc.notes()
        ),
    }

    // A connection made before the stop ends with it. While it is open,
    // neither end of it shows in the host's namespace.
    let mut open = svc.connect(port).await.expect("connect");
    let local = open.local_addr().expect("local address");
    assert_eq!(open.peer_addr().expect("peer").port(), port);
    assert!(local.ip().is_loopback(), "{local}");
    assert!(!host_listens_on(port));
    assert!(!host_has_connection(local.port(), port));
    let id = svc.id().to_string();
    svc.stop(Duration::from_millis(500))
        .await
        .expect("stop cleans up");
    let mut buf = [0u8; 16];
    let after = tokio::time::timeout(Duration::from_secs(5), open.read(&mut buf))
        .await
        .expect("the old connection ends");
    assert!(matches!(after, Ok(0) | Err(_)), "{after:?}");
    assert_nothing_left(&s, &id);
    assert!(!process_runs(&format!("httpd -f -p {port}")));
}

#[tokio::test]
async fn two_services_on_one_port_do_not_collide() {
    if !require_root("two_services_on_one_port_do_not_collide") {
        return;
    }
    let s = common::container_setup();
    // Port 80: below 1024, which the unprivileged container root may bind
    // in its own network namespace.
    let port = 80;
    let host_had = host_listens_on(port);
    let a = ContainerService::start(
        &s.sandbox,
        service(&s, "a", &httpd(port, "echo A > /tmp/www/who && ")),
    );
    let b = ContainerService::start(
        &s.sandbox,
        service(&s, "b", &httpd(port, "echo B > /tmp/www/who && ")),
    );
    let (a, b) = tokio::join!(a, b);
    let (a, b) = (a.expect("a starts"), b.expect("b starts"));
    wait_ready(&a, port).await;
    wait_ready(&b, port).await;
    for _ in 0..3 {
        assert_eq!(get(&a, port, "/who").await, (200, "A\n".to_string()));
        assert_eq!(get(&b, port, "/who").await, (200, "B\n".to_string()));
    }
    assert_eq!(host_listens_on(port), host_had, "nothing new on the host");
    let (ida, idb) = (a.id().to_string(), b.id().to_string());
    a.stop(Duration::from_millis(200)).await.expect("stop a");
    // b is untouched by a's stop
    assert!(b.is_running());
    assert_eq!(get(&b, port, "/who").await, (200, "B\n".to_string()));
    b.stop(Duration::from_millis(200)).await.expect("stop b");
    assert_nothing_left(&s, &ida);
    assert_nothing_left(&s, &idb);
}

#[tokio::test]
async fn a_service_that_exits_is_not_running_and_refuses_connections() {
    if !require_root("a_service_that_exits_is_not_running_and_refuses_connections") {
        return;
    }
    let s = common::container_setup();
    let svc = ContainerService::start(
        &s.sandbox,
        service(
            &s,
            "quits",
            "echo to-stdout; echo to-stderr >&2; sleep 0.3; exit 3",
        ),
    )
    .await
    .expect("service starts");
    let started = Instant::now();
    while svc.is_running() {
        assert!(started.elapsed() < READY, "the container never exited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let e = svc.connect(80).await.expect_err("not running");
    assert!(e.to_string().contains("not running"), "{e}");
    let logs = svc.logs();
    assert!(logs.contains("to-stdout\n"), "{logs}");
    assert!(logs.contains("to-stderr\n"), "{logs}");
    let id = svc.id().to_string();
    svc.stop(Duration::from_secs(1))
        .await
        .expect("stop after exit");
    assert_nothing_left(&s, &id);
}

#[tokio::test]
async fn a_killed_service_is_seen_as_stopped() {
    if !require_root("a_killed_service_is_seen_as_stopped") {
        return;
    }
    let s = common::container_setup();
    let port = free_port();
    let svc = ContainerService::start(&s.sandbox, service(&s, "killed", &httpd(port, "")))
        .await
        .expect("service starts");
    wait_ready(&svc, port).await;
    let killed = Command::new("runc")
        .arg("--root")
        .arg(s.state.path().join("sandbox/runc"))
        .args(["kill", svc.id(), "KILL"])
        .status()
        .expect("runc kill");
    assert!(killed.success());
    let started = Instant::now();
    while svc.is_running() {
        assert!(started.elapsed() < READY, "the kill was not seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(svc.connect(port).await.is_err());
    let id = svc.id().to_string();
    svc.stop(Duration::from_millis(100)).await.expect("stop");
    assert_nothing_left(&s, &id);
}

#[tokio::test]
async fn stop_asks_first_then_kills() {
    if !require_root("stop_asks_first_then_kills") {
        return;
    }
    let s = common::container_setup();
    // A process that leaves on SIGTERM stops at once, well within its grace.
    let polite = ContainerService::start(
        &s.sandbox,
        service(
            &s,
            "polite",
            "trap 'exit 0' TERM; echo up; while true; do sleep 0.05; done",
        ),
    )
    .await
    .expect("starts");
    let started = Instant::now();
    while !polite.logs().contains("up") {
        assert!(started.elapsed() < READY, "never came up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let id = polite.id().to_string();
    let asked = Instant::now();
    polite.stop(Duration::from_secs(20)).await.expect("stop");
    assert!(asked.elapsed() < MARGIN, "took {:?}", asked.elapsed());
    assert_nothing_left(&s, &id);

    // One that ignores SIGTERM (as the namespace's init without a handler
    // does) is killed when the grace runs out.
    let stubborn = ContainerService::start(&s.sandbox, service(&s, "stubborn", "exec sleep 4567"))
        .await
        .expect("starts");
    let started = Instant::now();
    while !process_runs("sleep 4567") {
        assert!(started.elapsed() < READY, "never came up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let grace = Duration::from_millis(600);
    let id = stubborn.id().to_string();
    let asked = Instant::now();
    stubborn.stop(grace).await.expect("stop");
    let took = asked.elapsed();
    assert!(took >= grace, "killed before the grace: {took:?}");
    assert!(took < grace + MARGIN, "took {took:?}");
    assert_nothing_left(&s, &id);
    assert!(!process_runs("sleep 4567"));
}

#[tokio::test]
async fn a_dropped_service_is_deleted() {
    if !require_root("a_dropped_service_is_deleted") {
        return;
    }
    let s = common::container_setup();
    let svc = ContainerService::start(&s.sandbox, service(&s, "dropped", "exec sleep 5678"))
        .await
        .expect("starts");
    assert!(svc.is_running());
    let started = Instant::now();
    while !process_runs("sleep 5678") {
        assert!(
            started.elapsed() < READY,
            "the service never ran its command"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let id = svc.id().to_string();
    drop(svc);
    assert_nothing_left(&s, &id);
    let started = Instant::now();
    while process_runs("sleep 5678") {
        assert!(
            started.elapsed() < READY,
            "the process outlived its service"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn logs_keep_the_last_64_kib() {
    if !require_root("logs_keep_the_last_64_kib") {
        return;
    }
    let s = common::container_setup();
    // 3000 lines of 48 bytes: about twice the ring.
    let script = "i=0; while [ $i -lt 3000 ]; do \
                  printf 'line-%04d-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\\n' $i; i=$((i+1)); done; \
                  echo done >&2; exec sleep 6789";
    let svc = ContainerService::start(&s.sandbox, service(&s, "chatty", script))
        .await
        .expect("starts");
    let started = Instant::now();
    while !svc.logs().contains("done\n") {
        assert!(started.elapsed() < READY, "never finished writing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logs = svc.logs();
    assert!(logs.len() <= LOG_BYTES, "{}", logs.len());
    assert!(logs.len() > LOG_BYTES - 100, "{}", logs.len());
    assert!(logs.contains("line-2999-"), "the newest lines are kept");
    assert!(!logs.contains("line-0000-"), "the oldest lines are dropped");
    let id = svc.id().to_string();
    svc.stop(Duration::from_millis(100)).await.expect("stop");
    assert_nothing_left(&s, &id);
}

#[tokio::test]
async fn a_service_that_cannot_start_leaves_nothing() {
    if !require_root("a_service_that_cannot_start_leaves_nothing") {
        return;
    }
    let s = common::container_setup();
    let spec = ServiceContainer::new("broken", s.rootfs.clone(), vec!["no-such-program".into()]);
    let e = ContainerService::start(&s.sandbox, spec)
        .await
        .expect_err("cannot start");
    assert_eq!(e.class(), ErrorClass::InvalidTask, "{e}");
    assert!(e.to_string().contains("no-such-program"), "{e}");
    assert_nothing_left(&s, "weft-broken-");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.contains("weft-broken-"));
}
