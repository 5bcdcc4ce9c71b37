//! `posta plugin check` and `posta plugin new` from the command line.

use std::process::Command;

use posta_e2e::{posta_bin, test_plugin};

/// `posta plugin ARGS…`: success, stdout, stderr.
fn plugin(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let out = Command::new(posta_bin()).arg("plugin").args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check(path: &std::path::Path) -> (bool, String, String) {
    plugin(&["check".as_ref(), path.as_os_str()])
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
    assert!(
        field("memory:") >= 1.0 / 16.0,
        "a Rust component starts with linear memory: {stdout}"
    );
}

/// A Rust transport on the SDK's `http` sends through `host.http-send`,
/// a JavaScript one's `fetch` through `wasi:http`: either way the check
/// names the `http` capability it needs.
#[test]
fn http_either_way_is_named_as_the_http_capability() {
    // ComponentizeJS binds every import of the world, http-send as well.
    for (lang, how) in [("rust", "(the host's http-send)"), ("js", "wasi:http)")] {
        let (ok, stdout, stderr) = check(&posta_e2e::scaffold_plugin(lang));
        assert!(ok, "{lang}: {stderr}");
        assert!(
            stdout.contains(&format!("{how}, granted per origin by capabilities.http")),
            "{lang}: {stdout}"
        );
    }
}

/// `posta plugin new ARGS…`: success, stdout and stderr together.
fn new_plugin(args: &[&str]) -> (bool, String) {
    let args: Vec<&std::ffi::OsStr> = std::iter::once("new")
        .chain(args.iter().copied())
        .map(AsRef::as_ref)
        .collect();
    let (ok, stdout, stderr) = plugin(&args);
    (ok, stdout + &stderr)
}

/// The projects themselves are built and sent through by the `languages`
/// test (scripts/scaffolds.sh builds them); here, what the command refuses.
#[test]
fn plugin_new_writes_a_project_and_refuses_bad_names_and_existing_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("relay");
    let at = dir.to_str().unwrap();
    let (ok, out) = new_plugin(&["my-relay", "--lang", "python", "--dir", at]);
    assert!(ok, "{out}");
    assert!(out.contains("build.sh"), "says what to run next: {out}");
    for file in [
        "app.py",
        "build.sh",
        "requirements.txt",
        "README.md",
        "wit/world.wit",
        "wit/deps/plugin.wit",
    ] {
        assert!(dir.join(file).is_file(), "{file}");
    }
    let contract = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit/plugin.wit");
    assert_eq!(
        std::fs::read(dir.join("wit/deps/plugin.wit")).unwrap(),
        std::fs::read(contract).unwrap(),
        "the contract is copied byte for byte"
    );

    let (ok, out) = new_plugin(&["other", "--lang", "js", "--dir", at]);
    assert!(!ok && out.contains("not empty"), "never writes over a project: {out}");
    let (ok, out) = new_plugin(&[
        "My_Relay",
        "--lang",
        "js",
        "--dir",
        tmp.path().join("x").to_str().unwrap(),
    ]);
    assert!(!ok && out.contains("invalid plugin name"), "{out}");
    assert!(!tmp.path().join("x").exists(), "nothing written for a bad name");
    let (ok, out) = new_plugin(&["x", "--lang", "cobol"]);
    assert!(
        !ok && out.contains("rust") && out.contains("python") && out.contains("js"),
        "{out}"
    );
    let (ok, out) = new_plugin(&[
        "x",
        "--lang",
        "rust",
        "--dir",
        tmp.path().join("y").to_str().unwrap(),
        "--sdk",
        "/nonexistent",
    ]);
    assert!(!ok && out.contains("--sdk"), "{out}");
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
