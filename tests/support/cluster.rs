//! Several real `posta serve` processes on one PostgreSQL database (a new
//! one on the test server per cluster), each node with its own data
//! directory and so its own log-transport outbox.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use posta::store::pg::test_server::TestServer;

use super::{Server, Value, add_user};

pub struct Cluster {
    pub nodes: Vec<Server>,
    /// The API key of the one user (created before the nodes start).
    pub key: String,
    pub url: String,
    server: &'static TestServer,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    /// `n` nodes sharing a new database, each with `toml` as its
    /// posta.toml (a `[database]` section is added unless given).
    pub fn start(n: usize, toml: &str) -> Cluster {
        Cluster::start_on(TestServer::get(), n, toml)
    }

    /// Like `start`, on `server` (benchmarks use the durable one).
    pub fn start_on(server: &'static TestServer, n: usize, toml: &str) -> Cluster {
        let tmp = tempfile::tempdir().expect("tempdir");
        let url = server.database().url;
        let env = vec![("POSTA_DATABASE_URL".to_string(), url.clone())];
        let key = add_user(tmp.path(), "ops@example.org", &env);
        let text = if toml.contains("[database]") {
            toml.to_string()
        } else {
            // Short leases, so that a dead node's messages move on in
            // seconds rather than the default ten.
            format!("{toml}\n[database]\nlease_ms = 2000\nfence_margin_ms = 700\n")
        };
        let nodes = (0..n)
            .map(|i| {
                let dir = tmp.path().join(format!("node-{i}"));
                std::fs::create_dir_all(&dir).expect("node dir");
                let config = dir.join("posta.toml");
                std::fs::write(&config, &text).expect("write config");
                Server::start_with(dir, Some(config), env.clone())
            })
            .collect();
        Cluster {
            nodes,
            key,
            url,
            server,
            _tmp: tmp,
        }
    }

    /// Rows of `query` on the cluster's database, each as its columns'
    /// text (`psql -At`), for checks that count what the nodes stored.
    pub fn sql(&self, query: &str) -> Vec<Vec<String>> {
        self.server
            .query(&self.url, query)
            .unwrap_or_else(|e| panic!("{query}: {e}"))
    }

    /// One number from `query`.
    pub fn count(&self, query: &str) -> i64 {
        let rows = self.sql(query);
        rows.first()
            .and_then(|r| r.first())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{query}: no number in {rows:?}"))
    }

    /// Every node's outbox lines, with the node's index.
    pub fn outboxes(&self) -> Vec<(usize, Value)> {
        self.nodes
            .iter()
            .enumerate()
            .flat_map(|(i, n)| n.outbox_lenient().0.into_iter().map(move |l| (i, l)))
            .collect()
    }

    /// The index of the node leading the scheduler, waiting for one.
    pub fn leader(&self) -> usize {
        let start = Instant::now();
        loop {
            let leading: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| {
                    let log = self.nodes[i].log();
                    let led = log.rfind("leading the scheduler");
                    led.is_some() && led > log.rfind("lost the scheduler's lead")
                })
                .collect();
            if let [one] = leading[..] {
                return one;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no single leader: {leading:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Server {
    /// A server on `data_dir` with extra environment.
    pub fn start_with(data_dir: PathBuf, config: Option<PathBuf>, env: Vec<(String, String)>) -> Server {
        let mut s = Server {
            child: None,
            base: String::new(),
            data_dir,
            config,
            env,
            _tmp: None,
        };
        s.spawn();
        s
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends `signal` (`STOP`, `CONT`, `KILL`…) to the server process.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid();
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -{signal} {pid} failed");
    }
}
