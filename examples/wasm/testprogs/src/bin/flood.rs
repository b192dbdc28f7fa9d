//! Writes `MIB` mebibytes (first argument, default 100) of `x` to stdout,
//! then `flood done` to stderr and `/outputs/done.txt`.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let chunk = vec![b'x'; 64 * 1024];
    let mut out = std::io::stdout().lock();
    for _ in 0..mib * 16 {
        if let Err(e) = out.write_all(&chunk) {
            eprintln!("flood: stdout: {e}");
            return ExitCode::from(3);
        }
    }
    let _ = out.flush();
    eprintln!("flood done");
    if std::fs::write("/outputs/done.txt", b"done").is_err() {
        return ExitCode::from(4);
    }
    ExitCode::SUCCESS
}
