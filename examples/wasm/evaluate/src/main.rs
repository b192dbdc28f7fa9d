//! Scores a model written by `train` on a held-out CSV dataset and writes
//! the metrics as JSON.
//!
//! Arguments: `--model PATH` (default `/inputs/model/model.json`),
//! `--data PATH` (default `/inputs/data/test/iris.csv`),
//! `--out PATH` (default `/outputs/metrics.json`).

use std::path::Path;
use std::process::ExitCode;

use tabular::{Dataset, Model, arg};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("evaluate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let model_path = arg(&args, "--model", "/inputs/model/model.json");
    let data_path = arg(&args, "--data", "/inputs/data/test/iris.csv");
    let out = arg(&args, "--out", "/outputs/metrics.json");

    let model: Model = serde_json::from_slice(&std::fs::read(&model_path)?)?;
    let data = Dataset::load(Path::new(&data_path))?;
    if data.features != model.features || data.classes != model.classes {
        return Err("the dataset's features or classes differ from the model's".into());
    }
    let metrics = model.evaluate(&data);
    if let Some(parent) = Path::new(&out).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, serde_json::to_vec_pretty(&metrics)?)?;
    println!(
        "accuracy {:.3} on {} rows ({} correct), log loss {:.4}",
        metrics.accuracy, metrics.rows, metrics.correct, metrics.log_loss
    );
    Ok(())
}
