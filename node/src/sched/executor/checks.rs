//! Checks on an assignment before anything of it is run or written.
//!
//! An assignment comes from a peer and is trusted no more than anything else
//! a peer sends: a member may be compromised or buggy. It must be for the
//! job and attempt that was reserved (the claim went to that reservation's
//! coordinator, and the reply came back on the same authenticated stream),
//! ask for no more than was reserved, name its inputs and outputs with
//! parsed [`InputPath`]s and [`OutputPath`]s, none of them overlapping, and
//! stay within the bounds below.

use std::cmp::Ordering;

use weft_protocol::job::{
    AbsPath, Arg, EnvName, EnvValue, InputPath, JobName, MAX_TIMEOUT, OutputPath,
};
use weft_protocol::sched::{Assignment, ExecutorKind, JobId, Needs, Program};
use weft_protocol::{Hash, TagName};

/// Most inputs an assignment may list.
pub(crate) const MAX_INPUTS: usize = 1024;
/// Most outputs an assignment may list.
pub(crate) const MAX_OUTPUTS: usize = 256;
/// Most command-line words (container command and args together).
pub(crate) const MAX_ARGS: usize = 4096;
/// Most environment variables.
pub(crate) const MAX_ENV: usize = 4096;
/// Most bytes of command line and environment together.
pub(crate) const MAX_ARGV_BYTES: usize = 1 << 20;

/// An assignment that passed [`check`]: its paths parsed.
#[derive(Debug)]
pub(crate) struct Checked {
    pub(crate) inputs: Vec<(Hash, InputPath)>,
    pub(crate) outputs: Vec<(OutputPath, Option<TagName>)>,
    /// Where the task leaves its metrics, and whether the spec named it
    /// (rather than the default).
    pub(crate) metrics: Option<(OutputPath, bool)>,
    /// The GPUs the task gets: those held for it, as many as it asks.
    pub(crate) gpus: Vec<u32>,
}

/// What was reserved for the attempt a claim was sent for.
pub(crate) struct Reserved<'a> {
    pub(crate) job: &'a JobId,
    pub(crate) attempt: u32,
    pub(crate) needs: &'a Needs,
    /// GPUs held for it: index, memory, model.
    pub(crate) gpus: &'a [(u32, u64, String)],
}

/// Checks `a` against what was reserved; the refusal says why.
pub(crate) fn check(a: &Assignment, reserved: &Reserved<'_>) -> Result<Checked, String> {
    if &a.job != reserved.job || a.attempt != reserved.attempt {
        return Err(format!(
            "the assignment is for job {} attempt {}, but the claim was for job {} attempt {}",
            a.job, a.attempt, reserved.job, reserved.attempt
        ));
    }
    if a.timeout_ms == 0 || a.timeout_ms > MAX_TIMEOUT.as_millis() as u64 {
        return Err(format!(
            "timeout of {} ms is outside 1 ms to {} ms",
            a.timeout_ms,
            MAX_TIMEOUT.as_millis()
        ));
    }
    a.name
        .parse::<JobName>()
        .map_err(|e| format!("job name: {e}"))?;
    check_program(a)?;
    let gpus = check_needs(&a.needs, reserved)?;
    if a.inputs.len() > MAX_INPUTS {
        return Err(format!(
            "{} inputs, more than the limit of {MAX_INPUTS}",
            a.inputs.len()
        ));
    }
    if a.outputs.len() > MAX_OUTPUTS {
        return Err(format!(
            "{} outputs, more than the limit of {MAX_OUTPUTS}",
            a.outputs.len()
        ));
    }
    let mut inputs = Vec::with_capacity(a.inputs.len());
    for (id, path) in &a.inputs {
        let p: InputPath = path.parse().map_err(|e| format!("input: {e}"))?;
        inputs.push((*id, p));
    }
    check_no_overlap(&inputs)?;
    let mut outputs = Vec::with_capacity(a.outputs.len());
    for (path, tag) in &a.outputs {
        let p: OutputPath = path.parse().map_err(|e| format!("output: {e}"))?;
        outputs.push((p, tag.clone()));
    }
    let metrics = match &a.metrics {
        Some(path) => {
            let p: OutputPath = path.parse().map_err(|e| format!("metrics: {e}"))?;
            let named = path != super::DEFAULT_METRICS_FILE;
            Some((p, named))
        }
        None => None,
    };
    Ok(Checked {
        inputs,
        outputs,
        metrics,
        gpus,
    })
}

fn check_program(a: &Assignment) -> Result<(), String> {
    let (kind, words, env): (ExecutorKind, Vec<&String>, &[(String, String)]) = match &a.program {
        Program::Wasm { args, env, .. } => (ExecutorKind::Wasm, args.iter().collect(), env),
        Program::Container {
            command,
            args,
            env,
            workdir,
            ..
        } => {
            if let Some(w) = workdir {
                w.parse::<AbsPath>().map_err(|e| format!("workdir: {e}"))?;
            }
            (
                ExecutorKind::Container,
                command.iter().chain(args).collect(),
                env,
            )
        }
    };
    if kind != a.needs.executor {
        return Err(format!(
            "a {kind:?} program under needs for the {:?} executor",
            a.needs.executor
        ));
    }
    if words.len() > MAX_ARGS {
        return Err(format!(
            "{} arguments, more than the limit of {MAX_ARGS}",
            words.len()
        ));
    }
    if env.len() > MAX_ENV {
        return Err(format!(
            "{} environment variables, more than the limit of {MAX_ENV}",
            env.len()
        ));
    }
    let mut bytes = 0usize;
    for w in words {
        w.parse::<Arg>().map_err(|e| format!("argument: {e}"))?;
        bytes += w.len() + 1;
    }
    for (k, v) in env {
        k.parse::<EnvName>()
            .map_err(|e| format!("environment: {e}"))?;
        v.parse::<EnvValue>()
            .map_err(|e| format!("environment {k}: {e}"))?;
        bytes += k.len() + v.len() + 2;
    }
    if bytes > MAX_ARGV_BYTES {
        return Err(format!(
            "{bytes} bytes of arguments and environment, more than the limit of {MAX_ARGV_BYTES}"
        ));
    }
    Ok(())
}

/// The assignment's needs against the reservation's; returns the GPUs to give.
fn check_needs(needs: &Needs, reserved: &Reserved<'_>) -> Result<Vec<u32>, String> {
    let r = reserved.needs;
    if needs.executor != r.executor {
        return Err(format!(
            "needs the {:?} executor, {:?} was reserved",
            needs.executor, r.executor
        ));
    }
    if needs.cpu_millis > r.cpu_millis {
        return Err(format!(
            "needs {} thousandths of a core, {} were reserved",
            needs.cpu_millis, r.cpu_millis
        ));
    }
    if needs.memory_bytes > r.memory_bytes {
        return Err(format!(
            "needs {} bytes of memory, {} were reserved",
            needs.memory_bytes, r.memory_bytes
        ));
    }
    let Some(g) = &needs.gpu else {
        return Ok(Vec::new());
    };
    let reserved_count = r.gpu.as_ref().map_or(0, |g| g.count);
    if g.count > reserved_count || g.count as usize > reserved.gpus.len() {
        return Err(format!(
            "needs {} GPUs, {} were reserved",
            g.count, reserved_count
        ));
    }
    let mut out = Vec::with_capacity(g.count as usize);
    for (index, memory, model) in reserved.gpus.iter().take(g.count as usize) {
        if !crate::sched::placement::gpu_fits(g, *memory, model) {
            return Err(format!(
                "needs GPUs {g:?}, which the GPU held for it ({model}, {memory} bytes) is not"
            ));
        }
        out.push(*index);
    }
    Ok(out)
}

/// Refuses two inputs at the same path, or one inside another.
fn check_no_overlap(inputs: &[(Hash, InputPath)]) -> Result<(), String> {
    let mut paths: Vec<(Vec<&str>, &InputPath)> = inputs
        .iter()
        .map(|(_, p)| {
            let parts = p.relative().split('/').filter(|s| !s.is_empty()).collect();
            (parts, p)
        })
        .collect();
    paths.sort_by(|a, b| cmp_parts(&a.0, &b.0));
    // in this order a folder comes right before what it holds
    for w in paths.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if b.0.starts_with(&a.0) {
            return Err(format!(
                "inputs {} and {} overlap; each needs its own path",
                a.1, b.1
            ));
        }
    }
    Ok(())
}

fn cmp_parts(a: &[&str], b: &[&str]) -> Ordering {
    a.iter()
        .map(|s| s.as_bytes())
        .cmp(b.iter().map(|s| s.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_protocol::job::{ByteSize, GpuRequest};

    fn needs() -> Needs {
        Needs {
            executor: ExecutorKind::Wasm,
            cpu_millis: 1000,
            memory_bytes: 1 << 30,
            gpu: None,
        }
    }

    fn job() -> JobId {
        JobId::new(1_700_000_000_000, 7)
    }

    fn assignment() -> Assignment {
        Assignment {
            job: job(),
            attempt: 1,
            name: "ok".into(),
            program: Program::Wasm {
                module: Hash::of(b"m"),
                args: vec!["a".into()],
                env: vec![("K".into(), "v".into())],
            },
            inputs: vec![
                (Hash::of(b"i"), "/inputs/data".into()),
                (Hash::of(b"j"), "/inputs/data2".into()),
            ],
            outputs: vec![("/outputs/model".into(), None)],
            needs: needs(),
            timeout_ms: 60_000,
            cache_key: Hash::of(b"k"),
            metrics: None,
        }
    }

    fn run(
        a: &Assignment,
        reserved_needs: &Needs,
        gpus: &[(u32, u64, String)],
    ) -> Result<Checked, String> {
        let j = job();
        check(
            a,
            &Reserved {
                job: &j,
                attempt: 1,
                needs: reserved_needs,
                gpus,
            },
        )
    }

    #[test]
    fn an_honest_assignment_passes_with_its_paths_parsed() {
        let c = run(&assignment(), &needs(), &[]).expect("honest");
        assert_eq!(c.inputs[0].1.relative(), "data");
        assert_eq!(c.outputs[0].0.relative(), "model");
        assert!(c.gpus.is_empty());
    }

    #[test]
    fn forged_assignments_are_refused_with_the_reason() {
        type Forge = Box<dyn Fn(&mut Assignment)>;
        let cases: Vec<(&str, Forge, &str)> = vec![
            (
                "dotdot input",
                Box::new(|a| a.inputs[0].1 = "/inputs/../../root/.ssh/authorized_keys".into()),
                "'..' is not allowed",
            ),
            (
                "input outside",
                Box::new(|a| a.inputs[0].1 = "/etc/passwd".into()),
                "must be /inputs",
            ),
            (
                "relative input",
                Box::new(|a| a.inputs[0].1 = "inputs/x".into()),
                "absolute",
            ),
            (
                "NUL input",
                Box::new(|a| a.inputs[0].1 = "/inputs/a\0b".into()),
                "invalid path",
            ),
            (
                "empty component",
                Box::new(|a| a.inputs[0].1 = "/inputs//x".into()),
                "empty component",
            ),
            (
                "dotdot output",
                Box::new(|a| a.outputs[0].0 = "/outputs/../../etc/shadow".into()),
                "'..' is not allowed",
            ),
            (
                "output outside",
                Box::new(|a| a.outputs[0].0 = "/etc/shadow".into()),
                "must be /outputs",
            ),
            (
                "overlapping inputs",
                Box::new(|a| a.inputs[1].1 = "/inputs/data/x".into()),
                "overlap",
            ),
            (
                "same input twice",
                Box::new(|a| a.inputs[1].1 = "/inputs/data".into()),
                "overlap",
            ),
            (
                "root and a child",
                Box::new(|a| a.inputs[1].1 = "/inputs".into()),
                "overlap",
            ),
            (
                "other job",
                Box::new(|a| a.job = JobId::new(1_700_000_000_001, 7)),
                "the claim was for job",
            ),
            (
                "other attempt",
                Box::new(|a| a.attempt = 2),
                "the claim was for job",
            ),
            (
                "more cpu",
                Box::new(|a| a.needs.cpu_millis = 1001),
                "thousandths of a core",
            ),
            (
                "more memory",
                Box::new(|a| a.needs.memory_bytes = (1 << 30) + 1),
                "bytes of memory",
            ),
            (
                "a GPU not reserved",
                Box::new(|a| {
                    a.needs.gpu = Some(GpuRequest {
                        count: 1,
                        memory: None,
                        model: None,
                    })
                }),
                "GPUs",
            ),
            (
                "other executor",
                Box::new(|a| a.needs.executor = ExecutorKind::Container),
                "executor",
            ),
            ("zero timeout", Box::new(|a| a.timeout_ms = 0), "timeout"),
            (
                "huge timeout",
                Box::new(|a| a.timeout_ms = u64::MAX),
                "timeout",
            ),
            ("bad name", Box::new(|a| a.name = "../x".into()), "job name"),
            (
                "too many inputs",
                Box::new(|a| {
                    a.inputs = (0..=MAX_INPUTS)
                        .map(|i| (Hash::of(b"x"), format!("/inputs/{i}")))
                        .collect()
                }),
                "inputs, more than",
            ),
            (
                "too many outputs",
                Box::new(|a| {
                    a.outputs = (0..=MAX_OUTPUTS)
                        .map(|i| (format!("/outputs/{i}"), None))
                        .collect()
                }),
                "outputs, more than",
            ),
            (
                "too many args",
                Box::new(|a| {
                    if let Program::Wasm { args, .. } = &mut a.program {
                        *args = vec!["a".into(); MAX_ARGS + 1]
                    }
                }),
                "arguments, more than",
            ),
            (
                "huge args",
                Box::new(|a| {
                    if let Program::Wasm { args, .. } = &mut a.program {
                        *args = vec!["a".repeat(MAX_ARGV_BYTES)]
                    }
                }),
                "bytes of arguments",
            ),
            (
                "NUL arg",
                Box::new(|a| {
                    if let Program::Wasm { args, .. } = &mut a.program {
                        *args = vec!["a\0".into()]
                    }
                }),
                "NUL",
            ),
            (
                "bad env name",
                Box::new(|a| {
                    if let Program::Wasm { env, .. } = &mut a.program {
                        *env = vec![("A=B".into(), "v".into())]
                    }
                }),
                "environment",
            ),
        ];
        for (what, forge, expect) in cases {
            let mut a = assignment();
            forge(&mut a);
            let err = run(&a, &needs(), &[]).expect_err(what);
            assert!(err.contains(expect), "{what}: {err}");
        }
    }

    #[test]
    fn gpus_are_checked_against_the_devices_held() {
        let mut reserved = needs();
        reserved.gpu = Some(GpuRequest {
            count: 2,
            memory: Some(ByteSize(8 << 30)),
            model: None,
        });
        let held = [
            (3, 16u64 << 30, "test-gpu".to_string()),
            (5, 16 << 30, "test-gpu".into()),
        ];
        let mut a = assignment();
        a.needs.gpu = Some(GpuRequest {
            count: 1,
            memory: Some(ByteSize(8 << 30)),
            model: None,
        });
        assert_eq!(run(&a, &reserved, &held).expect("fewer GPUs").gpus, [3]);
        a.needs.gpu = Some(GpuRequest {
            count: 3,
            memory: None,
            model: None,
        });
        assert!(
            run(&a, &reserved, &held)
                .expect_err("more GPUs")
                .contains("GPUs")
        );
        a.needs.gpu = Some(GpuRequest {
            count: 1,
            memory: Some(ByteSize(80 << 30)),
            model: None,
        });
        assert!(
            run(&a, &reserved, &held)
                .expect_err("bigger GPU")
                .contains("GPUs")
        );
        a.needs.gpu = Some(GpuRequest {
            count: 1,
            memory: None,
            model: Some("H100".into()),
        });
        assert!(
            run(&a, &reserved, &held)
                .expect_err("other model")
                .contains("GPUs")
        );
    }
}
