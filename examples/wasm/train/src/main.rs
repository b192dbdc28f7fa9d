//! Fits a softmax regression model on a CSV dataset and writes `model.json`
//! and `metrics.json` (the training report) into the model folder, and the
//! run's metrics (rows, final loss, train accuracy and the per-epoch `loss`
//! series) where the node reads them.
//!
//! Arguments: `--data PATH` (default `/inputs/data/train/iris.csv`),
//! `--out DIR` (default `/outputs/model`), `--epochs N` (500),
//! `--lr RATE` (0.5), `--l2 PENALTY` (0.0001),
//! `--metrics PATH` (default `/outputs/metrics.json`).

use std::path::Path;
use std::process::ExitCode;

use tabular::{Dataset, Model, arg};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("train: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let data_path = arg(&args, "--data", "/inputs/data/train/iris.csv");
    let out = arg(&args, "--out", "/outputs/model");
    let epochs: usize = arg(&args, "--epochs", "500").parse()?;
    let lr: f64 = arg(&args, "--lr", "0.5").parse()?;
    let l2: f64 = arg(&args, "--l2", "0.0001").parse()?;
    let metrics = arg(&args, "--metrics", "/outputs/metrics.json");

    let data = Dataset::load(Path::new(&data_path))?;
    let (model, report) = Model::fit(&data, epochs, lr, l2);
    std::fs::create_dir_all(&out)?;
    let out = Path::new(&out);
    std::fs::write(out.join("model.json"), serde_json::to_vec_pretty(&model)?)?;
    std::fs::write(
        out.join("metrics.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    // Written last: where it names the model folder's metrics.json, the
    // metrics (a superset of the report's numbers but the settings) win.
    let metrics = Path::new(&metrics);
    if let Some(parent) = metrics.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(metrics, serde_json::to_vec(&report.metrics())?)?;
    println!(
        "trained on {} rows for {} epochs: loss {:.4}, train accuracy {:.3}",
        report.rows, report.epochs, report.final_loss, report.train_accuracy
    );
    Ok(())
}
