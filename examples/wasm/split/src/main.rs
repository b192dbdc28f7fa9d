//! Splits a labelled CSV dataset (the format of the `tabular` crate) into a
//! train and a test part, stratified by class and deterministic: the same
//! input bytes and arguments always give the same output bytes.
//!
//! Arguments: `--data PATH` (default `/inputs/data`: a CSV file, or a folder
//! whose `*.csv` files are pooled), `--out DIR` (default `/outputs`; writes
//! `DIR/train/NAME` and `DIR/test/NAME`), `--test-fraction F` (0.3),
//! `--seed N` (1), `--name NAME` (default: the input files' common name, else
//! `data.csv`).

use std::path::Path;
use std::process::ExitCode;

use tabular::arg;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("split: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let data = arg(&args, "--data", "/inputs/data");
    let out = arg(&args, "--out", "/outputs");
    let fraction: f64 = arg(&args, "--test-fraction", "0.3")
        .parse()
        .map_err(|e| format!("--test-fraction: {e}"))?;
    let seed: u64 = arg(&args, "--seed", "1")
        .parse()
        .map_err(|e| format!("--seed: {e}"))?;
    let name = args
        .windows(2)
        .find(|w| w[0] == "--name")
        .map(|w| w[1].clone());
    let done = split::split_path(
        Path::new(&data),
        Path::new(&out),
        fraction,
        seed,
        name.as_deref(),
    )?;
    println!(
        "split {} rows from {} file(s): {} train, {} test ({})",
        done.train + done.test,
        done.files,
        done.train,
        done.test,
        done.name
    );
    Ok(())
}
