//! Reading the metrics a task reports: a JSON object of numbers and lists
//! of numbers left in its outputs folder (`/outputs/metrics.json` unless
//! the spec names another file).
//!
//! The file is the task's and as hostile as the rest of its outputs: it is
//! opened beneath the outputs folder's handle with no link followed, read
//! up to [`MAX_METRICS_FILE_BYTES`], and whatever is wrong with it becomes a
//! note on the result, never a failure of the job.

use std::io::Read;
use std::path::Path;

use serde_json::Value;
use weft_protocol::bounds::{MAX_METRICS, MAX_PARAM_KEY_BYTES};
use weft_protocol::ledger::Metric;

use crate::store::beneath::Beneath;

/// Largest metrics file read.
pub(crate) const MAX_METRICS_FILE_BYTES: u64 = 1 << 20;
/// Most bytes of metrics one result carries (keys plus a fixed cost per
/// point), so a job's status stays small enough to gossip in a batch.
pub(crate) const MAX_RESULT_METRICS_BYTES: usize = 48 * 1024;
/// What a point costs beyond its key, for [`MAX_RESULT_METRICS_BYTES`].
const POINT_OVERHEAD: usize = 32;
/// Names listed in one note.
const NAMES_IN_NOTE: usize = 8;

/// The metrics in the file at `rel` beneath `outputs` (the path inside the
/// task is `shown`), and notes on what was wrong with it. A missing file is
/// noted only when the spec named it (`named`).
pub(crate) fn read(
    outputs: &Path,
    rel: &Path,
    shown: &str,
    named: bool,
    now_ms: u64,
) -> (Vec<Metric>, Vec<String>) {
    match read_bytes(outputs, rel) {
        Ok(Some(bytes)) => match parse(&bytes, now_ms) {
            Ok((metrics, notes)) => (
                metrics,
                notes
                    .into_iter()
                    .map(|n| format!("metrics file {shown}: {n}"))
                    .collect(),
            ),
            Err(why) => (
                Vec::new(),
                vec![format!("metrics file {shown} not read: {why}")],
            ),
        },
        Ok(None) if named => (
            Vec::new(),
            vec![format!(
                "metrics file {shown} not read: the task did not write it"
            )],
        ),
        Ok(None) => (Vec::new(), Vec::new()),
        Err(why) => (
            Vec::new(),
            vec![format!("metrics file {shown} not read: {why}")],
        ),
    }
}

/// The file's bytes; `None` when it does not exist.
fn read_bytes(outputs: &Path, rel: &Path) -> Result<Option<Vec<u8>>, String> {
    let dir = match Beneath::open(outputs) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot open the outputs folder: {e}")),
    };
    let file = match dir.open_at(rel, libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY) {
        Ok(f) => f,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(None);
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err("it is a symlink (or lies behind one); links are not followed".into());
        }
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            return Err("it leads out of the outputs folder".into());
        }
        Err(e) => return Err(e.to_string()),
    };
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("it is not a regular file".into());
    }
    if meta.len() > MAX_METRICS_FILE_BYTES {
        return Err(format!(
            "it holds {} bytes, more than the {} bytes read",
            meta.len(),
            MAX_METRICS_FILE_BYTES
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_METRICS_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_METRICS_FILE_BYTES {
        return Err(format!(
            "it grew past the {MAX_METRICS_FILE_BYTES} bytes read"
        ));
    }
    Ok(Some(bytes))
}

/// What was skipped while flattening, for the notes.
#[derive(Default)]
struct Skipped {
    not_numbers: Vec<String>,
    long_keys: usize,
    cut: bool,
}

/// Parses a metrics file: a JSON object whose values are numbers (one
/// point at step 0), lists of numbers (a series: one point per index, the
/// index as its step) or objects of the same (flattened as `a.b`). Other
/// values are skipped with a note; a number JSON cannot hold as a finite
/// double refuses the file.
pub(crate) fn parse(bytes: &[u8], now_ms: u64) -> Result<(Vec<Metric>, Vec<String>), String> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("not JSON, or a number out of range: {e}"))?;
    let Value::Object(map) = value else {
        return Err("not a JSON object of metric names and values".into());
    };
    let mut out = Vec::new();
    let mut budget = MAX_RESULT_METRICS_BYTES;
    let mut skipped = Skipped::default();
    flatten("", &map, now_ms, &mut out, &mut budget, &mut skipped)?;
    let mut notes = Vec::new();
    if !skipped.not_numbers.is_empty() {
        let n = skipped.not_numbers.len();
        let mut names: Vec<String> = skipped
            .not_numbers
            .iter()
            .take(NAMES_IN_NOTE)
            .map(|k| k.chars().take(64).collect())
            .collect();
        if n > NAMES_IN_NOTE {
            names.push(format!("and {} more", n - NAMES_IN_NOTE));
        }
        notes.push(format!(
            "{n} {} not numbers or lists of numbers, ignored: {}",
            if n == 1 { "value is" } else { "values are" },
            names.join(", ")
        ));
    }
    if skipped.long_keys > 0 {
        notes.push(format!(
            "{} metrics with names longer than {MAX_PARAM_KEY_BYTES} bytes ignored",
            skipped.long_keys
        ));
    }
    if skipped.cut {
        notes.push(format!(
            "cut at {} points (at most {MAX_METRICS} points and {MAX_RESULT_METRICS_BYTES} bytes of names are kept)",
            out.len()
        ));
    }
    Ok((out, notes))
}

fn flatten(
    prefix: &str,
    map: &serde_json::Map<String, Value>,
    now_ms: u64,
    out: &mut Vec<Metric>,
    budget: &mut usize,
    skipped: &mut Skipped,
) -> Result<(), String> {
    for (k, v) in map {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Object(inner) => flatten(&key, inner, now_ms, out, budget, skipped)?,
            Value::Number(_) => {
                let value = finite(v, &key)?;
                push(out, budget, skipped, key, value, 0, now_ms);
            }
            Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_number) => {
                for (step, item) in items.iter().enumerate() {
                    let value = finite(item, &key)?;
                    push(
                        out,
                        budget,
                        skipped,
                        key.clone(),
                        value,
                        step as u64,
                        now_ms,
                    );
                }
            }
            _ => skipped.not_numbers.push(key),
        }
    }
    Ok(())
}

fn finite(v: &Value, key: &str) -> Result<f64, String> {
    match v.as_f64() {
        Some(x) if x.is_finite() => Ok(x),
        _ => Err(format!(
            "{key}: {v} is not a finite number; write numbers a double can hold"
        )),
    }
}

fn push(
    out: &mut Vec<Metric>,
    budget: &mut usize,
    skipped: &mut Skipped,
    key: String,
    value: f64,
    step: u64,
    now_ms: u64,
) {
    if key.is_empty() || key.len() > MAX_PARAM_KEY_BYTES {
        if step == 0 {
            skipped.long_keys += 1;
        }
        return;
    }
    let cost = key.len() + POINT_OVERHEAD;
    if out.len() >= MAX_METRICS || cost > *budget {
        skipped.cut = true;
        return;
    }
    *budget -= cost;
    out.push(Metric {
        key,
        value,
        step,
        timestamp_ms: now_ms,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(m: &[Metric]) -> Vec<(String, f64, u64)> {
        m.iter().map(|m| (m.key.clone(), m.value, m.step)).collect()
    }

    #[test]
    fn numbers_series_and_nested_objects_flatten() {
        let (m, notes) = parse(
            br#"{"accuracy": 0.9, "loss": [1.5, 0.5, 0.25], "val": {"f1": 0.8, "per": {"a": 1}}, "n": 150}"#,
            7,
        )
        .expect("parse");
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(
            points(&m),
            vec![
                ("accuracy".into(), 0.9, 0),
                ("loss".into(), 1.5, 0),
                ("loss".into(), 0.5, 1),
                ("loss".into(), 0.25, 2),
                ("n".into(), 150.0, 0),
                ("val.f1".into(), 0.8, 0),
                ("val.per.a".into(), 1.0, 0),
            ]
        );
        assert!(m.iter().all(|m| m.timestamp_ms == 7));
    }

    #[test]
    fn other_values_are_ignored_with_a_note() {
        let (m, notes) = parse(
            br#"{"acc": 1, "classes": ["a", "b"], "name": "x", "ok": true, "mixed": [1, "2"], "none": null, "empty": []}"#,
            0,
        )
        .expect("parse");
        assert_eq!(points(&m), vec![("acc".into(), 1.0, 0)]);
        assert_eq!(notes.len(), 1, "{notes:?}");
        for k in ["classes", "name", "ok", "mixed", "none", "empty"] {
            assert!(notes[0].contains(k), "{notes:?}");
        }
        assert!(notes[0].starts_with("6 values are"), "{notes:?}");
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        for (bytes, why) in [
            (&b"[1, 2]"[..], "not a JSON object"),
            (b"{\"a\": ", "not JSON"),
            (b"{\"a\": 1e400}", "not JSON, or a number out of range"),
            (b"{\"a\": NaN}", "not JSON"),
            (b"{\"a\": [1, 1e999]}", "out of range"),
        ] {
            let err = parse(bytes, 0).expect_err("refused");
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn long_names_and_too_many_points_are_cut_with_a_note() {
        let long = "k".repeat(MAX_PARAM_KEY_BYTES + 1);
        let (m, notes) =
            parse(format!("{{\"{long}\": 1, \"a\": 2}}").as_bytes(), 0).expect("parse");
        assert_eq!(points(&m), vec![("a".into(), 2.0, 0)]);
        assert!(notes[0].contains("longer than"), "{notes:?}");
        let series: Vec<String> = (0..20_000).map(|i| i.to_string()).collect();
        let (m, notes) = parse(
            format!("{{\"loss\": [{}]}}", series.join(",")).as_bytes(),
            0,
        )
        .expect("parse");
        let cost: usize = m.iter().map(|m| m.key.len() + POINT_OVERHEAD).sum();
        assert!(m.len() < 20_000 && cost <= MAX_RESULT_METRICS_BYTES);
        assert!(m.len() <= MAX_METRICS);
        assert!(notes.iter().any(|n| n.starts_with("cut at")), "{notes:?}");
        // the points kept are the first ones
        assert_eq!(m.last().map(|p| p.step), Some(m.len() as u64 - 1));
    }

    #[test]
    fn the_file_is_read_beneath_the_outputs_folder_without_following_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outputs = dir.path().join("outputs");
        std::fs::create_dir(&outputs).expect("mkdir");
        let rel = Path::new("metrics.json");
        // missing: silent for the default file, noted for a named one
        assert_eq!(
            read(&outputs, rel, "/outputs/metrics.json", false, 0)
                .1
                .len(),
            0
        );
        let (_, notes) = read(&outputs, rel, "/outputs/metrics.json", true, 0);
        assert!(notes[0].contains("did not write it"), "{notes:?}");
        // a link to a file outside is not followed
        let secret = dir.path().join("secret.json");
        std::fs::write(&secret, br#"{"leak": 1}"#).expect("write");
        std::os::unix::fs::symlink(&secret, outputs.join("metrics.json")).expect("link");
        let (m, notes) = read(&outputs, rel, "/outputs/metrics.json", false, 0);
        assert!(m.is_empty());
        assert!(notes[0].contains("symlink"), "{notes:?}");
        // nor is a link on the way
        std::fs::create_dir(dir.path().join("elsewhere")).expect("mkdir");
        std::fs::write(dir.path().join("elsewhere/m.json"), br#"{"leak": 1}"#).expect("write");
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), outputs.join("sub"))
            .expect("link");
        let (m, notes) = read(
            &outputs,
            Path::new("sub/m.json"),
            "/outputs/sub/m.json",
            true,
            0,
        );
        assert!(m.is_empty(), "{notes:?}");
        // a folder is not a file
        std::fs::remove_file(outputs.join("metrics.json")).expect("rm");
        std::fs::create_dir(outputs.join("metrics.json")).expect("mkdir");
        let (_, notes) = read(&outputs, rel, "/outputs/metrics.json", false, 0);
        assert!(notes[0].contains("not a regular file"), "{notes:?}");
        // too large
        std::fs::remove_dir(outputs.join("metrics.json")).expect("rm");
        let big = vec![b' '; MAX_METRICS_FILE_BYTES as usize + 1];
        std::fs::write(outputs.join("metrics.json"), &big).expect("write");
        let (_, notes) = read(&outputs, rel, "/outputs/metrics.json", false, 0);
        assert!(notes[0].contains("more than"), "{notes:?}");
        // a good one
        std::fs::write(outputs.join("metrics.json"), br#"{"acc": [0.5, 0.75]}"#).expect("write");
        let (m, notes) = read(&outputs, rel, "/outputs/metrics.json", false, 3);
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(
            points(&m),
            vec![("acc".into(), 0.5, 0), ("acc".into(), 0.75, 1)]
        );
    }
}
