//! `weft pipeline` with the real binary on a one-node devnet, as a user
//! runs it: `uses:` files, params, `--wait` exit codes, the DAG drawn by
//! `status`, `ls --json`, and refusals that name the file and the field.

use std::path::{Path, PathBuf};
use std::process::Command;

fn weft(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .env_remove("WEFT_HOME")
        .output()
        .expect("run weft")
}

fn ok(args: &[&str]) -> String {
    let out = weft(args);
    assert!(
        out.status.success(),
        "weft {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

/// Stops the devnet when dropped, whatever the test did.
struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = weft(&["devnet", "down", "--dir", &self.0.to_string_lossy()]);
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(&p, text).expect("write");
    p.to_str().expect("utf8").to_string()
}

const PIPELINE: &str = r#"apiVersion: weft/v1
kind: Pipeline
metadata: {name: three}
spec:
  params: {word: hello}
  steps:
    first:
      task: {wasm: {module: test/ok:v1, args: ["${params.word}"]}}
    second:
      uses: jobs/second.yaml
      needs: [first]
    third:
      task: {wasm: {module: test/ok:v1, args: ["third"]}}
      needs: [second]
"#;

const SECOND_JOB: &str = "apiVersion: weft/v1\nkind: Job\nmetadata: {name: second}\nspec:\n  task: {wasm: {module: test/ok:v1, args: [second]}}\n  timeout: 1m\n";

const FAILING: &str = r#"apiVersion: weft/v1
kind: Pipeline
metadata: {name: failing}
spec:
  steps:
    bad:
      task: {wasm: {module: test/bad:v1}}
      retries: 0
    after:
      task: {wasm: {module: test/ok:v1, args: ["after"]}}
      needs: [bad]
"#;

#[test]
fn pipeline_run_wait_ls_status_and_refusals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf8");
    ok(&["devnet", "up", "--nodes", "1", "--dir", d]);
    let _down = Down(dir.path().to_path_buf());
    let home = format!("{d}/node1");
    let ok_wasm =
        wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "_start")))"#)
            .expect("wat");
    let bad_wasm = wat::parse_str(
        r#"(module (memory (export "memory") 1) (func (export "_start") unreachable))"#,
    )
    .expect("wat");
    for (name, bytes) in [("ok", ok_wasm), ("bad", bad_wasm)] {
        let p = dir.path().join(format!("{name}.wasm"));
        std::fs::write(&p, bytes).expect("write");
        ok(&[
            "--home",
            &home,
            "add",
            p.to_str().expect("utf8"),
            "--tag",
            &format!("test/{name}:v1"),
        ]);
    }
    let work = dir.path().join("work");
    write(&work, "jobs/second.yaml", SECOND_JOB);
    let file = write(&work, "pipeline.yaml", PIPELINE);

    // --wait follows the run and draws the DAG; uses: was read beside the file
    let out = ok(&[
        "--home", &home, "pipeline", "run", "-f", &file, "--wait", "--param", "word=hi",
    ]);
    assert!(out.contains("state     succeeded"), "{out}");
    assert!(out.contains("params    word=hi"), "{out}");
    let first = out
        .lines()
        .position(|l| l.starts_with("first"))
        .expect("first");
    let second = out
        .lines()
        .position(|l| l.starts_with("└▶ second"))
        .expect("second");
    let third = out
        .lines()
        .position(|l| l.starts_with("   └▶ third"))
        .expect("third");
    assert!(first < second && second < third, "{out}");
    assert_eq!(out.matches("✓ ran").count(), 3, "{out}");

    // ls --json lists it; status draws the same DAG
    let runs: serde_json::Value =
        serde_json::from_str(&ok(&["--home", &home, "pipeline", "ls", "--json"])).expect("json");
    let runs = runs.as_array().expect("array");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["state"], "succeeded");
    let id = runs[0]["id"].as_str().expect("id").to_string();
    let status = ok(&["--home", &home, "pipeline", "status", &id]);
    assert!(
        status.contains("└▶ second") && status.contains("WAITS FOR"),
        "{status}"
    );
    let table = ok(&["--home", &home, "pipeline", "ls"]);
    assert!(table.contains(&id) && table.contains("3/3"), "{table}");

    // again, unchanged: every step is a cache hit
    let again: serde_json::Value = serde_json::from_str(&ok(&[
        "--home", &home, "pipeline", "run", "-f", &file, "--wait", "--json", "--param", "word=hi",
    ]))
    .expect("json");
    let steps = again["steps"].as_array().expect("steps");
    assert!(steps.iter().all(|s| s["state"] == "cached"), "{again:#}");

    // a failed step: --wait exits non-zero, its dependent is skipped
    let failing = write(&work, "failing.yaml", FAILING);
    let out = weft(&["--home", &home, "pipeline", "run", "-f", &failing, "--wait"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("state     failed"), "{text}");
    assert!(
        text.contains("✗ failed") && text.contains("- skipped"),
        "{text}"
    );

    // refusals name the file and the field
    let unknown = write(
        &work,
        "unknown.yaml",
        &PIPELINE.replace("needs: [first]", "needs: [frist]"),
    );
    let out = weft(&["--home", &home, "pipeline", "run", "-f", &unknown]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown.yaml"), "{err}");
    assert!(
        err.contains("spec.steps.second.needs[0]: unknown step \"frist\""),
        "{err}"
    );
    let out = weft(&[
        "--home", &home, "pipeline", "run", "-f", &file, "--param", "nope=1",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("spec.params.nope: unknown param"));
}
