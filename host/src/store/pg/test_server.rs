//! A real PostgreSQL server for tests: Debian's `postgresql` binaries
//! (`pg_config --bindir`), a cluster made by `initdb` in a temp dir and a
//! postmaster listening on a unix socket there only, started once per test
//! process; each test gets a database of its own, copied from a template
//! that already has the schema. No Docker, no TCP port.
//!
//! `initdb` refuses to run as root, so as root the cluster belongs to the
//! `postgres` user the package creates. The postmaster is the child of a
//! thread that lives as long as the process, with `PR_SET_PDEATHSIG`, so it
//! stops when the tests end however they end; a later run removes data
//! directories whose postmaster is gone.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const PREFIX: &str = "posta-pg-";
const TEMPLATE: &str = "posta_template";
const ROLE: &str = "posta";

/// The test process's PostgreSQL server.
pub struct TestServer {
    dir: PathBuf,
    bindir: PathBuf,
    owner: Option<(u32, u32)>,
    next: AtomicU32,
    durable: bool,
}

/// One test's database: `url` connects to it (a libpq key/value string).
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestServer {
    /// The server, started on first use. Panics with what is missing when
    /// PostgreSQL is not installed (`scripts/test.sh` installs it).
    pub fn get() -> &'static TestServer {
        static SERVER: OnceLock<TestServer> = OnceLock::new();
        SERVER.get_or_init(|| TestServer::start(false).unwrap_or_else(|e| panic!("test PostgreSQL: {e}")))
    }

    /// A second server with PostgreSQL's default durability (fsync,
    /// synchronous commit), for benchmarks: numbers from a server that may
    /// lose commits would flatter the queue.
    pub fn durable() -> &'static TestServer {
        static SERVER: OnceLock<TestServer> = OnceLock::new();
        SERVER.get_or_init(|| TestServer::start(true).unwrap_or_else(|e| panic!("test PostgreSQL: {e}")))
    }

    /// A server of its own, for a test that stops and starts it (a
    /// database outage) and must not take other tests' databases down
    /// with it. It lives, like the shared ones, until the process ends.
    /// Durable: with `synchronous_commit = off` an immediate stop loses
    /// the last commits it acknowledged (a claim the nodes already acted
    /// on), which no production server configured as documented does.
    pub fn private() -> &'static TestServer {
        Box::leak(Box::new(
            TestServer::start(true).unwrap_or_else(|e| panic!("test PostgreSQL: {e}")),
        ))
    }

    /// Stops the server the way a crash does (`pg_ctl stop -m immediate`:
    /// no checkpoint, every connection cut).
    pub fn stop_immediately(&self) {
        let data = self.dir.join("data");
        self.run(
            "pg_ctl",
            &[
                "stop".as_ref(),
                "-D".as_ref(),
                data.as_os_str(),
                "-m".as_ref(),
                "immediate".as_ref(),
                "-w".as_ref(),
            ],
        )
        .unwrap_or_else(|e| panic!("stopping the test PostgreSQL: {e}"));
    }

    /// Starts a stopped server again on its data (it recovers from its
    /// WAL first) and waits until it accepts connections.
    pub fn start_again(&self) {
        let data = self.dir.join("data");
        self.spawn_postmaster(&data, self.durable)
            .and_then(|()| self.wait_ready())
            .unwrap_or_else(|e| panic!("restarting the test PostgreSQL: {e}"));
    }

    /// A new empty database with the current schema.
    pub fn database(&self) -> TestDatabase {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name = format!("t_{}_{n}", std::process::id());
        self.psql(&format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE}"))
            .unwrap_or_else(|e| panic!("test PostgreSQL: {e}"));
        TestDatabase {
            url: self.url(&name),
            name,
        }
    }

    /// A libpq connection string for `database` over the server's socket.
    pub fn url(&self, database: &str) -> String {
        format!("host={} user={ROLE} dbname={database}", self.dir.display())
    }

    fn start(durable: bool) -> Result<TestServer, String> {
        let bindir = bindir()?;
        remove_stale();
        let dir = tempfile::Builder::new()
            .prefix(PREFIX)
            .tempdir()
            .map_err(|e| e.to_string())?
            .keep();
        let owner = postgres_owner()?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(|e| format!("chown {dir:?}: {e}"))?;
        }
        let data = dir.join("data");
        let server = TestServer {
            dir,
            bindir,
            owner,
            next: AtomicU32::new(0),
            durable,
        };
        server.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                ROLE.as_ref(),
                "--auth=trust".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--no-sync".as_ref(),
            ],
        )?;
        server.spawn_postmaster(&data, durable)?;
        server.wait_ready()?;
        server.psql(&format!("CREATE DATABASE {TEMPLATE}"))?;
        let url = server.url(TEMPLATE);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                let mut client = client;
                super::schema::migrate(&mut client).await.map_err(|e| e.to_string())
            })
        })
        .join()
        .map_err(|_| "migrating the template panicked".to_string())??;
        Ok(server)
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bindir.join(program));
        if let Some((uid, gid)) = self.owner {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        cmd.current_dir(&self.dir);
        cmd
    }

    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> Result<String, String> {
        let out = self
            .command(program)
            .args(args)
            .output()
            .map_err(|e| format!("{program}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{program} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `sql` in `database` (an unaligned `psql`); its output.
    fn psql_in(&self, database: &str, sql: &str) -> Result<String, String> {
        let dir = self.dir.clone();
        self.run(
            "psql",
            &[
                "-X".as_ref(),
                "-q".as_ref(),
                "-A".as_ref(),
                "-t".as_ref(),
                "-v".as_ref(),
                "ON_ERROR_STOP=1".as_ref(),
                "-h".as_ref(),
                dir.as_os_str(),
                "-U".as_ref(),
                ROLE.as_ref(),
                "-d".as_ref(),
                database.as_ref(),
                "-c".as_ref(),
                sql.as_ref(),
            ],
        )
    }

    fn psql(&self, sql: &str) -> Result<(), String> {
        self.psql_in("postgres", sql).map(drop)
    }

    /// The rows `sql` returns in the database `url` names (one of this
    /// server's), each as its columns' text: for tests and benchmarks that
    /// check what nodes stored without a client of their own.
    pub fn query(&self, url: &str, sql: &str) -> Result<Vec<Vec<String>>, String> {
        let database = url
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("dbname="))
            .ok_or_else(|| format!("no dbname in {url:?}"))?;
        let out = self.psql_in(database, sql)?;
        Ok(out
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.split('|').map(str::to_string).collect())
            .collect())
    }

    /// Starts the postmaster from a thread that never ends, so the parent
    /// death signal (sent when the spawning thread exits) comes only when
    /// the process does. Unless `durable`, settings trade durability for
    /// speed: a test cluster is thrown away.
    fn spawn_postmaster(&self, data: &Path, durable: bool) -> Result<(), String> {
        let mut cmd = self.command("postgres");
        cmd.arg("-D")
            .arg(data)
            .arg("-k")
            .arg(&self.dir)
            .args(["-c", "listen_addresses=", "-c", "max_connections=300"]);
        if !durable {
            cmd.args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join("postgres.log"))
                .map_err(|e| e.to_string())?,
        );
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                // SIGINT is PostgreSQL's fast shutdown.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("test-postgres".into())
            .spawn(move || match cmd.spawn() {
                Ok(mut child) => {
                    let _ = tx.send(Ok(()));
                    let _ = child.wait();
                    // The postmaster ended first (it should not): keep the
                    // thread alive all the same; its death would signal nothing.
                    loop {
                        std::thread::park();
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("postgres: {e}")));
                }
            })
            .map_err(|e| e.to_string())?;
        rx.recv().map_err(|e| e.to_string())?
    }

    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = self
                .command("pg_isready")
                .arg("-q")
                .arg("-h")
                .arg(&self.dir)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
                return Err(format!("the server did not start in 30 s:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Where the server binaries are: `pg_config --bindir`, else Debian's
/// newest `/usr/lib/postgresql/N/bin`.
fn bindir() -> Result<PathBuf, String> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .ok_or_else(|| "no initdb found: install Debian's `postgresql` package (scripts/test.sh does)".into())
}

/// As root, the uid and gid of the `postgres` user (initdb refuses root).
fn postgres_owner() -> Result<Option<(u32, u32)>, String> {
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = c"postgres";
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err("running as root and there is no `postgres` user to own the test cluster".into());
    }
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok(Some((uid, gid)))
}

/// Removes test clusters left by earlier runs whose postmaster is gone.
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if !e.file_name().to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let pid = std::fs::read_to_string(path.join("data/postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next()?.trim().parse::<i32>().ok());
        let alive = pid.is_some_and(|pid| unsafe { libc::kill(pid, 0) } == 0);
        // A cluster another test process is still creating has no pid yet.
        let young = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(120));
        if !alive && !young {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}
