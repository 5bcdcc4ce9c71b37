//! The bundled SMTP and webhook transports against real peers: aiosmtpd
//! (plain, STARTTLS + AUTH, implicit TLS + AUTH, certificates from a test
//! CA) and a Python HTTP receiver.

use std::collections::HashMap;
use std::time::Duration;

use hmac::{Hmac, Mac};
use posta_e2e::peers::{HttpPeer, SmtpPeer, TestCa};
use posta_e2e::{Api, Server, Value, json};
use sha2::Sha256;

const SMTP_PASSWORD: &str = "correct horse: battery staple";
const WEBHOOK_SECRET: &str = "whsec-test-1234567890";

fn smtp_config(ca: &TestCa, peer: &SmtpPeer) -> String {
    format!(
        r#"
[delivery]
max_attempts = 3
retry_base_ms = 100
retry_max_ms = 300

[tls]
extra_ca_file = "{ca}"

[transports.smtp_plain]
component = "smtp"
config = {{ host = "127.0.0.1", port = {plain}, tls = "none" }}
capabilities = {{ connect = ["127.0.0.1:{plain}"] }}

[transports.smtp_starttls]
component = "smtp"
config = {{ host = "localhost", port = {starttls}, tls = "starttls", username = "posta" }}
secrets = {{ password = "POSTA_TEST_SMTP_PASSWORD" }}
capabilities = {{ connect = ["localhost:{starttls}"] }}

[transports.smtp_tls]
component = "smtp"
config = {{ host = "localhost", port = {tls}, tls = "tls", username = "posta", auth = "login" }}
secrets = {{ password = "POSTA_TEST_SMTP_PASSWORD" }}
capabilities = {{ connect = ["localhost:{tls}"] }}

# One connection, so every message follows the previous one on it.
[transports.smtp_one]
component = "smtp"
config = {{ host = "127.0.0.1", port = {plain}, tls = "none" }}
capabilities = {{ connect = ["127.0.0.1:{plain}"] }}
max_in_flight = 1

# Points at the real server, but its grant names another port.
[transports.smtp_denied]
component = "smtp"
config = {{ host = "127.0.0.1", port = {plain}, tls = "none" }}
capabilities = {{ connect = ["127.0.0.1:9"] }}

# STARTTLS required by config, AUTH refused without it: the plain
# listener offers no STARTTLS, so nothing may be sent.
[transports.smtp_no_downgrade]
component = "smtp"
config = {{ host = "127.0.0.1", port = {plain}, tls = "starttls" }}
capabilities = {{ connect = ["127.0.0.1:{plain}"] }}

# Credentials configured without TLS: refused before any AUTH is sent.
[transports.smtp_clear_auth]
component = "smtp"
config = {{ host = "127.0.0.1", port = {plain}, tls = "none", username = "posta" }}
secrets = {{ password = "POSTA_TEST_SMTP_PASSWORD" }}
capabilities = {{ connect = ["127.0.0.1:{plain}"] }}
"#,
        ca = ca.ca_pem.display(),
        plain = peer.plain,
        starttls = peer.starttls,
        tls = peer.tls,
    )
}

fn list_with(api: &Api, name: &str, people: &[(&str, &str)]) -> u64 {
    let id = api.ok_post("/lists", json!({ "name": name }))["id"].as_u64().unwrap();
    let subs: Vec<Value> = people.iter().map(|(e, n)| json!({"email": e, "name": n})).collect();
    api.ok_post(&format!("/lists/{id}/subscribers"), Value::Array(subs));
    id
}

fn messages(api: &Api, campaign: u64) -> HashMap<String, Value> {
    api.all_messages(campaign, "")
        .into_iter()
        .map(|m| (m["email"].as_str().unwrap().to_string(), m))
        .collect()
}

fn settled(api: &Api, campaign: u64) -> Value {
    api.wait_campaign(campaign, Duration::from_secs(60), |c| c["status"] == "sent")
}

/// The SMTP peer under a fresh test CA and a server configured for it;
/// the temporary directory lives as long as the returned guard.
fn smtp_setup() -> (tempfile::TempDir, SmtpPeer, Server, String) {
    smtp_setup_with(|_| String::new())
}

/// Like `smtp_setup`, with more posta.toml from `extra` (given the
/// temporary directory, which holds the peer's files).
fn smtp_setup_with(extra: impl FnOnce(&std::path::Path) -> String) -> (tempfile::TempDir, SmtpPeer, Server, String) {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::create(dir.path());
    let peer = SmtpPeer::start(dir.path(), &ca, SMTP_PASSWORD);
    let config = format!("{}\n{}", smtp_config(&ca, &peer), extra(dir.path()));
    let (server, key, _) = Server::with_config_env(&config, &[("POSTA_TEST_SMTP_PASSWORD", SMTP_PASSWORD)]);
    (dir, peer, server, key)
}

#[test]
fn smtp_plain_starttls_and_tls_deliver_valid_mime() {
    let (_dir, peer, server, key) = smtp_setup();
    let api = server.api(&key);

    let mut expected = 0;
    for (transport, listener) in [
        ("smtp_plain", "plain"),
        ("smtp_starttls", "starttls"),
        ("smtp_tls", "tls"),
    ] {
        let people = [
            (format!("ada.{listener}@example.org"), "Ada Lovelace"),
            (format!("zoe.{listener}@example.org"), "Zoë Ünicode"),
            (format!("li.{listener}@example.org"), "李小龍"),
        ];
        let refs: Vec<(&str, &str)> = people.iter().map(|(e, n)| (e.as_str(), *n)).collect();
        let list = list_with(&api, transport, &refs);
        let campaign = api.send_via(list, transport);
        let c = settled(&api, campaign);
        assert_eq!(
            c["stats"]["sent"],
            3,
            "{transport}: {c} {:?}",
            api.all_messages(campaign, "")
        );
        expected += 3;
        let received = peer.wait_received(expected);
        let by_rcpt: HashMap<String, &Value> = received
            .iter()
            .filter(|r| r["listener"] == listener)
            .map(|r| (r["rcpt_tos"][0].as_str().unwrap().to_string(), r))
            .collect();
        assert_eq!(by_rcpt.len(), 3, "{transport}: {received:?}");
        let stored = messages(&api, campaign);
        for (email, name) in &people {
            let r = by_rcpt[email.as_str()];
            let m = &stored[email.as_str()];
            assert_eq!(r["defects"], json!([]), "{transport} {email}: MIME defects");
            assert_eq!(r["all_ascii"], true, "{transport}: 8-bit bytes on the wire");
            assert_eq!(r["tls"], listener != "plain", "{transport}");
            if listener != "plain" {
                assert!(r["tls_version"].as_str().unwrap().starts_with("TLSv1."), "{r}");
            }
            assert!(r["date"].as_str().is_some(), "Date header");
            let auth = if listener == "plain" {
                Value::Null
            } else {
                json!("posta")
            };
            assert_eq!(r["auth_user"], auth, "{transport}");
            assert_eq!(r["mail_from"], "news@example.org");
            assert_eq!(r["subject"], format!("Grüße, {name} ✉"));
            assert_eq!(r["from_display_name"], "Zoë Posta");
            assert_eq!(r["to_display_name"], *name);
            assert_eq!(r["mime_version"], "1.0");
            assert_eq!(r["content_type"], "multipart/alternative");
            assert_eq!(
                r["message_id"],
                format!("<{}>", m["message_id"].as_str().unwrap()),
                "Message-ID is the stored message id"
            );
            let unsubscribe = r["list_unsubscribe"].as_str().unwrap();
            assert!(
                unsubscribe.starts_with('<') && unsubscribe.contains("/unsubscribe/"),
                "{unsubscribe}"
            );
            assert_eq!(r["list_unsubscribe_post"], "List-Unsubscribe=One-Click");
            let parts = r["parts"].as_array().unwrap();
            assert_eq!(parts.len(), 2);
            assert_eq!(parts[0]["content_type"], "text/plain");
            assert_eq!(
                parts[0]["content"].as_str().unwrap().trim_end(),
                format!("Hallo {name} — déjà vu")
            );
            assert_eq!(parts[1]["content_type"], "text/html");
            assert!(
                parts[1]["content"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("<b>{name}</b> — déjà vu")),
                "{parts:?}"
            );
            assert_eq!(m["status"], "sent");
            let queue_id = m["remote_id"].as_str().unwrap();
            assert!(queue_id.starts_with('Q'), "queue id from the 250 reply: {queue_id}");
        }
    }
}

#[test]
fn smtp_451_is_retried_550_fails_and_a_missing_grant_fails_clearly() {
    let (_dir, peer, server, key) = smtp_setup();
    let api = server.api(&key);

    let list = list_with(
        &api,
        "replies",
        &[
            ("tempfail@example.org", "Temp"),
            ("reject@example.org", "Reject"),
            ("fine@example.org", "Fine"),
        ],
    );
    let campaign = api.send_via(list, "smtp_starttls");
    let c = settled(&api, campaign);
    assert_eq!(c["stats"]["sent"], 2, "{c}");
    assert_eq!(c["stats"]["failed"], 1, "{c}");
    let m = messages(&api, campaign);
    assert_eq!(m["tempfail@example.org"]["status"], "sent");
    assert_eq!(m["tempfail@example.org"]["attempts"], 2, "451 then accepted");
    assert_eq!(m["reject@example.org"]["status"], "failed");
    assert_eq!(m["reject@example.org"]["attempts"], 1, "550 is not retried");
    let err = m["reject@example.org"]["last_error"].as_str().unwrap();
    assert!(err.contains("550"), "{err}");
    assert_eq!(m["fine@example.org"]["attempts"], 1);

    // The grant names another port: every message fails at once, with a
    // permission error, and the server never sees a connection for them.
    let before = peer.received().len();
    let denied_list = list_with(&api, "denied", &[("a@example.org", "A"), ("b@example.org", "B")]);
    let denied = api.send_via(denied_list, "smtp_denied");
    let c = settled(&api, denied);
    assert_eq!(c["stats"]["failed"], 2, "{c}");
    for m in messages(&api, denied).values() {
        let err = m["last_error"].as_str().unwrap();
        assert!(err.contains("permission denied"), "{err}");
        assert_eq!(m["attempts"], 1, "a missing grant is permanent");
    }

    // STARTTLS demanded but not offered: no message goes out in clear.
    let downgrade_list = list_with(&api, "no downgrade", &[("c@example.org", "C")]);
    let downgrade = api.send_via(downgrade_list, "smtp_no_downgrade");
    let c = settled(&api, downgrade);
    assert_eq!(c["stats"]["failed"], 1, "{c}");
    let m = messages(&api, downgrade);
    let err = m["c@example.org"]["last_error"].as_str().unwrap();
    assert!(err.contains("does not offer STARTTLS"), "{err}");

    let clear_list = list_with(&api, "clear auth", &[("e@example.org", "E")]);
    let clear = api.send_via(clear_list, "smtp_clear_auth");
    settled(&api, clear);
    let m = messages(&api, clear);
    let err = m["e@example.org"]["last_error"].as_str().unwrap();
    assert!(err.contains("refusing to send credentials without TLS"), "{err}");

    assert_eq!(peer.received().len(), before, "nothing reached the server");
    // The host kept serving throughout.
    api.ok_get("/transports");
}

#[test]
fn a_recipient_refused_at_rcpt_is_a_hard_bounce_and_skipped_next_time() {
    let (_dir, peer, server, key) = smtp_setup();
    let api = server.api(&key);
    let list = list_with(
        &api,
        "rcpt",
        &[("reject-me@example.org", "Gone"), ("kept@example.org", "Kept")],
    );
    let first = api.send_via(list, "smtp_plain");
    let c = settled(&api, first);
    assert_eq!(
        (&c["stats"]["sent"], &c["stats"]["failed"], &c["stats"]["bounced"]),
        (&json!(1), &json!(1), &json!(1)),
        "{c}"
    );
    let m = messages(&api, first);
    let gone = &m["reject-me@example.org"];
    assert_eq!(gone["status"], "failed", "{gone}");
    assert_eq!(gone["bounces"][0]["type"], "hard", "{gone}");
    assert!(
        gone["bounces"][0]["reason"].as_str().unwrap().contains("5.1.1"),
        "{gone}"
    );
    let s = api.ok_get("/suppressions/reject-me@example.org");
    assert_eq!(s["reason"], "bounced", "{s}");

    // The next campaign does not try the address again.
    let received = peer.received().len();
    let second = api.send_via(list, "smtp_plain");
    let c = settled(&api, second);
    assert_eq!(
        (&c["stats"]["sent"], &c["stats"]["skipped"]),
        (&json!(1), &json!(1)),
        "{c}"
    );
    assert_eq!(
        messages(&api, second)["reject-me@example.org"]["skip_reason"],
        "suppressed: bounced"
    );
    assert_eq!(peer.wait_received(received + 1).len(), received + 1);
}

/// Runs `posta dkim keygen` as an operator would; returns the key file and
/// the TXT record it printed (its quoted strings joined).
fn keygen(dir: &std::path::Path, domain: &str, selector: &str, algorithm: &str) -> (std::path::PathBuf, String) {
    let key = dir.join(format!("{domain}.{selector}.pem"));
    let out = std::process::Command::new(posta_e2e::posta_bin())
        .args(["dkim", "keygen", domain, selector, "--algorithm", algorithm, "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("{selector}._domainkey.{domain}. IN TXT ")))
        .unwrap_or_else(|| panic!("no TXT record printed:\n{stdout}"));
    let record: String = line.split('"').skip(1).step_by(2).collect();
    (key, record)
}

#[test]
fn dkim_signatures_verify_independently_and_break_when_the_body_changes() {
    let mut records = Vec::new();
    let (dir, peer, server, key) = smtp_setup_with(|dir| {
        let mut toml = String::new();
        for (domain, selector, algorithm) in [("example.org", "posta", "rsa"), ("ed.example.org", "ed", "ed25519")] {
            let (file, record) = keygen(dir, domain, selector, algorithm);
            toml += &format!(
                "[[dkim]]\ndomain = \"{domain}\"\nselector = \"{selector}\"\nprivate_key_file = \"{}\"\n",
                file.display()
            );
            records.push((format!("{selector}._domainkey.{domain}"), record));
        }
        toml
    });
    // The verifier's DNS: what the operator would publish.
    let dns = dir.path().join("smtp-received").join("dns");
    std::fs::create_dir_all(&dns).unwrap();
    for (name, record) in &records {
        std::fs::write(dns.join(name), record).unwrap();
    }
    let api = server.api(&key);
    let list = list_with(&api, "dkim", &[("reader@example.net", "Reader")]);
    let mut sent = 0;
    for from in ["news@example.org", "NEWS@Ed.Example.org", "news@unsigned.example"] {
        api.send_campaign(
            list,
            json!({
                "transport": "smtp_plain",
                "subject": "Signed? {{ subscriber.name }}",
                "from_email": from,
                "html": "<p>Hello {{ subscriber.name }}</p>",
                "text": "Hello {{ subscriber.name }}\n.\nA line with a dot, and trailing space   ",
            }),
        );
        sent += 1;
        let received = peer.wait_received(sent);
        let m = received.last().unwrap();
        let from_header = m["from"].as_str().unwrap();
        if from.ends_with("unsigned.example") {
            assert_eq!((&m["dkim"], &m["dkim_tampered"]), (&Value::Null, &Value::Null), "{m}");
        } else {
            assert_eq!(m["dkim"], true, "{from_header}: {m}");
            assert_eq!(
                m["dkim_tampered"], false,
                "{from_header}: a changed body must fail: {m}"
            );
        }
    }
    let eml = std::fs::read_to_string(dir.path().join("smtp-received").join("1.eml")).unwrap();
    let signature = eml.split("\r\n\r\n").next().unwrap();
    assert!(
        signature.starts_with("DKIM-Signature: v=1; a=rsa-sha256;"),
        "{signature}"
    );
    for header in [
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
    ] {
        let h = signature.to_ascii_lowercase().replace(['\r', '\n', '\t', ' '], "");
        let signed = h.split(";h=").nth(1).unwrap().split(';').next().unwrap().to_string();
        assert!(signed.split(':').any(|s| s == header), "{header} not signed: {signed}");
    }
}

#[test]
fn pipelined_replies_map_to_their_messages_and_dropped_connections_recover() {
    let (_dir, peer, server, key) = smtp_setup();
    let api = server.api(&key);
    // One connection, pipelined: every reply of a flight must land on the
    // message it belongs to, and the connection must survive refusals.
    let people = [
        ("fine1@example.org", "sent", 1),
        ("tempfail.p@example.org", "sent", 2),
        ("fine2@example.org", "sent", 1),
        ("reject.p@example.org", "failed", 1),
        ("fine3@example.org", "sent", 1),
        ("hangup.p@example.org", "sent", 1),
        ("fine4@example.org", "sent", 1),
        ("dropmid.p@example.org", "sent", 2),
        ("fine5@example.org", "sent", 1),
        ("hangup.q@example.org", "sent", 1),
        ("fine6@example.org", "sent", 1),
    ];
    let refs: Vec<(&str, &str)> = people.iter().map(|(e, _, _)| (*e, "P")).collect();
    let list = list_with(&api, "pipelined", &refs);
    let campaign = api.send_via(list, "smtp_one");
    let c = settled(&api, campaign);
    assert_eq!(c["stats"]["sent"], 10, "{c}");
    assert_eq!(c["stats"]["failed"], 1, "{c}");
    let stored = messages(&api, campaign);
    for (email, status, attempts) in people {
        let m = &stored[email];
        assert_eq!(m["status"], status, "{email}: {m}");
        // A kept connection the server closed (after a hangup) is replaced
        // within the same attempt: the next message is not charged for it.
        assert_eq!(m["attempts"], attempts, "{email}: {m}");
    }
    let err = stored["reject.p@example.org"]["last_error"].as_str().unwrap();
    assert!(err.contains("RCPT TO") && err.contains("550"), "{err}");

    // Each accepted message arrived exactly once.
    let received = peer.wait_received(10);
    let mut rcpts: Vec<&str> = received.iter().map(|r| r["rcpt_tos"][0].as_str().unwrap()).collect();
    rcpts.sort_unstable();
    let mut expected: Vec<&str> = people.iter().filter(|p| p.1 == "sent").map(|p| p.0).collect();
    expected.sort_unstable();
    assert_eq!(rcpts, expected);
    // Connections are reused: new ones only after the two hangups, the
    // dropped one and its retry.
    let mut ports: Vec<u64> = received.iter().map(|r| r["client_port"].as_u64().unwrap()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert!(
        ports.len() <= 5,
        "{} connections for 10 messages: {received:?}",
        ports.len()
    );
}

#[test]
fn bare_carriage_returns_never_reach_the_smtp_server() {
    let (_dir, peer, server, key) = smtp_setup();
    let api = server.api(&key);
    let smuggler = "a\r.\rMAIL FROM:<x@y.z>";
    let list = api.ok_post("/lists", json!({ "name": "smuggle" }))["id"]
        .as_u64()
        .unwrap();
    let (status, body) = api.post(
        &format!("/lists/{list}/subscribers"),
        json!([{"email": "cr@example.org", "name": smuggler}]),
    );
    assert!(status < 300, "{status} {body}");
    let campaign = api.send_campaign(
        list,
        json!({
            "transport": "smtp_plain",
            "subject": "Hi {{ subscriber.name }}",
            "text": "Hi {{ subscriber.name }}\r.\rRCPT TO:<evil@y.z>\rDATA\r",
            "html": "<p>{{ subscriber.name }}</p>\r.\r",
        }),
    );
    let c = settled(&api, campaign);
    assert_eq!(c["stats"]["sent"], 1, "{c}");
    let received = peer.wait_received(1);
    std::thread::sleep(Duration::from_millis(500));
    let received_now = peer.received();
    assert_eq!(received_now.len(), received.len(), "no second message was smuggled in");
    let r = &received_now[0];
    assert_eq!(r["rcpt_tos"], json!(["cr@example.org"]));
    assert_eq!(r["bare_cr"], false, "{r}");
    assert_eq!(r["bare_lf"], false, "{r}");
    assert_eq!(r["defects"], json!([]), "{r}");
}

/// One webhook transport per receiver behaviour; `hook_denied` points at
/// the real receiver but its grant lists another origin.
fn webhook_config(peer: &HttpPeer) -> String {
    let granted = format!("http://127.0.0.1:{}", peer.port);
    let transports = [
        ("hook", "/ok", "", granted.as_str()),
        ("hook_flaky", "/flaky", "", granted.as_str()),
        ("hook_gone", "/gone", "", granted.as_str()),
        ("hook_slow", "/slow", ", timeout_ms = 500", granted.as_str()),
        ("hook_busy", "/busy", "", granted.as_str()),
        ("hook_denied", "/ok", "", "https://hooks.example.com"),
        ("hook_huge", "/huge", "", granted.as_str()),
        // A hop-by-hop header is the host's to set.
        (
            "hook_hop",
            "/ok",
            ", signature_header = \"connection\"",
            granted.as_str(),
        ),
    ];
    let mut toml = String::from("[delivery]\nmax_attempts = 3\nretry_base_ms = 100\nretry_max_ms = 300\n");
    for (name, path, extra, origin) in transports {
        toml.push_str(&format!(
            r#"
[transports.{name}]
component = "webhook"
config = {{ url = "{url}"{extra} }}
secrets = {{ secret = "POSTA_TEST_WEBHOOK_SECRET" }}
capabilities = {{ http = ["{origin}"] }}
"#,
            url = peer.url(path),
        ));
    }
    toml
}

#[test]
fn webhook_signs_keys_retries_and_respects_its_grant() {
    let dir = tempfile::tempdir().unwrap();
    let peer = HttpPeer::start(dir.path());
    let (server, key, other) =
        Server::with_config_env(&webhook_config(&peer), &[("POSTA_TEST_WEBHOOK_SECRET", WEBHOOK_SECRET)]);
    let api = server.api(&key);

    let list = list_with(
        &api,
        "hooked",
        &[("ada@example.org", "Ada"), ("zoe@example.org", "Zoë")],
    );
    let campaign = api.send_via(list, "hook");
    let c = settled(&api, campaign);
    assert_eq!(c["stats"]["sent"], 2, "{c}");
    let stored = messages(&api, campaign);
    let requests = peer.wait_requests(2);
    for r in &requests {
        let body = r["body"].as_str().unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(r["headers"]["x-posta-signature"], expected, "signature verifies");
        assert_eq!(r["headers"]["content-type"], "application/json");
        let payload: Value = serde_json::from_str(body).unwrap();
        let email = payload["to"]["email"].as_str().unwrap();
        let m = &stored[email];
        assert_eq!(
            r["headers"]["idempotency-key"], m["message_id"],
            "idempotency key is the message id"
        );
        assert_eq!(payload["message_id"], m["message_id"]);
        assert_eq!(
            payload["subject"],
            format!("Grüße, {} ✉", payload["to"]["name"].as_str().unwrap())
        );
        assert!(
            payload["headers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h["name"] == "List-Unsubscribe")
        );
        assert_eq!(m["remote_id"], format!("r-{}", r["n"]), "receiver's id stored");
    }

    // 503 once per key, then 200: retried and sent on the second attempt
    // with the same idempotency key.
    let flaky_list = list_with(&api, "flaky", &[("f@example.org", "F")]);
    let flaky = api.send_via(flaky_list, "hook_flaky");
    settled(&api, flaky);
    let m = messages(&api, flaky);
    assert_eq!(m["f@example.org"]["status"], "sent");
    assert_eq!(m["f@example.org"]["attempts"], 2);
    let flaky_requests: Vec<Value> = peer.requests().into_iter().filter(|r| r["path"] == "/flaky").collect();
    assert_eq!(flaky_requests.len(), 2);
    assert_eq!(
        flaky_requests[0]["headers"]["idempotency-key"],
        flaky_requests[1]["headers"]["idempotency-key"]
    );

    // 410: permanent, one attempt.
    let gone_list = list_with(&api, "gone", &[("g@example.org", "G")]);
    let gone = api.send_via(gone_list, "hook_gone");
    settled(&api, gone);
    let m = messages(&api, gone);
    assert_eq!(m["g@example.org"]["status"], "failed");
    assert_eq!(m["g@example.org"]["attempts"], 1);
    assert!(m["g@example.org"]["last_error"].as_str().unwrap().contains("410"));

    // Slower than the configured timeout: transient, retried, then failed.
    let slow_list = list_with(&api, "slow", &[("s@example.org", "S")]);
    let slow = api.send_via(slow_list, "hook_slow");
    let c = api.wait_campaign(slow, Duration::from_secs(60), |c| c["status"] == "sent");
    assert_eq!(c["stats"]["failed"], 1, "{c}");
    let m = messages(&api, slow);
    assert_eq!(m["s@example.org"]["attempts"], 3, "timeouts are retried");
    let err = m["s@example.org"]["last_error"].as_str().unwrap();
    assert!(err.contains("timed out"), "{err}");
    // The URL's path may hold a credential: errors name the origin only.
    assert!(!err.contains("/slow"), "{err}");

    // Refused by the host before anything is sent, at the first attempt:
    // an origin not granted, and a hop-by-hop header (the host's to set).
    let before = peer.requests().len();
    for (transport, why) in [
        ("hook_denied", "denied by the host"),
        ("hook_hop", "header connection: the host sets it"),
    ] {
        let list = list_with(&api, transport, &[("d@example.org", "D")]);
        let campaign = api.send_via(list, transport);
        settled(&api, campaign);
        let m = &messages(&api, campaign)["d@example.org"];
        assert_eq!(m["status"], "failed", "{m}");
        assert_eq!(m["attempts"], 1, "{m}");
        let err = m["last_error"].as_str().unwrap();
        assert!(err.contains(why), "{err}");
    }
    assert_eq!(peer.requests().len(), before, "the receiver saw nothing");

    // A 4 MiB answer: the plugin is handed its first 64 KiB (cut JSON, so
    // no remote id), the rest is read and dropped, and the connection
    // serves the next request.
    let huge_list = list_with(&api, "huge", &[("h1@example.org", "H"), ("h2@example.org", "I")]);
    let huge = api.send_via(huge_list, "hook_huge");
    let c = settled(&api, huge);
    assert_eq!(c["stats"]["sent"], 2, "{c}");
    let m = messages(&api, huge);
    for email in ["h1@example.org", "h2@example.org"] {
        assert_eq!(m[email]["remote_id"], Value::Null, "{}", m[email]);
    }

    // Keep-alive: the ten requests above did not each open a connection.
    let all = peer.requests();
    let mut ports: Vec<u64> = all.iter().map(|r| r["client_port"].as_u64().unwrap()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert!(
        ports.len() < all.len(),
        "{} connections for {} requests",
        ports.len(),
        all.len()
    );

    // Transports are listed without their secrets.
    let (status, body) = api.get("/transports");
    assert_eq!(status, 200);
    assert!(!body.to_string().contains(WEBHOOK_SECRET));
    let hook = body
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "hook")
        .unwrap()
        .clone();
    assert!(hook["config_keys"].as_array().unwrap().contains(&json!("secret")));
    assert_eq!(
        hook["capabilities"]["http"],
        json!([format!("http://127.0.0.1:{}", peer.port)])
    );
    // Another user (not an admin) sees names and kinds, not the operator's
    // hosts, ports or config keys.
    let (status, body) = server.api(&other).get("/transports");
    assert_eq!(status, 200);
    let hook = body.as_array().unwrap().iter().find(|t| t["name"] == "hook").unwrap();
    assert_eq!(hook["component"], "webhook");
    for hidden in ["capabilities", "config_keys", "limits", "max_in_flight"] {
        assert!(hook.get(hidden).is_none(), "{hidden} shown to a non-admin: {hook}");
    }
}

#[test]
fn sigterm_during_retry_backoff_defers_cleanly_and_attempts_count_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let peer = HttpPeer::start(dir.path());
    // Backoffs long enough that every retry is waiting when SIGTERM comes.
    let toml = webhook_config(&peer).replace(
        "retry_base_ms = 100\nretry_max_ms = 300",
        "retry_base_ms = 3000\nretry_max_ms = 3000",
    );
    let (mut server, key, _) = Server::with_config_env(&toml, &[("POSTA_TEST_WEBHOOK_SECRET", WEBHOOK_SECRET)]);
    let api = server.api(&key);
    let people: Vec<(String, &str)> = (0..5).map(|i| (format!("b{i}@example.org"), "B")).collect();
    let refs: Vec<(&str, &str)> = people.iter().map(|(e, n)| (e.as_str(), *n)).collect();
    let list = list_with(&api, "busy", &refs);
    let campaign = api.send_via(list, "hook_busy");

    for round in 1..=2 {
        // Every message has had `round` attempts and waits out its backoff.
        peer.wait_requests(5 * round);
        std::thread::sleep(Duration::from_millis(200));
        assert!(server.terminate(), "SIGTERM ends with status 0");
        let at_stop = peer.requests().len();
        assert_eq!(at_stop, 5 * round, "no retry reached the receiver after SIGTERM");
        server.start_again();
    }
    let api = server.api(&key);
    let c = settled(&api, campaign);
    assert_eq!(c["stats"]["failed"], 5, "{c}");
    assert_eq!(c["stats"]["possible_duplicates"], 0, "a clean stop flags nothing: {c}");
    let mut per_key: HashMap<String, usize> = HashMap::new();
    for r in peer.requests() {
        *per_key
            .entry(r["headers"]["idempotency-key"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(per_key.len(), 5);
    assert!(
        per_key.values().all(|n| *n == 3),
        "max_attempts = 3 over two restarts: {per_key:?}"
    );
    for m in messages(&api, campaign).values() {
        assert_eq!(m["attempts"], 3, "{m}");
        assert_eq!(m["possible_duplicate"], false, "{m}");
        let err = m["last_error"].as_str().unwrap();
        assert!(err.contains("503") && err.contains("gave up after 3 attempts"), "{err}");
    }
}

#[test]
fn test_sends_reach_the_smtp_server_and_change_nothing_of_the_campaign() {
    let (_dir, peer, server, key) = smtp_setup();
    let api = server.api(&key);
    let list = api.ok_post("/lists", json!({"name": "t"}))["id"].as_u64().unwrap();
    let ada = api.ok_post(
        &format!("/lists/{list}/subscribers"),
        json!({"email": "ada@example.org", "name": "Ada", "attributes": {"plan": "pro"}}),
    )["subscribers"][0]["id"]
        .as_u64()
        .unwrap();
    let id = api.campaign(
        list,
        json!({"transport": "smtp_plain", "subject": "Hi {{ subscriber.name }} ({{ subscriber.attributes.plan }})"}),
    );
    let before = api.ok_get(&format!("/campaigns/{id}"));

    let preview = api.ok_get(&format!("/campaigns/{id}/preview?subscriber_id={ada}"));
    assert_eq!(preview["subject"], "Hi Ada (pro)", "{preview}");
    assert!(
        preview["text"].as_str().unwrap().contains("ada@example.org"),
        "{preview}"
    );
    let sample = api.ok_get(&format!("/campaigns/{id}/preview"));
    assert_eq!(sample["subject"], "Hi Sample Subscriber ()", "{sample}");

    let report = api.ok_post(
        &format!("/campaigns/{id}/test"),
        json!({"emails": ["qa1@example.org", "qa2@example.org"], "subscriber_id": ada}),
    );
    let results = report["results"].as_array().unwrap();
    assert!(results.iter().all(|r| r["sent"] == true), "{report}");
    let received = peer.wait_received(2);
    let mut to: Vec<String> = received
        .iter()
        .map(|m| m["rcpt_tos"][0].as_str().unwrap().to_string())
        .collect();
    to.sort();
    assert_eq!(to, ["qa1@example.org", "qa2@example.org"]);
    assert!(received.iter().all(|m| m["subject"] == "Hi Ada (pro)"), "{received:?}");

    let after = api.ok_get(&format!("/campaigns/{id}"));
    assert_eq!(
        (&after["status"], &after["stats"]),
        (&before["status"], &before["stats"]),
        "a test send changes nothing"
    );
    assert_eq!(api.ok_get(&format!("/campaigns/{id}/messages"))["items"], json!([]));

    // Bad input.
    let eleven: Vec<String> = (0..11).map(|i| format!("qa{i}@example.org")).collect();
    assert_eq!(
        api.post(&format!("/campaigns/{id}/test"), json!({"emails": eleven})).0,
        422
    );
    let (status, body) = api.post(
        &format!("/campaigns/{id}/test"),
        json!({"emails": ["ok@example.org", "nope"]}),
    );
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("emails[1]"), "{body}");
    assert_eq!(api.get(&format!("/campaigns/{id}/preview?subscriber_id=999999")).0, 404);
    assert_eq!(api.get("/campaigns/999999/preview").0, 404);
}
