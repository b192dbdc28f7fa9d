//! Helpers shared by the sandbox's integration tests: building the example
//! WASM programs and the busybox test image once per test process, fresh
//! sandboxes and task folders, and the root check for container tests.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use weft_sandbox::{Limits, Sandbox, SandboxConfig, Task, TaskKind, WasmModule, WasmTask};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate sits in the repository")
        .to_path_buf()
}

fn run_script(script: &str, args: &[&str]) -> String {
    let path = repo().join("scripts").join(script);
    let out = Command::new("bash")
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    assert!(
        out.status.success(),
        "{} failed:\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// `examples/wasm/out`, built by `scripts/build-examples.sh` on first use.
pub fn examples() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| PathBuf::from(run_script("build-examples.sh", &[])))
}

/// An example program's bytes, e.g. `wasm("train")` or `wasm("hello.component")`.
pub fn wasm(name: &str) -> WasmModule {
    let path = examples().join(format!("{name}.wasm"));
    WasmModule::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The busybox OCI archive, built by `scripts/build-test-image.sh` on first use.
pub fn test_image() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        // The script writes a temporary file and renames it, so test
        // processes building at once do not disturb each other.
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("busybox-test-image.tar");
        PathBuf::from(run_script(
            "build-test-image.sh",
            &[out.to_str().expect("utf-8 path")],
        ))
    })
}

/// Whether this process runs as root; says loudly why a test is skipped if not.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    eprintln!(
        "\n==================== SKIPPED: {test} ====================\n\
         container tests need root (runc creates namespaces and cgroups);\n\
         run `sudo cargo test -p weft-sandbox` after scripts/install-deps.sh\n\
         =========================================================\n"
    );
    false
}

/// A sandbox whose folders live under `state`.
pub fn sandbox_in(state: &Path, fuel: bool) -> Sandbox {
    let mut config = SandboxConfig::new(state);
    config.max_wasm_instances = 8;
    config.max_wasm_memory = 1 << 30;
    config.fuel = fuel;
    Sandbox::new(config).expect("sandbox starts")
}

/// Folders for one task: inputs, outputs and scratch under a temp dir.
pub struct Dirs {
    pub tmp: tempfile::TempDir,
    pub inputs: PathBuf,
    pub outputs: PathBuf,
    pub scratch: PathBuf,
}

pub fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().expect("tempdir");
    let inputs = tmp.path().join("inputs");
    let outputs = tmp.path().join("outputs");
    let scratch = tmp.path().join("scratch");
    for d in [&inputs, &outputs, &scratch] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    Dirs {
        tmp,
        inputs,
        outputs,
        scratch,
    }
}

/// A wasm task over `dirs` with a 30 s deadline.
pub fn wasm_task(name: &str, module: WasmModule, args: &[&str], dirs: &Dirs) -> Task {
    Task {
        name: name.to_string(),
        kind: TaskKind::Wasm(WasmTask {
            module,
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![],
        }),
        inputs: dirs.inputs.clone(),
        outputs: dirs.outputs.clone(),
        scratch: Some(dirs.scratch.clone()),
        limits: Limits {
            timeout: Duration::from_secs(30),
            ..Limits::default()
        },
    }
}

/// A module from WAT text.
pub fn wat(text: &str) -> WasmModule {
    WasmModule::from_bytes(wat::parse_str(text).expect("valid wat"))
}

/// Installs a log subscriber once (RUST_LOG picks the level).
pub fn logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    });
}

/// A sandbox for container tests, with the busybox test image unpacked
/// beside it.
pub struct ContainerSetup {
    pub state: tempfile::TempDir,
    pub sandbox: Sandbox,
    pub rootfs: PathBuf,
    pub image: weft_sandbox::image::ImageConfig,
}

/// A fresh [`ContainerSetup`] with the default sandbox config; fails when no
/// OCI runtime is installed.
pub fn container_setup() -> ContainerSetup {
    logs();
    let state = tempfile::tempdir().expect("tmp");
    let rootfs = state.path().join("rootfs");
    let image = weft_sandbox::image::unpack(
        test_image(),
        &rootfs,
        &weft_sandbox::image::UnpackOptions::default(),
    )
    .expect("image unpacks");
    let sandbox = Sandbox::new(SandboxConfig::new(state.path().join("sandbox"))).expect("sandbox");
    assert!(
        sandbox.executors().container.is_some(),
        "no OCI runtime found: run scripts/install-deps.sh"
    );
    ContainerSetup {
        state,
        sandbox,
        rootfs,
        image,
    }
}
