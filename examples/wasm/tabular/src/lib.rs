//! Shared by the `train` and `evaluate` examples: loading the example CSV
//! format, a multinomial logistic (softmax) regression model, and metrics.
//!
//! CSV format (as in scikit-learn's bundled datasets): a header line
//! `ROWS,FEATURES,CLASS0,CLASS1,...`, then one row per sample of FEATURES
//! numbers followed by the class index.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// A labelled dataset.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub classes: Vec<String>,
    pub features: usize,
    pub x: Vec<Vec<f64>>,
    pub y: Vec<usize>,
}

/// Why a file could not be used.
#[derive(Debug)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

fn err(msg: impl Into<String>) -> Error {
    Error(msg.into())
}

impl Dataset {
    /// Reads a dataset in the format described in the crate docs.
    pub fn load(path: &Path) -> Result<Dataset, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
        Dataset::parse(&text).map_err(|e| err(format!("{}: {e}", path.display())))
    }

    /// Parses the text of a dataset.
    pub fn parse(text: &str) -> Result<Dataset, Error> {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header = lines.next().ok_or_else(|| err("empty file"))?;
        let head: Vec<&str> = header.split(',').map(str::trim).collect();
        if head.len() < 3 {
            return Err(err("header must be ROWS,FEATURES,CLASS,..."));
        }
        let rows: usize = head[0].parse().map_err(|_| err("bad row count"))?;
        let features: usize = head[1].parse().map_err(|_| err("bad feature count"))?;
        let classes: Vec<String> = head[2..].iter().map(|s| s.to_string()).collect();
        let mut x = Vec::with_capacity(rows);
        let mut y = Vec::with_capacity(rows);
        for (i, line) in lines.enumerate() {
            let cells: Vec<&str> = line.split(',').map(str::trim).collect();
            if cells.len() != features + 1 {
                return Err(err(format!(
                    "row {}: expected {} values, found {}",
                    i + 1,
                    features + 1,
                    cells.len()
                )));
            }
            let row = cells[..features]
                .iter()
                .map(|c| c.parse::<f64>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| err(format!("row {}: {e}", i + 1)))?;
            let label: usize = cells[features]
                .parse()
                .map_err(|e| err(format!("row {}: class: {e}", i + 1)))?;
            if label >= classes.len() {
                return Err(err(format!("row {}: class {label} out of range", i + 1)));
            }
            x.push(row);
            y.push(label);
        }
        if x.len() != rows {
            return Err(err(format!(
                "header says {rows} rows, file has {}",
                x.len()
            )));
        }
        Ok(Dataset {
            classes,
            features,
            x,
            y,
        })
    }
}

/// A softmax regression model over standardized features.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Model {
    pub kind: String,
    pub classes: Vec<String>,
    pub features: usize,
    /// Per-feature mean and standard deviation used to standardize inputs.
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    /// One weight row per class.
    pub weights: Vec<Vec<f64>>,
    pub bias: Vec<f64>,
}

/// How training went.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub epochs: usize,
    pub learning_rate: f64,
    pub l2: f64,
    pub rows: usize,
    pub final_loss: f64,
    pub train_accuracy: f64,
    /// The training loss of each epoch (before that epoch's update), in
    /// order; kept out of the report's JSON (see [`TrainMetrics`]).
    #[serde(skip)]
    pub loss: Vec<f64>,
}

/// What a training run reports as its metrics: numbers, and the per-epoch
/// loss as a series.
#[derive(Debug, Clone, Serialize)]
pub struct TrainMetrics {
    pub rows: usize,
    pub final_loss: f64,
    pub train_accuracy: f64,
    pub loss: Vec<f64>,
}

impl TrainReport {
    /// The metrics of this run.
    pub fn metrics(&self) -> TrainMetrics {
        TrainMetrics {
            rows: self.rows,
            final_loss: self.final_loss,
            train_accuracy: self.train_accuracy,
            loss: self.loss.clone(),
        }
    }
}

impl Model {
    /// Fits the model with full-batch gradient descent from zero weights
    /// (deterministic: the same data and settings give the same model).
    pub fn fit(data: &Dataset, epochs: usize, lr: f64, l2: f64) -> (Model, TrainReport) {
        let k = data.classes.len();
        let d = data.features;
        let n = data.x.len().max(1) as f64;
        let mut mean = vec![0.0; d];
        for row in &data.x {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += v / n;
            }
        }
        let mut std = vec![0.0; d];
        for row in &data.x {
            for ((s, v), m) in std.iter_mut().zip(row).zip(&mean) {
                *s += (v - m).powi(2) / n;
            }
        }
        for s in &mut std {
            *s = if *s > 0.0 { s.sqrt() } else { 1.0 };
        }
        let mut model = Model {
            kind: "softmax-regression".to_string(),
            classes: data.classes.clone(),
            features: d,
            mean,
            std,
            weights: vec![vec![0.0; d]; k],
            bias: vec![0.0; k],
        };
        let xs: Vec<Vec<f64>> = data.x.iter().map(|r| model.standardize(r)).collect();
        let mut loss = 0.0;
        let mut losses = Vec::with_capacity(epochs);
        for _ in 0..epochs {
            let mut gw = vec![vec![0.0; d]; k];
            let mut gb = vec![0.0; k];
            loss = 0.0;
            for (x, &y) in xs.iter().zip(&data.y) {
                let p = model.probabilities_std(x);
                loss -= p[y].max(1e-12).ln() / n;
                for (c, (gwc, gbc)) in gw.iter_mut().zip(gb.iter_mut()).enumerate() {
                    let g = p[c] - if c == y { 1.0 } else { 0.0 };
                    *gbc += g / n;
                    for (gwj, xj) in gwc.iter_mut().zip(x) {
                        *gwj += g * xj / n;
                    }
                }
            }
            losses.push(loss);
            for ((wc, bc), (gwc, gbc)) in model
                .weights
                .iter_mut()
                .zip(model.bias.iter_mut())
                .zip(gw.iter().zip(&gb))
            {
                *bc -= lr * gbc;
                for (w, g) in wc.iter_mut().zip(gwc) {
                    *w -= lr * (g + l2 * *w);
                }
            }
        }
        let acc = model.evaluate(data).accuracy;
        let report = TrainReport {
            epochs,
            learning_rate: lr,
            l2,
            rows: data.x.len(),
            final_loss: loss,
            train_accuracy: acc,
            loss: losses,
        };
        (model, report)
    }

    fn standardize(&self, x: &[f64]) -> Vec<f64> {
        x.iter()
            .zip(self.mean.iter().zip(&self.std))
            .map(|(v, (m, s))| (v - m) / s)
            .collect()
    }

    fn probabilities_std(&self, x: &[f64]) -> Vec<f64> {
        let logits: Vec<f64> = self
            .weights
            .iter()
            .zip(&self.bias)
            .map(|(w, b)| b + w.iter().zip(x).map(|(a, b)| a * b).sum::<f64>())
            .collect();
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let exps: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let sum: f64 = exps.iter().sum();
        exps.iter().map(|e| e / sum).collect()
    }

    /// Class probabilities for one raw (unstandardized) sample.
    pub fn probabilities(&self, x: &[f64]) -> Vec<f64> {
        self.probabilities_std(&self.standardize(x))
    }

    /// The most likely class.
    pub fn predict(&self, x: &[f64]) -> usize {
        let p = self.probabilities(x);
        (0..p.len())
            .max_by(|&a, &b| p[a].total_cmp(&p[b]))
            .unwrap_or(0)
    }

    /// Scores the model on a dataset with the same classes and features.
    pub fn evaluate(&self, data: &Dataset) -> Metrics {
        let k = self.classes.len();
        let mut confusion = vec![vec![0usize; k]; k];
        let mut log_loss = 0.0;
        for (x, &y) in data.x.iter().zip(&data.y) {
            let p = self.probabilities(x);
            log_loss -= p[y].max(1e-12).ln();
            let guess = (0..k).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap_or(0);
            confusion[y][guess] += 1;
        }
        let n = data.x.len();
        let correct: usize = (0..k).map(|c| confusion[c][c]).sum();
        Metrics {
            rows: n,
            correct,
            accuracy: if n == 0 {
                0.0
            } else {
                correct as f64 / n as f64
            },
            log_loss: if n == 0 { 0.0 } else { log_loss / n as f64 },
            classes: self.classes.clone(),
            confusion,
        }
    }
}

/// Scores on a labelled dataset.
#[derive(Debug, Clone, Serialize)]
pub struct Metrics {
    pub rows: usize,
    pub correct: usize,
    pub accuracy: f64,
    pub log_loss: f64,
    pub classes: Vec<String>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<usize>>,
}

/// The numbers of [`Metrics`] alone (what a run records as its metrics).
#[derive(Debug, Clone, Serialize)]
pub struct Scores {
    pub rows: usize,
    pub correct: usize,
    pub accuracy: f64,
    pub log_loss: f64,
    /// The mean over classes of each class's F1 score (0 for a class never
    /// predicted nor present).
    pub f1_macro: f64,
}

impl Metrics {
    /// The numbers alone.
    pub fn scores(&self) -> Scores {
        let k = self.confusion.len();
        let mut f1 = 0.0;
        for c in 0..k {
            let tp = self.confusion[c][c] as f64;
            let actual: usize = self.confusion[c].iter().sum();
            let predicted: usize = self.confusion.iter().map(|row| row[c]).sum();
            let denom = actual as f64 + predicted as f64;
            if denom > 0.0 {
                f1 += 2.0 * tp / denom;
            }
        }
        Scores {
            rows: self.rows,
            correct: self.correct,
            accuracy: self.accuracy,
            log_loss: self.log_loss,
            f1_macro: if k == 0 { 0.0 } else { f1 / k as f64 },
        }
    }
}

/// Finds `--name VALUE` in the arguments, or returns `default`.
pub fn arg(args: &[String], name: &str, default: &str) -> String {
    args.windows(2)
        .find(|w| w[0] == name)
        .map(|w| w[1].clone())
        .unwrap_or_else(|| default.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separable_data_is_learned() {
        let text = "6,1,a,b\n0,0\n0.1,0\n0.2,0\n1,1\n1.1,1\n0.9,1\n";
        let data = Dataset::parse(text).expect("parse");
        let (model, report) = Model::fit(&data, 200, 0.5, 0.0);
        assert_eq!(report.train_accuracy, 1.0);
        assert_eq!(report.loss.len(), 200);
        assert_eq!(report.loss.last(), Some(&report.final_loss));
        assert!(report.loss[199] < report.loss[0], "{:?}", report.loss);
        let m = report.metrics();
        assert_eq!((m.rows, m.loss.len()), (6, 200));
        assert_eq!(model.predict(&[1.2]), 1);
        assert_eq!(model.predict(&[-0.2]), 0);
    }

    #[test]
    fn scores_follow_the_confusion_matrix() {
        let m = Metrics {
            rows: 4,
            correct: 3,
            accuracy: 0.75,
            log_loss: 0.5,
            classes: vec!["a".into(), "b".into()],
            confusion: vec![vec![2, 0], vec![1, 1]],
        };
        let s = m.scores();
        // a: tp 2, 2 actual, 3 predicted -> 0.8; b: tp 1, 2 actual, 1 predicted -> 2/3
        assert!(
            (s.f1_macro - (0.8 + 2.0 / 3.0) / 2.0).abs() < 1e-12,
            "{s:?}"
        );
        assert_eq!((s.rows, s.correct, s.accuracy), (4, 3, 0.75));
    }

    #[test]
    fn bad_files_are_refused() {
        assert!(Dataset::parse("").is_err());
        assert!(Dataset::parse("2,1,a,b\n0,0\n").is_err());
        assert!(Dataset::parse("1,1,a,b\n0,5\n").is_err());
        assert!(Dataset::parse("1,2,a,b\n0,0\n").is_err());
    }
}
