//! Seed inputs for every target, built from the encoders and the values of
//! the protocol's golden tests (and the example job specs), so they follow
//! the formats as they change.

use std::fs;
use std::io;
use std::path::Path;

use weft_protocol::advert::{Executors, GpuInfo};
use weft_protocol::auth::{AuthProof, AuthRequest, AuthResponse, MAX_AUTH_BYTES};
use weft_protocol::codec;
use weft_protocol::job::GpuRequest;
use weft_protocol::ledger::{
    AliasMove, AliasName, Entry, EntryBody, LedgerGossip, Lineage, Metric, ModelName, ModelVersion,
    PipelineDef, PipelineRunRecord, PipelineState, RunEnd, RunEvent, RunStart, StepRecord,
    StepState, TriggerClaim,
};
use weft_protocol::rpc::{ErrorCode, HaveBlob};
use weft_protocol::sched::{
    Assignment, ExecutorKind, JobGossip, JobId, JobResult, JobState, JobStatus, Needs, Program,
    ResultSignature, Transition,
};
use weft_protocol::service::{
    MAX_SERVICE_HEAD_BYTES, Refusal, ReplicaId, ReplicaInfo, ReplicaState, ServiceChange,
    ServiceEvent, ServiceName, ServiceRequestHead, ServiceResponseHead,
};
use weft_protocol::tag::{Hlc, TagName, TagVersion};
use weft_protocol::transfer::{GetRequest, GetResponse, GroupRanges};
use weft_protocol::{
    EntryKind, Hash, JobSpec, NodeAdvert, Request, Response, TagUpdate, Tree, TreeEntry,
};

use crate::archive::LAYER_SEPARATOR;
use crate::frame;
use crate::targets;

/// Writes the seeds of `target` into `dir`, after checking that its
/// decoder accepts each one.
pub fn write(target: &str, dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    for (i, seed) in seeds(target).iter().enumerate() {
        if !targets::run(target, seed) {
            return Err(io::Error::other(format!(
                "seed {i} of {target} is refused by its decoder: the seeds no longer match the format"
            )));
        }
        fs::write(dir.join(format!("seed-{i:03}")), seed)?;
    }
    Ok(())
}

/// The seeds of `target`.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "rpc_request" => requests()
            .iter()
            .map(|r| frame::write(&r.encode().expect("encode")))
            .collect(),
        "rpc_response" => responses()
            .iter()
            .map(|r| frame::write(&r.encode().expect("encode")))
            .collect(),
        "gossip" => vec![
            prefixed(0, &advert().encode().expect("encode")),
            prefixed(0, &NodeAdvert::default().encode().expect("encode")),
            prefixed(1, &tag_update().encode().expect("encode")),
            prefixed(2, &job_gossip().encode().expect("encode")),
            prefixed(3, &ledger_gossip().encode().expect("encode")),
        ],
        "tree" => vec![
            sample_tree().encode().expect("encode"),
            Tree::default().encode().expect("encode"),
        ],
        "transfer" => transfer(),
        "bao" => bao(),
        "job_yaml" => JOB_SPECS.iter().map(|s| s.as_bytes().to_vec()).collect(),
        "job_cbor" => JOB_SPECS
            .iter()
            .map(|s| {
                JobSpec::from_yaml(s)
                    .and_then(|j| j.to_cbor())
                    .expect("example spec")
            })
            .collect(),
        "image" => images(),
        "pipeline_yaml" => PIPELINE_SPECS
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect(),
        "service_yaml" => SERVICE_SPECS
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect(),
        "service_head" => service_heads(),
        other => panic!("no fuzz target {other:?}"),
    }
}

fn prefixed(b: u8, rest: &[u8]) -> Vec<u8> {
    let mut v = vec![b];
    v.extend_from_slice(rest);
    v
}

fn tag(s: &str) -> TagName {
    TagName::new(s).expect("tag")
}

fn needs() -> Needs {
    Needs {
        executor: ExecutorKind::Wasm,
        cpu_millis: 250,
        memory_bytes: 1024,
        gpu: Some(GpuRequest {
            count: 1,
            memory: None,
            model: Some("H100".into()),
        }),
    }
}

fn result() -> JobResult {
    JobResult {
        exit_code: Some(0),
        outputs: vec![("/outputs/model".into(), Hash::EMPTY)],
        logs: Some(Hash::EMPTY),
        error: Some(("timeout".into(), "ran past 10m".into())),
        cached: false,
        wall_ms: 12,
        peak_memory: Some(4096),
        notes: vec!["memory limit not applied".into()],
        signature: Some(ResultSignature([7; 64])),
        metrics: vec![Metric {
            key: "loss".into(),
            value: 0.25,
            step: 3,
            timestamp_ms: 9,
        }],
    }
}

fn requests() -> Vec<Request> {
    let job = JobId::new(1, 2);
    vec![
        Request::Hello,
        Request::Ping { nonce: 7 },
        Request::TagSync {
            after: Some(tag("a:b")),
        },
        Request::TagSync { after: None },
        Request::Reserve {
            job: job.clone(),
            attempt: 1,
            needs: Box::new(needs()),
        },
        Request::Release {
            job: job.clone(),
            attempt: 1,
        },
        Request::Claim {
            job: job.clone(),
            attempt: 2,
        },
        Request::TaskUpdate {
            job: job.clone(),
            attempt: 1,
            state: JobState::Succeeded,
            reason: Some("done".into()),
            result: Some(Box::new(result())),
        },
        Request::CancelJob { job: job.clone() },
        Request::CancelTask {
            job: job.clone(),
            attempt: 3,
        },
        Request::GetJob { job },
        Request::Has {
            hashes: vec![Hash::EMPTY, Hash::of(b"x")],
            closure: true,
        },
        Request::Replicate {
            hash: Hash::EMPTY,
            replicas: 3,
        },
        Request::LedgerSync { after: None },
        Request::CancelPipeline {
            run: JobId::new(3, 4),
        },
        Request::LedgerSync {
            after: Some("0569726973".into()),
        },
        Request::LedgerPush {
            entries: ledger_entries(),
        },
        Request::StartReplica {
            service: service_name(),
            revision: 2,
            replica: ReplicaId(7),
        },
        Request::StopReplica {
            service: service_name(),
            replica: ReplicaId(u64::MAX),
            drain_ms: 5000,
        },
        Request::ServiceLogs {
            service: service_name(),
        },
    ]
}

fn service_name() -> ServiceName {
    "iris".parse().expect("service name")
}

fn replicas() -> Vec<ReplicaInfo> {
    vec![
        ReplicaInfo {
            id: ReplicaId(0x0102_0304_0506_0708),
            service: service_name(),
            revision: 2,
            state: ReplicaState::Ready,
            inflight: 1,
            ready_since_ms: Some(1_700_000_000_000),
            note: None,
        },
        ReplicaInfo {
            id: ReplicaId(7),
            service: service_name(),
            revision: 1,
            state: ReplicaState::Unhealthy,
            inflight: 0,
            ready_since_ms: None,
            note: Some("GET /healthz: 500".into()),
        },
    ]
}

/// The data plane's service stream: `0` then a request head frame, or `1`
/// then a response head frame (the magic is checked before either).
fn service_heads() -> Vec<Vec<u8>> {
    let req = ServiceRequestHead {
        service: service_name(),
        replica: ReplicaId(7),
        method: "POST".into(),
        uri: "/predict?x=1".into(),
        headers: vec![
            ("host".into(), "iris.weft".into()),
            ("content-type".into(), "application/json".into()),
        ],
    };
    let mut out = vec![prefixed(
        0,
        &frame::write(&codec::encode(&req, MAX_SERVICE_HEAD_BYTES).expect("encode")),
    )];
    for head in [
        ServiceResponseHead::Response {
            status: 200,
            headers: vec![("content-length".into(), "5".into())],
        },
        ServiceResponseHead::Refused {
            reason: Refusal::NotHere,
            message: "no replica 0000000000000007 here".into(),
        },
        ServiceResponseHead::Refused {
            reason: Refusal::Overloaded,
            message: String::new(),
        },
    ] {
        out.push(prefixed(
            1,
            &frame::write(&codec::encode(&head, MAX_SERVICE_HEAD_BYTES).expect("encode")),
        ));
    }
    out
}

fn responses() -> Vec<Response> {
    vec![
        Response::Hello(Box::new(advert())),
        Response::Pong { nonce: 7 },
        Response::Tags {
            tags: vec![(tag("a:b"), vec![tag_update().version])],
            more: true,
        },
        Response::Reserved { queued: 2 },
        Response::Assignment(Box::new(assignment())),
        Response::Ack,
        Response::Job(Box::new(job_status())),
        Response::Have {
            blobs: vec![HaveBlob {
                hash: Hash::EMPTY,
                size: 5,
                tree: true,
            }],
        },
        Response::Replicating { hash: Hash::EMPTY },
        Response::Ledger {
            entries: ledger_entries(),
            more: true,
        },
        Response::ServiceLogs {
            replicas: vec![
                (ReplicaId(7), "listening on :8080\n".into()),
                (ReplicaId(8), String::new()),
            ],
        },
        Response::error(ErrorCode::Busy, "later"),
    ]
}

fn assignment() -> Assignment {
    Assignment {
        job: JobId::new(1, 2),
        attempt: 1,
        name: "j".into(),
        program: Program::Container {
            image: Hash::EMPTY,
            command: vec!["sh".into(), "-c".into()],
            args: vec!["ls".into()],
            env: vec![("A".into(), "1".into())],
            workdir: Some("/tmp".into()),
        },
        inputs: vec![(Hash::EMPTY, "/inputs/data".into())],
        outputs: vec![("/outputs/model".into(), Some(tag("models/m:v1")))],
        needs: needs(),
        timeout_ms: 60_000,
        cache_key: Hash::of(b"key"),
        metrics: Some("/outputs/metrics.json".into()),
    }
}

fn advert() -> NodeAdvert {
    NodeAdvert {
        peer_id: "12D3KooW".into(),
        version: "0.1.0".into(),
        started_ms: 1_700_000_000_000,
        seq: 3,
        timestamp_ms: 1_700_000_004_000,
        listen_addrs: vec!["/ip4/10.0.0.1/tcp/4001".into()],
        data_plane_addr: Some("10.0.0.1:4002".into()),
        arch: "x86_64".into(),
        cpu_cores: 16,
        memory_total_bytes: 64 << 30,
        memory_free_bytes: 32 << 30,
        disk_free_bytes: 1 << 40,
        gpus: vec![GpuInfo {
            index: 0,
            vendor: "nvidia".into(),
            model: "H100".into(),
            memory_bytes: 80 << 30,
            memory_free_bytes: Some(79 << 30),
            uuid: Some("GPU-1".into()),
        }],
        executors: Executors {
            wasm: true,
            container_runtime: Some("runc".into()),
        },
        labels: [("zone".to_string(), "lab-a".to_string())].into(),
        running_tasks: 1,
        queued_tasks: 2,
        running: Some(vec![(JobId::new(1, 2), 1)]),
        replicas: Some(replicas()),
    }
}

fn ledger_entries() -> Vec<Entry> {
    let at = |body| Entry {
        hlc: Hlc {
            wall_ms: 1_700_000_000_000,
            counter: 1,
        },
        origin: "12D3KooW".into(),
        body,
    };
    let job = JobId::new(1, 2);
    vec![
        at(EntryBody::ModelVersion(ModelVersion {
            name: ModelName::new("iris").expect("name"),
            artifact: Hash::EMPTY,
            run: Some(job.clone()),
            source: Some("models/iris-latest:v1".into()),
        })),
        at(EntryBody::Alias(AliasMove {
            name: ModelName::new("iris").expect("name"),
            alias: AliasName::new("champion").expect("alias"),
            version: Some(2),
            from: Some(1),
            reason: Some("rollback".into()),
        })),
        at(EntryBody::Run(RunEvent {
            run: job.clone(),
            start: Some(RunStart {
                name: "train".into(),
                experiment: Some("iris".into()),
                job: Some(job.clone()),
                pipeline_run: Some(job.clone()),
                step: Some("train".into()),
                start_ms: 5,
            }),
            params: vec![("lr".into(), "0.5".into())],
            metrics: vec![Metric {
                key: "loss".into(),
                value: 0.5,
                step: 1,
                timestamp_ms: 6,
            }],
            tags: vec![("k".into(), "v".into())],
            end: Some(RunEnd {
                status: "succeeded".into(),
                end_ms: 7,
                node: Some("12D3KooX".into()),
                cached: true,
            }),
        })),
        at(EntryBody::Lineage(Lineage {
            artifact: Hash::EMPTY,
            path: "/outputs/model".into(),
            job: job.clone(),
            pipeline_run: None,
            step: Some("train".into()),
            program: Hash::EMPTY,
            executor: ExecutorKind::Wasm,
            inputs: vec![(Hash::EMPTY, "/inputs/data".into())],
            params: vec![("epochs".into(), "5".into())],
            node: "12D3KooX".into(),
            at_ms: 8,
        })),
        at(EntryBody::PipelineRun(PipelineRunRecord {
            id: job.clone(),
            pipeline: "iris".into(),
            experiment: Some("iris".into()),
            coordinator: "12D3KooW".into(),
            state: PipelineState::Running,
            params: vec![("epochs".into(), "5".into())],
            trigger: Some("tag datasets/iris:v1".into()),
            steps: vec![StepRecord {
                name: "train".into(),
                state: StepState::Cached,
                needs: vec!["split".into()],
                job: Some(job.clone()),
                started_ms: Some(1),
                ended_ms: Some(2),
                reason: None,
            }],
            reason: None,
            created_ms: 1,
            updated_ms: 2,
        })),
        at(EntryBody::Pipeline(PipelineDef {
            name: "iris".into(),
            spec: "apiVersion: weft/v1\nkind: Pipeline\n".into(),
            params: vec![],
            active: true,
        })),
        at(EntryBody::Trigger(TriggerClaim {
            pipeline: "iris".into(),
            tag: tag("datasets/iris:v1"),
            target: Hash::EMPTY,
            run: Some(job),
        })),
        at(EntryBody::Service(ServiceEvent {
            name: service_name(),
            change: ServiceChange::Apply {
                spec: SERVICE_SPECS[0].into(),
            },
        })),
        at(EntryBody::Service(ServiceEvent {
            name: service_name(),
            change: ServiceChange::Scale { replicas: 3 },
        })),
        at(EntryBody::Service(ServiceEvent {
            name: service_name(),
            change: ServiceChange::Rollback {
                to: 1,
                reason: Some("revision 2 not ready within 60s".into()),
            },
        })),
        at(EntryBody::Service(ServiceEvent {
            name: service_name(),
            change: ServiceChange::Remove,
        })),
    ]
}

fn ledger_gossip() -> LedgerGossip {
    LedgerGossip {
        entries: ledger_entries(),
    }
}

fn tag_update() -> TagUpdate {
    TagUpdate {
        name: tag("m/x:v1"),
        version: TagVersion {
            target: Some(Hash::EMPTY),
            hlc: Hlc {
                wall_ms: 1,
                counter: 2,
            },
            origin: "n".into(),
        },
    }
}

fn job_status() -> JobStatus {
    JobStatus {
        id: JobId::new(1, 2),
        name: "j".into(),
        coordinator: "c".into(),
        state: JobState::Succeeded,
        attempt: 1,
        node: Some("e".into()),
        reason: None,
        result: Some(result()),
        cache_key: Hash::EMPTY,
        history: vec![Transition {
            state: JobState::Pending,
            at_ms: 1,
            attempt: 0,
            node: None,
            reason: Some("no executor".into()),
        }],
        created_ms: 1,
        updated_ms: 2,
        revision: 3,
    }
}

fn job_gossip() -> JobGossip {
    JobGossip {
        statuses: vec![job_status()],
    }
}

fn sample_tree() -> Tree {
    let entry = |name: &str, kind, content: &[u8], executable| TreeEntry {
        name: name.into(),
        kind,
        hash: Hash::of(content),
        size: content.len() as u64,
        executable,
    };
    Tree::new(vec![
        entry("run.sh", EntryKind::File, b"#!/bin/sh\n", true),
        entry("a.txt", EntryKind::File, b"hello", false),
        entry("sub", EntryKind::Tree, b"", false),
    ])
    .expect("valid tree")
}

fn transfer() -> Vec<Vec<u8>> {
    let ranges = GroupRanges::try_from(vec![(0, 4), (9, 10)]).expect("canonical");
    let req = GetRequest {
        hash: Hash::EMPTY,
        ranges: ranges.clone(),
        size_proof: true,
    };
    let found = GetResponse::Found {
        size: 40_000,
        tree: false,
        ranges,
    };
    let err = GetResponse::Error {
        code: ErrorCode::Busy,
        message: "x".into(),
    };
    let proof = AuthProof::new(&[7; 32], b"prover", b"verifier");
    let auth = |r: &AuthResponse| frame::write(&codec::encode(r, MAX_AUTH_BYTES).expect("encode"));
    vec![
        prefixed(0, &req.to_frame().expect("frame")),
        prefixed(1, &found.to_frame().expect("frame")),
        prefixed(1, &GetResponse::NotFound.to_frame().expect("frame")),
        prefixed(1, &err.to_frame().expect("frame")),
        prefixed(
            2,
            &frame::write(&AuthRequest { proof }.encode().expect("encode")),
        ),
        prefixed(3, &auth(&AuthResponse::Accepted)),
        prefixed(3, &auth(&AuthResponse::Rejected)),
    ]
}

/// Inputs of the bao target: blob size (3 bytes), content seed, claimed
/// size choice, ranges, then edits (none: each seed verifies).
fn bao() -> Vec<Vec<u8>> {
    let seed = |size: u32, ranges: &[(u8, u8)]| {
        let mut v = size.to_le_bytes()[..3].to_vec();
        v.extend([7, 0, ranges.len() as u8]);
        for &(s, len) in ranges {
            v.extend([s, len]);
        }
        v
    };
    vec![
        seed(0, &[]),
        seed(1, &[(0, 0)]),
        seed(1024, &[(0, 0)]),
        seed(16 * 1024, &[(0, 0)]),
        seed(16 * 1024 + 1, &[(0, 1)]),
        seed(40_000, &[(0, 0), (2, 0)]),
        seed(200_000, &[(0, 3), (7, 2), (12, 0)]),
    ]
}

const JOB_SPECS: &[&str] = &[
    include_str!("../../examples/jobs/train.yaml"),
    include_str!("../../examples/jobs/evaluate.yaml"),
    include_str!("../../examples/jobs/wordcount.yaml"),
    include_str!("../../examples/jobs/hello-container.yaml"),
    r#"apiVersion: weft/v1
kind: Job
metadata: {name: train-mnist}
spec:
  task:
    wasm: {module: artifacts/train:v2, args: ["--epochs", "3"], env: {SEED: "1"}}
  inputs:  [{from: datasets/mnist:v1, path: /inputs/mnist}]
  outputs: [{path: /outputs/model, tag: models/mnist:v1}]
  resources: {cpu: 1, memory: 512Mi, gpu: {count: 1, memory: 16Gi, model: H100}}
  constraints: {zone: lab-a}
  timeout: 1h30m
  retries: 2
  cache: true
"#,
];

const PIPELINE_SPECS: &[&str] = &[
    r#"apiVersion: weft/v1
kind: Pipeline
metadata: {name: iris, experiment: iris}
spec:
  params: {epochs: "500", min: 0.9}
  triggers: [{tag: datasets/iris:v1}]
  steps:
    split:
      task: {wasm: {module: examples/split:v1}}
      inputs: [{from: datasets/iris:v1, path: /inputs/data}]
      outputs: [{name: parts, path: /outputs}]
    train:
      task: {wasm: {module: examples/train:v1, args: ["--epochs", "${params.epochs}"]}}
      inputs: [{from: steps.split.outputs.parts, path: /inputs/data}]
      outputs: [{name: model, path: /outputs/model, tag: models/iris-latest:v1}]
    evaluate:
      task: {wasm: {module: examples/evaluate:v1, env: {SEED: "${params.epochs}"}}}
      inputs:
        - {from: steps.train.outputs.model, path: /inputs/model}
        - {from: models/iris@champion, path: /inputs/champion}
      outputs: [{name: metrics, path: /outputs}]
      metrics: /outputs/metrics.json
    promote:
      when: "steps.evaluate.metrics.accuracy >= ${params.min} and steps.evaluate.metrics.loss < 1"
      register: {model: iris, from: steps.train.outputs.model, alias: champion}
"#,
    r#"apiVersion: weft/v1
kind: Pipeline
metadata: {name: fan}
spec:
  steps:
    a:
      task: {container: {image: images/busybox:1.36, command: [sh, -c], args: ["echo a"]}}
      resources: {cpu: 500m, memory: 64Mi}
      constraints: {zone: lab-a}
      timeout: 1m
      retries: 0
      cache: false
    b:
      task: {wasm: {module: m:v1}}
      needs: [a]
"#,
];

const SERVICE_SPECS: &[&str] = &[
    r#"apiVersion: weft/v1
kind: Service
metadata: {name: iris}
spec:
  replicas: 3
  task:
    wasm: {module: examples/iris-serve:v1, env: {A: b}}
  inputs: [{from: models/iris@champion, path: /inputs/model}]
  resources: {cpu: 1, memory: 256Mi}
  constraints: {zone: lab-a}
  timeout: 30s
  health: {http: /healthz, interval: 2s, timeout: 1s, failures: 3}
  update: {maxSurge: 1, maxUnavailable: 0, minHealthy: 1s, progressDeadline: 60s, autoRevert: true}
"#,
    r#"apiVersion: weft/v1
kind: Service
metadata: {name: web}
spec:
  task:
    container:
      image: images/busybox:1.36
      command: [httpd, -f, -p, "8080"]
      args: [-h, /www]
      env: {X: "1"}
      workdir: /www
      port: 8080
  resources: {gpu: {count: 1, model: H100}}
"#,
    r#"apiVersion: weft/v1
kind: Service
metadata: {name: fn}
spec:
  replicas: auto
  autoscale: {min: 0, max: 4, targetConcurrency: 8, idle: 30s}
  task: {wasm: {module: examples/httptest:v1}}
"#,
];

enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8], u32),
    Sym(&'a str, &'a str),
    Hard(&'a str, &'a str),
}

fn layer(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        match e {
            E::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, p, io::empty()).expect("dir");
            }
            E::File(p, data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, *data).expect("file");
            }
            E::Sym(p, t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, p, t).expect("symlink");
            }
            E::Hard(p, t) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                b.append_link(&mut h, p, t).expect("hard link");
            }
        }
    }
    b.into_inner().expect("finish")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).expect("gzip");
    gz.finish().expect("gzip")
}

fn images() -> Vec<Vec<u8>> {
    let base = layer(&[
        E::Dir("bin"),
        E::File("bin/sh", b"#!sh\n", 0o755),
        E::Sym("bin/ls", "sh"),
        E::Hard("bin/cat", "bin/sh"),
        E::Dir("etc"),
        E::File("etc/hosts", b"127.0.0.1 localhost\n", 0o644),
        E::File("etc/passwd", b"root:x:0:0::/:/bin/sh\n", 0o644),
        E::Sym("lib", "/usr/lib"),
        E::Dir("usr/lib"),
        E::File("usr/lib/libc.so", b"\x7fELF", 0o644),
    ]);
    let top = layer(&[
        E::File("etc/.wh..wh..opq", b"", 0o644),
        E::File("etc/hosts", b"10.0.0.1 node\n", 0o644),
        E::File("bin/.wh.cat", b"", 0o644),
        E::Sym("bin/sh2", "../bin/sh"),
    ]);
    let layers = |ls: &[&[u8]]| -> Vec<u8> {
        let mut v = Vec::new();
        for (i, l) in ls.iter().enumerate() {
            if i > 0 {
                v.extend_from_slice(LAYER_SEPARATOR);
            }
            v.extend_from_slice(l);
        }
        v
    };
    let docker = crate::archive::docker(&[&base, &top]).expect("docker archive");
    let oci = crate::archive::oci(&[&gzip(&base), &top]).expect("oci archive");
    vec![
        prefixed(1, &layers(&[&base])),
        prefixed(1, &layers(&[&base, &top])),
        prefixed(2, &layers(&[&gzip(&base), &top])),
        prefixed(0, &docker),
        prefixed(0, &gzip(&docker)),
        prefixed(0, &oci),
    ]
}
