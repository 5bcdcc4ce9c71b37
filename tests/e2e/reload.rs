//! Hot reload: replacing a component file swaps it for new messages
//! without a restart; a bad replacement is refused and the old one stays.

use std::time::{Duration, Instant};

use posta_e2e::{Api, Server, json, test_plugin};

fn remote_ids(api: &Api, id: u64) -> Vec<String> {
    let page = api.ok_get(&format!("/campaigns/{id}/messages?status=sent&limit=1000"));
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["remote_id"].as_str().unwrap().to_string())
        .collect()
}

fn replace(path: &std::path::Path, bytes: &[u8]) {
    // Write beside and rename, as a deploy would: the watcher never sees a
    // half-written file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn replacing_the_file_swaps_the_component_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("fixture.wasm");
    std::fs::copy(test_plugin("posta-fixture"), &component).unwrap();
    let (server, admin, other) = Server::with_config(&format!(
        "[transports.fixture]\ncomponent = \"{}\"\nrate_limit = 600\n",
        component.display()
    ));
    let api = server.api(&admin);
    let list = api.list_of("ok", 60);
    let id = api.send_campaign(list, json!({"transport": "fixture"}));

    // Version 1 serves the first messages...
    let start = Instant::now();
    while remote_ids(&api, id).len() < 5 {
        assert!(start.elapsed() < Duration::from_secs(30), "no messages sent");
        std::thread::sleep(Duration::from_millis(50));
    }
    replace(&component, &std::fs::read(test_plugin("posta-fixture-v2")).unwrap());
    // ...and after the file changes, version 2 serves the rest.
    api.wait_status(id, "sent");
    let ids = remote_ids(&api, id);
    assert_eq!(ids.len(), 60);
    let v1 = ids.iter().filter(|r| r.starts_with("v1:")).count();
    let v2 = ids.iter().filter(|r| r.starts_with("v2:")).count();
    assert_eq!(v1 + v2, 60, "{ids:?}");
    assert!(
        v1 >= 5 && v2 >= 20,
        "v1 {v1}, v2 {v2}: the swap must happen mid-campaign"
    );
    assert!(server.log().contains("reloaded"), "the reload is logged");

    // A broken replacement is refused; version 2 stays in service.
    replace(&component, b"definitely not wasm");
    let (status, body) = api.post_abs(&format!("{}/api/v1/plugins/reload", server.base), json!({}));
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a valid component"),
        "{body}"
    );
    let again = api.ok_post(&format!("/campaigns/{id}/duplicate"), json!({}))["id"]
        .as_u64()
        .unwrap();
    api.ok_post(&format!("/campaigns/{again}/send"), json!({}));
    api.wait_status(again, "sent");
    assert!(remote_ids(&api, again).iter().all(|r| r.starts_with("v2:")));

    // Reloading is for admins only; the first user is one, the second not.
    let (status, body) = server
        .api(&other)
        .post_abs(&format!("{}/api/v1/plugins/reload", server.base), json!({}));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    replace(&component, &std::fs::read(test_plugin("posta-fixture")).unwrap());
    let (status, body) = api.post_abs(&format!("{}/api/v1/plugins/reload", server.base), json!({}));
    assert_eq!(status, 200, "{body}");
    assert!(
        body["reloaded"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().contains("fixture"))
    );
}
