//! Every job spec shipped in `examples/jobs` parses, and survives a trip
//! through YAML and CBOR unchanged.

use std::path::Path;

use weft_protocol::JobSpec;
use weft_protocol::job::Task;

#[test]
fn every_example_job_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/jobs");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("examples/jobs exists") {
        let path = entry.expect("dir entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable");
        let job = JobSpec::from_yaml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let again = JobSpec::from_yaml(&job.to_yaml().expect("to yaml")).expect("reparse");
        assert_eq!(again, job, "{}", path.display());
        let cbor = job.to_cbor().expect("to cbor");
        assert_eq!(JobSpec::from_cbor(&cbor).expect("from cbor"), job);
        seen.push((
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string(),
            job,
        ));
    }
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    for want in ["evaluate.yaml", "train.yaml", "wordcount.yaml"] {
        assert!(names.contains(&want), "missing {want} in {names:?}");
    }
    let train = &seen
        .iter()
        .find(|(n, _)| n == "train.yaml")
        .expect("train")
        .1;
    assert!(matches!(train.spec.task, Task::Wasm(_)));
    let tags: Vec<String> = train
        .spec
        .outputs
        .iter()
        .filter_map(|o| o.tag.as_ref().map(|t| t.to_string()))
        .collect();
    assert_eq!(tags, ["models/example:v1"]);
}
