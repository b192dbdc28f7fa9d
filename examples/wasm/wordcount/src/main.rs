//! Counts words in every file of a directory tree and writes the counts as
//! JSON: `{"files": N, "words": N, "unique": N, "counts": {"word": n, ...}}`.
//!
//! A word is a run of letters, digits or apostrophes inside a word, lowercased.
//! Arguments: `--input DIR` (default `/inputs`), `--out FILE` (default
//! `/outputs/counts.json`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;

#[derive(Serialize, Default)]
struct Counts {
    files: usize,
    words: usize,
    unique: usize,
    counts: BTreeMap<String, usize>,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wordcount: {e}");
            ExitCode::FAILURE
        }
    }
}

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.windows(2)
        .find(|w| w[0] == name)
        .map(|w| w[1].clone())
        .unwrap_or_else(|| default.to_string())
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let input = PathBuf::from(arg(&args, "--input", "/inputs"));
    let out = PathBuf::from(arg(&args, "--out", "/outputs/counts.json"));
    let mut counts = Counts::default();
    walk(&input, &mut counts)?;
    counts.unique = counts.counts.len();
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, serde_json::to_vec_pretty(&counts)?)?;
    println!(
        "{} words ({} distinct) in {} files",
        counts.words, counts.unique, counts.files
    );
    Ok(())
}

fn walk(dir: &Path, counts: &mut Counts) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk(&path, counts)?;
        } else {
            let bytes = std::fs::read(&path)?;
            counts.files += 1;
            count_words(&String::from_utf8_lossy(&bytes), counts);
        }
    }
    Ok(())
}

fn count_words(text: &str, counts: &mut Counts) {
    for word in text
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| w.trim_matches('\''))
        .filter(|w| !w.is_empty())
    {
        counts.words += 1;
        *counts.counts.entry(word.to_lowercase()).or_default() += 1;
    }
}
