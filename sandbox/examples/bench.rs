//! Start-to-exit latency of the sandbox, measured in-process through its API:
//! a trivial WASM command the first time (compiling) and cached (median of
//! 1,000 runs), and a trivial busybox container with runc (median of 20).
//! Run by `scripts/bench/sandbox.sh`; the last line is the summary.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use weft_sandbox::image::{UnpackOptions, unpack};
use weft_sandbox::{
    CancellationToken, ContainerTask, Limits, Sandbox, SandboxConfig, Task, TaskKind, WasmModule,
    WasmTask,
};

/// Writes "ok\n" to stdout through WASI and returns.
const TRIVIAL: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "ok\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 3))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"#;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn percentile(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

struct Dirs {
    inputs: PathBuf,
    outputs: PathBuf,
    scratch: PathBuf,
}

fn dirs(base: &Path) -> Result<Dirs> {
    let d = Dirs {
        inputs: base.join("inputs"),
        outputs: base.join("outputs"),
        scratch: base.join("scratch"),
    };
    for p in [&d.inputs, &d.outputs, &d.scratch] {
        std::fs::create_dir_all(p)?;
    }
    Ok(d)
}

async fn bench_wasm(sb: &Sandbox, d: &Dirs) -> Result<(Duration, Vec<Duration>)> {
    let module = WasmModule::from_bytes(wat::parse_str(TRIVIAL)?);
    let task = Task {
        name: "bench".into(),
        kind: TaskKind::Wasm(WasmTask {
            module,
            args: vec![],
            env: vec![],
        }),
        inputs: d.inputs.clone(),
        outputs: d.outputs.clone(),
        scratch: Some(d.scratch.clone()),
        limits: Limits {
            timeout: Duration::from_secs(10),
            memory: Some(16 << 20),
            ..Limits::default()
        },
    };
    let started = Instant::now();
    let out = sb.run(task.clone(), CancellationToken::new()).await;
    let first = started.elapsed();
    if !out.succeeded() || out.stdout.bytes != b"ok\n" {
        bail!("the trivial module failed: {out:?}");
    }
    let mut runs = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let started = Instant::now();
        let out = sb.run(task.clone(), CancellationToken::new()).await;
        runs.push(started.elapsed());
        if !out.succeeded() {
            bail!("a cached run failed: {out:?}");
        }
    }
    Ok((first, runs))
}

async fn bench_container(sb: &Sandbox, base: &Path, d: &Dirs) -> Result<Vec<Duration>> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let image = base.join("busybox.tar");
    let status = std::process::Command::new("bash")
        .arg(repo.join("scripts/build-test-image.sh"))
        .arg(&image)
        .stdout(std::process::Stdio::null())
        .status()
        .context("running build-test-image.sh")?;
    if !status.success() {
        bail!("build-test-image.sh failed");
    }
    let rootfs = base.join("rootfs");
    let config = unpack(&image, &rootfs, &UnpackOptions::default())?;
    let task = Task {
        name: "bench".into(),
        kind: TaskKind::Container(ContainerTask {
            rootfs,
            args: vec!["true".into()],
            env: config.environment(&[]),
            workdir: None,
            gpus: vec![],
        }),
        inputs: d.inputs.clone(),
        outputs: d.outputs.clone(),
        scratch: None,
        limits: Limits {
            timeout: Duration::from_secs(30),
            memory: Some(64 << 20),
            ..Limits::default()
        },
    };
    let mut runs = Vec::new();
    for i in 0..21 {
        let started = Instant::now();
        let out = sb.run(task.clone(), CancellationToken::new()).await;
        let took = started.elapsed();
        if !out.succeeded() {
            bail!("the container failed: {out:?}");
        }
        if i > 0 {
            runs.push(took); // the first warms the page cache
        }
    }
    Ok(runs)
}

#[tokio::main]
async fn main() -> Result<()> {
    let base = tempfile::tempdir()?;
    let d = dirs(base.path())?;
    let sb = Sandbox::new(SandboxConfig::new(base.path().join("state")))?;

    let (first, runs) = bench_wasm(&sb, &d).await?;
    println!(
        "wasm: first start {:.2} ms (compile); cached: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms over {} runs",
        ms(first),
        ms(median(runs.clone())),
        ms(percentile(&runs, 0.9)),
        ms(percentile(&runs, 0.99)),
        runs.len()
    );
    let wasm_cached = median(runs);

    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let container = if !root {
        println!("container: skipped (needs root)");
        None
    } else if sb.executors().container.is_none() {
        println!("container: skipped (no runc; run scripts/install-deps.sh)");
        None
    } else {
        let runs = bench_container(&sb, base.path(), &d).await?;
        println!(
            "container (runc, busybox true): p50 {:.1} ms, min {:.1} ms, max {:.1} ms over {} runs",
            ms(median(runs.clone())),
            ms(percentile(&runs, 0.0)),
            ms(percentile(&runs, 1.0)),
            runs.len()
        );
        Some(median(runs))
    };
    println!(
        "result: wasm_first_ms={:.2} wasm_cached_p50_ms={:.3} container_p50_ms={}",
        ms(first),
        ms(wasm_cached),
        container.map_or("NA".to_string(), |c| format!("{:.1}", ms(c)))
    );
    Ok(())
}
