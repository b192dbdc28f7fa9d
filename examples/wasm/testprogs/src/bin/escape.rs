//! Tries to reach what a task must not reach and what it must, and reports
//! each attempt as JSON on stdout and in `/outputs/report.json`:
//! `{"attempts": {"name": "ok" | "error: ..."}, "args": [...], "env": {...}}`.

use std::collections::BTreeMap;
use std::io::Write;

fn attempt<T>(r: std::io::Result<T>) -> String {
    match r {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("error: {e}"),
    }
}

fn main() {
    let mut a = BTreeMap::new();
    a.insert("read /etc/passwd", attempt(std::fs::read("/etc/passwd")));
    a.insert("list /", attempt(std::fs::read_dir("/").map(|d| d.count())));
    a.insert(
        "list ..",
        attempt(std::fs::read_dir("..").map(|d| d.count())),
    );
    a.insert(
        "read ../etc/passwd",
        attempt(std::fs::read("../etc/passwd")),
    );
    a.insert(
        "read /inputs/../../etc/passwd",
        attempt(std::fs::read("/inputs/../../etc/passwd")),
    );
    a.insert(
        "list /inputs/..",
        attempt(std::fs::read_dir("/inputs/..").map(|d| d.count())),
    );
    a.insert(
        "read /outputs/../../../etc/hostname",
        attempt(std::fs::read("/outputs/../../../etc/hostname")),
    );
    a.insert(
        "read /proc/self/environ",
        attempt(std::fs::read("/proc/self/environ")),
    );
    a.insert(
        "write /inputs/new.txt",
        attempt(std::fs::write("/inputs/new.txt", b"x")),
    );
    a.insert(
        "read /inputs/hello.txt",
        attempt(std::fs::read("/inputs/hello.txt")),
    );
    a.insert(
        "write /outputs/ok.txt",
        attempt(std::fs::write("/outputs/ok.txt", b"ok")),
    );
    a.insert(
        "write /tmp/scratch.txt",
        attempt(std::fs::write("/tmp/scratch.txt", b"s")),
    );
    a.insert(
        "connect 127.0.0.1:1",
        attempt(std::net::TcpStream::connect("127.0.0.1:1")),
    );
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let args: Vec<String> = std::env::args().collect();
    let report = serde_json::json!({"attempts": a, "args": args, "env": env});
    let text = serde_json::to_string_pretty(&report).unwrap_or_default();
    println!("{text}");
    let _ = std::fs::File::create("/outputs/report.json")
        .and_then(|mut f| f.write_all(text.as_bytes()));
}
