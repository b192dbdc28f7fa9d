//! Scores a model written by `train` on a held-out CSV dataset and writes
//! the scores and the confusion matrix as JSON, and the scores alone (rows,
//! correct, accuracy, log loss, macro F1) as the run's metrics if asked.
//!
//! Arguments: `--model PATH` (default `/inputs/model/model.json`),
//! `--data PATH` (default `/inputs/data/test/iris.csv`),
//! `--out PATH` (default `/outputs/metrics.json`),
//! `--metrics PATH` (none by default; where it names the `--out` file, the
//! full report is written there).

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

fn write(path: &str, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = Path::new(path).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, bytes)
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let model_path = arg(&args, "--model", "/inputs/model/model.json");
    let data_path = arg(&args, "--data", "/inputs/data/test/iris.csv");
    let out = arg(&args, "--out", "/outputs/metrics.json");
    let scores = arg(&args, "--metrics", "");

    let model: Model = serde_json::from_slice(&std::fs::read(&model_path)?)?;
    let data = Dataset::load(Path::new(&data_path))?;
    if data.features != model.features || data.classes != model.classes {
        return Err("the dataset's features or classes differ from the model's".into());
    }
    let metrics = model.evaluate(&data);
    if !scores.is_empty() && scores != out {
        write(&scores, &serde_json::to_vec(&metrics.scores())?)?;
    }
    write(&out, &serde_json::to_vec_pretty(&metrics)?)?;
    println!(
        "accuracy {:.3} on {} rows ({} correct), log loss {:.4}",
        metrics.accuracy, metrics.rows, metrics.correct, metrics.log_loss
    );
    Ok(())
}
