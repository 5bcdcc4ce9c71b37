//! The transport's configuration, read once per instance.

use std::time::Duration;

use posta_plugin_sdk::config::{self, ConfigError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// No TLS at all: only for relays on a trusted network or tests.
    None,
    /// Plain connect, then STARTTLS; refuses to go on if the server does not
    /// offer it (no silent downgrade).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Auto,
    Plain,
    Login,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub credentials: Option<(String, String)>,
    pub auth: AuthMethod,
    pub helo_name: String,
    pub timeout: Duration,
    /// Messages sent over one connection before it is closed and reopened.
    pub reuse: u32,
    /// How long one connection is used before a fresh one is opened.
    pub max_age: Duration,
    /// Use PIPELINING (RFC 2920) when the server offers it.
    pub pipelining: bool,
    /// Use CHUNKING/BDAT (RFC 3030) when the server offers it.
    pub chunking: bool,
    pub allow_insecure_auth: bool,
    /// Have the host DKIM-sign messages whose From domain has a key
    /// (`[[dkim]]` in posta.toml). Off for relays that sign themselves.
    pub dkim: bool,
}

impl Settings {
    pub fn load() -> Result<Settings, ConfigError> {
        let security = match config::get("tls").as_deref().map(str::trim) {
            None | Some("starttls") => Security::StartTls,
            Some("tls") | Some("implicit") => Security::Tls,
            Some("none") => Security::None,
            Some(other) => {
                return Err(ConfigError {
                    key: "tls".into(),
                    reason: format!("{other:?} is not one of starttls, tls, none"),
                });
            }
        };
        let default_port = match security {
            Security::None => 25,
            Security::StartTls => 587,
            Security::Tls => 465,
        };
        let credentials = match (config::get("username"), config::get("password")) {
            (Some(u), Some(p)) => Some((u, p)),
            (None, None) => None,
            (Some(_), None) => return Err(missing("password", "username is set")),
            (None, Some(_)) => return Err(missing("username", "password is set")),
        };
        let auth = match config::get("auth").as_deref().map(str::trim) {
            None | Some("auto") => AuthMethod::Auto,
            Some("plain") => AuthMethod::Plain,
            Some("login") => AuthMethod::Login,
            Some(other) => {
                return Err(ConfigError {
                    key: "auth".into(),
                    reason: format!("{other:?} is not one of auto, plain, login"),
                });
            }
        };
        Ok(Settings {
            host: config::require("host")?,
            port: config::parse_or("port", default_port)?,
            security,
            credentials,
            auth,
            helo_name: config::get("helo_name").unwrap_or_else(|| "localhost".into()),
            timeout: Duration::from_millis(config::parse_or("timeout_ms", 8_000u64)?),
            reuse: config::parse_or("reuse_connection", 1000u32)?.max(1),
            max_age: Duration::from_millis(config::parse_or("connection_max_age_ms", 300_000u64)?),
            pipelining: config::parse_or("pipelining", true)?,
            chunking: config::parse_or("chunking", true)?,
            allow_insecure_auth: config::parse_or("allow_insecure_auth", false)?,
            dkim: config::parse_or("dkim", true)?,
        })
    }
}

fn missing(key: &str, because: &str) -> ConfigError {
    ConfigError {
        key: key.into(),
        reason: format!("is required because {because}"),
    }
}
