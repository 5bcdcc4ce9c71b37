//! Property test: whatever a user puts in templates and subscriber fields,
//! the wasm personalizer answers with a message or an error, never a trap,
//! and the host stays up.

use std::sync::Arc;

use posta::config::Config;
use posta::plugins::Plugins;
use posta::plugins::bindings::types;
use proptest::prelude::*;

fn plugins() -> Arc<Plugins> {
    static PLUGINS: std::sync::OnceLock<(tempfile::TempDir, Arc<Plugins>)> = std::sync::OnceLock::new();
    PLUGINS
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let mut cfg = Config::load(None).unwrap();
            cfg.server.data_dir = dir.path().to_path_buf();
            let p = Arc::new(Plugins::load(&cfg, dir.path()).unwrap());
            (dir, p)
        })
        .1
        .clone()
}

/// Template-ish text: jinja syntax fragments mixed with arbitrary text.
fn template() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("{{ subscriber.name }}".to_string()),
        Just("{{ subscriber.attributes.plan }}".to_string()),
        Just("{% if subscriber.email %}".to_string()),
        Just("{% endif %}".to_string()),
        Just("{% for x in subscriber.attributes %}{{ x }}{% endfor %}".to_string()),
        Just("{{".to_string()),
        Just("}}".to_string()),
        Just("{%".to_string()),
        Just("{{ unsubscribe_url | upper }}".to_string()),
        Just("{{ 1 / 0 }}".to_string()),
        ".{0,20}",
    ];
    proptest::collection::vec(piece, 0..8).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn personalize_never_traps(subject in template(), html in template(), text in template(),
                               name in ".{0,40}", attr in ".{0,40}") {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let p = plugins();
        let campaign = types::Campaign {
            id: 1, name: "fuzz".into(), subject, from_email: "a@example.org".into(),
            from_name: String::new(), html, text,
        };
        let subscriber = types::Subscriber {
            id: 2, email: "b@example.org".into(), name,
            timezone: None, attributes: serde_json::json!({"plan": attr}).to_string(),
        };
        let envelope = types::Envelope { message_id: "m@x".into(), unsubscribe_url: "http://x/u".into() };
        let validated = rt.block_on(p.validate(campaign.clone()));
        prop_assert!(validated.is_ok(), "validate trapped: {:?}", validated);
        let rendered = rt.block_on(p.personalize(std::sync::Arc::new(campaign), subscriber, envelope));
        prop_assert!(rendered.is_ok(), "personalize trapped: {:?}", rendered);
        // A template that validates renders to a message or a clear error.
        if let (Ok(Ok(())), Ok(Err(e))) = (&validated, &rendered) {
            prop_assert!(!e.is_empty());
        }
        if let Ok(Ok(m)) = &rendered {
            prop_assert!(!m.subject.contains('\n'), "subjects stay on one line");
        }
    }
}
