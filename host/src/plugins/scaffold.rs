//! `posta plugin new`: a working transport to start from, in Rust, Python
//! or JavaScript. Each project POSTs every message as JSON to its `url`
//! through the host's HTTP client and has a `build.sh` that installs its
//! language's toolchain locally (pinned) and builds `NAME.wasm`.
//!
//! The templates live in `plugins/templates/` and are compiled into the
//! binary, so an installed `posta` scaffolds without a source checkout —
//! except the Rust project's path dependency on the SDK, which is not
//! published. Python and JavaScript projects get `wit/plugin.wit` byte for
//! byte: their tools generate bindings from the contract as is.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error(
        "invalid plugin name {0:?}: use lowercase letters, digits and single hyphens, starting with a letter (at most 64)"
    )]
    Name(String),
    #[error("{0} exists and is not empty: choose another --dir or remove it")]
    Exists(PathBuf),
    #[error(
        "the Rust plugin SDK is not at {0}: pass --sdk /path/to/posta/plugins/sdk (posta was built from another checkout)"
    )]
    NoSdk(PathBuf),
    #[error("cannot write {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// One file of a new project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Relative to the project directory.
    pub path: &'static str,
    pub contents: String,
    pub executable: bool,
}

/// A template's text has `{{name}}`-style placeholders; a contract file is
/// copied as is.
enum Source {
    Template(&'static str),
    Verbatim(&'static str),
}

use Source::{Template, Verbatim};

macro_rules! template {
    ($path:literal) => {
        include_str!(concat!("../../../plugins/templates/", $path))
    };
}

macro_rules! wasi {
    ($file:literal) => {
        include_str!(concat!("../../../plugins/sdk/wit/deps/", $file))
    };
}

const CONTRACT: &str = include_str!("../../../wit/plugin.wit");

fn sources(lang: Lang) -> Vec<(&'static str, Source)> {
    match lang {
        Lang::Rust => vec![
            ("Cargo.toml", Template(template!("rust/Cargo.toml.in"))),
            ("src/lib.rs", Template(template!("rust/src/lib.rs"))),
            ("build.sh", Template(template!("rust/build.sh"))),
            ("README.md", Template(template!("rust/README.md"))),
            (".gitignore", Template(template!("rust/gitignore"))),
        ],
        Lang::Python => vec![
            ("app.py", Template(template!("python/app.py"))),
            ("requirements.txt", Template(template!("python/requirements.txt"))),
            ("build.sh", Template(template!("python/build.sh"))),
            ("README.md", Template(template!("python/README.md"))),
            (".gitignore", Template(template!("python/gitignore"))),
            // Its own world (the contract's transport plus the wasi:http
            // client), not `-w transport -w wasi:http/imports`: merging
            // those two panics componentize-py 0.25.1.
            ("wit/world.wit", Template(template!("python/world.wit"))),
            ("wit/deps/plugin.wit", Verbatim(CONTRACT)),
            // wasi:http and the packages it uses.
            ("wit/deps/http.wit", Verbatim(wasi!("http.wit"))),
            ("wit/deps/io.wit", Verbatim(wasi!("io.wit"))),
            ("wit/deps/clocks.wit", Verbatim(wasi!("clocks.wit"))),
            ("wit/deps/random.wit", Verbatim(wasi!("random.wit"))),
            ("wit/deps/cli.wit", Verbatim(wasi!("cli.wit"))),
            ("wit/deps/filesystem.wit", Verbatim(wasi!("filesystem.wit"))),
            ("wit/deps/sockets.wit", Verbatim(wasi!("sockets.wit"))),
        ],
        Lang::Js => vec![
            ("app.js", Template(template!("js/app.js"))),
            ("build.mjs", Template(template!("js/build.mjs"))),
            ("build.sh", Template(template!("js/build.sh"))),
            ("package.json", Template(template!("js/package.json"))),
            ("package-lock.json", Template(template!("js/package-lock.json"))),
            ("README.md", Template(template!("js/README.md"))),
            (".gitignore", Template(template!("js/gitignore"))),
            // StarlingMonkey brings its own WASI (for fetch, timers and
            // the console); the project names only the contract.
            ("wit/plugin.wit", Verbatim(CONTRACT)),
        ],
    }
}

/// Names become a crate, an npm package and a file name: the intersection
/// of what each accepts.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// Where this binary's source checkout keeps the Rust SDK.
pub fn default_sdk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/sdk")
}

/// The project's files. `dir` is where it will live (the README's config
/// example names the built component there); `sdk` is used by Rust only.
pub fn files(name: &str, lang: Lang, dir: &Path, sdk: &Path) -> Result<Vec<File>, ScaffoldError> {
    if !valid_name(name) {
        return Err(ScaffoldError::Name(name.to_string()));
    }
    let sdk = match lang {
        Lang::Rust => fs::canonicalize(sdk)
            .ok()
            .filter(|p| p.join("Cargo.toml").is_file())
            .ok_or_else(|| ScaffoldError::NoSdk(sdk.to_path_buf()))?,
        _ => sdk.to_path_buf(),
    };
    let vars = [
        ("{{name}}", name.to_string()),
        ("{{module}}", name.replace('-', "_")),
        ("{{dir}}", dir.display().to_string()),
        ("{{sdk}}", sdk.display().to_string()),
    ];
    Ok(sources(lang)
        .into_iter()
        .map(|(path, source)| File {
            path,
            executable: path.ends_with(".sh"),
            contents: match source {
                Verbatim(text) => text.to_string(),
                Template(text) => vars.iter().fold(text.to_string(), |t, (k, v)| t.replace(k, v)),
            },
        })
        .collect())
}

/// Writes a new project into `dir`, which must not exist or be empty.
pub fn write(dir: &Path, files: &[File]) -> Result<(), ScaffoldError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ScaffoldError::Io { path, source }
    };
    if dir.exists() && fs::read_dir(dir).map_err(io(dir))?.next().is_some() {
        return Err(ScaffoldError::Exists(dir.to_path_buf()));
    }
    for file in files {
        let path = dir.join(file.path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(if file.executable { 0o755 } else { 0o644 });
        }
        let mut out = options.open(&path).map_err(io(&path))?;
        out.write_all(file.contents.as_bytes()).map_err(io(&path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_a_crate_a_package_and_a_file() {
        for ok in ["hello", "my-relay", "relay2", "a"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "Hello",
            "2relay",
            "my_relay",
            "-x",
            "x-",
            "a--b",
            "a/b",
            "../x",
            &"x".repeat(65),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn every_placeholder_is_filled_and_the_contract_is_copied_as_is() {
        let dir = Path::new("/srv/plugins/my-relay");
        for lang in [Lang::Rust, Lang::Python, Lang::Js] {
            let files = files("my-relay", lang, dir, &default_sdk()).unwrap();
            for f in &files {
                assert!(!f.contents.contains("{{"), "{lang:?} {} keeps a placeholder", f.path);
            }
            let build = files.iter().find(|f| f.path == "build.sh").unwrap();
            assert!(build.executable && build.contents.contains("my-relay.wasm"), "{lang:?}");
            let readme = files.iter().find(|f| f.path == "README.md").unwrap();
            assert!(
                readme.contents.contains("/srv/plugins/my-relay/my-relay.wasm"),
                "{lang:?}"
            );
            let contract = match lang {
                Lang::Rust => None,
                Lang::Python => Some("wit/deps/plugin.wit"),
                Lang::Js => Some("wit/plugin.wit"),
            };
            if let Some(contract) = contract {
                let wit = files.iter().find(|f| f.path == contract).unwrap();
                assert_eq!(wit.contents, CONTRACT, "{lang:?}");
            }
        }
        let rust = files("my-relay", Lang::Rust, dir, &default_sdk()).unwrap();
        let build = rust.iter().find(|f| f.path == "build.sh").unwrap();
        assert!(
            build.contents.contains("release/my_relay.wasm"),
            "cargo names the file after the crate"
        );
    }

    #[test]
    fn a_rust_project_needs_the_sdk() {
        let err = files("x", Lang::Rust, Path::new("x"), Path::new("/nonexistent/sdk")).unwrap_err();
        assert!(matches!(err, ScaffoldError::NoSdk(_)), "{err}");
        // The other languages do not use it.
        files("x", Lang::Python, Path::new("x"), Path::new("/nonexistent/sdk")).unwrap();
    }

    #[test]
    fn writes_into_a_new_or_empty_directory_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("relay");
        let files = files("relay", Lang::Python, &dir, &default_sdk()).unwrap();
        write(&dir, &files).unwrap();
        assert_eq!(fs::read_to_string(dir.join("wit/deps/plugin.wit")).unwrap(), CONTRACT);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.join("build.sh")).unwrap().permissions().mode();
            assert_eq!(mode & 0o111, 0o111, "build.sh is executable");
        }
        let err = write(&dir, &files).unwrap_err();
        assert!(matches!(err, ScaffoldError::Exists(_)), "{err}");
        let empty = tmp.path().join("empty");
        fs::create_dir(&empty).unwrap();
        write(&empty, &files).unwrap();
    }
}
