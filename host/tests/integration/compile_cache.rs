//! Compiled components are kept between starts (wasmtime's cache under
//! `server.compile_cache`), and a cache file that does not load is
//! compiled again and replaced, never trusted half-way.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use posta::config::Config;
use posta::plugins::Plugins;
use posta::plugins::bindings::types;

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else if path.extension().is_none() {
            // Compiled code; the cache's worker keeps `.stats` beside it.
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The bundled personalizer renders with `plugins`: it was loaded whole.
async fn renders(plugins: &Plugins) {
    let campaign = Arc::new(types::Campaign {
        id: 1,
        name: "Cache".into(),
        subject: "Hi {{ subscriber.name }}".into(),
        from_email: "news@example.org".into(),
        from_name: "Posta".into(),
        html: String::new(),
        text: "Hello".into(),
    });
    let subscriber = types::Subscriber {
        id: 1,
        email: "reader@example.org".into(),
        name: "Reader".into(),
        timezone: None,
        attributes: "{}".into(),
    };
    let envelope = types::Envelope {
        message_id: "posta.1.1@example.org".into(),
        unsubscribe_url: "http://127.0.0.1/unsubscribe/1/1/x".into(),
    };
    let m = plugins
        .personalize(campaign, subscriber, envelope)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.subject, "Hi Reader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_components_are_kept_and_a_damaged_one_is_compiled_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = std::fs::canonicalize(dir.path()).unwrap();
    let mut cfg = Config::load(None).unwrap();
    cfg.server.data_dir = data.clone();
    cfg.server.compile_cache = "{data_dir}/compiled".into();
    let cache = data.join("compiled");

    renders(&Plugins::load(&cfg, &data).unwrap()).await;
    let kept = files(&cache);
    assert!(!kept.is_empty(), "the first start leaves its compiled components");

    for f in &kept {
        std::fs::write(f, b"not native code").unwrap();
    }
    renders(&Plugins::load(&cfg, &data).unwrap()).await;
    for f in &kept {
        assert_ne!(
            std::fs::read(f).unwrap(),
            b"not native code",
            "{} replaced",
            f.display()
        );
    }

    // Off: nothing is written.
    let other = data.join("off");
    cfg.server.compile_cache = String::new();
    cfg.server.data_dir = other.clone();
    std::fs::create_dir_all(&other).unwrap();
    renders(&Plugins::load(&cfg, &other).unwrap()).await;
    assert!(!other.join("compiled").exists());
}
