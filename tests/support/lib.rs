//! Harness for end-to-end tests: runs the real `posta` binary on an
//! ephemeral port with a temporary data directory, and talks to it over
//! HTTP like any client would.

pub mod cluster;
pub mod peers;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use serde_json::{Value, json};

/// One compile cache for every server the tests start: each would
/// otherwise compile the same bundled components again (about a second and
/// a half of both cores in a debug build). `host/tests/integration/
/// compile_cache.rs` covers the cache itself.
pub fn compile_cache() -> PathBuf {
    posta_bin().parent().expect("profile dir").join("compile-cache")
}

/// The `posta` binary built by `cargo build` next to this test binary.
pub fn posta_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("POSTA_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test binary path");
    // Tests run from target/<profile>/deps/, the soak binary from
    // target/<profile>/; posta sits in target/<profile>/ either way.
    let dir = exe.parent().expect("binary dir");
    let bin = if dir.ends_with("deps") {
        dir.parent().expect("profile dir")
    } else {
        dir
    }
    .join("posta");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace` before the end-to-end tests (scripts/test.sh does)",
        bin.display()
    );
    bin
}

impl Server {
    /// Runs `posta import FILE --list LIST` against this server as a user
    /// would; returns the report it printed.
    pub fn import_csv(&self, key: &str, list: u64, file: &Path) -> Value {
        let list = list.to_string();
        let args: [&OsStr; 8] = [
            "import".as_ref(),
            file.as_ref(),
            "--list".as_ref(),
            list.as_ref(),
            "--url".as_ref(),
            self.base.as_ref(),
            "--key".as_ref(),
            key.as_ref(),
        ];
        serde_json::from_str(&posta(&args)).expect("a JSON report")
    }
}

/// A file under the workspace's `target/` that a script builds; `how`
/// says which, when it is missing.
fn built(relative: &str, how: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let path = root.join("target").join(relative);
    assert!(path.exists(), "{} is missing: {how}", path.display());
    path
}

/// The component `posta plugin new hello-LANG --lang LANG` built with its
/// own build.sh (scripts/scaffolds.sh, run by scripts/test.sh).
pub fn scaffold_plugin(lang: &str) -> PathBuf {
    built(
        &format!("scaffolds/{lang}/hello-{lang}.wasm"),
        "scripts/scaffolds.sh (run by scripts/test.sh) builds the scaffolded plugins",
    )
}

/// A test component built by scripts/test.sh from tests/plugins/.
pub fn test_plugin(crate_name: &str) -> PathBuf {
    built(
        &format!(
            "wasm-test-plugins/wasm32-wasip2/release/{}.wasm",
            crate_name.replace('-', "_")
        ),
        "scripts/test.sh builds tests/plugins for wasm32-wasip2",
    )
}

/// Runs the `posta` CLI with `args`; it must succeed. Returns its stdout.
pub fn posta(args: &[&OsStr]) -> String {
    let out = Command::new(posta_bin()).args(args).output().expect("run posta");
    assert!(
        out.status.success(),
        "posta {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The sender domains every test user is granted: the ones the tests
/// send from (`example.org`; DKIM-signed and unsigned ones in the
/// transport tests and the bench).
pub const TEST_DOMAINS: &[&str] = &["example.org", "ed.example.org", "unsigned.example", "signed.example"];

/// Runs `posta user add EMAIL` (with the `TEST_DOMAINS`) and returns the
/// key (the last line).
pub fn add_user(data_dir: &Path, email: &str, env: &[(String, String)]) -> String {
    let out = Command::new(posta_bin())
        .args(["user", "add", email])
        .args(TEST_DOMAINS.iter().flat_map(|d| ["--domain", d]))
        .arg("--data-dir")
        .arg(data_dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run posta");
    assert!(
        out.status.success(),
        "posta user add failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    stdout.lines().last().expect("key line").trim().to_string()
}

/// The store the servers of this test process run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Redb,
    /// A database of its own per server on the test PostgreSQL server
    /// (`posta::store::pg::test_server`), given as `POSTA_DATABASE_URL`.
    Postgres,
}

/// `POSTA_E2E_BACKEND` (`redb` or `postgres`) if set; otherwise PostgreSQL
/// for the `postgres` test binary (the suites it runs again there) and
/// redb for every other.
pub fn backend() -> Backend {
    static BACKEND: std::sync::OnceLock<Backend> = std::sync::OnceLock::new();
    *BACKEND.get_or_init(|| match std::env::var("POSTA_E2E_BACKEND").as_deref() {
        Ok("postgres") => Backend::Postgres,
        Ok("redb") => Backend::Redb,
        Ok(other) => panic!("POSTA_E2E_BACKEND={other}: expected redb or postgres"),
        Err(_) => {
            let exe = std::env::current_exe().expect("test binary path");
            let name = exe.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.starts_with("postgres-") {
                Backend::Postgres
            } else {
                Backend::Redb
            }
        }
    })
}

/// The environment a server and its CLI need for `backend()`: on
/// PostgreSQL a new database.
fn backend_env() -> Vec<(String, String)> {
    match backend() {
        Backend::Redb => Vec::new(),
        Backend::Postgres => {
            let db = posta::store::pg::test_server::TestServer::get().database();
            vec![("POSTA_DATABASE_URL".to_string(), db.url)]
        }
    }
}

pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub data_dir: PathBuf,
    config: Option<PathBuf>,
    /// Extra environment for the server process (secrets).
    env: Vec<(String, String)>,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// A fresh data directory with two users; returns the server and their keys.
    pub fn with_two_users() -> (Server, String, String) {
        Server::with_config("")
    }

    /// Like `with_two_users`, with extra posta.toml text. Request bodies are
    /// capped at 1 MiB so that oversized-body tests stay small.
    pub fn with_config(toml: &str) -> (Server, String, String) {
        Server::with_config_env(toml, &[])
    }

    /// Like `with_config`, with environment variables for the server.
    pub fn with_config_env(toml: &str, env: &[(&str, &str)]) -> (Server, String, String) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        env.extend(backend_env());
        let a = add_user(tmp.path(), "alice@example.org", &env);
        let b = add_user(tmp.path(), "bob@example.org", &env);
        let config = tmp.path().join("posta.toml");
        let text = if toml.contains("[server]") {
            toml.to_string()
        } else {
            format!("[server]\nmax_body_bytes = 1048576\n{toml}")
        };
        std::fs::write(&config, text).expect("write config");
        let mut s = Server {
            child: None,
            base: String::new(),
            data_dir: tmp.path().to_path_buf(),
            config: Some(config),
            env,
            _tmp: None,
        };
        s.spawn();
        s._tmp = Some(tmp);
        (s, a, b)
    }

    pub fn start_in(data_dir: PathBuf, config: Option<PathBuf>) -> Server {
        let mut s = Server {
            child: None,
            base: String::new(),
            data_dir,
            config,
            env: backend_env(),
            _tmp: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.join("server.log"))
            .expect("server log");
        let mut cmd = Command::new(posta_bin());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&self.data_dir)
            .env("POSTA_LOG", "info")
            .env("POSTA_COMPILE_CACHE", compile_cache())
            .stdout(Stdio::piped())
            .stderr(log);
        if let Some(c) = &self.config {
            cmd.arg("--config").arg(c);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let mut child = cmd.spawn().expect("spawn posta serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("posta listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let base = rx.recv_timeout(Duration::from_secs(120)).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "server did not start; log:\n{}",
                std::fs::read_to_string(self.data_dir.join("server.log")).unwrap_or_default()
            )
        });
        self.base = base;
        self.child = Some(child);
    }

    pub fn api(&self, key: &str) -> Api {
        Api {
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            base: self.base.clone(),
            key: Some(key.to_string()),
        }
    }

    pub fn anonymous(&self) -> Api {
        Api {
            key: None,
            ..self.api("")
        }
    }

    /// Stops the server abruptly (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Asks the server to stop (SIGTERM) and waits for it; returns whether
    /// it exited with status 0.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else { return false };
        let sent = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM failed");
        let start = Instant::now();
        loop {
            if let Some(status) = c.try_wait().expect("wait") {
                return status.success();
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = c.kill();
                panic!("server did not stop within 60 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same data directory.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.spawn();
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Resident memory of the server process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.proc_status_kib("VmRSS:")
    }

    /// CPU time the server process has used (user + system), in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        let pid = self.child.as_ref().expect("running").id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
        // The command name may hold spaces; fields count from after it.
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
        let ticks = |i: usize| fields[i].parse::<f64>().expect("clock ticks");
        // utime and stime are fields 14 and 15 of stat(5); 12 and 13 here.
        // USER_HZ is 100 on Linux.
        (ticks(11) + ticks(12)) / 100.0
    }

    /// The server's peak resident set so far (VmHWM).
    pub fn peak_rss_kib(&self) -> u64 {
        self.proc_status_kib("VmHWM:")
    }

    /// Starts the peak resident set (VmHWM) again from the current one, so
    /// a later `peak_rss_kib` tells what happened since.
    pub fn reset_peak_rss(&self) {
        let pid = self.child.as_ref().expect("running").id();
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset the peak RSS");
    }

    /// File descriptors the server process holds open.
    pub fn open_fds(&self) -> usize {
        let pid = self.child.as_ref().expect("running").id();
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .expect("proc fd")
    }

    fn proc_status_kib(&self, field: &str) -> u64 {
        let pid = self.child.as_ref().expect("running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("server.log")).unwrap_or_default()
    }

    /// Lines of the outbox that parse, and how many did not (a SIGKILL can
    /// cut the last line short).
    pub fn outbox_lenient(&self) -> (Vec<Value>, usize) {
        let path = self.data_dir.join("outbox").join("outbox.jsonl");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut torn = 0;
        let lines = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).map_err(|_| torn += 1).ok())
            .collect();
        (lines, torn)
    }

    /// Lines of the log transport's outbox, parsed.
    pub fn outbox(&self) -> Vec<Value> {
        let path = self.data_dir.join("outbox").join("outbox.jsonl");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad outbox line {l:?}: {e}")))
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The server's side of a failure is in its log.
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- server log (last lines) ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        self.kill();
    }
}

/// How many outbox lines each recipient got.
/// The one-click unsubscribe URL in an outbox line's List-Unsubscribe header.
pub fn unsubscribe_link(line: &Value) -> String {
    line["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .find(|h| h[0] == "List-Unsubscribe")
        .map(|h| {
            h[1].as_str()
                .expect("header value")
                .trim_matches(['<', '>'])
                .to_string()
        })
        .expect("a List-Unsubscribe header")
}

pub fn per_recipient(lines: &[Value]) -> std::collections::HashMap<String, u64> {
    let mut counts = std::collections::HashMap::new();
    for line in lines {
        *counts.entry(line["to"].as_str().expect("to").to_string()).or_default() += 1;
    }
    counts
}

pub struct Api {
    http: reqwest::blocking::Client,
    pub base: String,
    key: Option<String>,
}

/// Status and parsed JSON body (Null when empty).
pub type Reply = (u16, Value);

impl Api {
    fn send(&self, req: reqwest::blocking::RequestBuilder) -> Reply {
        let req = match &self.key {
            Some(k) => req.bearer_auth(k),
            None => req,
        };
        let resp = req.send().expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, body)
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1/users/me{path}", self.base)
    }

    pub fn get(&self, path: &str) -> Reply {
        self.send(self.http.get(self.url(path)))
    }

    pub fn post(&self, path: &str, body: Value) -> Reply {
        self.send(self.http.post(self.url(path)).json(&body))
    }

    /// POST to a full URL (routes outside /users/me).
    pub fn post_abs(&self, url: &str, body: Value) -> Reply {
        self.send(self.http.post(url).json(&body))
    }

    /// GET a full URL (routes outside /users/me).
    pub fn get_abs(&self, url: &str) -> Reply {
        self.send(self.http.get(url))
    }

    /// DELETE a full URL (routes outside /users/me).
    pub fn delete_abs(&self, url: &str) -> Reply {
        self.send(self.http.delete(url))
    }

    pub fn post_raw(&self, path: &str, body: &str) -> Reply {
        self.post_as(path, "application/json", body)
    }

    /// POSTs `body` as is, with `content_type`.
    pub fn post_as(&self, path: &str, content_type: &str, body: &str) -> Reply {
        self.send(
            self.http
                .post(self.url(path))
                .header("content-type", content_type)
                .body(body.to_string()),
        )
    }

    pub fn patch(&self, path: &str, body: Value) -> Reply {
        self.send(self.http.patch(self.url(path)).json(&body))
    }

    pub fn delete(&self, path: &str) -> Reply {
        self.send(self.http.delete(self.url(path)))
    }

    /// POST that must succeed; returns the body.
    pub fn ok_post(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.post(path, body);
        assert!((200..300).contains(&status), "POST {path}: {status} {v}");
        v
    }

    pub fn ok_get(&self, path: &str) -> Value {
        let (status, v) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    }

    /// A new list with `n` subscribers `{prefix}{i}@example.org`.
    pub fn list_of(&self, prefix: &str, n: usize) -> u64 {
        let id = self.ok_post("/lists", json!({"name": format!("{n} {prefix}")}))["id"]
            .as_u64()
            .unwrap();
        let subs: Vec<Value> = (0..n)
            .map(|i| json!({"email": format!("{prefix}{i}@example.org")}))
            .collect();
        for chunk in subs.chunks(10_000) {
            self.ok_post(&format!("/lists/{id}/subscribers"), Value::Array(chunk.to_vec()));
        }
        id
    }

    /// A draft campaign on `list`; `extra` overrides fields of a minimal one.
    pub fn campaign(&self, list: u64, extra: Value) -> u64 {
        let mut body = json!({
            "name": "Weekly",
            "subject": "Hi {{ subscriber.name }}",
            "from_email": "news@example.org",
            "list_id": list,
            "text": "Hello {{ subscriber.email }}"
        });
        for (k, v) in extra.as_object().expect("extra fields are an object") {
            body[k] = v.clone();
        }
        self.ok_post("/campaigns", body)["id"].as_u64().unwrap()
    }

    /// Creates a campaign as `campaign` does and sends it.
    /// Sends a campaign through `transport` whose subject, sender name and
    /// bodies are not ASCII, to see them arrive intact.
    pub fn send_via(&self, list: u64, transport: &str) -> u64 {
        self.send_campaign(
            list,
            json!({
                "transport": transport,
                "subject": "Grüße, {{ subscriber.name }} ✉",
                "from_name": "Zoë Posta",
                "from_email": "news@example.org",
                "html": "<p>Hallo <b>{{ subscriber.name }}</b> — déjà vu</p>",
                "text": "Hallo {{ subscriber.name }} — déjà vu",
            }),
        )
    }

    pub fn send_campaign(&self, list: u64, extra: Value) -> u64 {
        let id = self.campaign(list, extra);
        self.ok_post(&format!("/campaigns/{id}/send"), json!({}));
        id
    }

    /// Every message of a campaign, following the pages; `query` is extra
    /// query text such as `status=cancelled`.
    /// Each of campaign `id`'s messages' attempts.
    pub fn attempts(&self, id: u64) -> Vec<u64> {
        self.all_messages(id, "")
            .iter()
            .map(|m| m["attempts"].as_u64().unwrap())
            .collect()
    }

    pub fn all_messages(&self, id: u64, query: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after: Option<u64> = None;
        loop {
            let mut q = format!("/campaigns/{id}/messages?limit=1000");
            if !query.is_empty() {
                q.push('&');
                q.push_str(query);
            }
            if let Some(a) = after {
                q.push_str(&format!("&after={a}"));
            }
            let page = self.ok_get(&q);
            out.extend(page["items"].as_array().expect("items").iter().cloned());
            match page["next_after"].as_u64() {
                Some(a) => after = Some(a),
                None => return out,
            }
        }
    }

    /// Polls a campaign until `pred` holds or the timeout passes.
    pub fn wait_campaign(&self, id: u64, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let c = self.ok_get(&format!("/campaigns/{id}"));
            if pred(&c) {
                return c;
            }
            assert!(
                start.elapsed() < timeout,
                "campaign {id} never reached the expected state: {c}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_status(&self, id: u64, status: &str) -> Value {
        self.wait_campaign(id, Duration::from_secs(120), |c| c["status"] == status)
    }
}
