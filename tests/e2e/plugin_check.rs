//! `posta plugin check` from the command line.

use std::process::Command;

use posta_e2e::{posta_bin, test_plugin};

fn check(path: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(posta_bin())
        .args(["plugin", "check"])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn accepts_a_transport_and_says_what_it_needs() {
    let (ok, stdout, stderr) = check(&test_plugin("posta-fixture"));
    assert!(ok, "{stderr}");
    assert!(stdout.contains("kind: transport"), "{stdout}");
    assert!(stdout.contains("contract: posta:plugin@0.1.0"), "{stdout}");
    assert!(stdout.contains("posta:plugin/host@0.1.0"), "{stdout}");
    assert!(
        stdout.contains("capabilities.connect"),
        "the fixture opens sockets: {stdout}"
    );
    // What it costs: its size, and an instance really made.
    let field = |name: &str| -> f64 {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} in {stdout}"));
        line[name.len()..].split_whitespace().next().unwrap().parse().unwrap()
    };
    let bytes = std::fs::metadata(test_plugin("posta-fixture")).unwrap().len() as f64;
    assert!((field("size:") - bytes / f64::from(1 << 20)).abs() < 0.06, "{stdout}");
    field("compile:");
    field("instantiate:");
}

#[test]
fn refuses_what_is_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, "hello").unwrap();
    let (ok, _, stderr) = check(&junk);
    assert!(!ok);
    assert!(stderr.contains("not a valid component"), "{stderr}");
    assert!(stderr.lines().count() <= 2, "a short reason, not a dump: {stderr}");
    let (ok, _, stderr) = check(&dir.path().join("missing.wasm"));
    assert!(!ok && stderr.contains("cannot read"), "{stderr}");
}
