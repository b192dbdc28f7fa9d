//! Unit tests of the data plane below the fetch engine: the endpoint's
//! cluster-secret exchange, serving, the wire form of a response, and
//! verification into a partial blob.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bao_tree::io::outboard::PreOrderMemOutboard;
use bao_tree::io::sync::encode_ranges_validated;
use bytes::Bytes;
use libp2p::PeerId;
use libp2p::identity::Keypair;
use quinn::VarInt;
use tokio::sync::mpsc;
use weft_protocol::transfer::{GetRequest, GetResponse, GroupRanges, MAX_RESPONSE_BYTES};
use weft_protocol::{ErrorCode, Hash};

use super::endpoint::{self, read_frame, write_frame};
use super::pull::{Event, PullError, chunk_ranges, decode_all, decode_into};
use super::serve::{self, ServeCtx};
use super::{Faults, TransferError};
use crate::api::Metrics;
use crate::store::records::BlobKind;
use crate::store::{BLOCK_SIZE, Store};

const SECRET: [u8; 32] = [9; 32];

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// A serving node: a store holding `blobs`, and an endpoint serving it.
struct Server {
    peer: PeerId,
    addr: SocketAddr,
    store: Store,
    _dir: tempfile::TempDir,
    _task: tokio::task::JoinHandle<()>,
}

async fn server(secret: [u8; 32], faults: Faults, blobs: &[Vec<u8>]) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("store"), "server").expect("store");
    for b in blobs {
        store.add_bytes(b, BlobKind::Raw).expect("add");
    }
    let key = Keypair::generate_ed25519();
    let peer = key.public().to_peer_id();
    let bound = endpoint::bind(&key, "127.0.0.1:0".parse().expect("addr")).expect("bind");
    let ep = bound.endpoint;
    let addr = ep.local_addr().expect("addr");
    let ctx = Arc::new(ServeCtx::new(
        store.clone(),
        Arc::new(Metrics::default()),
        peer,
        secret,
        faults,
        bound.loopback_server,
        Arc::default(),
    ));
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Some(incoming) = ep.accept().await {
            conns.spawn(serve::connection(incoming, ctx.clone()));
        }
    });
    Server {
        peer,
        addr,
        store,
        _dir: dir,
        _task: task,
    }
}

fn client() -> (Keypair, quinn::Endpoint) {
    let key = Keypair::generate_ed25519();
    let ep = endpoint::bind(&key, "127.0.0.1:0".parse().expect("addr"))
        .expect("bind")
        .endpoint;
    (key, ep)
}

/// Sends one request; returns the header and the body.
async fn get(conn: &quinn::Connection, req: &GetRequest) -> (GetResponse, Vec<u8>) {
    let (mut send, mut recv) = conn.open_bi().await.expect("open");
    write_frame(&mut send, &req.to_frame().expect("frame"))
        .await
        .expect("write");
    send.finish().expect("finish");
    let header = read_frame(&mut recv, MAX_RESPONSE_BYTES)
        .await
        .expect("header");
    let body = recv.read_to_end(64 << 20).await.expect("body");
    (GetResponse::decode(&header).expect("decode"), body)
}

#[tokio::test]
async fn ranges_are_served_verified_and_the_encoding_is_pinned() {
    let blob = pattern(40_000);
    let id = Hash::of(&blob);
    let s = server(SECRET, Faults::default(), std::slice::from_ref(&blob)).await;
    let (key, ep) = client();
    let conn = endpoint::connect(&ep, &key, &SECRET, s.peer, s.addr)
        .await
        .expect("connect");
    // group 1 of 3, then the size proof added by the server
    let req = GetRequest {
        hash: id,
        ranges: GroupRanges::range(1, 2),
        size_proof: true,
    };
    let (header, body) = get(&conn, &req).await;
    let GetResponse::Found { size, tree, ranges } = header else {
        panic!("not found: {header:?}");
    };
    assert_eq!((size, tree), (40_000, false));
    assert_eq!(ranges, GroupRanges::range(1, 3));
    // the body: bao-tree pre-order, root parent, then group 1, parent, group 2
    // pre-order: the root's pair, the left subtree's pair, group 1, group 2
    assert_eq!(body.len(), 64 + 64 + 16384 + (40_000 - 32768));
    assert_eq!(&body[128..128 + 16384], &blob[16384..32768]);
    assert_eq!(&body[128 + 16384..], &blob[32768..]);
    assert_eq!(
        blake3::hash(&body).to_hex().as_str(),
        "642a8e2da6cd6a0b65c44a4edcfae11350d5a1a5a011e7aed0af5ae3d8e1d6e6",
        "response encoding changed"
    );
    let items = decode_all(id, size, &ranges, &body).expect("verifies");
    assert_eq!(items.iter().filter(|i| i.is_leaf()).count(), 2);
    // a blob the server does not hold
    let (header, body) = get(
        &conn,
        &GetRequest {
            hash: Hash::EMPTY,
            ranges: GroupRanges::range(0, 1),
            size_proof: false,
        },
    )
    .await;
    assert_eq!((header, body.len()), (GetResponse::NotFound, 0));
}

#[tokio::test]
async fn a_wrong_cluster_secret_gets_no_connection_and_no_bytes() {
    let blob = pattern(100_000);
    let id = Hash::of(&blob);
    let s = server(SECRET, Faults::default(), &[blob]).await;
    let (key, ep) = client();
    let err = endpoint::connect(&ep, &key, &[1; 32], s.peer, s.addr)
        .await
        .expect_err("wrong secret");
    assert!(matches!(err, TransferError::Auth { .. }), "{err}");

    // skipping the proof and asking at once gets nothing either: the first
    // stream is the proof, a request there closes the connection
    let conn = raw_connect(&ep, &key, s.peer, s.addr).await;
    let (mut send, mut recv) = conn.open_bi().await.expect("open");
    let req = GetRequest {
        hash: id,
        ranges: GroupRanges::range(0, 7),
        size_proof: false,
    };
    write_frame(&mut send, &req.to_frame().expect("frame"))
        .await
        .expect("write");
    let _ = send.finish();
    let got = recv.read_to_end(1 << 20).await;
    assert!(got.is_err(), "served without proof: {got:?}");
    let reason = conn.closed().await;
    assert!(reason.to_string().contains("proof"), "{reason}");

    // and the right key for the wrong peer id fails TLS
    let other = Keypair::generate_ed25519().public().to_peer_id();
    let err = endpoint::connect(&ep, &key, &SECRET, other, s.addr)
        .await
        .expect_err("wrong peer");
    assert!(matches!(err, TransferError::Connect { .. }), "{err}");
}

/// A TLS connection to the server's endpoint without the cluster proof.
async fn raw_connect(
    ep: &quinn::Endpoint,
    key: &Keypair,
    peer: PeerId,
    addr: SocketAddr,
) -> quinn::Connection {
    let mut tls = libp2p_tls::make_client_config(key, Some(peer)).expect("tls");
    tls.alpn_protocols = vec![weft_protocol::transfer::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls config");
    let config = quinn::ClientConfig::new(Arc::new(crypto));
    ep.connect_with(config, addr, "weft")
        .expect("connect")
        .await
        .expect("handshake")
}

#[tokio::test]
async fn malformed_requests_are_refused_and_the_connection_keeps_serving() {
    let blob = pattern(50_000);
    let id = Hash::of(&blob);
    let s = server(SECRET, Faults::default(), &[blob]).await;
    let (key, ep) = client();
    let conn = endpoint::connect(&ep, &key, &SECRET, s.peer, s.addr)
        .await
        .expect("connect");
    for garbage in [
        vec![0xff, 0xff, 0xff, 0xff],       // a length far over the limit
        vec![0, 0, 0, 3, 0xa1, 0x64, 0x68], // truncated CBOR
        vec![0, 0, 0, 1, 0x00],             // CBOR, not a request
        vec![0, 0],                         // a short prefix
    ] {
        let (mut send, mut recv) = conn.open_bi().await.expect("open");
        send.write_all(&garbage).await.expect("write");
        send.finish().expect("finish");
        let header = read_frame(&mut recv, MAX_RESPONSE_BYTES).await;
        match header.map(|h| GetResponse::decode(&h)) {
            Ok(Ok(GetResponse::Error { code, .. })) => assert_eq!(code, ErrorCode::BadRequest),
            other => panic!("{garbage:?}: {other:?}"),
        }
    }
    let (header, body) = get(
        &conn,
        &GetRequest {
            hash: id,
            ranges: GroupRanges::range(0, 4),
            size_proof: false,
        },
    )
    .await;
    assert!(matches!(header, GetResponse::Found { .. }));
    assert!(body.len() > 50_000);
    assert!(conn.close_reason().is_none());
    conn.close(VarInt::from_u32(0), b"done");
}

#[tokio::test]
async fn flipped_bytes_are_caught_and_never_written() {
    let blob = pattern(200_000);
    let id = Hash::of(&blob);
    let s = server(
        SECRET,
        Faults {
            flip_bytes: true,
            max_send_rate: None,
        },
        std::slice::from_ref(&blob),
    )
    .await;
    let (key, ep) = client();
    let conn = endpoint::connect(&ep, &key, &SECRET, s.peer, s.addr)
        .await
        .expect("connect");
    let all = GroupRanges::all(blob.len() as u64);
    let (_, body) = get(
        &conn,
        &GetRequest {
            hash: id,
            ranges: all.clone(),
            size_proof: false,
        },
    )
    .await;
    assert!(matches!(
        decode_all(id, blob.len() as u64, &all, &body),
        Err(PullError::Corrupt(_))
    ));

    // streamed into a partial blob: the groups before the flipped byte are
    // written and reported, the bad one and everything after are not
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("store"), "fetcher").expect("store");
    let (partial, _) = store
        .open_partial(&id, blob.len() as u64, BlobKind::Raw)
        .expect("partial");
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let (ev_tx, mut ev_rx) = mpsc::channel(64);
    let peer = s.peer;
    let decoder = tokio::task::spawn_blocking(move || {
        let r = decode_into(id, &partial, &all, rx, peer, &ev_tx);
        (r, partial)
    });
    for chunk in body.chunks(10_000) {
        if tx.send(Bytes::copy_from_slice(chunk)).await.is_err() {
            break;
        }
    }
    drop(tx);
    let (result, partial) = decoder.await.expect("join");
    assert!(matches!(result, Err(PullError::Corrupt(_))), "{result:?}");
    let mut verified = Vec::new();
    while let Ok(Event::Verified { start, end, .. }) = ev_rx.try_recv() {
        verified.extend(start..end);
    }
    // the flip sits in the middle of the first 256 KiB chunk: group 6
    assert_eq!(verified, (0..6).collect::<Vec<u64>>());
    let written = std::fs::read(store.dir().join("partial").join(format!("{id}.data")))
        .expect("partial data");
    assert_eq!(&written[..6 * 16384], &blob[..6 * 16384]);
    assert!(
        written[6 * 16384..].iter().all(|b| *b == 0),
        "unverified bytes were written"
    );
    drop(partial);
}

#[tokio::test]
async fn a_throttled_server_keeps_to_its_rate() {
    let blob = pattern(2 << 20);
    let id = Hash::of(&blob);
    let s = server(
        SECRET,
        Faults {
            flip_bytes: false,
            max_send_rate: Some(8 << 20),
        },
        &[blob],
    )
    .await;
    let (key, ep) = client();
    let conn = endpoint::connect(&ep, &key, &SECRET, s.peer, s.addr)
        .await
        .expect("connect");
    let t = std::time::Instant::now();
    let (_, body) = get(
        &conn,
        &GetRequest {
            hash: id,
            ranges: GroupRanges::all(2 << 20),
            size_proof: false,
        },
    )
    .await;
    assert!(body.len() > 2 << 20);
    // 2 MiB at 8 MiB/s: about 250 ms (the first chunk leaves at once)
    assert!(
        t.elapsed() > Duration::from_millis(180),
        "{:?}",
        t.elapsed()
    );
    drop(s.store);
}

#[test]
fn chunk_ranges_cover_whole_groups() {
    let r = chunk_ranges(&GroupRanges::from_ranges([(0, 1), (3, 5)]));
    let expected = bao_tree::ChunkRanges::from(bao_tree::ChunkNum(0)..bao_tree::ChunkNum(16))
        | bao_tree::ChunkRanges::from(bao_tree::ChunkNum(48)..bao_tree::ChunkNum(80));
    assert_eq!(r, expected);
    // the encoding of those ranges verifies against the id
    let blob = pattern(100_000);
    let ob = PreOrderMemOutboard::create(&blob, BLOCK_SIZE);
    let mut out = Vec::new();
    encode_ranges_validated(&blob[..], &ob, &r, &mut out).expect("encode");
    let ranges = GroupRanges::from_ranges([(0, 1), (3, 5)]);
    let items = decode_all(Hash::of(&blob), 100_000, &ranges, &out).expect("decode");
    assert_eq!(items.iter().filter(|i| i.is_leaf()).count(), 3);
    // trailing bytes are a violation
    out.push(0);
    assert!(matches!(
        decode_all(Hash::of(&blob), 100_000, &ranges, &out),
        Err(PullError::Violation(_))
    ));
}
