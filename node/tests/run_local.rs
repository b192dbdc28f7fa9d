//! `weft run --local` with the real binary: the example ML pipeline, word
//! count, and a container job from an imported image.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Weft {
    home: PathBuf,
}

impl Weft {
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_weft"))
            .arg("--home")
            .arg(&self.home)
            .args(args)
            .current_dir(repo())
            .env_remove("WEFT_HOME")
            .output()
            .expect("run weft")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "weft {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8")
    }
}

fn build_examples() -> PathBuf {
    let status = Command::new(repo().join("scripts/build-examples.sh"))
        .stdout(std::process::Stdio::null())
        .status()
        .expect("scripts/build-examples.sh");
    assert!(status.success(), "building the example programs failed");
    repo().join("examples/wasm/out")
}

fn json_file(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("read")).expect("json")
}

#[test]
fn train_then_evaluate_the_example_model() {
    let out = build_examples();
    let dir = tempfile::tempdir().expect("tempdir");
    let weft = Weft {
        home: dir.path().join("home"),
    };
    weft.ok(&["add", "examples/data/iris", "--tag", "datasets/iris:v1"]);
    for (m, tag) in [
        ("train", "examples/train:v1"),
        ("evaluate", "examples/evaluate:v1"),
    ] {
        let wasm = out.join(format!("{m}.wasm"));
        weft.ok(&["add", wasm.to_str().expect("utf8"), "--tag", tag]);
    }
    let train: serde_json::Value = serde_json::from_str(&weft.ok(&[
        "run",
        "-f",
        "examples/jobs/train.yaml",
        "--local",
        "--wait",
        "--json",
    ]))
    .expect("status json");
    assert_eq!(train["state"], "succeeded", "{train:#}");
    let model = dir.path().join("model");
    weft.ok(&[
        "get",
        "models/example:v1",
        "-o",
        model.to_str().expect("utf8"),
    ]);
    let m = json_file(&model.join("metrics.json"));
    assert!(m["train_accuracy"].as_f64().expect("accuracy") > 0.9, "{m}");
    assert!(model.join("model.json").is_file());

    let eval: serde_json::Value = serde_json::from_str(&weft.ok(&[
        "run",
        "-f",
        "examples/jobs/evaluate.yaml",
        "--local",
        "--wait",
        "--json",
    ]))
    .expect("status json");
    assert_eq!(eval["state"], "succeeded", "{eval:#}");
    let res = dir.path().join("eval");
    weft.ok(&[
        "get",
        "results/example-eval:v1",
        "-o",
        res.to_str().expect("utf8"),
    ]);
    let e = json_file(&res.join("metrics.json"));
    assert_eq!(e["rows"], 30);
    assert!(e["accuracy"].as_f64().expect("accuracy") >= 0.85, "{e}");

    // the same training job again is memoized
    let again: serde_json::Value = serde_json::from_str(&weft.ok(&[
        "run",
        "-f",
        "examples/jobs/train.yaml",
        "--local",
        "--wait",
        "--json",
    ]))
    .expect("status json");
    assert_eq!(again["result"]["cached"], true, "{again:#}");
}

#[test]
fn wordcount_counts_the_example_documents() {
    let out = build_examples();
    let dir = tempfile::tempdir().expect("tempdir");
    let weft = Weft {
        home: dir.path().join("home"),
    };
    weft.ok(&["add", "examples/data/docs", "--tag", "datasets/docs:v1"]);
    let wasm = out.join("wordcount.wasm");
    weft.ok(&[
        "add",
        wasm.to_str().expect("utf8"),
        "--tag",
        "examples/wordcount:v1",
    ]);
    let printed = weft.ok(&[
        "run",
        "-f",
        "examples/jobs/wordcount.yaml",
        "--local",
        "--wait",
    ]);
    assert!(printed.contains("state     succeeded"), "{printed}");
    let res = dir.path().join("counts");
    weft.ok(&[
        "get",
        "results/wordcount:v1",
        "-o",
        res.to_str().expect("utf8"),
    ]);
    let counts = json_file(&res.join("counts.json"));
    // count the words of the inputs here too
    let mut words = 0;
    for f in ["loom.txt", "weft.txt"] {
        let text =
            std::fs::read_to_string(repo().join("examples/data/docs").join(f)).expect("read");
        words += text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .count();
    }
    assert_eq!(counts["files"], 2);
    assert_eq!(counts["words"].as_u64(), Some(words as u64), "{counts}");
}

#[test]
fn a_container_job_runs_the_imported_busybox_image() {
    // SAFETY: geteuid has no preconditions
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: containers need root (runc)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("busybox.tar");
    let status = Command::new(repo().join("scripts/build-test-image.sh"))
        .arg(&archive)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("scripts/build-test-image.sh");
    assert!(status.success());
    let weft = Weft {
        home: dir.path().join("home"),
    };
    weft.ok(&[
        "image",
        "import",
        archive.to_str().expect("utf8"),
        "--tag",
        "images/busybox:test",
    ]);
    weft.ok(&["add", "examples/data/iris", "--tag", "datasets/iris:v1"]);
    let status: serde_json::Value = serde_json::from_str(&weft.ok(&[
        "run",
        "-f",
        "examples/jobs/hello-container.yaml",
        "--local",
        "--wait",
        "--json",
    ]))
    .expect("json");
    assert_eq!(status["state"], "succeeded", "{status:#}");
    let outputs = &status["result"]["outputs"];
    let id = outputs[0][1].as_str().expect("output id");
    let listing = dir.path().join("listing");
    weft.ok(&["get", id, "-o", listing.to_str().expect("utf8")]);
    let text = std::fs::read_to_string(listing.join("listing.txt")).expect("listing");
    assert_eq!(
        text.split_whitespace().collect::<Vec<_>>(),
        ["README.md", "test", "train"]
    );
    // the node that ran it is gone; its logs artifact stayed in the store
    let logs_id = status["result"]["logs"].as_str().expect("logs id");
    let logs_dir = dir.path().join("logs");
    weft.ok(&["get", logs_id, "-o", logs_dir.to_str().expect("utf8")]);
    assert_eq!(
        std::fs::read_to_string(logs_dir.join("stdout")).expect("stdout"),
        "done\n"
    );
}
