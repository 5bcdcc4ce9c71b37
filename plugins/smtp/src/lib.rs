//! Posta's SMTP transport. The SMTP dialog runs here, in the sandbox; TLS
//! (STARTTLS or implicit) is done by the host's rustls through `wasi:tls`,
//! so certificates are checked by an audited stack against the system's
//! roots. Connections are kept open across messages (RSET between them)
//! while this instance lives.
//!
//! Errors: 4xx replies and connection trouble are transient (retried), 5xx
//! replies, invalid addresses and missing permissions are permanent; a 5xx
//! refusing the recipient itself is `rejected` (the host records a hard
//! bounce); a connection that fails before MAIL FROM (refused, timed out,
//! 4xx greeting, TLS, AUTH) is `unreachable` (a pool tries another
//! transport). Messages are DKIM-signed by the host when their From domain
//! has a key.

mod body;
mod client;
mod mime;
mod settings;
mod word;

use std::cell::RefCell;
use std::io;
use std::time::Instant;

use client::{Client, Extensions, SmtpError};
use posta_plugin_sdk::net::{self, Stream};
use posta_plugin_sdk::{BatchTransport, DeliveryError, Message, Receipt, Transport, config};
use settings::{AuthMethod, Security, Settings};
use smtp_proto::EhloResponse;

struct Session {
    client: Client<Stream>,
    ehlo: EhloResponse<String>,
    sent: u32,
    opened: Instant,
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
        SmtpError::Reply { step, code, text } if recipient_refused(step, *code, text) => {
            DeliveryError::Rejected(e.to_string())
        }
        SmtpError::Reply { code, .. } if (500..600).contains(code) => DeliveryError::Permanent(e.to_string()),
        SmtpError::Reply { code, text, .. } if slow_down(*code, text) => DeliveryError::deferred(e),
        SmtpError::Reply { .. } => DeliveryError::Transient(e.to_string()),
        SmtpError::Io(io) if io.kind() == io::ErrorKind::PermissionDenied => DeliveryError::Permanent(e.to_string()),
        SmtpError::Io(_) => DeliveryError::Transient(e.to_string()),
        SmtpError::Unsupported(_) => DeliveryError::Permanent(e.to_string()),
    }
}

/// Whether a 4xx reply asks the sender to slow down rather than saying
/// something about this message: 421 (the server closes for now), an
/// enhanced code 4.7.x (policy: Gmail's 4.7.28, Yahoo's 4.7.0 "too many"),
/// or a 450/451 whose text speaks of rates or too many messages.
fn slow_down(code: u16, text: &str) -> bool {
    if !(400..500).contains(&code) {
        return false;
    }
    let lower = text.to_ascii_lowercase();
    code == 421
        || lower
            .split_whitespace()
            .next()
            .is_some_and(|esc| esc.starts_with("4.7."))
        || (matches!(code, 450 | 451)
            && ["rate", "too many", "throttl", "slow down"]
                .iter()
                .any(|w| lower.contains(w)))
}

/// Whether a reply refuses the recipient's address for good (a hard
/// bounce), as opposed to refusing this sender or this message: a 5xx to
/// RCPT TO whose enhanced code (RFC 3463) says the mailbox or its system
/// is bad (5.1.x) or disabled (5.2.1), or without one, 550/551/553
/// (RFC 5321 §4.2.2). Policy refusals (5.7.x: relaying denied, sender
/// blocked) and a full mailbox (5.2.2) are about something else and must
/// not suppress a good address.
fn recipient_refused(step: &str, code: u16, text: &str) -> bool {
    if step != "RCPT TO" || !(500..600).contains(&code) {
        return false;
    }
    let enhanced = text
        .split_whitespace()
        .next()
        .filter(|t| t.starts_with("5.") && t.bytes().all(|b| b.is_ascii_digit() || b == b'.'));
    match enhanced {
        Some(esc) => esc.starts_with("5.1.") || esc == "5.2.1",
        None => matches!(code, 550 | 551 | 553),
    }
}

/// The message as it goes on the wire: the host's DKIM-Signature in front
/// when the From domain has a key.
fn signed(s: &Settings, bytes: Vec<u8>) -> Result<Vec<u8>, DeliveryError> {
    if !s.dkim {
        return Ok(bytes);
    }
    match posta_plugin_sdk::host::dkim_sign(&bytes) {
        Ok(None) => Ok(bytes),
        Ok(Some(header)) => {
            let mut out = Vec::with_capacity(header.len() + bytes.len());
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(&bytes);
            Ok(out)
        }
        Err(e) => Err(DeliveryError::Permanent(format!("DKIM signing: {e}"))),
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
    Ok(Session {
        client,
        ehlo,
        sent: 0,
        opened: Instant::now(),
    })
}

/// The connection kept from an earlier message, unless it has carried
/// its share of messages or lived its time.
fn kept(s: &Settings) -> Option<Session> {
    let kept = SESSION.with(|c| c.borrow_mut().take())?;
    if kept.sent < s.reuse && kept.opened.elapsed() < s.max_age {
        return Some(kept);
    }
    kept.client.quit();
    None
}

fn keep(session: Session) {
    SESSION.with(|c| *c.borrow_mut() = Some(session));
}

fn extensions(s: &Settings, ehlo: &EhloResponse<String>, smtputf8: bool) -> Extensions {
    Extensions {
        pipelining: s.pipelining && ehlo.has_capability(smtp_proto::EXT_PIPELINING),
        chunking: s.chunking && ehlo.has_capability(smtp_proto::EXT_CHUNKING),
        smtputf8,
    }
}

/// The message on the wire, signed when its domain has a key.
fn built(s: &Settings, message: Message) -> Result<mime::Built, DeliveryError> {
    let mut built = mime::build(message).map_err(DeliveryError::Permanent)?;
    built.bytes = signed(s, std::mem::take(&mut built.bytes))?;
    Ok(built)
}

/// Why this session cannot carry the message at all, if it cannot.
fn unfit(session: &Session, built: &mime::Built) -> Option<DeliveryError> {
    if session.ehlo.size > 0 && built.bytes.len() > session.ehlo.size {
        return Some(DeliveryError::Permanent(format!(
            "message is {} bytes; the server accepts at most {}",
            built.bytes.len(),
            session.ehlo.size
        )));
    }
    if needs_utf8(built) && !session.ehlo.has_capability(smtp_proto::EXT_SMTP_UTF8) {
        return Some(DeliveryError::Permanent(
            "the address is not ASCII and the server does not offer SMTPUTF8".into(),
        ));
    }
    None
}

fn needs_utf8(built: &mime::Built) -> bool {
    !built.from.is_ascii() || !built.to.is_ascii()
}

/// The kept session, or a new one. A fresh connection that fails before
/// MAIL FROM: the relay saw nothing of the message (a pool may try
/// another).
fn use_or_open(s: &Settings, reused: Option<Session>) -> Result<Session, DeliveryError> {
    match reused {
        Some(session) => Ok(session),
        None => open(s).map_err(|e| match classify(e) {
            DeliveryError::Transient(e) => DeliveryError::unreachable(e),
            other => other,
        }),
    }
}

fn receipt(reply: client::Reply) -> Receipt {
    Receipt {
        remote_id: client::queue_id(&reply.text),
        detail: format!("{} {}", reply.code, reply.text),
    }
}

fn send(s: &Settings, built: &mime::Built) -> Result<Receipt, DeliveryError> {
    let mut reused = kept(s);
    loop {
        let was_kept = reused.is_some();
        let mut session = use_or_open(s, reused.take())?;
        if let Some(refused) = unfit(&session, built) {
            keep(session);
            return Err(refused);
        }
        let ext = extensions(s, &session.ehlo, needs_utf8(built));
        let answered = session.client.replies();
        match session.client.transaction(&built.from, &built.to, &built.bytes, ext) {
            Ok(reply) => {
                session.sent += 1;
                keep(session);
                return Ok(receipt(reply));
            }
            // A kept connection the server closed while it sat idle fails
            // before answering anything: the server saw no part of this
            // message, so it goes again on a fresh connection, within this
            // attempt.
            Err(SmtpError::Io(e)) if was_kept && session.client.replies() == answered => {
                posta_plugin_sdk::debug!("kept connection is gone ({e}); reconnecting");
                continue;
            }
            Err(e) => {
                // After a reply the session is still in step (the next
                // transaction starts with RSET); after an I/O error it is
                // not, so it is dropped.
                if matches!(e, SmtpError::Reply { .. }) {
                    keep(session);
                }
                return Err(classify(e));
            }
        }
    }
}

/// Several messages on one connection, each envelope pipelined behind the
/// last body (`Client::pipelined`) when the server offers PIPELINING and
/// not CHUNKING; otherwise one transaction after another.
fn send_all(s: &Settings, messages: Vec<Message>) -> Vec<Result<Receipt, DeliveryError>> {
    let mut results: Vec<Option<Result<Receipt, DeliveryError>>> = Vec::with_capacity(messages.len());
    let mut ready = Vec::with_capacity(messages.len());
    for message in messages {
        match built(s, message) {
            Ok(b) => {
                ready.push((results.len(), b));
                results.push(None);
            }
            Err(e) => results.push(Some(Err(e))),
        }
    }
    let session = match use_or_open(s, kept(s)) {
        Ok(session) => session,
        Err(e) => {
            return results
                .into_iter()
                .map(|r| r.unwrap_or_else(|| Err(e.clone())))
                .collect();
        }
    };
    let ext = extensions(s, &session.ehlo, false);
    if !ext.pipelining || ext.chunking {
        keep(session);
        for (i, b) in &ready {
            results[*i] = Some(send(s, b));
        }
        return results.into_iter().map(|r| r.expect("every message sent")).collect();
    }
    pipeline(s, session, &ready, &mut results);
    results
        .into_iter()
        .map(|r| r.expect("every message answered"))
        .collect()
}

/// `send_all`'s pipelined part: fills `results` for `ready`. When the
/// connection breaks, the message it cut off fails (transient) if the
/// server had begun to answer it or may have taken it; the ones it never
/// answered go one by one on fresh connections, within this attempt, as
/// a lone message whose kept connection was gone does.
fn pipeline(
    s: &Settings,
    mut session: Session,
    ready: &[(usize, mime::Built)],
    results: &mut [Option<Result<Receipt, DeliveryError>>],
) {
    let mut go = Vec::with_capacity(ready.len());
    for (i, b) in ready {
        match unfit(&session, b) {
            Some(refused) => results[*i] = Some(Err(refused)),
            None => go.push((*i, b)),
        }
    }
    let items: Vec<client::Item<'_>> = go
        .iter()
        .map(|(_, b)| client::Item {
            from: &b.from,
            to: &b.to,
            body: &b.bytes,
            smtputf8: needs_utf8(b),
        })
        .collect();
    let (replies, broke) = session.client.pipelined(&items);
    session.sent += replies.len() as u32;
    let done = replies.len();
    for ((i, _), reply) in go.iter().zip(replies) {
        results[*i] = Some(reply.map(receipt).map_err(classify));
    }
    let Some((e, cut)) = broke else {
        keep(session);
        return;
    };
    let mut rest = go[done..].iter();
    if cut != client::Cut::Unsent
        && let Some((i, _)) = rest.next()
    {
        results[*i] = Some(Err(classify(e)));
    } else {
        posta_plugin_sdk::debug!("connection is gone ({e}); the rest go one by one");
    }
    for (i, b) in rest {
        results[*i] = Some(send(s, b));
    }
}

struct Smtp;

impl Transport for Smtp {
    fn deliver(message: Message) -> Result<Receipt, DeliveryError> {
        let s = settings()?;
        send(&s, &built(&s, message)?)
    }
}

impl BatchTransport for Smtp {
    fn deliver_batch(messages: Vec<Message>) -> Vec<Result<Receipt, DeliveryError>> {
        match settings() {
            Ok(s) => send_all(&s, messages),
            Err(e) => messages.iter().map(|_| Err(e.clone())).collect(),
        }
    }
}

posta_plugin_sdk::export_batch_transport!(Smtp);

#[cfg(test)]
mod tests {
    use super::{recipient_refused, slow_down};

    #[test]
    fn slow_downs_are_told_from_other_temporary_failures() {
        for (code, text, slow) in [
            (
                421,
                "4.7.28 Our system has detected an unusual rate of unsolicited mail",
                true,
            ),
            (421, "Service not available, closing", true),
            (451, "4.7.1 Please try again later", true),
            (450, "Too many messages from your IP", true),
            (451, "Rate limited, try again", true),
            (451, "4.3.0 Temporary failure, try again later", false),
            (450, "4.2.1 Mailbox busy", false),
            (452, "4.2.2 Mailbox full", false),
            (550, "5.7.1 rate", false),
        ] {
            assert_eq!(slow_down(code, text), slow, "{code} {text}");
        }
    }

    #[test]
    fn only_refusals_of_the_address_are_rejections() {
        for (step, code, text, refused) in [
            ("RCPT TO", 550, "5.1.1 Mailbox unavailable", true),
            ("RCPT TO", 550, "5.1.10 Recipient address has null MX", true),
            ("RCPT TO", 550, "5.2.1 Mailbox disabled", true),
            ("RCPT TO", 550, "No such user here", true),
            ("RCPT TO", 553, "mailbox name not allowed", true),
            ("RCPT TO", 554, "5.7.1 Relay access denied", false),
            ("RCPT TO", 550, "5.7.1 Sender blocked", false),
            ("RCPT TO", 552, "5.2.2 Mailbox full", false),
            ("RCPT TO", 554, "Transaction failed", false),
            ("RCPT TO", 450, "4.1.1 try later", false),
            ("MAIL FROM", 550, "5.1.8 Bad sender", false),
            ("end of DATA", 550, "5.1.1 Mailbox unavailable", false),
        ] {
            assert_eq!(recipient_refused(step, code, text), refused, "{step} {code} {text}");
        }
    }
}
