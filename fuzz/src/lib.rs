//! Fuzz targets for every decoder of bytes that come from a peer.
//!
//! Goals: each target in `fuzz_targets/` is a one-line call into
//! [`targets`], a function of `&[u8]` that must never panic, hang or
//! allocate without bound, whatever the bytes; where a decoded value can be
//! encoded again, the target also checks the round trip (decode, encode,
//! decode gives the same value). [`seeds`] builds each target's seed corpus
//! from the encoders and the values of the golden tests, so the seeds follow
//! the formats as they change. [`alloc`] turns one oversized allocation into
//! a crash libFuzzer records, since stable Rust has no sanitizer allocator.
//!
//! The image target compiles `sandbox/src/image.rs` here from its source:
//! the module is self-contained, and building the rest of `weft-sandbox`
//! (the WASM runtime) instrumented would multiply the build time.
//!
//! Non-goals: fuzzing the async stream plumbing of the node (the frame
//! readers are mirrored by [`frame::read`]) and the QUIC and libp2p stacks.

pub mod alloc;
pub mod archive;
pub mod frame;
pub mod seeds;
pub mod targets;

/// `weft_sandbox::image`, compiled from its source file.
#[path = "../../sandbox/src/image.rs"]
pub mod image;

/// Shared start-up of every target: the allocation limit and, when
/// `WEFT_FUZZ_SEEDS` names a folder, the target's seeds written there (each
/// checked to be accepted by its decoder first).
pub fn init(target: &str, alloc_limit: usize) {
    alloc::set_limit(alloc_limit);
    if let Some(dir) = std::env::var_os("WEFT_FUZZ_SEEDS")
        && let Err(e) = seeds::write(target, std::path::Path::new(&dir))
    {
        eprintln!("weft-fuzz: cannot write the seeds of {target}: {e}");
        std::process::exit(2);
    }
}
