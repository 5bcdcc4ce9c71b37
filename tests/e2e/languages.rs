//! Transports scaffolded by `posta plugin new` in Rust, Python and
//! JavaScript and built by their own build.sh (scripts/scaffolds.sh), each
//! sending a campaign to a real HTTP receiver through the host's wasi:http.

use std::collections::HashMap;
use std::time::Duration;

use posta_e2e::peers::HttpPeer;
use posta_e2e::{Api, Server, Value, json, scaffold_plugin};

const LANGS: [&str; 3] = ["rust", "python", "js"];

/// Per language: `LANG` posts to /LANG, `LANG_gone` gets 410, `LANG_busy`
/// 503, and `LANG_denied` names the receiver but is granted another origin.
fn config(peer: &HttpPeer) -> String {
    let granted = format!("http://127.0.0.1:{}", peer.port);
    let mut toml = String::from("[delivery]\nmax_attempts = 3\nretry_base_ms = 100\nretry_max_ms = 300\n");
    for lang in LANGS {
        let component = scaffold_plugin(lang);
        for (name, path, origin) in [
            (lang.to_string(), format!("/{lang}"), granted.as_str()),
            (format!("{lang}_gone"), "/gone".into(), granted.as_str()),
            (format!("{lang}_busy"), "/busy".into(), granted.as_str()),
            (
                format!("{lang}_denied"),
                format!("/{lang}"),
                "https://hooks.example.com",
            ),
        ] {
            toml.push_str(&format!(
                r#"
[transports.{name}]
component = "{component}"
config = {{ url = "{url}" }}
capabilities = {{ http = ["{origin}"] }}
"#,
                component = component.display(),
                url = peer.url(&path),
            ));
        }
    }
    toml
}

fn list_of(api: &Api, name: &str, emails: &[String]) -> u64 {
    let id = api.ok_post("/lists", json!({ "name": name }))["id"].as_u64().unwrap();
    for chunk in emails.chunks(500) {
        let subs: Vec<Value> = chunk.iter().map(|e| json!({"email": e, "name": e})).collect();
        api.ok_post(&format!("/lists/{id}/subscribers"), Value::Array(subs));
    }
    id
}

fn done(api: &Api, campaign: u64) -> HashMap<String, Value> {
    let c = api.wait_campaign(campaign, Duration::from_secs(120), |c| c["status"] == "sent");
    assert_eq!(c["status"], "sent", "{c}");
    api.all_messages(campaign, "")
        .into_iter()
        .map(|m| (m["email"].as_str().unwrap().to_string(), m))
        .collect()
}

#[test]
fn scaffolded_transports_deliver_each_message_once_and_classify_failures() {
    let dir = tempfile::tempdir().unwrap();
    let peer = HttpPeer::start(dir.path());
    let (server, key, _) = Server::with_config(&config(&peer));
    let api = server.api(&key);

    const N: usize = 300;
    let mut campaigns = Vec::new();
    for lang in LANGS {
        let emails: Vec<String> = (0..N).map(|i| format!("{lang}{i}@example.org")).collect();
        let list = list_of(&api, lang, &emails);
        campaigns.push((lang, api.send_via(list, lang)));
    }
    for (lang, campaign) in campaigns {
        let messages = done(&api, campaign);
        assert_eq!(messages.len(), N);
        let requests: Vec<Value> = peer
            .requests()
            .into_iter()
            .filter(|r| r["path"] == format!("/{lang}"))
            .collect();
        // Every message once: one request per recipient, none repeated.
        assert_eq!(requests.len(), N, "{lang}: one request per message");
        let mut seen = HashMap::new();
        for r in &requests {
            assert_eq!(r["headers"]["content-type"], "application/json", "{lang}");
            let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
            let email = body["to"]["email"].as_str().unwrap().to_string();
            let m = &messages[&email];
            assert_eq!(m["status"], "sent", "{lang} {m}");
            assert_eq!(m["attempts"], 1, "{lang} {m}");
            assert_eq!(body["message_id"], m["message_id"], "{lang}");
            assert_eq!(r["headers"]["idempotency-key"], m["message_id"], "{lang}");
            assert_eq!(body["subject"], format!("Grüße, {email} ✉"), "{lang}: UTF-8 intact");
            assert_eq!(body["from"]["name"], "Zoë Posta", "{lang}");
            assert!(
                body["headers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|h| h["name"] == "List-Unsubscribe"),
                "{lang}: {body}"
            );
            assert!(seen.insert(email, ()).is_none(), "{lang}: a recipient got two requests");
        }
    }

    // Failures are classified by each language's code as its README says:
    // 410 is permanent (one attempt), 503 transient (retried up to
    // max_attempts). An origin the host does not grant is never contacted
    // and the error names the capability; Rust and Python see the host's
    // `http-request-denied` and fail at once, JavaScript's `fetch` reports
    // every network failure alike, so it retries (the host's note names
    // the cause).
    for lang in LANGS {
        let denied_attempts = if lang == "js" { 3 } else { 1 };
        for (suffix, attempts, needle) in [
            ("gone", 1, "410"),
            ("busy", 3, "503"),
            ("denied", denied_attempts, "capabilities.http"),
        ] {
            let transport = format!("{lang}_{suffix}");
            let email = format!("{suffix}@{lang}.example.org");
            let list = list_of(&api, &transport, std::slice::from_ref(&email));
            let campaign = api.send_via(list, &transport);
            let m = &done(&api, campaign)[&email];
            assert_eq!(m["status"], "failed", "{transport}: {m}");
            assert_eq!(m["attempts"], attempts, "{transport}: {m}");
            let error = m["last_error"].as_str().unwrap();
            assert!(error.contains(needle), "{transport}: {error}");
        }
    }
    let denied = peer
        .requests()
        .into_iter()
        .filter(|r| r["body"].as_str().unwrap().contains("denied@"))
        .count();
    assert_eq!(denied, 0, "an ungranted origin receives nothing");
}
