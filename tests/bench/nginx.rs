//! nginx as a webhook receiver and ApacheBench (`ab -k`) as its limit, the
//! pair #35 measured the webhook against: nginx answers every request 204
//! from keep-alive connections; `ab` (C, one thread) posts the same body
//! over the same number of connections.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::delivery::{free_port, wait_listening};

/// An nginx of its own (config, pid, temp paths under a temp dir),
/// killed on drop.
pub(super) struct Nginx {
    child: Child,
    pub(super) port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// None when nginx is not installed (scripts/bench.sh installs it).
    pub(super) fn start() -> Option<Nginx> {
        let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())?;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().display().to_string();
        let port = free_port();
        // Keep-alive without a request cap (nginx closes a connection
        // after 1,000 by default), no access log: the receiver does no
        // more than answer.
        let conf = format!(
            "daemon off;\n\
             worker_processes 1;\n\
             pid {root}/nginx.pid;\n\
             error_log {root}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
               access_log off;\n\
               keepalive_requests 1000000;\n\
               keepalive_timeout 75s;\n\
               client_body_temp_path {root}/body;\n\
               proxy_temp_path {root}/proxy;\n\
               fastcgi_temp_path {root}/fastcgi;\n\
               uwsgi_temp_path {root}/uwsgi;\n\
               scgi_temp_path {root}/scgi;\n\
               server {{\n\
                 listen 127.0.0.1:{port};\n\
                 location / {{ return 204; }}\n\
               }}\n\
             }}\n"
        );
        let conf_file = dir.path().join("nginx.conf");
        std::fs::write(&conf_file, conf).unwrap();
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let nginx = Nginx { child, port, dir };
        wait_listening(port, || {
            let log = std::fs::read_to_string(nginx.dir.path().join("error.log")).unwrap_or_default();
            format!("nginx did not start: {log}")
        });
        Some(nginx)
    }

    /// `ab -k -c connections -n n` posting a `body_len`-byte JSON body;
    /// its requests/s (None without `ab`).
    pub(super) fn ab(&self, connections: usize, n: usize, body_len: usize) -> Option<f64> {
        let bin = ["/usr/bin/ab", "/usr/sbin/ab"]
            .into_iter()
            .find(|p| Path::new(p).exists())?;
        let body = self.dir.path().join("body.json");
        std::fs::write(&body, vec![b'x'; body_len]).unwrap();
        let out = Command::new(bin)
            .args(["-q", "-k", "-c", &connections.to_string(), "-n", &n.to_string()])
            .arg("-p")
            .arg(&body)
            .args(["-T", "application/json"])
            .arg(format!("http://127.0.0.1:{}/hook", self.port))
            .output()
            .expect("run ab");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "ab failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let failed = field(&text, "Failed requests:").unwrap_or(0.0);
        let non_2xx = field(&text, "Non-2xx responses:").unwrap_or(0.0);
        assert!(failed == 0.0 && non_2xx == 0.0, "ab saw failures: {text}");
        field(&text, "Requests per second:")
    }
}

/// The number after `label` in ab's report.
fn field(report: &str, label: &str) -> Option<f64> {
    let line = report.lines().find(|l| l.starts_with(label))?;
    line[label.len()..].split_whitespace().next()?.parse().ok()
}

impl Drop for Nginx {
    /// TERM, not KILL: a killed master leaves its workers running (and
    /// listening) as orphans; on TERM it stops them first.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}
