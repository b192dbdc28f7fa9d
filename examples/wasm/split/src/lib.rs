//! A deterministic, stratified train/test split of labelled CSV datasets in
//! the format of the `tabular` crate (a header `ROWS,FEATURES,CLASS0,...`,
//! then rows of FEATURES numbers and a class index).
//!
//! Which part a row goes to depends only on the seed, the row's text and the
//! rows of its class: within each class, rows are ordered by a seeded hash of
//! their text (ties by input position) and the first `round(n * fraction)`
//! go to the test part. Both parts keep the rows in input order. So the same
//! input gives the same bytes, and adding or changing a row moves at most one
//! other row of its class between the parts.

use std::path::{Path, PathBuf};

use tabular::{Dataset, Error};

fn err(msg: impl Into<String>) -> Error {
    Error(msg.into())
}

/// A labelled dataset kept as text, so rows are written back byte for byte.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub features: usize,
    pub classes: Vec<String>,
    pub rows: Vec<Row>,
}

/// One sample: its cells (trimmed, joined by commas) and its class index.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub text: String,
    pub label: usize,
}

impl Table {
    /// Parses and checks a dataset (see the crate docs for the format).
    pub fn parse(text: &str) -> Result<Table, Error> {
        let data = Dataset::parse(text)?;
        let rows = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .skip(1)
            .zip(&data.y)
            .map(|(line, &label)| Row {
                text: line.split(',').map(str::trim).collect::<Vec<_>>().join(","),
                label,
            })
            .collect();
        Ok(Table {
            features: data.features,
            classes: data.classes,
            rows,
        })
    }

    /// Appends another table's rows; its features and classes must match.
    pub fn extend(&mut self, other: Table) -> Result<(), Error> {
        if other.features != self.features || other.classes != self.classes {
            return Err(err(format!(
                "the files differ in their header: {} features ({}) against {} ({})",
                other.features,
                other.classes.join(","),
                self.features,
                self.classes.join(",")
            )));
        }
        self.rows.extend(other.rows);
        Ok(())
    }

    /// The table in the CSV format, its header counting the rows.
    pub fn render(&self) -> String {
        let mut s = format!(
            "{},{},{}\n",
            self.rows.len(),
            self.features,
            self.classes.join(",")
        );
        for r in &self.rows {
            s.push_str(&r.text);
            s.push('\n');
        }
        s
    }

    fn subset(&self, rows: &[usize]) -> Table {
        Table {
            features: self.features,
            classes: self.classes.clone(),
            rows: rows.iter().map(|&i| self.rows[i].clone()).collect(),
        }
    }

    /// Splits into (train, test), stratified by class, `fraction` of each
    /// class (rounded to the nearest row) in the test part.
    pub fn split(&self, fraction: f64, seed: u64) -> Result<(Table, Table), Error> {
        if !(0.0..=1.0).contains(&fraction) {
            return Err(err(format!(
                "the test fraction must be between 0 and 1, not {fraction}"
            )));
        }
        let salt = mix(seed ^ 0x5EED_5EED_5EED_5EED);
        let mut test = vec![false; self.rows.len()];
        for class in 0..self.classes.len() {
            let mut members: Vec<(u64, usize)> = self
                .rows
                .iter()
                .enumerate()
                .filter(|(_, r)| r.label == class)
                .map(|(i, r)| (mix(fnv1a(r.text.as_bytes()) ^ salt), i))
                .collect();
            members.sort_unstable();
            let take = ((members.len() as f64) * fraction).round() as usize;
            for &(_, i) in members.iter().take(take.min(members.len())) {
                test[i] = true;
            }
        }
        let (te, tr): (Vec<usize>, Vec<usize>) = (0..self.rows.len()).partition(|&i| test[i]);
        Ok((self.subset(&tr), self.subset(&te)))
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The splitmix64 finalizer: spreads every input bit over the output.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What [`split_path`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub files: usize,
    pub name: String,
    pub train: usize,
    pub test: usize,
}

/// The `*.csv` files under `dir`, in the byte order of their paths.
fn csv_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let entries =
            std::fs::read_dir(&d).map_err(|e| err(format!("cannot list {}: {e}", d.display())))?;
        for e in entries {
            let e = e.map_err(|e| err(format!("cannot list {}: {e}", d.display())))?;
            let path = e.path();
            let kind = e
                .file_type()
                .map_err(|e| err(format!("{}: {e}", path.display())))?;
            if kind.is_dir() {
                todo.push(path);
            } else if kind.is_file() && path.extension().is_some_and(|x| x == "csv") {
                found.push(path);
            }
        }
    }
    found.sort_by(|a, b| {
        a.as_os_str()
            .as_encoded_bytes()
            .cmp(b.as_os_str().as_encoded_bytes())
    });
    Ok(found)
}

/// Reads a CSV file, or pools every `*.csv` file under a folder, splits it
/// and writes `out/train/NAME` and `out/test/NAME`. NAME is `name`, else the
/// input files' common file name, else `data.csv`.
pub fn split_path(
    data: &Path,
    out: &Path,
    fraction: f64,
    seed: u64,
    name: Option<&str>,
) -> Result<Summary, Error> {
    let files = if data.is_dir() {
        csv_files(data)?
    } else {
        vec![data.to_path_buf()]
    };
    let mut table: Option<Table> = None;
    for f in &files {
        let text = std::fs::read_to_string(f)
            .map_err(|e| err(format!("cannot read {}: {e}", f.display())))?;
        let t = Table::parse(&text).map_err(|e| err(format!("{}: {e}", f.display())))?;
        match table.as_mut() {
            None => table = Some(t),
            Some(all) => all
                .extend(t)
                .map_err(|e| err(format!("{}: {e}", f.display())))?,
        }
    }
    let table = table.ok_or_else(|| {
        err(format!(
            "no *.csv file under {}; pass --data with a CSV file or a folder holding some",
            data.display()
        ))
    })?;
    let name = match name {
        Some(n) => n.to_string(),
        None => {
            let mut names: Vec<_> = files.iter().filter_map(|f| f.file_name()).collect();
            names.dedup();
            match names.as_slice() {
                [one] => one.to_string_lossy().into_owned(),
                _ => "data.csv".to_string(),
            }
        }
    };
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(err(format!("--name must be a file name, not {name:?}")));
    }
    let (train, test) = table.split(fraction, seed)?;
    for (part, t) in [("train", &train), ("test", &test)] {
        let dir = out.join(part);
        std::fs::create_dir_all(&dir)
            .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join(&name);
        std::fs::write(&path, t.render())
            .map_err(|e| err(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(Summary {
        files: files.len(),
        name,
        train: train.rows.len(),
        test: test.rows.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table of `per_class` rows for each of three classes, every row
    /// distinct.
    fn table(per_class: usize) -> Table {
        let mut text = format!("{},2,a,b,c\n", 3 * per_class);
        for i in 0..per_class {
            for c in 0..3 {
                text.push_str(&format!("{}.{}, {} ,{c}\n", i, c, i * 7 % 13));
            }
        }
        Table::parse(&text).expect("parse")
    }

    fn count(t: &Table, class: usize) -> usize {
        t.rows.iter().filter(|r| r.label == class).count()
    }

    #[test]
    fn same_input_same_bytes_and_stratified_proportions() {
        let t = table(50);
        let (train, test) = t.split(0.3, 1).expect("split");
        let (train2, test2) = table(50).split(0.3, 1).expect("split");
        assert_eq!(train.render(), train2.render());
        assert_eq!(test.render(), test2.render());
        for c in 0..3 {
            assert_eq!(count(&test, c), 15, "class {c}");
            assert_eq!(count(&train, c), 35, "class {c}");
        }
        assert!(test.render().starts_with("45,2,a,b,c\n"));
        assert!(train.render().starts_with("105,2,a,b,c\n"));
        // every row is in exactly one part, and each part keeps input order
        let pos = |r: &Row| t.rows.iter().position(|x| x == r).expect("row from input");
        for part in [&train, &test] {
            let p: Vec<usize> = part.rows.iter().map(pos).collect();
            assert!(p.windows(2).all(|w| w[0] < w[1]), "{p:?}");
        }
        let mut all: Vec<usize> = train.rows.iter().chain(&test.rows).map(pos).collect();
        all.sort();
        assert_eq!(all, (0..150).collect::<Vec<_>>());
    }

    #[test]
    fn the_seed_changes_the_split_and_rounding_is_per_class() {
        let t = table(10);
        let (_, a) = t.split(0.25, 1).expect("split");
        let (_, b) = t.split(0.25, 2).expect("split");
        assert_ne!(a.rows, b.rows);
        // 10 * 0.25 = 2.5 rounds to 3 in each class
        for c in 0..3 {
            assert_eq!(count(&a, c), 3);
        }
        let (tr, te) = t.split(0.0, 1).expect("split");
        assert_eq!((tr.rows.len(), te.rows.len()), (30, 0));
        let (tr, te) = t.split(1.0, 1).expect("split");
        assert_eq!((tr.rows.len(), te.rows.len()), (0, 30));
    }

    #[test]
    fn adding_a_row_moves_at_most_one_row_of_its_class() {
        let t = table(20);
        let (_, before) = t.split(0.3, 7).expect("split");
        let mut more = t.clone();
        more.rows.push(Row {
            text: "99.5,1".to_string(),
            label: 1,
        });
        let (_, after) = more.split(0.3, 7).expect("split");
        let moved = before
            .rows
            .iter()
            .filter(|r| !after.rows.contains(r))
            .count();
        assert!(moved <= 1, "{moved} rows left the test part");
        for c in [0, 2] {
            let b: Vec<_> = before.rows.iter().filter(|r| r.label == c).collect();
            let a: Vec<_> = after.rows.iter().filter(|r| r.label == c).collect();
            assert_eq!(a, b, "class {c} is untouched");
        }
    }

    #[test]
    fn bad_fractions_and_mismatched_files_are_refused() {
        let t = table(2);
        for f in [-0.1, 1.5, f64::NAN] {
            let e = t.split(f, 1).expect_err("fraction");
            assert!(e.0.contains("test fraction"), "{e}");
        }
        let mut t = table(2);
        let other = Table::parse("1,2,a,b\n1,2,0\n").expect("parse");
        let e = t.extend(other).expect_err("header");
        assert!(e.0.contains("differ in their header"), "{e}");
        assert!(Table::parse("2,2,a,b\n1,2,0\n").is_err());
    }

    #[test]
    fn a_folder_is_pooled_and_written_byte_for_byte() {
        let base = std::env::temp_dir().join(format!("split-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let data = base.join("data");
        std::fs::create_dir_all(data.join("train")).expect("mkdir");
        std::fs::create_dir_all(data.join("test")).expect("mkdir");
        let t = table(10);
        let (a, b) = t.split(0.5, 3).expect("split");
        std::fs::write(data.join("train/x.csv"), a.render()).expect("write");
        std::fs::write(data.join("test/x.csv"), b.render()).expect("write");
        std::fs::write(data.join("README.md"), "not data").expect("write");
        let run = |out: &str| {
            let out = base.join(out);
            let s = split_path(&data, &out, 0.3, 1, None).expect("split");
            let read = |p: &str| std::fs::read(out.join(p)).expect("read");
            (s, read("train/x.csv"), read("test/x.csv"))
        };
        let (s1, tr1, te1) = run("out1");
        let (s2, tr2, te2) = run("out2");
        assert_eq!(
            s1,
            Summary {
                files: 2,
                name: "x.csv".to_string(),
                train: 21,
                test: 9
            }
        );
        assert_eq!(s1, s2);
        assert_eq!((tr1.clone(), te1), (tr2, te2));
        // the pooled rows are the input's, every value kept as written
        let back = Table::parse(std::str::from_utf8(&tr1).expect("utf8")).expect("parse");
        assert!(back.rows.iter().all(|r| t.rows.contains(r)));
        let e = split_path(&base.join("out1/none"), &base.join("o"), 0.3, 1, None);
        assert!(e.is_err());
        let _ = std::fs::remove_dir_all(&base);
    }
}
