//! Real peers for transport tests: a test certificate authority (rcgen),
//! the aiosmtpd SMTP server and the Python HTTP receiver in tests/peers/.
//! Each peer is a child process that exits when its stdin pipe closes, so
//! a panicking test leaves nothing running.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A CA and a server certificate it signed for `localhost` and 127.0.0.1:
/// a real chain, verified by the host's rustls with the CA as extra root.
pub struct TestCa {
    pub ca_pem: PathBuf,
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
}

impl TestCa {
    pub fn create(dir: &Path) -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "Posta test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().expect("ca key");
        let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
        let mut leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).expect("leaf");
        leaf.distinguished_name.push(DnType::CommonName, "localhost");
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key).expect("leaf cert");
        let ca_pem = dir.join("ca.pem");
        let cert_pem = dir.join("server.pem");
        let key_pem = dir.join("server.key");
        std::fs::write(&ca_pem, ca_cert.pem()).expect("write ca");
        std::fs::write(&cert_pem, leaf_cert.pem()).expect("write cert");
        std::fs::write(&key_pem, leaf_key.serialize_pem()).expect("write key");
        TestCa {
            ca_pem,
            cert_pem,
            key_pem,
        }
    }
}

fn peer_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers").join(name)
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("peer writes JSON lines"))
        .collect()
}

fn wait_for(what: &str, n: usize, timeout: Duration, read: impl Fn() -> Vec<Value>) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let got = read();
        if got.len() >= n {
            return got;
        }
        assert!(
            start.elapsed() < timeout,
            "expected {n} {what}, got {}: {got:?}",
            got.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub struct SmtpPeer {
    child: Child,
    _stdin: ChildStdin,
    pub plain: u16,
    pub starttls: u16,
    pub tls: u16,
    out: PathBuf,
}

impl SmtpPeer {
    pub fn start(dir: &Path, ca: &TestCa, password: &str) -> SmtpPeer {
        SmtpPeer::start_on(dir, ca, password, 0)
    }

    /// Like `start`, the plain listener on `plain_port` (0: any).
    pub fn start_on(dir: &Path, ca: &TestCa, password: &str, plain_port: u16) -> SmtpPeer {
        SmtpPeer::start_with(dir, ca, password, &["--plain-port", &plain_port.to_string()])
    }

    /// Like `start`, the plain listener answering `421 4.7.28` to
    /// recipients at `domain` for `seconds` from the first of them.
    pub fn start_deferring(dir: &Path, ca: &TestCa, password: &str, domain: &str, seconds: u32) -> SmtpPeer {
        SmtpPeer::start_deferring_slowly(dir, ca, password, domain, seconds, 0)
    }

    /// Like `start_deferring`, each message to `domain` it takes held
    /// `hold_ms` before the reply to DATA (so calls in flight overlap).
    pub fn start_deferring_slowly(
        dir: &Path,
        ca: &TestCa,
        password: &str,
        domain: &str,
        seconds: u32,
        hold_ms: u32,
    ) -> SmtpPeer {
        let (seconds, hold_ms) = (seconds.to_string(), hold_ms.to_string());
        SmtpPeer::start_with(
            dir,
            ca,
            password,
            &[
                "--defer-domain",
                domain,
                "--defer-seconds",
                &seconds,
                "--hold-ms",
                &hold_ms,
            ],
        )
    }

    fn start_with(dir: &Path, ca: &TestCa, password: &str, args: &[&str]) -> SmtpPeer {
        let out = dir.join("smtp-received");
        let mut cmd = Command::new("python3");
        cmd.arg(peer_script("smtp_server.py"))
            .args(args)
            .arg("--cert")
            .arg(&ca.cert_pem)
            .arg("--key")
            .arg(&ca.key_pem)
            .arg("--out")
            .arg(&out)
            // The password reaches the peer through its environment, as
            // the server's reaches posta.
            .env("SMTP_PEER_PASSWORD", password);
        let (child, stdin, ports) = spawn_ready(cmd, "smtp_server.py");
        let port = |k: &str| ports[k].as_u64().expect("port") as u16;
        SmtpPeer {
            plain: port("plain"),
            starttls: port("starttls"),
            tls: port("tls"),
            child,
            _stdin: stdin,
            out,
        }
    }

    /// Messages the server accepted, parsed by Python's email package.
    pub fn received(&self) -> Vec<Value> {
        read_jsonl(&self.out.join("received.jsonl"))
    }

    /// The deferrals the peer answered (`start_deferring`).
    pub fn deferred(&self) -> Vec<Value> {
        read_jsonl(&self.out.join("deferred.jsonl"))
    }

    pub fn wait_received(&self, n: usize) -> Vec<Value> {
        wait_for("received messages", n, Duration::from_secs(60), || self.received())
    }

    /// Waits for `n` messages and checks that each went to a recipient of
    /// its own (one message per subscriber).
    pub fn wait_once_each(&self, n: usize) -> Vec<Value> {
        let received = self.wait_received(n);
        let mut per: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for m in &received {
            *per.entry(m["rcpt_tos"][0].as_str().unwrap()).or_default() += 1;
        }
        assert_eq!(per.len(), n, "{n} recipients");
        assert!(per.values().all(|&k| k == 1), "once each: {per:?}");
        received
    }
}

/// The received messages whose recipient is at `domain`.
pub fn to_domain<'a>(received: &'a [Value], domain: &str) -> Vec<&'a Value> {
    let suffix = format!("@{domain}");
    received
        .iter()
        .filter(|m| m["rcpt_tos"][0].as_str().unwrap().ends_with(&suffix))
        .collect()
}

impl Drop for SmtpPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// posta.toml for quick retries (tests that watch them happen).
pub const QUICK_RETRIES: &str = "[delivery]\nmax_attempts = 3\nretry_base_ms = 100\nretry_max_ms = 300\n";

/// posta.toml for an SMTP transport `name` to a plain listener on `port`.
pub fn smtp_transport(name: &str, port: u16) -> String {
    format!(
        "[transports.{name}]\ncomponent = \"smtp\"\n\
         config = {{ host = \"127.0.0.1\", port = {port}, tls = \"none\", timeout_ms = 2000 }}\n\
         capabilities = {{ connect = [\"127.0.0.1:{port}\"] }}\n"
    )
}

/// Starts a Python peer and reads the JSON line it prints when ready.
fn spawn_ready(mut cmd: Command, script: &str) -> (Child, ChildStdin, Value) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs the test peer");
    let stdin = child.stdin.take().expect("stdin");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("peer prints its ports");
    let ready: Value = serde_json::from_str(&line)
        .unwrap_or_else(|_| panic!("{script} did not start (scripts/test.sh installs aiosmtpd with pip): {line:?}"));
    (child, stdin, ready)
}

pub struct HttpPeer {
    child: Child,
    _stdin: ChildStdin,
    pub port: u16,
    out: PathBuf,
}

impl HttpPeer {
    pub fn start(dir: &Path) -> HttpPeer {
        let out = dir.join("http-received");
        let mut cmd = Command::new("python3");
        cmd.arg(peer_script("http_receiver.py")).arg("--out").arg(&out);
        let (child, stdin, ready) = spawn_ready(cmd, "http_receiver.py");
        HttpPeer {
            port: ready["port"].as_u64().expect("port") as u16,
            child,
            _stdin: stdin,
            out,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Requests received so far: path, lower-cased headers, body text.
    pub fn requests(&self) -> Vec<Value> {
        read_jsonl(&self.out.join("requests.jsonl"))
    }

    pub fn wait_requests(&self, n: usize) -> Vec<Value> {
        wait_for("webhook requests", n, Duration::from_secs(60), || self.requests())
    }
}

impl Drop for HttpPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /metrics` as Prometheus would scrape it, parsed by
/// prometheus_client (tests/peers/prometheus_samples.py).
pub fn scrape(server: &crate::Server, token: Option<&str>) -> Vec<Value> {
    let (status, text) = scrape_raw(server, token);
    assert_eq!(status, 200, "{text}");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/prometheus_samples.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (scripts/test.sh puts the venv with prometheus_client first on PATH)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the exposition does not parse: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn scrape_raw(server: &crate::Server, token: Option<&str>) -> (u16, String) {
    let mut req = reqwest::blocking::Client::new().get(format!("{}/metrics", server.base));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().unwrap();
    (resp.status().as_u16(), resp.text().unwrap())
}

/// The value of the sample `name` whose labels include `labels`; 0 when
/// the series does not exist yet (a counter that never moved).
pub fn metric(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .map(|s| s["value"].as_f64().unwrap())
        .sum()
}
