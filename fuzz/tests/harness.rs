//! The harness itself: seeds are accepted, the helpers bound what they
//! should, and the targets tell forged input from real.

use std::io::Write;

use weft_fuzz::archive::{self, LAYER_SEPARATOR, MAX_EXPANDED};
use weft_fuzz::{frame, seeds, targets};

#[test]
fn every_seed_is_accepted_by_its_decoder() {
    for t in targets::ALL {
        let s = seeds::seeds(t);
        assert!(!s.is_empty(), "{t} has no seeds");
        for (i, seed) in s.iter().enumerate() {
            assert!(targets::run(t, seed), "seed {i} of {t} refused");
        }
    }
}

#[test]
fn frames_are_read_as_the_node_reads_them() {
    let f = frame::write(b"abc");
    assert_eq!(frame::read(&f, 10).expect("frame"), b"abc");
    let mut longer = f.clone();
    longer.extend_from_slice(b"next");
    assert_eq!(frame::read(&longer, 10).expect("frame"), b"abc");
    assert!(frame::read(&f[..5], 10).is_err(), "truncated body");
    assert!(frame::read(&f[..3], 10).is_err(), "truncated prefix");
    assert!(frame::read(&f, 2).is_err(), "over the limit");
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(data).expect("gzip");
    gz.finish().expect("gzip")
}

#[test]
fn expansion_is_bounded_across_nested_gzip() {
    let small = gzip(&[0u8; 1 << 20]);
    assert!(archive::expansion_within(&small, MAX_EXPANDED));
    let bomb = gzip(&vec![0u8; MAX_EXPANDED as usize + 1]);
    assert!(bomb.len() < 64 << 10);
    assert!(!archive::expansion_within(&bomb, MAX_EXPANDED));
    // gzip layers inside a gzipped archive count, and add up
    let layer = gzip(&vec![0u8; (MAX_EXPANDED * 5 / 8) as usize]);
    let one = gzip(&archive::docker(&[&layer]).expect("archive"));
    assert!(archive::expansion_within(&one, MAX_EXPANDED));
    let two = gzip(&archive::docker(&[&layer, &layer]).expect("archive"));
    assert!(!archive::expansion_within(&two, MAX_EXPANDED));
}

#[test]
fn layers_are_split_at_the_separator() {
    let mut input = b"a".to_vec();
    for l in [&b"b"[..], b"", b"c", b"d"] {
        input.extend_from_slice(LAYER_SEPARATOR);
        input.extend_from_slice(l);
    }
    let layers = archive::split_layers(&input);
    assert_eq!(layers.len(), 4, "at most four layers");
    assert_eq!(&layers[..3], [&b"a"[..], b"b", b""]);
    assert!(layers[3].starts_with(b"c") && layers[3].ends_with(b"d"));
}

#[test]
fn bao_refuses_edited_encodings() {
    // 40000 bytes (3 groups), all asked for, then one edit
    let base = [0x40, 0x9c, 0x00, 7, 0, 1, 0, 2];
    assert!(targets::bao(&base));
    let mut refused = 0;
    for pos in [0u16, 63, 64, 500, 16 * 1024 + 200, 0xffff, 0xfffe] {
        let mut input = base.to_vec();
        input.extend(pos.to_le_bytes());
        input.push(1);
        refused += usize::from(!targets::bao(&input));
    }
    assert_eq!(refused, 7, "every edit of the encoding is refused");
    // a header claiming one byte more, with the last group asked for
    let mut lying = base.to_vec();
    lying[4] = 4;
    lying[5] = 1;
    lying[6] = 2;
    assert!(!targets::bao(&lying));
}
