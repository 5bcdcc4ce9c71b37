//! Writes the `export_transport!` / `export_personalizer!` macros with the
//! absolute path of this crate's `wit/` directory, so that the bindings are
//! generated inside the plugin crate (one component world per plugin) without
//! plugin authors copying the WIT package.
use std::{env, fs, path::PathBuf};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let wit = manifest.join("wit");
    let wit = fs::canonicalize(&wit).unwrap_or(wit);
    println!("cargo:rerun-if-changed={}", wit.display());
    let wit = wit.display().to_string().replace('\\', "/");
    let template = include_str!("src/export_macros.rs.in");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("export_macros.rs");
    fs::write(out, template.replace("@WIT_DIR@", &wit)).unwrap();
}
