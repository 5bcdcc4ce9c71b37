//! The dashboard in a real browser: Debian's Chromium driven by Playwright
//! (tests/browser/dashboard.py), with axe-core scanning every page.
//! `scripts/browser-env.sh` provides Chromium and axe-core; screenshots
//! land in target/screenshots/ as CI artifacts.

use std::path::PathBuf;
use std::process::Command;

use posta_e2e::Server;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn the_dashboard_works_in_a_browser_for_each_user_alone() {
    let (server, alice, bob) = Server::with_two_users();
    let root = repo();
    let axe = root.join("target/axe/axe.min.js");
    assert!(
        axe.exists(),
        "{} is missing: run scripts/browser-env.sh (scripts/test.sh does)",
        axe.display()
    );
    let shots = root.join("target/screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot directory");
    let out = Command::new("python3")
        .arg(root.join("tests/browser/dashboard.py"))
        .args([&server.base, &alice, &bob])
        .arg(&axe)
        .arg(&shots)
        .output()
        .expect("python3 with playwright (scripts/test.sh puts the venv first on PATH)");
    assert!(
        out.status.success(),
        "browser run failed:\n{}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    let report: serde_json::Value =
        serde_json::from_slice(out.stdout.trim_ascii()).expect("the browser run's JSON report");
    assert!(report["scanned"].as_array().is_some_and(|s| s.len() >= 12), "{report}");
}
