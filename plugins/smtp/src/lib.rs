//! Posta's SMTP transport. The SMTP dialog runs here, in the sandbox; TLS
//! (STARTTLS or implicit) is done by the host's rustls through `wasi:tls`,
//! so certificates are checked by an audited stack against the system's
//! roots. Connections are kept open across messages (RSET between them)
//! while this instance lives.
//!
//! Errors: 4xx replies and connection trouble are transient (retried), 5xx
//! replies, invalid addresses and missing permissions are permanent.

mod client;
mod mime;
mod settings;

use std::cell::RefCell;
use std::io;

use client::{Client, SmtpError};
use posta_plugin_sdk::net::{self, Stream};
use posta_plugin_sdk::{DeliveryError, Message, Receipt, Transport, config};
use settings::{AuthMethod, Security, Settings};
use smtp_proto::EhloResponse;

struct Session {
    client: Client<Stream>,
    ehlo: EhloResponse<String>,
    sent: u32,
}

thread_local! {
    static SETTINGS: RefCell<Option<Settings>> = const { RefCell::new(None) };
    static SESSION: RefCell<Option<Session>> = const { RefCell::new(None) };
}

fn settings() -> Result<Settings, DeliveryError> {
    config::cached(&SETTINGS, Settings::load).map_err(|e| DeliveryError::Permanent(e.to_string()))
}

/// Maps a failure to the delivery contract: 5xx is final, 4xx and broken
/// connections are worth retrying, a missing grant is a configuration
/// error no retry can fix.
fn classify(e: SmtpError) -> DeliveryError {
    match &e {
        SmtpError::Reply { code, .. } if (500..600).contains(code) => DeliveryError::Permanent(e.to_string()),
        SmtpError::Reply { .. } => DeliveryError::Transient(e.to_string()),
        SmtpError::Io(io) if io.kind() == io::ErrorKind::PermissionDenied => DeliveryError::Permanent(e.to_string()),
        SmtpError::Io(_) => DeliveryError::Transient(e.to_string()),
        SmtpError::Unsupported(_) => DeliveryError::Permanent(e.to_string()),
    }
}

fn open(s: &Settings) -> Result<Session, SmtpError> {
    let mut stream = net::connect(&s.host, s.port, s.timeout)?;
    if s.security == Security::Tls {
        stream = stream.start_tls(&s.host)?;
    }
    let mut client = Client::new(stream);
    client.greeting()?;
    let mut ehlo = client.ehlo(&s.helo_name)?;
    if s.security == Security::StartTls {
        if !ehlo.has_capability(smtp_proto::EXT_START_TLS) {
            return Err(SmtpError::Unsupported(format!(
                "{}:{} does not offer STARTTLS; set tls = \"tls\" for implicit TLS or \"none\" to send in clear",
                s.host, s.port
            )));
        }
        client.command("STARTTLS", "STARTTLS", 220)?;
        let stream = client.into_inner()?.start_tls(&s.host)?;
        client = Client::new(stream);
        // The capabilities before TLS are not to be trusted (RFC 3207 §4.2).
        ehlo = client.ehlo(&s.helo_name)?;
    }
    if let Some((user, password)) = &s.credentials {
        if !client.stream().is_tls() && !s.allow_insecure_auth {
            return Err(SmtpError::Unsupported(
                "refusing to send credentials without TLS (set allow_insecure_auth = true to override)".into(),
            ));
        }
        let offers = |m: u64| ehlo.auth_mechanisms & m != 0;
        match s.auth {
            AuthMethod::Plain => client.auth_plain(user, password)?,
            AuthMethod::Login => client.auth_login(user, password)?,
            AuthMethod::Auto if offers(smtp_proto::AUTH_PLAIN) => client.auth_plain(user, password)?,
            AuthMethod::Auto if offers(smtp_proto::AUTH_LOGIN) => client.auth_login(user, password)?,
            AuthMethod::Auto => {
                return Err(SmtpError::Unsupported(format!(
                    "{}:{} offers neither AUTH PLAIN nor LOGIN",
                    s.host, s.port
                )));
            }
        }
    }
    Ok(Session { client, ehlo, sent: 0 })
}

/// The kept session if it still answers, otherwise a new one.
fn session(s: &Settings) -> Result<Session, SmtpError> {
    if let Some(mut kept) = SESSION.with(|c| c.borrow_mut().take()) {
        if kept.sent < s.reuse && kept.client.rset().is_ok() {
            return Ok(kept);
        }
        kept.client.quit();
    }
    open(s)
}

fn send(s: &Settings, message: &Message) -> Result<Receipt, DeliveryError> {
    let built = mime::build(message).map_err(DeliveryError::Permanent)?;
    let mut session = session(s).map_err(classify)?;
    if session.ehlo.size > 0 && built.bytes.len() > session.ehlo.size {
        let limit = session.ehlo.size;
        SESSION.with(|c| *c.borrow_mut() = Some(session));
        return Err(DeliveryError::Permanent(format!(
            "message is {} bytes; the server accepts at most {limit}",
            built.bytes.len()
        )));
    }
    let utf8 = !built.from.is_ascii() || !built.to.is_ascii();
    if utf8 && !session.ehlo.has_capability(smtp_proto::EXT_SMTP_UTF8) {
        SESSION.with(|c| *c.borrow_mut() = Some(session));
        return Err(DeliveryError::Permanent(
            "the address is not ASCII and the server does not offer SMTPUTF8".into(),
        ));
    }
    match session.client.transaction(&built.from, &built.to, &built.bytes, utf8) {
        Ok(reply) => {
            session.sent += 1;
            SESSION.with(|c| *c.borrow_mut() = Some(session));
            Ok(Receipt {
                remote_id: client::queue_id(&reply.text),
                detail: format!("{} {}", reply.code, reply.text),
            })
        }
        Err(e) => {
            // After a reply the session is still in step (RSET comes next);
            // after an I/O error it is not, so it is dropped.
            if matches!(e, SmtpError::Reply { .. }) {
                SESSION.with(|c| *c.borrow_mut() = Some(session));
            }
            Err(classify(e))
        }
    }
}

struct Smtp;

impl Transport for Smtp {
    fn deliver(message: Message) -> Result<Receipt, DeliveryError> {
        let s = settings()?;
        send(&s, &message)
    }
}

posta_plugin_sdk::export_transport!(Smtp);
