//! `weft s3 key`, run as a user would run it: keys land in a 0600 file,
//! `ls` never shows a secret, bad grants are refused with the reason.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

fn weft(home: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("WEFT_HOME")
        .output()
        .expect("run weft")
}

fn ok(home: &std::path::Path, args: &[&str]) -> String {
    let out = weft(home, args);
    assert!(
        out.status.success(),
        "weft {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

#[test]
fn keys_are_created_listed_without_secrets_and_removed() {
    let dir = tempfile::tempdir().expect("tmp");
    let home = dir.path().join("home");
    let out = ok(
        &home,
        &[
            "--json",
            "s3",
            "key",
            "create",
            "--name",
            "ci",
            "--bucket",
            "photos:read",
            "--bucket",
            "runs:w",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let access = v["access_key"].as_str().expect("access key").to_string();
    let secret = v["secret_key"].as_str().expect("secret").to_string();
    assert_eq!(v["buckets"]["photos"], "read");
    assert_eq!(v["buckets"]["runs"], "write");
    let file = home.join("s3-keys");
    assert_eq!(
        fs::metadata(&file).expect("file").permissions().mode() & 0o777,
        0o600
    );

    let ls = ok(&home, &["s3", "key", "ls"]);
    assert!(
        ls.contains(&access) && ls.contains("photos:read") && ls.contains("runs:write"),
        "{ls}"
    );
    assert!(!ls.contains(&secret), "ls shows the secret: {ls}");
    let ls = ok(&home, &["--json", "s3", "key", "ls"]);
    assert!(!ls.contains(&secret), "ls --json shows the secret: {ls}");

    // a given key pair, read-only on every bucket
    ok(
        &home,
        &[
            "s3",
            "key",
            "create",
            "--read-only",
            "--access-key",
            "AKIAEXAMPLEEXAMPLE01",
            "--secret-key",
            "0123456789abcdef0123456789abcdef",
        ],
    );
    assert!(ok(&home, &["s3", "key", "ls"]).contains("*:read"));

    for (bad, why) in [
        (vec!["--bucket", "photos:admin"], "r(ead) or w(rite)"),
        (vec!["--bucket", "Bad_Name:read"], "not a bucket name"),
        (vec!["--access-key", "short"], "16 to 128"),
        (
            vec!["--access-key", "AKIAEXAMPLEEXAMPLE01"],
            "already exists",
        ),
    ] {
        let mut args = vec!["s3", "key", "create"];
        args.extend(bad.iter().copied());
        let out = weft(&home, &args);
        assert!(!out.status.success(), "{bad:?} was taken");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{bad:?}: {err}");
    }

    ok(&home, &["s3", "key", "rm", &access]);
    assert!(!ok(&home, &["s3", "key", "ls"]).contains(&access));
    let out = weft(&home, &["s3", "key", "rm", &access]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no S3 key"));

    // a key file others can read is refused, naming the fix
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = weft(&home, &["s3", "key", "ls"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
}
