//! Writes its first argument (a metrics JSON text) to the file named by
//! `--to PATH` (default `/outputs/metrics.json`), writes `/outputs/out.txt`,
//! and exits with the code given by `--exit N`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone());
    let text = args.get(1).cloned().unwrap_or_default();
    let to = flag("--to").unwrap_or_else(|| "/outputs/metrics.json".into());
    if let Some(parent) = std::path::Path::new(&to).parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    if let Err(e) = std::fs::write(&to, text.as_bytes()) {
        eprintln!("report: {to}: {e}");
        return ExitCode::from(2);
    }
    if let Err(e) = std::fs::write("/outputs/out.txt", args.join("\n")) {
        eprintln!("report: {e}");
        return ExitCode::from(2);
    }
    ExitCode::from(flag("--exit").and_then(|c| c.parse().ok()).unwrap_or(0))
}
