use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use posta::config::Config;

#[derive(Parser)]
#[command(
    name = "posta",
    version,
    about = "Campaign email sender with sandboxed WebAssembly delivery adapters"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the HTTP API and the delivery engine.
    Serve {
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Address to listen on; port 0 picks a free one.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        #[arg(long, env = "POSTA_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Manages users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Works with plugin components.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Imports a CSV file into a list of a running server (header row:
    /// email, then any of name, timezone, status; other columns are
    /// attributes). Prints the report: counts and rejected rows by line.
    Import {
        file: PathBuf,
        #[arg(long)]
        list: u64,
        /// The server's address.
        #[arg(long, env = "POSTA_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// An API key of the list's owner.
        #[arg(long, env = "POSTA_KEY", hide_env_values = true)]
        key: String,
    },
    /// DKIM keys for signing outgoing mail.
    Dkim {
        #[command(subcommand)]
        command: DkimCommand,
    },
    /// Seeds a list, sends a campaign through the log transport, shows the result.
    Demo {
        /// Where to keep the demo's data (default: a new temporary directory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        #[arg(long, env = "POSTA_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Validates a component against the plugin contract: prints its kind,
    /// contract version, imports and the capabilities it may need.
    Check { file: PathBuf },
    /// Creates a transport project to start from: it POSTs each message as
    /// JSON to its `url` config through the host's HTTP client, and its
    /// `build.sh` installs the language's toolchain locally (pinned) and
    /// builds NAME.wasm.
    New {
        /// Lowercase letters, digits and hyphens: the crate, package and
        /// component file name.
        name: String,
        #[arg(long, value_enum)]
        lang: posta::plugins::scaffold::Lang,
        /// Where to create it (default: ./NAME); must not exist or be empty.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Rust only: the plugin SDK (default: this binary's source checkout).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum DkimCommand {
    /// Makes a key pair: writes the private key (PEM, mode 0600) and prints
    /// the `[[dkim]]` entry for posta.toml and the DNS TXT record to publish.
    Keygen {
        /// The From domain to sign for.
        domain: String,
        /// The DNS selector (any label; rotate keys by changing it).
        selector: String,
        #[arg(long, value_enum, default_value_t = posta::dkim::Algorithm::Rsa)]
        algorithm: posta::dkim::Algorithm,
        /// Where to write the key (default: dkim/DOMAIN.SELECTOR.pem).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Revokes an API key (posta_…), or every key of a user (an email).
    Revoke {
        key_or_email: String,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, env = "POSTA_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Issues another API key for a user; prints it as the last line.
    Key {
        email: String,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, env = "POSTA_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Creates a user and prints its API key as the last line.
    Add {
        email: String,
        /// May reload plugins (the first user always can).
        #[arg(long)]
        admin: bool,
        /// A domain the user's campaigns may send from (repeatable).
        #[arg(long = "domain")]
        domains: Vec<String>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, env = "POSTA_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Grants a user a sender domain (or with --remove takes it away).
    Domain {
        email: String,
        domain: String,
        #[arg(long)]
        remove: bool,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, env = "POSTA_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// The user with `email`, looked up page by page (the CLI's only way to
/// it by email).
async fn user_by_email(store: &posta::store::Store, email: &str) -> anyhow::Result<posta::domain::User> {
    let mut after = None;
    loop {
        let page = store.users(after, 1000).await?;
        if let Some(u) = page
            .items
            .iter()
            .find(|u| u.email.as_str().eq_ignore_ascii_case(email.trim()))
        {
            return Ok(u.clone());
        }
        match page.next_after {
            Some(a) => after = Some(a),
            None => anyhow::bail!("no user {email}"),
        }
    }
}

fn load(config: Option<PathBuf>, data_dir: Option<PathBuf>) -> anyhow::Result<Config> {
    let mut cfg = Config::load(config.as_deref())?;
    if let Some(d) = data_dir {
        cfg.server.data_dir = d;
    }
    Ok(cfg)
}

/// The store of a stopped server (redb allows one process at a time), or
/// the shared PostgreSQL database, which running nodes use meanwhile.
async fn open(config: Option<PathBuf>, data_dir: Option<PathBuf>) -> anyhow::Result<posta::store::Store> {
    let cfg = load(config, data_dir)?;
    let dir = posta::server::prepare_data_dir(&cfg.server.data_dir)?;
    posta::server::connect_store(&cfg, &dir).await.map_err(|e| {
        if cfg.database.url.is_some() {
            return e;
        }
        anyhow::anyhow!(
            "{e}\nwhile the server runs, manage users over its API with an admin key: \
             POST /api/v1/admin/users {{\"email\": …}}, POST /api/v1/admin/users/ID/keys, \
             DELETE /api/v1/admin/users/ID/keys/KEY_ID, POST /api/v1/admin/users/ID/domains"
        )
    })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::User {
            command:
                UserCommand::Domain {
                    email,
                    domain,
                    remove,
                    data_dir,
                    config,
                },
        } => {
            let store = open(config, data_dir).await?;
            let user = user_by_email(&store, &email).await?;
            let domain = posta::domain::sender::parse_domain(&domain).map_err(|e| anyhow::anyhow!(e.message))?;
            if remove {
                store
                    .remove_domain(user.id, domain.clone())
                    .await
                    .map_err(|e| match e {
                        posta::store::StoreError::NotFound => {
                            anyhow::anyhow!("{} has no sender domain {domain}", user.email)
                        }
                        e => e.into(),
                    })?;
                println!("{} may no longer send from {domain}", user.email);
            } else {
                store.add_domain(user.id, domain.clone(), chrono::Utc::now()).await?;
                println!("{} may send from {domain}", user.email);
            }
            Ok(())
        }
        Command::Serve {
            data_dir,
            listen,
            config,
        } => {
            let mut cfg = load(config, data_dir)?;
            if let Some(l) = listen {
                cfg.server.listen = l;
            }
            posta::server::serve(cfg).await
        }
        Command::User {
            command:
                UserCommand::Add {
                    email,
                    admin,
                    domains,
                    data_dir,
                    config,
                },
        } => {
            let store = open(config, data_dir).await?;
            let domains = domains
                .iter()
                .map(|d| posta::domain::sender::parse_domain(d).map_err(|e| anyhow::anyhow!(e.message)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let (user, key) = store.create_user_as(email.trim().to_string(), admin).await?;
            for d in &domains {
                store.add_domain(user.id, d.clone(), chrono::Utc::now()).await?;
            }
            let role = if user.admin { ", admin" } else { "" };
            println!("created user {} (id {}{role})", user.email, user.id);
            if !domains.is_empty() {
                println!("sender domains: {}", domains.join(", "));
            }
            println!("{key}");
            Ok(())
        }
        Command::User {
            command:
                UserCommand::Revoke {
                    key_or_email,
                    data_dir,
                    config,
                },
        } => {
            let store = open(config, data_dir).await?;
            let n = store
                .revoke(key_or_email.trim().to_string())
                .await
                .map_err(|e| match e {
                    posta::store::StoreError::NotFound => anyhow::anyhow!("no user {key_or_email}"),
                    e => e.into(),
                })?;
            println!("revoked {n} key(s)");
            Ok(())
        }
        Command::User {
            command:
                UserCommand::Key {
                    email,
                    data_dir,
                    config,
                },
        } => {
            let store = open(config, data_dir).await?;
            let (user, key) = store.new_key(email.trim().to_string()).await.map_err(|e| match e {
                posta::store::StoreError::NotFound => anyhow::anyhow!("no user {email}"),
                e => e.into(),
            })?;
            println!("new key for {}", user.email);
            println!("{key}");
            Ok(())
        }
        Command::Plugin {
            command: PluginCommand::Check { file },
        } => {
            let (report, cost) = posta::plugins::check::check(&file)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            print!("{report}{cost}");
            println!("ok: {} can be used as a {}", file.display(), report.kind);
            Ok(())
        }
        Command::Plugin {
            command: PluginCommand::New { name, lang, dir, sdk },
        } => {
            use posta::plugins::scaffold;
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let dir = std::path::absolute(&dir)?;
            let sdk = sdk.unwrap_or_else(scaffold::default_sdk);
            let files = scaffold::files(&name, lang, &dir, &sdk)?;
            scaffold::write(&dir, &files)?;
            println!("created {} ({} files)", dir.display(), files.len());
            println!(
                "next: bash {}/build.sh && posta plugin check {}/{name}.wasm",
                dir.display(),
                dir.display()
            );
            Ok(())
        }
        Command::Import { file, list, url, key } => {
            let report = posta::import::run(&file, list, &url, &key).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Dkim {
            command:
                DkimCommand::Keygen {
                    domain,
                    selector,
                    algorithm,
                    out,
                },
        } => {
            let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
            let key = posta::dkim::keygen(algorithm, &domain, &selector).map_err(|e| anyhow::anyhow!(e))?;
            let out = out.unwrap_or_else(|| PathBuf::from(format!("dkim/{domain}.{selector}.pem")));
            write_private(&out, key.pem.as_bytes())?;
            println!("wrote {}\n", out.display());
            println!("add to posta.toml (a relative path is read from the config file's directory):\n");
            println!("[[dkim]]\ndomain = {domain:?}\nselector = {selector:?}");
            println!("private_key_file = {:?}\n", out.display().to_string());
            println!("publish this DNS TXT record:\n");
            // Zone files take at most 255 bytes per quoted string; a TXT
            // record is their concatenation.
            let chunks: Vec<String> = key
                .record
                .as_bytes()
                .chunks(255)
                .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
                .collect();
            println!("{}. IN TXT {}", key.record_name, chunks.join(" "));
            Ok(())
        }
        Command::Demo {
            data_dir,
            subscribers,
            config,
        } => {
            let cfg = load(config, None)?;
            posta::demo::run(cfg, data_dir, subscribers).await
        }
    }
}

/// Writes a new secret file readable by its owner only; never overwrites.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

/// jemalloc for the server and the CLI (see host/Cargo.toml and
/// `posta::memory`): faster than glibc on the delivery path at a bounded
/// resident size.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("POSTA_LOG")
                .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // The API's runtime (and this thread, which drives the accept loop)
    // serves requests someone waits on.
    posta::scheduling::set_thread_role(posta::scheduling::Role::Interactive);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(|| posta::scheduling::set_thread_role(posta::scheduling::Role::Interactive))
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if std::env::var_os("POSTA_BACKTRACE").is_some() {
                eprintln!("{}", e.backtrace());
            }
            ExitCode::FAILURE
        }
    }
}
