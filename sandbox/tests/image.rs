//! The busybox test image built by `scripts/build-test-image.sh` unpacks to
//! plain files and folders, with its links materialised and its second
//! layer's whiteout applied.

mod common;

use std::path::Path;

use weft_sandbox::image::{ImageError, UnpackOptions, unpack};

fn walk(root: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(root).expect("read") {
        let p = e.expect("entry").path();
        let m = std::fs::symlink_metadata(&p).expect("meta");
        assert!(
            m.is_file() || m.is_dir(),
            "{} is neither file nor folder",
            p.display()
        );
        if m.is_dir() {
            walk(&p, out);
        }
        out.push(p);
    }
}

#[test]
fn the_test_image_unpacks_to_plain_files() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("rootfs");
    let config = unpack(common::test_image(), &root, &UnpackOptions::default()).expect("unpacks");
    assert_eq!(config.cmd, ["sh", "-c", "echo hello from busybox"]);
    assert_eq!(config.os.as_deref(), Some("linux"));
    assert!(config.env.iter().any(|e| e.starts_with("PATH=")));

    let mut all = Vec::new();
    walk(&root, &mut all);
    let busybox = std::fs::read(root.join("bin/busybox")).expect("busybox");
    assert!(busybox.len() > 100_000);
    for link in ["bin/sh", "bin/ls", "bin/true", "usr/bin/env"] {
        assert_eq!(
            std::fs::read(root.join(link)).expect(link),
            busybox,
            "{link} is a copy of busybox"
        );
    }
    assert!(
        !root.join("etc/motd").exists(),
        "whited out by the second layer"
    );
    assert!(!root.join("etc/mtab").exists(), "dangling link dropped");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/weft-release")).expect("release"),
        "weft busybox test image\n"
    );

    // Unpacking again into the same, now non-empty, folder is refused.
    let again = unpack(common::test_image(), &root, &UnpackOptions::default());
    assert!(
        matches!(again, Err(ImageError::DestinationExists(_))),
        "{again:?}"
    );
    assert!(root.join("bin/busybox").exists());
}
