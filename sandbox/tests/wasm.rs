//! The WASM executor end to end: the example programs, isolation, limits,
//! cancellation and the compiled-code cache.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{dirs, sandbox_in, wasm, wasm_task, wat};
use weft_sandbox::{CancellationToken, ErrorClass, TaskKind};

/// A margin for a deadline on a shared 2-core machine.
const MARGIN: Duration = Duration::from_millis(400);

fn json(path: &std::path::Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test]
async fn wordcount_counts_a_text_tree() {
    common::logs();
    let state = tempfile::tempdir().expect("tmp");
    let sb = sandbox_in(state.path(), false);
    let d = dirs();
    std::fs::create_dir_all(d.inputs.join("docs/sub")).expect("mkdir");
    let a = "The cat sat. The cat ran!";
    let b = "a Cat, a dog; don't panic";
    std::fs::write(d.inputs.join("docs/a.txt"), a).expect("write");
    std::fs::write(d.inputs.join("docs/sub/b.txt"), b).expect("write");
    let task = wasm_task(
        "wordcount",
        wasm("wordcount"),
        &["--input", "/inputs/docs"],
        &d,
    );
    let out = sb.run(task, CancellationToken::new()).await;
    assert!(out.succeeded(), "{out:?}");

    // The same rule, computed here: runs of letters, digits and inner
    // apostrophes, lowercased.
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for text in [a, b] {
        for w in text
            .split(|c: char| !(c.is_alphanumeric() || c == '\''))
            .map(|w| w.trim_matches('\''))
            .filter(|w| !w.is_empty())
        {
            *want.entry(w.to_lowercase()).or_default() += 1;
        }
    }
    let got = json(&d.outputs.join("counts.json"));
    assert_eq!(got["files"], 2);
    assert_eq!(got["words"], want.values().sum::<u64>());
    assert_eq!(got["counts"]["cat"], 3);
    assert_eq!(got["counts"]["don't"], 1);
    let counts: BTreeMap<String, u64> =
        serde_json::from_value(got["counts"].clone()).expect("counts map");
    assert_eq!(counts, want);
    let summary = format!(
        "{} words ({} distinct) in 2 files",
        want.values().sum::<u64>(),
        want.len()
    );
    assert_eq!(out.stdout.text().trim(), summary);
}

#[tokio::test]
async fn train_then_evaluate_on_iris() {
    common::logs();
    let state = tempfile::tempdir().expect("tmp");
    let sb = sandbox_in(state.path(), false);
    let data = common::repo().join("examples/data/iris");

    let train = dirs();
    copy_dir(&data, &train.inputs.join("data"));
    let task = wasm_task(
        "train",
        wasm("train"),
        &[
            "--data",
            "/inputs/data/train/iris.csv",
            "--out",
            "/outputs/model",
        ],
        &train,
    );
    let out = sb.run(task, CancellationToken::new()).await;
    assert!(out.succeeded(), "{out:?}");
    let model = json(&train.outputs.join("model/model.json"));
    assert_eq!(model["classes"].as_array().map(Vec::len), Some(3));
    let metrics = json(&train.outputs.join("model/metrics.json"));
    let train_acc = metrics["train_accuracy"].as_f64().expect("accuracy");
    assert!(train_acc > 0.9, "train accuracy {train_acc}");
    assert_eq!(metrics["rows"], 120);

    let eval = dirs();
    copy_dir(&data, &eval.inputs.join("data"));
    copy_dir(&train.outputs.join("model"), &eval.inputs.join("model"));
    let task = wasm_task("evaluate", wasm("evaluate"), &[], &eval);
    let out = sb.run(task, CancellationToken::new()).await;
    assert!(out.succeeded(), "{out:?}");
    let m = json(&eval.outputs.join("metrics.json"));
    assert_eq!(m["rows"], 30);
    let acc = m["accuracy"].as_f64().expect("accuracy");
    assert!(acc > 0.8, "test accuracy {acc}");
    let confusion: Vec<Vec<u64>> = serde_json::from_value(m["confusion"].clone()).expect("matrix");
    let diag: u64 = (0..3).map(|i| confusion[i][i]).sum();
    assert_eq!(diag, m["correct"].as_u64().expect("correct"));
    assert_eq!(confusion.iter().flatten().sum::<u64>(), 30);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).expect("copy");
        }
    }
}

#[tokio::test]
async fn a_component_runs_with_its_args_and_env_only() {
    let state = tempfile::tempdir().expect("tmp");
    let sb = sandbox_in(state.path(), false);
    for module in ["hello", "hello.component"] {
        let d = dirs();
        let mut task = wasm_task("hello", wasm(module), &["one", "two"], &d);
        if let TaskKind::Wasm(w) = &mut task.kind {
            w.env = vec![("GREETING".into(), "hi".into())];
        }
        let out = sb.run(task, CancellationToken::new()).await;
        assert!(out.succeeded(), "{module}: {out:?}");
        let text = out.stdout.text();
        assert!(text.contains("hello from wasm"), "{module}: {text}");
        assert!(text.contains("args: hello one two"), "{module}: {text}");
        assert!(text.contains("env: GREETING=hi\n"), "{module}: {text}");
        assert_eq!(out.stderr.text(), "a line on stderr\n");
        assert_eq!(
            std::fs::read_to_string(d.outputs.join("hello.txt")).expect("output"),
            "hello\none\ntwo"
        );
    }
}

#[tokio::test]
async fn exit_codes_are_reported() {
    let state = tempfile::tempdir().expect("tmp");
    let sb = sandbox_in(state.path(), false);
    for module in ["hello", "hello.component"] {
        let d = dirs();
        let out = sb
            .run(
                wasm_task("hello", wasm(module), &["--exit", "3"], &d),
                CancellationToken::new(),
            )
            .await;
        assert!(out.failure.is_none(), "{out:?}");
        // A component's wasi:cli/run reports only success or failure.
        let want = if module == "hello" { 3 } else { 1 };
        assert_eq!(out.exit_code, Some(want), "{module}");
        assert!(!out.succeeded());
    }
}

#[tokio::test]
async fn the_host_is_out_of_reach() {
    let state = tempfile::tempdir().expect("tmp");
    let sb = sandbox_in(state.path(), false);
    let d = dirs();
    std::fs::write(d.inputs.join("hello.txt"), "hi").expect("write");
    let out = sb
        .run(
            wasm_task("escape", wasm("escape"), &[], &d),
            CancellationToken::new(),
        )
        .await;
    assert!(out.succeeded(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout.bytes).expect("json report");
    let a = &report["attempts"];
    for denied in [
        "read /etc/passwd",
        "list /",
        "list ..",
        "read ../etc/passwd",
        "read /inputs/../../etc/passwd",
        "list /inputs/..",
        "read /outputs/../../../etc/hostname",
        "read /proc/self/environ",
        "write /inputs/new.txt",
        "connect 127.0.0.1:1",
    ] {
        let r = a[denied].as_str().unwrap_or("missing");
        assert!(r.starts_with("error"), "{denied}: {r}");
    }
    for allowed in [
        "read /inputs/hello.txt",
        "write /outputs/ok.txt",
        "write /tmp/scratch.txt",
    ] {
        assert_eq!(a[allowed], "ok", "{allowed}");
    }
    assert!(!d.inputs.join("new.txt").exists());
    assert_eq!(
        std::fs::read(d.scratch.join("scratch.txt")).expect("scratch"),
        b"s"
    );
    assert_eq!(report["env"], serde_json::json!({}), "no host environment");
    assert_eq!(report["args"], serde_json::json!(["escape"]));
}

#[tokio::test]
async fn an_infinite_loop_ends_at_its_deadline() {
    let state = tempfile::tempdir().expect("tmp");
    let sb = sandbox_in(state.path(), false);
    let d = dirs();
    let module = wat(r#"(module (func (export "_start") (loop (br 0))))"#);
    // compiled (and cached) by a first, short run: what is timed below is
    // how soon the deadline is enforced, not how long a compile takes
    let warm_dirs = dirs();
    let mut warm = wasm_task("spin", module.clone(), &[], &warm_dirs);
    warm.limits.timeout = Duration::from_millis(50);
    let warm = sb.run(warm, CancellationToken::new()).await;
    assert_eq!(warm.class(), Some(ErrorClass::Timeout), "{warm:?}");
    let mut task = wasm_task("spin", module, &[], &d);
    task.limits.timeout = Duration::from_millis(500);
    let started = Instant::now();
    let out = sb.run(task, CancellationToken::new()).await;
    let took = started.elapsed();
    assert_eq!(out.class(), Some(ErrorClass::Timeout), "{out:?}");
    assert!(took >= Duration::from_millis(500), "ended early: {took:?}");
    assert!(took < Duration::from_millis(500) + MARGIN, "took {took:?}");
}

#[tokio::test]
async fn a_task_asleep_in_a_host_call_ends_at_its_deadline() {
    let state = tempfile::tempdir().expect("tmp");
    let sb = sandbox_in(state.path(), false);
    let d = dirs();
    // compiled once beforehand: the deadline counts from the start of the
    // task, and what is timed here is how soon it is enforced
    let warm = sb
        .run(
            wasm_task("sleepy", wasm("sleepy"), &["0"], &d),
            CancellationToken::new(),
        )
        .await;
    assert_eq!(warm.exit_code, Some(0), "{warm:?}");
    let d = dirs();
    let mut task = wasm_task("sleepy", wasm("sleepy"), &["3600"], &d);
    task.limits.timeout = Duration::from_millis(500);
    let started = Instant::now();
    let out = sb.run(task, CancellationToken::new()).await;
    let took = started.elapsed();
    assert_eq!(out.class(), Some(ErrorClass::Timeout), "{out:?}");
    assert!(took < Duration::from_millis(500) + MARGIN, "took {took:?}");
    assert_eq!(out.stdout.text(), "sleeping 3600s\n");
}

#[tokio::test]
async fn growing_memory_past_the_limit_is_a_memory_limit() {
    let state = tempfile::tempdir().expect("tmp");
    let sb = sandbox_in(state.path(), false);
    // Grows by 1 MiB (16 pages) until memory.grow fails, then exits 0: only
    // the limiter stops it.
    let module = wat(r#"(module (memory 1)
             (func (export "_start")
               (loop (br_if 0 (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))))"#);
    let d = dirs();
    let mut task = wasm_task("grow", module, &[], &d);
    task.limits.memory = Some(32 << 20);
    let out = sb.run(task, CancellationToken::new()).await;
    assert_eq!(out.class(), Some(ErrorClass::MemoryLimit), "{out:?}");
    let peak = out.peak_memory.expect("peak known");
    assert!(peak <= 32 << 20 && peak > 30 << 20, "peak {peak}");

    // A real program allocating 256 MiB under a 64 MiB limit.
    let d = dirs();
    let mut task = wasm_task("alloc", wasm("alloc"), &["256"], &d);
    task.limits.memory = Some(64 << 20);
    let out = sb.run(task, CancellationToken::new()).await;
    assert_eq!(out.class(), Some(ErrorClass::MemoryLimit), "{out:?}");

    // The same program within its limit.
    let d = dirs();
    let mut task = wasm_task("alloc", wasm("alloc"), &["16"], &d);
    task.limits.memory = Some(64 << 20);
    let out = sb.run(task, CancellationToken::new()).await;
    assert!(out.succeeded(), "{out:?}");
    assert_eq!(out.stdout.text(), "allocated 16 MiB\n");

    // A module whose initial memory is already too big.
    let d = dirs();
    let mut task = wasm_task(
        "big",
        wat(r#"(module (memory 1024) (func (export "_start")))"#),
        &[],
        &d,
    );
    task.limits.memory = Some(16 << 20);
    let out = sb.run(task, CancellationToken::new()).await;
    assert_eq!(out.class(), Some(ErrorClass::MemoryLimit), "{out:?}");
}

#[tokio::test]
async fn traps_and_bad_modules_are_classified() {
    let state = tempfile::tempdir().expect("tmp");
    let sb = sandbox_in(state.path(), false);
    let d = dirs();
    let trap = wat(r#"(module (func (export "_start") unreachable))"#);
    let out = sb
        .run(wasm_task("trap", trap, &[], &d), CancellationToken::new())
        .await;
    assert_eq!(out.class(), Some(ErrorClass::Trap), "{out:?}");
    assert!(
        out.failure
            .as_ref()
            .is_some_and(|f| f.message.contains("unreachable")),
        "{out:?}"
    );
    assert_eq!(out.exit_code, None);

    let cases = [
        (
            "not wasm",
            weft_sandbox::WasmModule::from_bytes(b"#!/bin/sh\necho hi\n".to_vec()),
            "no \\0asm header",
        ),
        (
            "library",
            wat(r#"(module (func (export "add")))"#),
            "no _start",
        ),
        (
            "imports",
            wat(r#"(module (import "env" "secret" (func)) (func (export "_start")))"#),
            "imports",
        ),
        (
            "garbage",
            weft_sandbox::WasmModule::from_bytes(b"\0asm\x01\0\0\0\xff\xff".to_vec()),
            "does not compile",
        ),
    ];
    for (what, module, needle) in cases {
        let out = sb
            .run(wasm_task("bad", module, &[], &d), CancellationToken::new())
            .await;
        assert_eq!(
            out.class(),
            Some(ErrorClass::InvalidTask),
            "{what}: {out:?}"
        );
        let msg = &out.failure.as_ref().expect("failure").message;
        assert!(msg.contains(needle), "{what}: {msg}");
    }

    let mut task = wasm_task("nodir", wasm("hello"), &[], &d);
    task.outputs = d.tmp.path().join("missing");
    let out = sb.run(task, CancellationToken::new()).await;
    assert_eq!(out.class(), Some(ErrorClass::InvalidTask), "{out:?}");
    assert!(
        out.failure
            .as_ref()
            .is_some_and(|f| f.message.contains("outputs folder"))
    );
}

#[tokio::test]
async fn a_flood_of_output_is_cut_at_the_cap_and_the_sandbox_stays_healthy() {
    let state = tempfile::tempdir().expect("tmp");
    let sb = sandbox_in(state.path(), false);
    let d = dirs();
    let mut task = wasm_task("flood", wasm("flood"), &["100"], &d);
    task.limits.stdout_cap = 64 << 10;
    let out = sb.run(task, CancellationToken::new()).await;
    assert!(out.succeeded(), "{:?}", out.failure);
    assert_eq!(out.stdout.bytes.len(), 64 << 10);
    assert!(out.stdout.bytes.iter().all(|&b| b == b'x'));
    assert!(out.stdout.truncated);
    assert_eq!(out.stdout.total, 100 << 20);
    assert_eq!(out.stderr.text(), "flood done\n");
    assert_eq!(
        std::fs::read(d.outputs.join("done.txt")).expect("done"),
        b"done"
    );

    let d = dirs();
    let out = sb
        .run(
            wasm_task("after", wasm("hello"), &[], &d),
            CancellationToken::new(),
        )
        .await;
    assert!(out.succeeded(), "{out:?}");
    assert!(!out.stdout.truncated);
}

#[tokio::test]
async fn cancelling_stops_a_running_task_promptly() {
    let state = tempfile::tempdir().expect("tmp");
    let sb = sandbox_in(state.path(), false);
    let d = dirs();
    let module = wat(r#"(module (func (export "_start") (loop (br 0))))"#);
    // compiled beforehand, so the cancel lands in the running task
    let warm_dirs = dirs();
    let mut warm = wasm_task("spin", module.clone(), &[], &warm_dirs);
    warm.limits.timeout = Duration::from_millis(50);
    let warm = sb.run(warm, CancellationToken::new()).await;
    assert_eq!(warm.class(), Some(ErrorClass::Timeout), "{warm:?}");
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let sb = sb.clone();
        let task = wasm_task("spin", module, &[], &d);
        let cancel = cancel.clone();
        async move { sb.run(task, cancel).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    cancel.cancel();
    let out = run.await.expect("joined");
    assert_eq!(out.class(), Some(ErrorClass::Cancelled), "{out:?}");
    assert!(
        asked.elapsed() < Duration::from_millis(200),
        "took {:?}",
        asked.elapsed()
    );

    // Cancelling during a host sleep works too (compiled beforehand, so the
    // cancel lands in the sleep).
    let warm = sb
        .run(
            wasm_task("sleepy", wasm("sleepy"), &["0"], &dirs()),
            CancellationToken::new(),
        )
        .await;
    assert_eq!(warm.exit_code, Some(0), "{warm:?}");
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let sb = sb.clone();
        let task = wasm_task("sleepy", wasm("sleepy"), &["3600"], &d);
        let cancel = cancel.clone();
        async move { sb.run(task, cancel).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    cancel.cancel();
    let out = run.await.expect("joined");
    assert_eq!(out.class(), Some(ErrorClass::Cancelled), "{out:?}");
    assert!(
        asked.elapsed() < Duration::from_millis(200),
        "took {:?}",
        asked.elapsed()
    );
}

#[tokio::test]
async fn fuel_bounds_cpu_when_enabled() {
    let state = tempfile::tempdir().expect("tmp");
    let sb = sandbox_in(state.path(), true);
    let d = dirs();
    let module = wat(r#"(module (func (export "_start") (loop (br 0))))"#);
    let mut task = wasm_task("spin", module, &[], &d);
    task.limits.fuel = Some(1_000_000);
    let out = sb.run(task, CancellationToken::new()).await;
    assert_eq!(out.class(), Some(ErrorClass::Timeout), "{out:?}");
    assert!(
        out.failure
            .as_ref()
            .is_some_and(|f| f.message.contains("fuel")),
        "{out:?}"
    );
    assert!(out.wall_time < Duration::from_secs(5));

    // Without metering, a fuel limit is noted as not applied.
    let plain = tempfile::tempdir().expect("tmp");
    let sb = sandbox_in(plain.path(), false);
    let mut task = wasm_task("hello", wasm("hello"), &[], &d);
    task.limits.fuel = Some(10);
    let out = sb.run(task, CancellationToken::new()).await;
    assert!(out.succeeded(), "{out:?}");
    assert!(
        out.notes
            .iter()
            .any(|n| n.contains("fuel limit not applied")),
        "{:?}",
        out.notes
    );
}

#[tokio::test]
async fn compiled_code_is_cached_in_memory_and_on_disk() {
    let state = tempfile::tempdir().expect("tmp");
    let d = dirs();
    {
        let sb = sandbox_in(state.path(), false);
        for _ in 0..3 {
            let out = sb
                .run(
                    wasm_task("hello", wasm("hello"), &[], &d),
                    CancellationToken::new(),
                )
                .await;
            assert!(out.succeeded(), "{out:?}");
        }
        let s = sb.wasm_cache_stats();
        assert_eq!(
            (s.compiles, s.disk_loads, s.memory_hits),
            (1, 0, 2),
            "{s:?}"
        );
    }
    let files: Vec<_> = std::fs::read_dir(state.path().join("wasm-cache"))
        .expect("cache dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".module.cwasm"))
        .collect();
    assert_eq!(files.len(), 1);
    let hash = wasm("hello").hash().to_hex().to_string();
    assert!(files[0].file_name().to_string_lossy().starts_with(&hash));

    // A new sandbox (a node restart) loads instead of compiling.
    let sb = sandbox_in(state.path(), false);
    let out = sb
        .run(
            wasm_task("hello", wasm("hello"), &[], &d),
            CancellationToken::new(),
        )
        .await;
    assert!(out.succeeded(), "{out:?}");
    let s = sb.wasm_cache_stats();
    assert_eq!((s.compiles, s.disk_loads), (0, 1), "{s:?}");

    // A damaged cache file is replaced, not trusted.
    std::fs::write(files[0].path(), b"garbage").expect("damage");
    let sb = sandbox_in(state.path(), false);
    let out = sb
        .run(
            wasm_task("hello", wasm("hello"), &[], &d),
            CancellationToken::new(),
        )
        .await;
    assert!(out.succeeded(), "{out:?}");
    assert_eq!(sb.wasm_cache_stats().compiles, 1);
}

#[tokio::test]
async fn many_tiny_tasks_run_back_to_back() {
    let state = tempfile::tempdir().expect("tmp");
    let sb = sandbox_in(state.path(), false);
    let d = dirs();
    let module = wat(r#"(module (memory 1) (func (export "_start")))"#);
    let started = Instant::now();
    let mut handles = Vec::new();
    for i in 0..200 {
        let sb = sb.clone();
        let task = wasm_task(&format!("tiny-{i}"), module.clone(), &[], &d);
        handles.push(tokio::spawn(async move {
            sb.run(task, CancellationToken::new()).await
        }));
    }
    for h in handles {
        let out = h.await.expect("joined");
        assert!(out.succeeded(), "{out:?}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(sb.wasm_cache_stats().compiles, 1);
}
