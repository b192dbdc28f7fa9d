//! Prints a greeting with its arguments and environment, writes
//! `/outputs/hello.txt`, and exits with the code given by `--exit N`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    println!("hello from wasm");
    println!("args: {}", args.join(" "));
    let mut env: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
    env.sort();
    println!("env: {}", env.join(" "));
    eprintln!("a line on stderr");
    if let Err(e) = std::fs::write("/outputs/hello.txt", args.join("\n")) {
        eprintln!("hello: {e}");
        return ExitCode::from(2);
    }
    let code: u8 = args
        .windows(2)
        .find(|w| w[0] == "--exit")
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(0);
    ExitCode::from(code)
}
