//! Builds the guest plugins (plugins/, a separate workspace) for
//! wasm32-wasip2 and bundles them into the binary, so that the ordinary
//! `cargo build` of the host yields a `posta` that works on its own.
//!
//! The nested cargo gets its own target directory (the outer build holds the
//! lock on ours) beside the outer one, shared by debug, release and clippy
//! builds so the guests compile once.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Guest crates bundled into the binary: (crate name, name in the registry).
const BUNDLED: &[(&str, &str)] = &[
    ("posta_personalize", "personalize"),
    ("posta_log", "log"),
    ("posta_smtp", "smtp"),
    ("posta_webhook", "webhook"),
];

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    let plugins = root.join("plugins");
    for entry in [
        "Cargo.toml",
        "Cargo.lock",
        "sdk",
        "personalize",
        "log",
        "smtp",
        "webhook",
    ] {
        println!("cargo:rerun-if-changed={}", plugins.join(entry).display());
    }
    println!("cargo:rerun-if-changed={}", root.join("wit").display());

    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    // OUT_DIR is <target>/<profile>/build/posta-HASH/out.
    let target_dir = out_dir.ancestors().nth(4).unwrap().join("wasm-plugins");

    ensure_wasm_target();
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    scrub_env(&mut cmd);
    cmd.current_dir(&plugins)
        .args(["build", "--release", "--locked", "--target", "wasm32-wasip2"])
        .arg("--target-dir")
        .arg(&target_dir);
    for (krate, _) in BUNDLED {
        cmd.args(["-p", &krate.replace('_', "-")]);
    }
    let status = cmd.status().expect("running cargo for the plugins");
    assert!(status.success(), "building the bundled plugins failed");

    let release = target_dir.join("wasm32-wasip2").join("release");
    let mut code =
        String::from("/// Components built from plugins/ by build.rs.\npub const BUNDLED: &[(&str, &[u8])] = &[\n");
    for (krate, name) in BUNDLED {
        let wasm = release.join(format!("{krate}.wasm"));
        assert!(wasm.exists(), "missing {}", wasm.display());
        code.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            wasm.display().to_string()
        ));
    }
    code.push_str("];\n");
    std::fs::write(out_dir.join("bundled.rs"), code).unwrap();
}

/// `rust-toolchain.toml` lists the target, but rustup installs listed targets
/// only for some commands; make sure it is there before the guest build.
fn ensure_wasm_target() {
    let sysroot = Command::new(env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| PathBuf::from(s.trim()));
    if let Some(sysroot) = sysroot
        && Path::new(&sysroot).join("lib/rustlib/wasm32-wasip2").exists()
    {
        return;
    }
    let status = Command::new("rustup").args(["target", "add", "wasm32-wasip2"]).status();
    if !matches!(status, Ok(s) if s.success()) {
        println!("cargo:warning=could not install the wasm32-wasip2 target with rustup");
    }
}

/// The outer build's variables describe the host build (target, flags,
/// wrappers such as clippy-driver); none of them may leak into the guests'.
fn scrub_env(cmd: &mut Command) {
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let keep = matches!(key, "CARGO_HOME" | "CARGO_MAKEFLAGS")
            || key.starts_with("CARGO_NET_")
            || key.starts_with("CARGO_HTTP_")
            || key.starts_with("CARGO_REGISTRIES_");
        let drop = (key.starts_with("CARGO") && !keep)
            || key.starts_with("RUSTC")
            || key.starts_with("RUSTDOC")
            || key.starts_with("RUSTFLAGS")
            || key.starts_with("DEP_")
            || matches!(
                key,
                "TARGET" | "HOST" | "OUT_DIR" | "PROFILE" | "OPT_LEVEL" | "DEBUG" | "NUM_JOBS"
            );
        if drop {
            cmd.env_remove(key);
        }
    }
}
