//! Every job is a run: the coordinator writes its start at submission, its
//! end (with the metrics its task reported) when it is over, and for a
//! success the lineage of each output, all as ledger entries, which every
//! node comes to hold.
//!
//! A run event is cut into entries of at most [`RUN_ENTRY_BYTES`] (params,
//! tags and metrics spread over several), so every entry stays small enough
//! to gossip and to page in a sync, however much a run logs.

use weft_protocol::bounds::{MAX_METRICS, MAX_PARAMS};
use weft_protocol::ledger::{EntryBody, Lineage, RunEnd, RunEvent, RunStart};
use weft_protocol::sched::{
    Assignment, ExecutorKind, JobState, JobStatus, Program, RunContext, Submission,
};

use crate::store::Store;

/// Largest run entry written, estimated from its strings and points.
pub(crate) const RUN_ENTRY_BYTES: usize = 12 * 1024;
/// What a param, tag or metric costs beyond its strings, for the estimate.
const ITEM_OVERHEAD: usize = 64;
/// What a start or an end costs, at most (names are bounded).
const START_BYTES: usize = 1024;
/// Most bytes of params a lineage entry repeats from its run (the run
/// holds them all; the lineage names the run).
const LINEAGE_PARAMS_BYTES: usize = 8 * 1024;
/// Largest lineage entry written: one larger (a job with very many
/// inputs) is left out with a warning, so it cannot take a gossip batch
/// down with it.
const LINEAGE_ENTRY_BYTES: usize = 64 * 1024;

/// The experiment of a submission: the pipeline engine's, else the spec's.
pub(crate) fn experiment_of(sub: &Submission) -> Option<String> {
    sub.run
        .as_ref()
        .and_then(|r| r.experiment.clone())
        .or_else(|| {
            sub.spec
                .metadata
                .experiment
                .as_ref()
                .map(|e| e.as_str().to_string())
        })
}

/// Cuts a run event into parts of at most [`RUN_ENTRY_BYTES`] each (and
/// within the per-event counts), in order: the start in the first, the end
/// in the last.
pub(crate) fn split_event(ev: RunEvent) -> Vec<RunEvent> {
    let RunEvent {
        run,
        start,
        params,
        metrics,
        tags,
        end,
    } = ev;
    let empty = || RunEvent {
        run: run.clone(),
        start: None,
        params: Vec::new(),
        metrics: Vec::new(),
        tags: Vec::new(),
        end: None,
    };
    let mut size = if start.is_some() { START_BYTES } else { 0 };
    let mut parts = vec![RunEvent { start, ..empty() }];
    fn room(
        parts: &mut Vec<RunEvent>,
        size: &mut usize,
        cost: usize,
        full: impl Fn(&RunEvent) -> bool,
        empty: &dyn Fn() -> RunEvent,
    ) {
        let last = parts.last().expect("there is always a part");
        let used = *size > 0;
        if used && (*size + cost > RUN_ENTRY_BYTES || full(last)) {
            parts.push(empty());
            *size = 0;
        }
        *size += cost;
    }
    for (k, v) in params {
        room(
            &mut parts,
            &mut size,
            k.len() + v.len() + ITEM_OVERHEAD,
            |p| p.params.len() >= MAX_PARAMS,
            &empty,
        );
        parts.last_mut().expect("a part").params.push((k, v));
    }
    for (k, v) in tags {
        room(
            &mut parts,
            &mut size,
            k.len() + v.len() + ITEM_OVERHEAD,
            |p| p.tags.len() >= MAX_PARAMS,
            &empty,
        );
        parts.last_mut().expect("a part").tags.push((k, v));
    }
    for m in metrics {
        room(
            &mut parts,
            &mut size,
            m.key.len() + ITEM_OVERHEAD,
            |p| p.metrics.len() >= MAX_METRICS,
            &empty,
        );
        parts.last_mut().expect("a part").metrics.push(m);
    }
    if end.is_some() {
        room(&mut parts, &mut size, START_BYTES, |_| false, &empty);
        parts.last_mut().expect("a part").end = end;
    }
    parts
}

/// Writes a run event (cut into entries as needed) by this node.
pub(crate) fn append_run(store: &Store, ev: RunEvent) -> Result<(), crate::store::StoreError> {
    for part in split_event(ev) {
        store.ledger_append(EntryBody::Run(part))?;
    }
    Ok(())
}

/// The run of a job this node just accepted.
pub(crate) fn started(store: &Store, status: &JobStatus, sub: &Submission) {
    let ctx = sub.run.clone().unwrap_or_default();
    let ev = RunEvent {
        run: status.id.clone(),
        start: Some(RunStart {
            name: status.name.clone(),
            experiment: experiment_of(sub),
            job: Some(status.id.clone()),
            pipeline_run: ctx.pipeline_run,
            step: ctx.step,
            start_ms: status.created_ms,
        }),
        params: ctx.params,
        metrics: Vec::new(),
        tags: Vec::new(),
        end: None,
    };
    if let Err(error) = append_run(store, ev) {
        tracing::warn!(job = %status.id, %error, "cannot record the job's run");
    }
}

/// The end of a job's run, with the metrics its result carries.
pub(crate) fn ended(store: &Store, status: &JobStatus) {
    let status_word = match status.state {
        JobState::Succeeded => "succeeded",
        JobState::Cancelled => "cancelled",
        _ => "failed",
    };
    let result = status.result.as_ref();
    let ev = RunEvent {
        run: status.id.clone(),
        start: None,
        params: Vec::new(),
        metrics: result.map(|r| r.metrics.clone()).unwrap_or_default(),
        tags: Vec::new(),
        end: Some(RunEnd {
            status: status_word.to_string(),
            end_ms: status.updated_ms,
            node: status.node.clone(),
            cached: result.is_some_and(|r| r.cached),
        }),
    };
    if let Err(error) = append_run(store, ev) {
        tracing::warn!(job = %status.id, %error, "cannot record the end of the job's run");
    }
}

/// The lineage of each output of a succeeded job: what made it. `node` is
/// the node that ran the task (for a cache hit, the one that ran the job
/// whose result it reuses). For a cache hit, an output that already has a
/// lineage gets no new one.
pub(crate) fn lineage(
    store: &Store,
    status: &JobStatus,
    sub: &Submission,
    assignment: &Assignment,
    node: &str,
) {
    let Some(result) = &status.result else { return };
    let ctx: RunContext = sub.run.clone().unwrap_or_default();
    let (program, executor) = match &assignment.program {
        Program::Wasm { module, .. } => (*module, ExecutorKind::Wasm),
        Program::Container { image, .. } => (*image, ExecutorKind::Container),
    };
    let params_bytes: usize = ctx
        .params
        .iter()
        .map(|(k, v)| k.len() + v.len() + ITEM_OVERHEAD)
        .sum();
    let params = if params_bytes <= LINEAGE_PARAMS_BYTES {
        ctx.params.clone()
    } else {
        Vec::new()
    };
    for (path, artifact) in &result.outputs {
        if result.cached {
            match store.lineage_of(artifact) {
                Ok(known) if !known.is_empty() => continue,
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(job = %status.id, %artifact, %error, "cannot read lineage");
                    continue;
                }
            }
        }
        let body = EntryBody::Lineage(Lineage {
            artifact: *artifact,
            path: path.clone(),
            job: status.id.clone(),
            pipeline_run: ctx.pipeline_run.clone(),
            step: ctx.step.clone(),
            program,
            executor,
            inputs: assignment.inputs.clone(),
            params: params.clone(),
            node: node.to_string(),
            at_ms: status.updated_ms,
        });
        let size = weft_protocol::encode(&body, usize::MAX).map_or(usize::MAX, |b| b.len());
        if size > LINEAGE_ENTRY_BYTES {
            tracing::warn!(job = %status.id, %artifact, bytes = size, "an output's lineage is too large to record; left out");
            continue;
        }
        if let Err(error) = store.ledger_append(body) {
            tracing::warn!(job = %status.id, %artifact, %error, "cannot record an output's lineage");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_protocol::ledger::Metric;
    use weft_protocol::sched::JobId;

    fn ev(params: usize, metrics: usize, key_len: usize) -> RunEvent {
        RunEvent {
            run: JobId::new(1, 2),
            start: Some(RunStart {
                name: "n".into(),
                experiment: None,
                job: None,
                pipeline_run: None,
                step: None,
                start_ms: 1,
            }),
            params: (0..params)
                .map(|i| (format!("p{i}"), "v".repeat(6000)))
                .collect(),
            metrics: (0..metrics)
                .map(|i| Metric {
                    key: "k".repeat(key_len),
                    value: i as f64,
                    step: i as u64,
                    timestamp_ms: 0,
                })
                .collect(),
            tags: vec![("t".into(), "x".into())],
            end: Some(RunEnd {
                status: "succeeded".into(),
                end_ms: 2,
                node: None,
                cached: false,
            }),
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path(), "12D3KooWA").expect("open");
        (dir, s)
    }

    fn job_parts(
        params: Vec<(String, String)>,
        inputs: Vec<(weft_protocol::Hash, String)>,
        out: weft_protocol::Hash,
        cached: bool,
    ) -> (JobStatus, Submission, Assignment) {
        let id = JobId::new(9, 9);
        let spec = weft_protocol::JobSpec::from_yaml(
            "apiVersion: weft/v1\nkind: Job\nmetadata: {name: j, experiment: e}\nspec:\n  task:\n    wasm: {module: m:v1}\n",
        )
        .expect("spec");
        let sub = Submission {
            spec,
            local: false,
            run: Some(RunContext {
                experiment: None,
                params,
                pipeline_run: None,
                step: Some("train".into()),
            }),
        };
        let a = Assignment {
            job: id.clone(),
            attempt: 1,
            name: "j".into(),
            program: Program::Wasm {
                module: weft_protocol::Hash::of(b"m"),
                args: vec![],
                env: vec![],
            },
            inputs,
            outputs: vec![("/outputs/o".into(), None)],
            needs: weft_protocol::sched::Needs {
                executor: ExecutorKind::Wasm,
                cpu_millis: 1,
                memory_bytes: 1,
                gpu: None,
            },
            timeout_ms: 1,
            cache_key: weft_protocol::Hash::of(b"k"),
            metrics: None,
        };
        let status = JobStatus {
            id,
            name: "j".into(),
            coordinator: "12D3KooWA".into(),
            state: JobState::Succeeded,
            attempt: 1,
            node: Some("12D3KooWB".into()),
            reason: None,
            result: Some(weft_protocol::sched::JobResult {
                exit_code: Some(0),
                outputs: vec![("/outputs/o".into(), out)],
                cached,
                ..Default::default()
            }),
            cache_key: weft_protocol::Hash::of(b"k"),
            history: vec![],
            created_ms: 1,
            updated_ms: 2,
            revision: 1,
        };
        (status, sub, a)
    }

    #[test]
    fn lineage_is_written_per_output_small_and_once_for_a_cache_hit() {
        let (_d, s) = store();
        let input = (weft_protocol::Hash::of(b"in"), "/inputs/d".to_string());
        let out = weft_protocol::Hash::of(b"out");
        let small = vec![("lr".to_string(), "0.1".to_string())];
        let (st, sub, a) = job_parts(small.clone(), vec![input.clone()], out, false);
        lineage(&s, &st, &sub, &a, "12D3KooWB");
        let l = s.lineage_of(&out).expect("lineage");
        assert_eq!(l.len(), 1);
        assert_eq!(
            (
                &l[0].inputs,
                &l[0].params,
                l[0].step.as_deref(),
                l[0].node.as_str()
            ),
            (&vec![input.clone()], &small, Some("train"), "12D3KooWB")
        );
        assert_eq!(l[0].program, weft_protocol::Hash::of(b"m"));
        // a cache hit of an output with a lineage adds none; without one, adds it
        let (st, sub, a) = job_parts(small.clone(), vec![input.clone()], out, true);
        lineage(&s, &st, &sub, &a, "12D3KooWB");
        assert_eq!(s.lineage_of(&out).expect("lineage").len(), 1);
        let fresh = weft_protocol::Hash::of(b"fresh");
        let (st, sub, a) = job_parts(small, vec![input.clone()], fresh, true);
        lineage(&s, &st, &sub, &a, "12D3KooWB");
        assert_eq!(s.lineage_of(&fresh).expect("lineage").len(), 1);
        // large params stay in the run only
        let big: Vec<(String, String)> = (0..10)
            .map(|i| (format!("p{i}"), "v".repeat(6000)))
            .collect();
        let other = weft_protocol::Hash::of(b"other");
        let (st, sub, a) = job_parts(big, vec![input], other, false);
        lineage(&s, &st, &sub, &a, "12D3KooWB");
        let l = s.lineage_of(&other).expect("lineage");
        assert_eq!(l.len(), 1);
        assert!(l[0].params.is_empty());
        // a lineage too large to gossip is left out
        let many: Vec<(weft_protocol::Hash, String)> = (0..1024u32)
            .map(|i| {
                (
                    weft_protocol::Hash::of(&i.to_le_bytes()),
                    format!("/inputs/{}", "x".repeat(200) + &i.to_string()),
                )
            })
            .collect();
        let huge = weft_protocol::Hash::of(b"huge");
        let (st, sub, a) = job_parts(vec![], many, huge, false);
        lineage(&s, &st, &sub, &a, "12D3KooWB");
        assert!(s.lineage_of(&huge).expect("lineage").is_empty());
    }

    #[test]
    fn a_small_event_stays_whole() {
        let e = ev(0, 10, 4);
        assert_eq!(split_event(e.clone()), vec![e]);
    }

    #[test]
    fn a_large_event_is_cut_into_small_entries_in_order() {
        let e = ev(100, 5000, 250);
        let parts = split_event(e.clone());
        assert!(parts.len() > 10, "{}", parts.len());
        for p in &parts {
            let bytes = weft_protocol::encode(p, usize::MAX).expect("encode");
            assert!(bytes.len() <= RUN_ENTRY_BYTES, "{}", bytes.len());
            weft_protocol::Bounded::check_bounds(p).expect("within bounds");
        }
        assert!(parts[0].start.is_some() && parts.iter().skip(1).all(|p| p.start.is_none()));
        let last = parts.last().expect("last");
        assert!(last.end.is_some());
        assert!(parts.iter().filter(|p| p.end.is_some()).count() == 1);
        // nothing lost, nothing reordered
        let params: Vec<_> = parts.iter().flat_map(|p| p.params.clone()).collect();
        let metrics: Vec<_> = parts.iter().flat_map(|p| p.metrics.clone()).collect();
        let tags: Vec<_> = parts.iter().flat_map(|p| p.tags.clone()).collect();
        assert_eq!((params, metrics, tags), (e.params, e.metrics, e.tags));
    }
}
