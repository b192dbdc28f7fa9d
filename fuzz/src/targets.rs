//! One function per fuzz target. Each takes any bytes, returns whether its
//! decoder accepted them (the seeds must be accepted), and panics only when
//! a property fails: a decoded value that does not survive a round trip, a
//! manifest that decodes from non-canonical bytes, forged bytes that verify,
//! an image unpack that touches anything outside its destination.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bao_tree::io::sync::DecodeResponseIter;
use bao_tree::io::{BaoContentItem, Leaf};
use bao_tree::{BaoTree, BlockSize, ChunkNum, ChunkRanges};
use weft_protocol::auth::{AuthRequest, AuthResponse, MAX_AUTH_BYTES};
use weft_protocol::codec::{self, MAX_MESSAGE_BYTES};
use weft_protocol::sched::JobGossip;
use weft_protocol::transfer::{
    GetRequest, GetResponse, GroupRanges, MAX_RANGES, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, groups,
};
use weft_protocol::{
    CHUNK_GROUP_LOG, Hash, JobSpec, NodeAdvert, Request, Response, TagUpdate, Tree,
};

use crate::archive;
use crate::frame;
use crate::image::{self, ImageError, UnpackOptions};

/// Every target, by the name of its binary.
pub const ALL: &[&str] = &[
    "rpc_request",
    "rpc_response",
    "gossip",
    "tree",
    "transfer",
    "bao",
    "job_yaml",
    "job_cbor",
    "image",
    "pipeline_yaml",
    "service_yaml",
    "service_head",
];

/// Runs target `name` on `data`.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "rpc_request" => rpc_request(data),
        "rpc_response" => rpc_response(data),
        "gossip" => gossip(data),
        "tree" => tree(data),
        "transfer" => transfer(data),
        "bao" => bao(data),
        "job_yaml" => job_yaml(data),
        "job_cbor" => job_cbor(data),
        "image" => image(data),
        "pipeline_yaml" => pipeline_yaml(data),
        "service_yaml" => service_yaml(data),
        "service_head" => service_head(data),
        other => panic!("no fuzz target {other:?}"),
    }
}

/// A `/weft/rpc/1` request frame as a node reads it off a stream.
pub fn rpc_request(data: &[u8]) -> bool {
    let Ok(body) = frame::read(data, MAX_MESSAGE_BYTES) else {
        return false;
    };
    let Ok(req) = Request::decode(body) else {
        return false;
    };
    let bytes = req.encode().expect("a decoded request encodes again");
    let back = Request::decode(&bytes).expect("an encoded request decodes");
    assert_eq!(back, req, "a request changed in a round trip");
    true
}

/// A `/weft/rpc/1` response frame as a node reads it off a stream.
pub fn rpc_response(data: &[u8]) -> bool {
    let Ok(body) = frame::read(data, MAX_MESSAGE_BYTES) else {
        return false;
    };
    let Ok(resp) = Response::decode(body) else {
        return false;
    };
    let bytes = resp.encode().expect("a decoded response encodes again");
    let back = Response::decode(&bytes).expect("an encoded response decodes");
    assert_eq!(back, resp, "a response changed in a round trip");
    true
}

/// A gossip message; the first byte picks the topic (0 adverts, 1 tags,
/// 2 jobs, 3 ledger), the rest is the message as published.
pub fn gossip(data: &[u8]) -> bool {
    let Some((&topic, msg)) = data.split_first() else {
        return false;
    };
    match topic % 4 {
        0 => {
            let Ok(advert) = NodeAdvert::decode(msg) else {
                return false;
            };
            let bytes = advert.encode().expect("a decoded advert encodes again");
            assert_eq!(NodeAdvert::decode(&bytes).expect("decodes"), advert);
        }
        1 => {
            let Ok(update) = TagUpdate::decode(msg) else {
                return false;
            };
            let bytes = update.encode().expect("a decoded tag update encodes again");
            assert_eq!(TagUpdate::decode(&bytes).expect("decodes"), update);
        }
        3 => {
            let Ok(ledger) = weft_protocol::ledger::LedgerGossip::decode(msg) else {
                return false;
            };
            let bytes = ledger
                .encode()
                .expect("decoded ledger gossip encodes again");
            assert_eq!(
                weft_protocol::ledger::LedgerGossip::decode(&bytes).expect("decodes"),
                ledger
            );
        }
        _ => {
            let Ok(jobs) = JobGossip::decode(msg) else {
                return false;
            };
            let bytes = jobs.encode().expect("a decoded job gossip encodes again");
            assert_eq!(JobGossip::decode(&bytes).expect("decodes"), jobs);
        }
    }
    true
}

/// A tree manifest (a blob fetched from a peer).
pub fn tree(data: &[u8]) -> bool {
    let Ok(tree) = Tree::decode(data) else {
        return false;
    };
    let bytes = tree.encode().expect("a decoded manifest encodes again");
    assert_eq!(bytes, data, "a manifest decoded from non-canonical bytes");
    for e in tree.entries() {
        let n = &e.name;
        assert!(
            !n.is_empty() && n != "." && n != ".." && !n.contains(['/', '\0']) && n.len() <= 255,
            "a decoded manifest names {n:?}, which is not one path component"
        );
    }
    let rebuilt = Tree::new(tree.entries().to_vec()).expect("decoded entries build a tree");
    assert_eq!(rebuilt, tree);
    true
}

/// A data-plane or auth frame; the first byte picks the message
/// (0 `GetRequest`, 1 `GetResponse` header, 2 `AuthRequest`,
/// 3 `AuthResponse`), the rest is the frame as read off the stream.
pub fn transfer(data: &[u8]) -> bool {
    let Some((&kind, stream)) = data.split_first() else {
        return false;
    };
    match kind % 4 {
        0 => {
            let Ok(payload) = frame::read(stream, MAX_REQUEST_BYTES) else {
                return false;
            };
            let Ok(req) = GetRequest::decode(payload) else {
                return false;
            };
            assert!(req.ranges.range_count() <= MAX_RANGES);
            check_ranges(&req.ranges);
            let f = req.to_frame().expect("a decoded request frames again");
            let back = GetRequest::decode(frame::read(&f, MAX_REQUEST_BYTES).expect("frame"));
            assert_eq!(back.expect("decodes"), req);
        }
        1 => {
            let Ok(payload) = frame::read(stream, MAX_RESPONSE_BYTES) else {
                return false;
            };
            let Ok(resp) = GetResponse::decode(payload) else {
                return false;
            };
            if let GetResponse::Found { ranges, .. } = &resp {
                check_ranges(ranges);
            }
            let f = resp.to_frame().expect("a decoded header frames again");
            let back = GetResponse::decode(frame::read(&f, MAX_RESPONSE_BYTES).expect("frame"));
            assert_eq!(back.expect("decodes"), resp);
        }
        2 => {
            let Ok(payload) = frame::read(stream, MAX_AUTH_BYTES) else {
                return false;
            };
            let Ok(req) = AuthRequest::decode(payload) else {
                return false;
            };
            let bytes = req.encode().expect("a decoded auth request encodes again");
            assert_eq!(AuthRequest::decode(&bytes).expect("decodes"), req);
        }
        _ => {
            let Ok(payload) = frame::read(stream, MAX_AUTH_BYTES) else {
                return false;
            };
            let Ok(resp) = codec::decode::<AuthResponse>(payload, MAX_AUTH_BYTES) else {
                return false;
            };
            let bytes = codec::encode(&resp, MAX_AUTH_BYTES).expect("encodes again");
            assert_eq!(
                codec::decode::<AuthResponse>(&bytes, MAX_AUTH_BYTES).expect("decodes"),
                resp
            );
        }
    }
    true
}

/// Set operations on a decoded range set agree with each other and stay
/// canonical.
fn check_ranges(r: &GroupRanges) {
    let v: Vec<(u64, u64)> = r.clone().into();
    assert_eq!(
        GroupRanges::try_from(v).ok().as_ref(),
        Some(r),
        "not canonical"
    );
    assert_eq!(&r.union(r), r);
    assert_eq!(&r.intersection(r), r);
    assert!(r.difference(r).is_empty());
    let n = r.group_count();
    assert_eq!(&r.take_first(n), r);
    assert_eq!(r.take_first(n / 2).group_count(), n / 2);
    for (s, e) in r.iter() {
        assert!(r.contains(s) && r.contains(e - 1) && !r.contains(e));
    }
    let c = r.coarsen(2);
    assert!(c.range_count() <= 2 && c.difference(r).is_empty());
}

/// The chunk groups of verified streaming (as the node's store uses them).
const BLOCK_SIZE: BlockSize = BlockSize::from_chunk_log(CHUNK_GROUP_LOG);

/// Largest blob the bao target builds.
const MAX_BAO_BLOB: u64 = 300 * 1024;

/// The fetching side's decoding of a verified-streaming response
/// (`node/src/transfer/pull.rs`: `decode_all`), here on a real blob whose
/// encoding the input then damages. Input: 3 bytes of blob size, 1 byte
/// of content seed, 1 byte choosing the size the header claims, then up to
/// 4 range pairs (a count byte, then start and length bytes), then edits of
/// the encoding (2 bytes of position, 1 byte xored in; position `0xffff`
/// truncates, `0xfffe` appends). The decoder must refuse every forged
/// byte: whatever it accepts equals the blob, and with the last group in
/// the ranges it accepts only the true size.
pub fn bao(data: &[u8]) -> bool {
    let mut cur = Cursor(data);
    let size =
        u64::from(u32::from_le_bytes([cur.byte(), cur.byte(), cur.byte(), 0])) % (MAX_BAO_BLOB + 1);
    let seed = cur.byte();
    let claim = cur.byte();
    let content: Vec<u8> = (0..size)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 10) as u8)
        .collect();
    let claimed = match claim % 8 {
        0..=2 => size,
        3 => size.saturating_sub(1),
        4 => size + 1,
        5 => size.saturating_sub(1024),
        6 => size + 16 * 1024,
        _ => u64::from(claim) * 1024,
    };
    let count = cur.byte() % 5;
    let pairs: Vec<(u64, u64)> = (0..count)
        .map(|_| {
            let s = u64::from(cur.byte());
            (s, s + u64::from(cur.byte() % 32) + 1)
        })
        .collect();
    // The node asks only for groups of the blob as it knows it.
    let ranges = GroupRanges::from_ranges(pairs).intersection(&GroupRanges::all(claimed));
    let hash = Hash::of(&content);
    let outboard = bao_tree::io::outboard::PreOrderMemOutboard::create(&content, BLOCK_SIZE);
    let mut body = Vec::new();
    // The honest encoding under the true size; for a lying header, the
    // ranges clipped to what exists.
    let served = ranges.intersection(&GroupRanges::all(size));
    bao_tree::io::sync::encode_ranges_validated(
        &content[..],
        &outboard,
        &chunk_ranges(&served),
        &mut body,
    )
    .expect("an honest encoding of a blob in memory");
    let honest = body.clone();
    while cur.0.len() >= 3 {
        let pos = usize::from(u16::from_le_bytes([cur.byte(), cur.byte()]));
        let x = cur.byte();
        match pos {
            0xffff => body.truncate(body.len().saturating_sub(usize::from(x) + 1)),
            0xfffe => body.extend(std::iter::repeat_n(x, usize::from(x) + 1)),
            p if !body.is_empty() => {
                let at = p % body.len();
                body[at] ^= x.max(1);
            }
            _ => {}
        }
    }
    let Ok(items) = decode_all(hash, claimed, &ranges, &body) else {
        return false;
    };
    for item in &items {
        if let BaoContentItem::Leaf(Leaf { offset, data }) = item {
            let start = usize::try_from(*offset).expect("offset within a small blob");
            assert!(
                content.get(start..start + data.len()) == Some(&data[..]),
                "forged bytes at {offset} verified (size {size}, claimed {claimed}, {} of {} bytes edited)",
                body.len(),
                honest.len()
            );
        }
    }
    let n = groups(claimed);
    if n > 0 && ranges.contains(n - 1) {
        assert_eq!(claimed, size, "the last group verified a false size");
    }
    true
}

/// The chunk ranges (1 KiB chunks) covering chunk-group ranges; as
/// `node/src/transfer/pull.rs` computes them.
fn chunk_ranges(ranges: &GroupRanges) -> ChunkRanges {
    let mut out = ChunkRanges::empty();
    for (s, e) in ranges.iter() {
        out |= ChunkRanges::from(ChunkNum(s << CHUNK_GROUP_LOG)..ChunkNum(e << CHUNK_GROUP_LOG));
    }
    out
}

/// `decode_all` of `node/src/transfer/pull.rs`, with its errors as strings.
fn decode_all(
    hash: Hash,
    size: u64,
    ranges: &GroupRanges,
    body: &[u8],
) -> Result<Vec<BaoContentItem>, String> {
    let tree = BaoTree::new(size, BLOCK_SIZE);
    let chunks = chunk_ranges(ranges);
    let mut reader = body;
    let mut items = Vec::new();
    for item in DecodeResponseIter::new(hash.into(), tree, &mut reader, &chunks) {
        let item = item.map_err(|e| e.to_string())?;
        if let BaoContentItem::Leaf(Leaf { offset, data }) = &item
            && offset.saturating_add(data.len() as u64) > size
        {
            return Err("leaf past the blob's end".into());
        }
        items.push(item);
    }
    if !reader.is_empty() {
        return Err(format!("{} bytes after the encoding", reader.len()));
    }
    Ok(items)
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    /// The next byte, 0 once the input is used up.
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
}

/// A job spec as YAML (what the API receives), on any UTF-8.
pub fn job_yaml(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let Ok(spec) = JobSpec::from_yaml(text) else {
        return false;
    };
    let yaml = spec.to_yaml().expect("a parsed spec writes as YAML");
    let back = JobSpec::from_yaml(&yaml).expect("a written spec parses");
    assert_eq!(back, spec, "a spec changed in a YAML round trip:\n{yaml}");
    let cbor = spec.to_cbor().expect("a parsed spec encodes");
    assert_eq!(JobSpec::from_cbor(&cbor).expect("decodes"), spec);
    true
}

/// A pipeline spec as YAML (what the API receives), on any UTF-8: a spec
/// that parses has its steps in dependency order, and each step's job
/// builds from the defaults.
pub fn pipeline_yaml(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let Ok(p) = weft_protocol::pipeline::PipelineSpec::from_yaml(text) else {
        return false;
    };
    let params = p.params_with(&[]).expect("the defaults are valid params");
    let any = |_: &str, _: &str| Some(Hash::EMPTY);
    for (i, s) in p.steps.iter().enumerate() {
        for n in &s.needs {
            let at = p.steps.iter().position(|x| x.name == *n);
            assert!(
                at.is_some_and(|j| j < i),
                "{} needs {n}, not before it",
                s.name
            );
        }
        if s.job.is_some() {
            s.job_spec(&p, &params, &any, &[], false)
                .expect("a checked step builds its job");
        }
    }
    true
}

/// A service spec as YAML (what the API receives, and what every node
/// reads from its ledger), on any UTF-8: a spec that parses keeps its own
/// rules, parses the same again, and travels in a ledger entry.
pub fn service_yaml(data: &[u8]) -> bool {
    use weft_protocol::ledger::{Entry, EntryBody};
    use weft_protocol::service::{
        MAX_SERVICE_REPLICAS, Replicas, ServiceChange, ServiceEvent, ServiceSpec,
    };
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let Ok(s) = ServiceSpec::from_yaml(text) else {
        return false;
    };
    assert_eq!(
        s.autoscale.is_some(),
        s.replicas == Replicas::Auto,
        "autoscale given exactly with replicas: auto"
    );
    assert!(s.base_replicas() <= MAX_SERVICE_REPLICAS);
    if let Some(a) = &s.autoscale {
        assert!(a.min <= a.max && a.max <= MAX_SERVICE_REPLICAS && a.target_concurrency > 0);
    }
    if let Some(h) = &s.health {
        assert!(h.http.starts_with('/') && h.failures > 0);
    }
    assert!(s.update.max_surge > 0 || s.update.max_unavailable > 0);
    assert_eq!(ServiceSpec::from_yaml(text).expect("parses again"), s);
    // the text travels in a ledger entry and comes back the same
    let entry = Entry {
        hlc: Default::default(),
        origin: "12D3KooW".into(),
        body: EntryBody::Service(ServiceEvent {
            name: s.name.clone(),
            change: ServiceChange::Apply {
                spec: text.to_string(),
            },
        }),
    };
    let bytes = entry
        .encode()
        .expect("an entry with a checked spec encodes");
    assert_eq!(Entry::decode(&bytes).expect("and decodes"), entry);
    true
}

/// A service stream's head as the data plane reads it after the magic:
/// the first byte picks a request (`0`) or a response (`1`) head frame.
pub fn service_head(data: &[u8]) -> bool {
    use weft_protocol::service::{MAX_SERVICE_HEAD_BYTES, ServiceRequestHead, ServiceResponseHead};
    let Some((&which, rest)) = data.split_first() else {
        return false;
    };
    let Ok(body) = frame::read(rest, MAX_SERVICE_HEAD_BYTES) else {
        return false;
    };
    fn round_trip<T>(body: &[u8]) -> bool
    where
        T: serde::Serialize
            + serde::de::DeserializeOwned
            + weft_protocol::Bounded
            + PartialEq
            + std::fmt::Debug,
    {
        let Ok(v) = codec::decode_peer::<T>(body, MAX_SERVICE_HEAD_BYTES) else {
            return false;
        };
        let bytes = codec::encode(&v, MAX_SERVICE_HEAD_BYTES).expect("a decoded head encodes");
        let back: T = codec::decode_peer(&bytes, MAX_SERVICE_HEAD_BYTES).expect("and decodes");
        assert_eq!(back, v, "a head changed in a round trip");
        true
    }
    match which {
        0 => round_trip::<ServiceRequestHead>(body),
        1 => round_trip::<ServiceResponseHead>(body),
        _ => false,
    }
}

/// A job spec as CBOR (the form that travels between nodes).
pub fn job_cbor(data: &[u8]) -> bool {
    let Ok(spec) = JobSpec::from_cbor(data) else {
        return false;
    };
    let cbor = spec.to_cbor().expect("a decoded spec encodes again");
    assert_eq!(JobSpec::from_cbor(&cbor).expect("decodes"), spec);
    let yaml = spec.to_yaml().expect("a decoded spec writes as YAML");
    assert_eq!(JobSpec::from_yaml(&yaml).expect("parses"), spec, "{yaml}");
    true
}

/// Largest file the image target lets unpacking write (`RLIMIT_FSIZE`).
/// Above [`archive::MAX_EXPANDED`], so only a layer that writes more than
/// its own bytes reaches it.
pub const MAX_FILE_BYTES: u64 = 12 << 20;

/// An image archive, unpacked into a scratch folder. The first byte picks
/// the form: bits 0-1 `0` the rest is the archive itself, `1` the rest is
/// layers (split at [`archive::LAYER_SEPARATOR`]) wrapped in a `docker
/// save` archive with the right digests, `2`/`3` the same as an OCI layout;
/// bit 7 allows device files. Inputs whose gzip streams expand beyond
/// [`archive::MAX_EXPANDED`] in all are skipped, so a run writes a bounded
/// amount.
pub fn image(data: &[u8]) -> bool {
    let Some((&mode, rest)) = data.split_first() else {
        return false;
    };
    let archive = match mode & 3 {
        0 => Some(rest.to_vec()),
        1 => archive::docker(&archive::split_layers(rest)),
        _ => archive::oci(&archive::split_layers(rest)),
    };
    let Some(archive) = archive else {
        return false;
    };
    if !archive::expansion_within(&archive, archive::MAX_EXPANDED) {
        return false;
    }
    let opts = UnpackOptions {
        allow_devices: mode & 0x80 != 0,
        // the scratch volume is small: a bomb is refused, not written
        max_unpacked_bytes: Some(8 << 20),
    };
    let mut scratch = SCRATCH.lock().unwrap_or_else(|e| e.into_inner());
    let s = scratch.get_or_insert_with(Scratch::new);
    s.prepare();
    fs::write(&s.archive, &archive).expect("write the archive to the scratch folder");
    let dest = s.jail.join("root");
    let result = image::unpack(&s.archive, &dest, &opts);
    s.check_outside(&dest);
    let accepted = match result {
        Ok(_) => {
            assert_plain(&dest);
            true
        }
        Err(ImageError::Io { context, source }) if source.raw_os_error() == Some(libc::EFBIG) => {
            panic!(
                "unpacking wrote a file past {MAX_FILE_BYTES} bytes from an archive of {} bytes \
                 ({context}): a layer expands beyond its own bytes",
                archive.len()
            )
        }
        Err(_) => {
            assert!(
                fs::symlink_metadata(&dest).is_err(),
                "a refused image left its destination behind"
            );
            false
        }
    };
    if fs::symlink_metadata(&dest).is_ok() {
        fs::remove_dir_all(&dest).expect("remove the unpacked image");
    }
    accepted
}

static SCRATCH: Mutex<Option<Scratch>> = Mutex::new(None);

/// `DIR/image.tar`, and `DIR/jail/root` as the destination beside a canary
/// file, so that anything unpacking does outside the destination shows.
struct Scratch {
    _dir: tempfile::TempDir,
    archive: PathBuf,
    jail: PathBuf,
    canary: PathBuf,
}

const CANARY: &[u8] = b"outside the unpack root";

impl Scratch {
    fn new() -> Scratch {
        limit_file_size();
        let dir = tempfile::Builder::new()
            .prefix("weft-fuzz-image")
            .tempdir()
            .expect("create a scratch folder (set TMPDIR to a writable folder)");
        let jail = dir.path().join("jail");
        Scratch {
            archive: dir.path().join("image.tar"),
            canary: jail.join("canary"),
            jail,
            _dir: dir,
        }
    }

    fn prepare(&self) {
        if fs::symlink_metadata(&self.jail).is_err() {
            fs::create_dir(&self.jail).expect("create the jail");
        }
        fs::write(&self.canary, CANARY).expect("write the canary");
    }

    /// Nothing beside the destination was removed, added or changed.
    fn check_outside(&self, dest: &Path) {
        let jail = names(&self.jail);
        let dir = names(self.jail.parent().expect("the jail has a parent"));
        assert!(
            fs::read(&self.canary).ok().as_deref() == Some(CANARY),
            "unpacking removed or changed a file beside its destination (jail now holds {jail:?})"
        );
        let expected_jail: Vec<String> = if fs::symlink_metadata(dest).is_ok() {
            vec!["canary".into(), "root".into()]
        } else {
            vec!["canary".into()]
        };
        assert_eq!(
            jail, expected_jail,
            "unpacking wrote beside its destination"
        );
        assert_eq!(
            dir,
            ["image.tar", "jail"],
            "unpacking wrote above its destination"
        );
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|it| {
            it.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A large write fails with `EFBIG` instead of filling the disk.
fn limit_file_size() {
    let lim = libc::rlimit {
        rlim_cur: MAX_FILE_BYTES,
        rlim_max: MAX_FILE_BYTES,
    };
    // SAFETY: plain syscalls on this process with valid arguments.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
            panic!("cannot limit the file size: {}", io::Error::last_os_error());
        }
    }
}

/// Everything under an unpacked root is a regular file or a folder.
fn assert_plain(root: &Path) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).expect("read the unpacked image") {
            let e = e.expect("read the unpacked image");
            let m = fs::symlink_metadata(e.path()).expect("stat an unpacked entry");
            if m.is_dir() {
                stack.push(e.path());
            } else {
                assert!(
                    m.is_file(),
                    "{} is neither a file nor a folder",
                    e.path().display()
                );
            }
        }
    }
}
