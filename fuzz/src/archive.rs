//! Image archives around fuzzed layers, with digests that match, so the
//! fuzzer's bytes reach the layer unpacking instead of stopping at a digest
//! check; and the bound on how far an input may expand.

use std::io::Read;

use sha2::{Digest, Sha256};

/// Separates layers in the image target's input.
pub const LAYER_SEPARATOR: &[u8] = b"\n%weft-layer%\n";

/// Most layers taken from one input.
const MAX_LAYERS: usize = 4;

/// Most bytes all the gzip streams of one input may expand to.
pub const MAX_EXPANDED: u64 = 8 << 20;

/// The layers in `input`.
pub fn split_layers(input: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = input;
    while out.len() + 1 < MAX_LAYERS {
        match rest
            .windows(LAYER_SEPARATOR.len())
            .position(|w| w == LAYER_SEPARATOR)
        {
            Some(i) => {
                out.push(&rest[..i]);
                rest = &rest[i + LAYER_SEPARATOR.len()..];
            }
            None => break,
        }
    }
    out.push(rest);
    out
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The digest of a layer as the config lists it (of its uncompressed
/// bytes), or `None` when it expands past [`MAX_EXPANDED`].
fn diff_id(layer: &[u8]) -> Option<String> {
    if !layer.starts_with(&[0x1f, 0x8b]) {
        return Some(sha(layer));
    }
    let mut plain = Vec::new();
    // A broken stream gives what it decoded so far: the digest then fails,
    // as it would for a broken image.
    let _ = flate2::read::GzDecoder::new(layer)
        .take(MAX_EXPANDED + 1)
        .read_to_end(&mut plain);
    (plain.len() as u64 <= MAX_EXPANDED).then(|| sha(&plain))
}

fn add(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) -> Option<()> {
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    b.append_data(&mut h, name, data).ok()
}

fn config(diff_ids: &[String]) -> Vec<u8> {
    serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    })
    .to_string()
    .into_bytes()
}

/// A `docker save` archive of `layers`.
pub fn docker(layers: &[&[u8]]) -> Option<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut names = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let name = format!("l{i}/layer.tar");
        add(&mut b, &name, l)?;
        names.push(name);
        diff_ids.push(diff_id(l)?);
    }
    add(&mut b, "config.json", &config(&diff_ids))?;
    let manifest = serde_json::json!([{"Config": "config.json", "Layers": names}]);
    add(&mut b, "manifest.json", manifest.to_string().as_bytes())?;
    b.into_inner().ok()
}

/// An OCI image-layout archive of `layers`.
pub fn oci(layers: &[&[u8]]) -> Option<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for l in layers {
        let d = sha(l);
        add(&mut b, &format!("blobs/sha256/{}", &d[7..]), l)?;
        descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": l.len()
        }));
        diff_ids.push(diff_id(l)?);
    }
    let config = config(&diff_ids);
    let cd = sha(&config);
    add(&mut b, &format!("blobs/sha256/{}", &cd[7..]), &config)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": descs
    })
    .to_string()
    .into_bytes();
    let md = sha(&manifest);
    add(&mut b, &format!("blobs/sha256/{}", &md[7..]), &manifest)?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": manifest.len()}]
    });
    add(&mut b, "index.json", index.to_string().as_bytes())?;
    b.into_inner().ok()
}

/// Whether every gzip stream in `bytes`, and in what those expand to (an
/// archive's layers inside a gzipped archive), expands to at most `budget`
/// bytes in all. Every offset holding the gzip magic counts, whatever
/// member it belongs to, so no way of reading the archive finds more.
pub fn expansion_within(bytes: &[u8], budget: u64) -> bool {
    let mut left = budget;
    within(bytes, 0, &mut left)
}

fn within(bytes: &[u8], depth: u32, left: &mut u64) -> bool {
    for i in 0..bytes.len().saturating_sub(1) {
        if bytes[i] != 0x1f || bytes[i + 1] != 0x8b {
            continue;
        }
        let mut out = Vec::new();
        let _ = flate2::read::GzDecoder::new(&bytes[i..])
            .take(*left + 1)
            .read_to_end(&mut out);
        let n = out.len() as u64;
        if n > *left {
            return false;
        }
        *left -= n;
        if depth < 1 && !within(&out, depth + 1, left) {
            return false;
        }
    }
    true
}
