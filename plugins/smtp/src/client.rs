//! The SMTP dialog (RFC 5321) over any byte stream. smtp-proto interprets
//! replies (codes, enhanced status codes, EHLO capabilities); this module
//! frames them, writes commands and dot-stuffs the data.

use std::io::{self, Read, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use smtp_proto::response::parser::ResponseReceiver;
use smtp_proto::{EhloResponse, Response};

use crate::word;

/// Longest reply accepted, over all its lines.
const MAX_REPLY: usize = 64 * 1024;

#[derive(Debug)]
pub enum SmtpError {
    /// The server answered with a reply code outside what the step expects.
    Reply {
        step: &'static str,
        code: u16,
        text: String,
    },
    /// The connection failed, timed out or the server broke the protocol.
    Io(io::Error),
    /// The server cannot do what the configuration requires.
    Unsupported(String),
}

impl std::fmt::Display for SmtpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SmtpError::Reply { step, code, text } => write!(f, "{step}: server replied {code} {text}"),
            SmtpError::Io(e) => write!(f, "{e}"),
            SmtpError::Unsupported(m) => f.write_str(m),
        }
    }
}

impl From<io::Error> for SmtpError {
    fn from(e: io::Error) -> Self {
        SmtpError::Io(e)
    }
}

fn protocol(what: String) -> SmtpError {
    SmtpError::Io(io::Error::new(io::ErrorKind::InvalidData, what))
}

pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl From<Response<String>> for Reply {
    fn from(r: Response<String>) -> Self {
        let text = if r.esc[0] != 0 {
            format!("{}.{}.{} {}", r.esc[0], r.esc[1], r.esc[2], r.message)
        } else {
            r.message
        };
        Reply { code: r.code, text }
    }
}

pub struct Client<S> {
    stream: S,
    /// Bytes read past the end of the last reply.
    pending: Vec<u8>,
    /// Commands (and BDAT data) queued for the next flight. A flight goes
    /// out in one write, so a command never leaves as two small segments
    /// (line, then CRLF) that Nagle's algorithm would hold back for the
    /// peer's delayed ACK.
    out: Vec<u8>,
    /// Replies read on this connection; lets the caller tell a connection
    /// that died before answering anything from one that failed mid-way.
    replies: u64,
    /// A transaction failed half-way: the next one starts with RSET.
    needs_reset: bool,
}

/// What the server's EHLO reply lets a transaction use.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extensions {
    /// RFC 2920: MAIL, RCPT and DATA (or BDAT) go out in one flight.
    pub pipelining: bool,
    /// RFC 3030: the message goes as `BDAT n LAST` with no dot-stuffing,
    /// in the same flight as the envelope when pipelining.
    pub chunking: bool,
    /// RFC 6531: the envelope has non-ASCII addresses.
    pub smtputf8: bool,
}

/// Where a connection that broke during `Client::pipelined` left the
/// first message without a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Its body was sent, its final reply never read: the server may have
    /// taken it.
    InDoubt,
    /// The server answered part of its envelope, then broke off: a
    /// failure of this message, as for one sent alone.
    Answered,
    /// Nothing of it was answered (the connection was gone): it can go
    /// again on a fresh connection, as can every message after it.
    Unsent,
}

/// What `Client::pipelined` returns: a result per message it finished,
/// in order, and the failure that cut the run short, if one did.
pub type Run = (Vec<Result<Reply, SmtpError>>, Option<(SmtpError, Cut)>);

/// One message of a pipelined batch: its envelope and its bytes.
pub struct Item<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub body: &'a [u8],
    /// The envelope has non-ASCII addresses (MAIL FROM gets `SMTPUTF8`).
    pub smtputf8: bool,
}

/// One command of a transaction and the reply class it needs.
struct Step {
    name: &'static str,
    line: String,
    expect: u16,
}

impl<S: Read + Write> Client<S> {
    pub fn new(stream: S) -> Client<S> {
        Client {
            stream,
            pending: Vec::new(),
            out: Vec::new(),
            replies: 0,
            needs_reset: false,
        }
    }

    /// The stream, for a TLS upgrade. Refuses when the server sent bytes
    /// after its reply: they would be read as if they came over TLS
    /// (the STARTTLS injection attack).
    pub fn into_inner(self) -> Result<S, SmtpError> {
        if !self.pending.is_empty() {
            return Err(protocol("server sent data after its STARTTLS reply".into()));
        }
        Ok(self.stream)
    }

    /// Replies read so far on this connection.
    pub fn replies(&self) -> u64 {
        self.replies
    }

    /// Reads one complete reply: lines until one whose fourth byte is a
    /// space (`250 ok`), not a dash (`250-…`).
    fn read_raw(&mut self) -> Result<Vec<u8>, SmtpError> {
        let mut scanned = 0;
        loop {
            while let Some(nl) = self.pending[scanned..].iter().position(|&b| b == b'\n') {
                let line_end = scanned + nl + 1;
                let line = &self.pending[scanned..line_end];
                if line.len() < 4 || !line[..3].iter().all(u8::is_ascii_digit) {
                    return Err(protocol(format!(
                        "malformed reply line {:?}",
                        String::from_utf8_lossy(line).trim_end()
                    )));
                }
                scanned = line_end;
                if line[3] != b'-' {
                    let rest = self.pending.split_off(line_end);
                    self.replies += 1;
                    return Ok(std::mem::replace(&mut self.pending, rest));
                }
            }
            if self.pending.len() > MAX_REPLY {
                return Err(protocol("reply too long".into()));
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(SmtpError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                )));
            }
            self.pending.extend_from_slice(&chunk[..n]);
        }
    }

    pub fn read_reply(&mut self) -> Result<Reply, SmtpError> {
        let raw = self.read_raw()?;
        let mut receiver = ResponseReceiver::default();
        let response = receiver
            .parse(&mut raw.iter())
            .map_err(|e| protocol(format!("cannot parse reply {:?}: {e:?}", String::from_utf8_lossy(&raw))))?;
        Ok(response.into())
    }

    /// Adds a command line to the next flight.
    fn queue(&mut self, line: &str) -> Result<(), SmtpError> {
        if line.contains(['\r', '\n']) {
            return Err(SmtpError::Unsupported(format!(
                "refusing a command with a line break: {line:?}"
            )));
        }
        self.out.extend_from_slice(line.as_bytes());
        self.out.extend_from_slice(b"\r\n");
        Ok(())
    }

    /// Sends the queued flight in one write.
    fn flush_out(&mut self) -> Result<(), SmtpError> {
        let result = self.stream.write_all(&self.out).and_then(|()| self.stream.flush());
        self.out.clear();
        result.map_err(SmtpError::Io)
    }

    /// Sends a command and checks the reply code's first digit.
    pub fn command(&mut self, step: &'static str, line: &str, expect: u16) -> Result<Reply, SmtpError> {
        self.queue(line)?;
        self.flush_out()?;
        expect_class(step, self.read_reply()?, expect)
    }

    pub fn greeting(&mut self) -> Result<Reply, SmtpError> {
        expect_class("greeting", self.read_reply()?, 220)
    }

    pub fn ehlo(&mut self, name: &str) -> Result<EhloResponse<String>, SmtpError> {
        self.queue(&format!("EHLO {name}"))?;
        self.flush_out()?;
        let raw = self.read_raw()?;
        if !raw.starts_with(b"250") {
            let mut receiver = ResponseReceiver::default();
            let reply: Reply = receiver
                .parse(&mut raw.iter())
                .map(Into::into)
                .unwrap_or_else(|_| Reply {
                    code: 0,
                    text: String::from_utf8_lossy(&raw).into_owned(),
                });
            return Err(SmtpError::Reply {
                step: "EHLO",
                code: reply.code,
                text: reply.text,
            });
        }
        EhloResponse::parse(&mut raw.iter()).map_err(|e| protocol(format!("cannot parse the EHLO reply: {e:?}")))
    }

    pub fn auth_plain(&mut self, user: &str, password: &str) -> Result<(), SmtpError> {
        let token = B64.encode(format!("\0{user}\0{password}"));
        self.command("AUTH PLAIN", &format!("AUTH PLAIN {token}"), 235)?;
        Ok(())
    }

    pub fn auth_login(&mut self, user: &str, password: &str) -> Result<(), SmtpError> {
        self.command("AUTH LOGIN", "AUTH LOGIN", 334)?;
        self.command("AUTH LOGIN", &B64.encode(user), 334)?;
        self.command("AUTH LOGIN", &B64.encode(password), 235)?;
        Ok(())
    }

    /// One message: RSET if the last transaction failed half-way, MAIL,
    /// RCPT, then DATA and the dot-stuffed body, or BDAT with the body.
    /// With pipelining every command up to DATA (or the whole BDAT
    /// transaction) is one flight and the replies are read in order; the
    /// first failing step is the error, and every reply of the flight is
    /// read so the connection stays usable. Returns the final reply.
    pub fn transaction(&mut self, from: &str, to: &str, body: &[u8], ext: Extensions) -> Result<Reply, SmtpError> {
        let param = if ext.smtputf8 { " SMTPUTF8" } else { "" };
        let data = canonical(body, !ext.chunking);
        let mut steps = Vec::with_capacity(4);
        if self.needs_reset {
            steps.push(Step {
                name: "RSET",
                line: "RSET".into(),
                expect: 250,
            });
        }
        steps.push(Step {
            name: "MAIL FROM",
            line: format!("MAIL FROM:<{from}>{param}"),
            expect: 250,
        });
        steps.push(Step {
            name: "RCPT TO",
            line: format!("RCPT TO:<{to}>"),
            expect: 250,
        });
        steps.push(if ext.chunking {
            Step {
                name: "BDAT",
                line: format!("BDAT {} LAST", data.len()),
                expect: 250,
            }
        } else {
            Step {
                name: "DATA",
                line: "DATA".into(),
                expect: 354,
            }
        });
        // Until a transaction ends with its final 2xx, the server may hold
        // half an envelope.
        self.needs_reset = true;

        let mut failed: Option<SmtpError> = None;
        let mut last = None;
        let flight = if ext.pipelining { steps.len() } else { 1 };
        for group in steps.chunks(flight) {
            for step in group {
                self.queue(&step.line)?;
                if step.name == "BDAT" {
                    // The chunk's bytes follow its command line at once.
                    self.out.extend_from_slice(&data);
                }
            }
            self.flush_out()?;
            for step in group {
                let reply = self.read_reply()?;
                if failed.is_none() {
                    match expect_class(step.name, reply, step.expect) {
                        Ok(r) => last = Some(r),
                        Err(e) => failed = Some(e),
                    }
                } else {
                    last = Some(reply);
                }
            }
            if failed.is_some() {
                break;
            }
        }
        if ext.chunking {
            return match failed {
                Some(e) => Err(e),
                None => {
                    self.needs_reset = false;
                    Ok(last.expect("BDAT was answered"))
                }
            };
        }
        match failed {
            None => {
                self.stream.write_all(&data)?;
                self.stream.flush()?;
                let reply = expect_class("end of DATA", self.read_reply()?, 250)?;
                self.needs_reset = false;
                Ok(reply)
            }
            Some(e) => {
                // A server that answered DATA with 354 although the envelope
                // failed waits for a message; an empty one ends it.
                if ext.pipelining && last.as_ref().is_some_and(|r| r.code == 354) {
                    self.stream.write_all(b".\r\n")?;
                    self.stream.flush()?;
                    self.read_reply()?;
                }
                Err(e)
            }
        }
    }

    /// Several DATA transactions, each envelope pipelined behind the
    /// previous message's body: RFC 2920 lets message content open a
    /// group, so `body, ".", MAIL, RCPT, DATA` is one flight and a message
    /// costs one round trip instead of two. Needs PIPELINING (and is for
    /// servers without CHUNKING: with BDAT a message is one flight anyway).
    ///
    /// Returns one result per item, in order, until the connection fails;
    /// then that failure and where it left the next item (`Cut`): the
    /// items after it were not sent at all. A failed step fails its own
    /// message only: after a body (or the lone `.` that closes a DATA the
    /// server accepted despite a failed envelope) the server's transaction
    /// is over whatever it replied, so the next envelope needs no RSET;
    /// after a half-failed envelope it does, as in `transaction`.
    pub fn pipelined(&mut self, items: &[Item<'_>]) -> Run {
        let mut results = Vec::with_capacity(items.len());
        // What goes in front of the next envelope: a body, whose final
        // reply is its message's result, or a lone `.`, whose is not.
        let mut tail: Option<(Vec<u8>, bool)> = None;
        for item in items {
            let param = if item.smtputf8 { " SMTPUTF8" } else { "" };
            let mail = format!("MAIL FROM:<{}>{param}", item.from);
            let rcpt = format!("RCPT TO:<{}>", item.to);
            if let Some(bad) = [&mail, &rcpt].into_iter().find(|l| l.contains(['\r', '\n'])) {
                // Its result goes after the last body's, in order.
                if let Some(cut) = self.close(tail.take(), &mut results) {
                    return (results, Some(cut));
                }
                results.push(Err(SmtpError::Unsupported(format!(
                    "refusing a command with a line break: {bad:?}"
                ))));
                continue;
            }
            let closes = tail.take();
            let in_doubt = closes.as_ref().is_some_and(|(_, counted)| *counted);
            let mut steps: Vec<(&'static str, u16)> = Vec::with_capacity(4);
            if let Some((bytes, _)) = &closes {
                self.out.extend_from_slice(bytes);
            } else if self.needs_reset {
                steps.push(("RSET", 250));
                self.out.extend_from_slice(b"RSET\r\n");
            }
            for line in [&mail, &rcpt] {
                self.out.extend_from_slice(line.as_bytes());
                self.out.extend_from_slice(b"\r\n");
            }
            self.out.extend_from_slice(b"DATA\r\n");
            steps.extend([("MAIL FROM", 250), ("RCPT TO", 250), ("DATA", 354)]);
            self.needs_reset = true;
            if let Err(e) = self.flush_out() {
                return (results, Some((e, if in_doubt { Cut::InDoubt } else { Cut::Unsent })));
            }
            if let Some((_, counted)) = closes {
                match self.read_reply() {
                    Ok(reply) if counted => results.push(expect_class("end of DATA", reply, 250)),
                    Ok(_) => {}
                    Err(e) => return (results, Some((e, if counted { Cut::InDoubt } else { Cut::Unsent }))),
                }
            }
            let mut failed = None;
            let mut last = 0;
            for (n, (step, expect)) in steps.into_iter().enumerate() {
                let reply = match self.read_reply() {
                    Ok(reply) => reply,
                    Err(e) => return (results, Some((e, if n == 0 { Cut::Unsent } else { Cut::Answered }))),
                };
                last = reply.code;
                if failed.is_none()
                    && let Err(e) = expect_class(step, reply, expect)
                {
                    failed = Some(e);
                }
            }
            match failed {
                None => tail = Some((canonical(item.body, true), true)),
                Some(e) => {
                    results.push(Err(e));
                    // A server that answered DATA with 354 although the
                    // envelope failed waits for a message; an empty one
                    // ends it.
                    if last / 100 == 3 {
                        tail = Some((b".\r\n".to_vec(), false));
                    }
                }
            }
        }
        match self.close(tail, &mut results) {
            Some(cut) => (results, Some(cut)),
            None => (results, None),
        }
    }

    /// Sends the last body (or lone `.`) of a pipelined run on its own and
    /// reads its final reply, which is its message's result if `counted`.
    fn close(
        &mut self,
        tail: Option<(Vec<u8>, bool)>,
        results: &mut Vec<Result<Reply, SmtpError>>,
    ) -> Option<(SmtpError, Cut)> {
        let (bytes, counted) = tail?;
        let cut = if counted { Cut::InDoubt } else { Cut::Unsent };
        if let Err(e) = self.stream.write_all(&bytes).and_then(|()| self.stream.flush()) {
            return Some((SmtpError::Io(e), cut));
        }
        match self.read_reply() {
            Ok(reply) => {
                self.needs_reset = false;
                if counted {
                    results.push(expect_class("end of DATA", reply, 250));
                }
                None
            }
            Err(e) => Some((e, cut)),
        }
    }

    pub fn quit(mut self) {
        if self.queue("QUIT").and_then(|()| self.flush_out()).is_ok() {
            let _ = self.read_reply();
        }
    }

    pub fn stream(&self) -> &S {
        &self.stream
    }
}

/// Accepts a reply in the same class as `expect` (2xx for 250, 3xx for 354).
fn expect_class(step: &'static str, reply: Reply, expect: u16) -> Result<Reply, SmtpError> {
    if reply.code / 100 == expect / 100 {
        Ok(reply)
    } else {
        Err(SmtpError::Reply {
            step,
            code: reply.code,
            text: reply.text,
        })
    }
}

/// The message as it goes on the wire: every line ends in CRLF (a bare CR
/// or LF becomes CRLF, so no `\r.\r` or `\n.\n` can end the data early
/// or smuggle a second message past the server), and the body ends with
/// CRLF. For DATA (`dot_stuff`) a leading dot is doubled on every line and
/// the closing `.` line is added (RFC 5321 §4.5.2); BDAT sends the bytes
/// as they are.
pub fn canonical(body: &[u8], dot_stuff: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 64 + 8);
    let mut rest = body;
    loop {
        // Whole lines already in wire form go out in one copy: the MIME
        // builder writes CRLF everywhere, so this is usually the whole
        // message, or all of it up to a line with a leading dot.
        let ready = wire_ready(rest, dot_stuff);
        out.extend_from_slice(&rest[..ready]);
        rest = &rest[ready..];
        let Some(&first) = rest.first() else {
            break;
        };
        // One line that needs work (or the last, without its line end).
        if dot_stuff && first == b'.' {
            out.push(b'.');
        }
        match memchr::memchr2(b'\r', b'\n', rest) {
            Some(end) => {
                out.extend_from_slice(&rest[..end]);
                // CRLF, a lone CR or a lone LF: one line end.
                out.extend_from_slice(b"\r\n");
                let crlf = rest[end] == b'\r' && rest.get(end + 1) == Some(&b'\n');
                rest = &rest[end + if crlf { 2 } else { 1 }..];
            }
            None => {
                out.extend_from_slice(rest);
                rest = &[];
            }
        }
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    if dot_stuff {
        out.extend_from_slice(b".\r\n");
    }
    out
}

/// How many bytes at the start of `text` (a line's start) are whole lines
/// that go on the wire as they are: each ends in CRLF, holds no other CR
/// or LF, and, with `dot_stuff`, does not start with a dot. Eight bytes a
/// step: this runs over every byte of every message, in the guest (wasm32:
/// memchr goes four bytes a step there, and a search per line end was 9%
/// of the server's CPU sending a 41 KB newsletter).
fn wire_ready(text: &[u8], dot_stuff: bool) -> usize {
    if dot_stuff && text.first() == Some(&b'.') {
        return 0;
    }
    // The end of the last good line so far.
    let mut ready = 0;
    let mut at = 0;
    while let Some(w) = word::load(&text[at..]) {
        let mut ends = word::equal(w, b'\r') | word::equal(w, b'\n');
        while ends != 0 {
            let p = at + (ends.trailing_zeros() / 8) as usize;
            ends &= ends - 1;
            if p < ready {
                // The LF of a CRLF already taken.
                continue;
            }
            if text[p] != b'\r' || text.get(p + 1) != Some(&b'\n') {
                return ready;
            }
            ready = p + 2;
            if dot_stuff && text.get(ready) == Some(&b'.') {
                return ready;
            }
        }
        at += 8;
    }
    // The tail: the slow path takes it, line by line.
    ready
}

/// The queue id in replies like `250 2.0.0 Ok: queued as 4Bc1`.
pub fn queue_id(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let at = lower.find("queued as ")? + "queued as ".len();
    text[at..]
        .split_whitespace()
        .next()
        .map(|id| id.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_string())
        .filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DATA's form of the message.
    fn dot_stuff(body: &[u8]) -> Vec<u8> {
        canonical(body, true)
    }

    #[test]
    fn dot_stuffing_doubles_leading_dots_and_ends_the_data() {
        assert_eq!(dot_stuff(b"a\r\n.b\r\n..c\r\n"), b"a\r\n..b\r\n...c\r\n.\r\n");
        assert_eq!(dot_stuff(b".\nx"), b"..\r\nx\r\n.\r\n");
        assert_eq!(dot_stuff(b""), b"\r\n.\r\n");
    }

    /// The rule byte by byte, as the spec reads: what `canonical` must
    /// equal however it copies.
    fn by_byte(body: &[u8], dot_stuff: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at_line_start = true;
        let mut i = 0;
        while i < body.len() {
            let b = body[i];
            i += 1;
            if b == b'\r' || b == b'\n' {
                if b == b'\r' && body.get(i) == Some(&b'\n') {
                    i += 1;
                }
                out.extend_from_slice(b"\r\n");
                at_line_start = true;
                continue;
            }
            if dot_stuff && at_line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            at_line_start = false;
        }
        if !out.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        if dot_stuff {
            out.extend_from_slice(b".\r\n");
        }
        out
    }

    #[test]
    fn canonical_equals_the_byte_by_byte_rule() {
        // Every body of up to 6 bytes over the bytes that matter.
        let alphabet = [b'a', b'.', b'\r', b'\n'];
        let mut bodies: Vec<Vec<u8>> = vec![Vec::new()];
        for len in 1..=6 {
            let total = alphabet.len().pow(len);
            for n in 0..total {
                let mut k = n;
                bodies.push(
                    (0..len)
                        .map(|_| {
                            let b = alphabet[k % alphabet.len()];
                            k /= alphabet.len();
                            b
                        })
                        .collect(),
                );
            }
        }
        for body in &bodies {
            for stuff in [true, false] {
                assert_eq!(
                    canonical(body, stuff),
                    by_byte(body, stuff),
                    "{body:?} dot_stuff={stuff}"
                );
            }
        }
    }

    #[test]
    fn canonical_equals_the_byte_by_byte_rule_on_long_bodies() {
        // Bodies long enough for whole words, mostly proper lines (the
        // fast path), with dots, bare CRs and LFs here and there.
        let alphabet: &[&[u8]] = &[b"\r\n", b".", b"\r", b"\n", b"\r\n.", b"\r\n..", b"ab"];
        let mut rng = fastrand::Rng::with_seed(7);
        for len in 0..400 {
            let mut body = Vec::new();
            for _ in 0..len {
                let pick = rng.usize(..alphabet.len() * 3);
                body.extend_from_slice(alphabet.get(pick).copied().unwrap_or(b"xyz"));
            }
            for stuff in [true, false] {
                assert_eq!(
                    canonical(&body, stuff),
                    by_byte(&body, stuff),
                    "{body:?} dot_stuff={stuff}"
                );
            }
        }
    }

    #[test]
    fn bare_line_ends_cannot_end_the_data_early() {
        // SMTP smuggling: a server that takes a bare CR or LF as a line end
        // would see `.` alone on a line and a second message after it.
        assert_eq!(
            dot_stuff(b"a\r.\rMAIL FROM:<x@y.z>"),
            b"a\r\n..\r\nMAIL FROM:<x@y.z>\r\n.\r\n"
        );
        assert_eq!(dot_stuff(b"a\n.\nb"), b"a\r\n..\r\nb\r\n.\r\n");
        assert_eq!(canonical(b"a\r\n.b\rc", false), b"a\r\n.b\r\nc\r\n");
        let out = dot_stuff(b"x\r\r\n\n\r.\r\n");
        for (i, &b) in out.iter().enumerate() {
            if b == b'\r' {
                assert_eq!(out.get(i + 1), Some(&b'\n'), "bare CR at {i} in {out:?}");
            }
            if b == b'\n' {
                assert_eq!(out[i - 1], b'\r', "bare LF at {i} in {out:?}");
            }
        }
    }

    #[test]
    fn queue_ids_are_found() {
        assert_eq!(queue_id("2.0.0 Ok: queued as 4Bc1X").as_deref(), Some("4Bc1X"));
        assert_eq!(queue_id("OK"), None);
    }

    struct Script {
        input: io::Cursor<Vec<u8>>,
        output: Vec<u8>,
        /// Calls to `write`: one per flight when commands are batched.
        writes: usize,
    }

    fn script(server: &[u8]) -> Client<Script> {
        Client::new(Script {
            input: io::Cursor::new(server.to_vec()),
            output: vec![],
            writes: 0,
        })
    }
    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            // One byte at a time: framing must not depend on read sizes.
            let n = buf.len().min(1);
            self.input.read(&mut buf[..n])
        }
    }
    impl Write for Script {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.writes += 1;
            self.output.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn multiline_replies_are_framed() {
        let server = b"220 hi\r\n250-mx\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n451 4.3.0 later\r\n".to_vec();
        let mut c = script(&server);
        c.greeting().unwrap();
        let ehlo = c.ehlo("me").unwrap();
        assert!(ehlo.has_capability(smtp_proto::EXT_START_TLS));
        assert!(ehlo.auth_mechanisms & smtp_proto::AUTH_PLAIN != 0);
        match c.command("MAIL FROM", "MAIL FROM:<a@b>", 250) {
            Err(SmtpError::Reply { code: 451, text, .. }) => assert_eq!(text, "4.3.0 later"),
            _ => panic!("451 expected"),
        }
        assert_eq!(c.stream().output, b"EHLO me\r\nMAIL FROM:<a@b>\r\n");
    }

    #[test]
    fn commands_with_line_breaks_are_refused() {
        let mut c = script(b"");
        assert!(c.command("RCPT TO", "RCPT TO:<a@b>\r\nDATA", 250).is_err());
        assert!(c.stream().output.is_empty());
    }

    const PIPELINED: Extensions = Extensions {
        pipelining: true,
        chunking: false,
        smtputf8: false,
    };

    #[test]
    fn a_pipelined_transaction_is_two_flights() {
        let mut c = script(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go\r\n250 2.0.0 Ok: queued as AB12\r\n");
        let reply = c
            .transaction("a@b", "c@d", b"Subject: x\r\n\r\n.hi\r\n", PIPELINED)
            .unwrap();
        assert_eq!(queue_id(&reply.text).as_deref(), Some("AB12"));
        assert_eq!(
            c.stream().output,
            b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: x\r\n\r\n..hi\r\n.\r\n"
        );
        assert_eq!(c.stream().writes, 2, "envelope in one write, data in another");
        assert_eq!(c.replies(), 4);
    }

    fn item<'a>(to: &'a str, body: &'a [u8]) -> Item<'a> {
        Item {
            from: "a@b",
            to,
            body,
            smtputf8: false,
        }
    }

    #[test]
    fn a_batch_pipelines_each_envelope_behind_the_last_body() {
        let server = b"250 ok\r\n250 ok\r\n354 go\r\n\
            250 queued as A1\r\n250 ok\r\n250 ok\r\n354 go\r\n\
            250 queued as A2\r\n";
        let mut c = script(server);
        let (results, broke) = c.pipelined(&[item("x@d", b"one"), item("y@d", b".two")]);
        assert!(broke.is_none());
        let ids: Vec<_> = results.iter().map(|r| queue_id(&r.as_ref().unwrap().text)).collect();
        assert_eq!(ids, [Some("A1".to_string()), Some("A2".to_string())]);
        assert_eq!(
            String::from_utf8(c.stream().output.clone()).unwrap(),
            "MAIL FROM:<a@b>\r\nRCPT TO:<x@d>\r\nDATA\r\n\
             one\r\n.\r\nMAIL FROM:<a@b>\r\nRCPT TO:<y@d>\r\nDATA\r\n\
             ..two\r\n.\r\n"
        );
        assert_eq!(c.stream().writes, 3, "one flight per message, and the last body");
        // The session is in step: the next transaction needs no RSET.
        assert!(!c.needs_reset);
    }

    #[test]
    fn a_batch_on_a_connection_gone_says_nothing_was_sent() {
        let mut c = script(b"");
        let (results, broke) = c.pipelined(&[item("x@d", b"1"), item("y@d", b"2")]);
        assert!(results.is_empty());
        assert!(matches!(broke, Some((SmtpError::Io(_), Cut::Unsent))));
        // Accepted, then gone at the next command (an idle timeout, a
        // per-connection limit): the first has its result, the second
        // was not sent.
        let mut c = script(b"250 ok\r\n250 ok\r\n354 go\r\n250 queued as A1\r\n");
        let (results, broke) = c.pipelined(&[item("x@d", b"1"), item("y@d", b"2")]);
        assert_eq!(results.len(), 1);
        assert!(matches!(broke, Some((SmtpError::Io(_), Cut::Unsent))));
        // Gone after the last body: that one is in doubt.
        let mut c = script(b"250 ok\r\n250 ok\r\n354 go\r\n");
        let (results, broke) = c.pipelined(&[item("x@d", b"1")]);
        assert!(results.is_empty());
        assert!(matches!(broke, Some((SmtpError::Io(_), Cut::InDoubt))));
    }

    #[test]
    fn a_failed_message_in_a_batch_fails_alone() {
        // The first recipient is refused (DATA still gets 354: closed with
        // a lone dot, no RSET needed after it); the second is refused and
        // DATA refused too (RSET before the third); the third's data is
        // refused after the dot; the fourth goes.
        let server = b"250 ok\r\n550 5.1.1 no such user\r\n354 go\r\n\
            250 empty message dropped\r\n250 ok\r\n450 4.2.1 busy\r\n503 no recipients\r\n\
            250 reset\r\n250 ok\r\n250 ok\r\n354 go\r\n\
            554 5.7.1 spam\r\n250 ok\r\n250 ok\r\n354 go\r\n\
            250 queued as D4\r\n";
        let mut c = script(server);
        let items = [
            item("gone@d", b"1"),
            item("busy@d", b"2"),
            item("spam@d", b"3"),
            item("fine@d", b"4"),
        ];
        let (results, broke) = c.pipelined(&items);
        assert!(broke.is_none());
        let outcome: Vec<String> = results
            .iter()
            .map(|r| match r {
                Ok(reply) => format!("ok {}", reply.text),
                Err(SmtpError::Reply { step, code, .. }) => format!("{step} {code}"),
                Err(e) => format!("other {e}"),
            })
            .collect();
        assert_eq!(
            outcome,
            ["RCPT TO 550", "RCPT TO 450", "end of DATA 554", "ok queued as D4"]
        );
        assert_eq!(
            String::from_utf8(c.stream().output.clone()).unwrap(),
            "MAIL FROM:<a@b>\r\nRCPT TO:<gone@d>\r\nDATA\r\n\
             .\r\nMAIL FROM:<a@b>\r\nRCPT TO:<busy@d>\r\nDATA\r\n\
             RSET\r\nMAIL FROM:<a@b>\r\nRCPT TO:<spam@d>\r\nDATA\r\n\
             3\r\n.\r\nMAIL FROM:<a@b>\r\nRCPT TO:<fine@d>\r\nDATA\r\n\
             4\r\n.\r\n"
        );
    }

    #[test]
    fn a_batch_cut_off_says_how_far_it_got() {
        // The server answers the first message, then closes mid-reply.
        let mut c = script(b"250 ok\r\n250 ok\r\n354 go\r\n250 queued as A1\r\n250 ok\r\n");
        let (results, broke) = c.pipelined(&[item("x@d", b"1"), item("y@d", b"2"), item("z@d", b"3")]);
        assert_eq!(results.len(), 1, "only the first message has its final reply");
        assert!(results[0].is_ok());
        assert!(
            matches!(broke, Some((SmtpError::Io(_), Cut::Answered))),
            "the second message's envelope was half answered: {:?}",
            broke.map(|b| b.1)
        );
    }

    #[test]
    fn a_refused_recipient_fails_its_step_and_the_next_transaction_resets() {
        let server = b"250 ok\r\n550 5.1.1 no such user\r\n554 5.5.1 no valid recipients\r\n\
            250 reset\r\n250 ok\r\n451 4.3.0 later\r\n503 5.5.1 no recipients\r\n\
            250 reset\r\n250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n";
        let mut c = script(server);
        match c.transaction("a@b", "gone@d", b"x", PIPELINED) {
            Err(SmtpError::Reply {
                step: "RCPT TO",
                code: 550,
                text,
            }) => assert_eq!(text, "5.1.1 no such user"),
            other => panic!("RCPT 550 expected, got {:?}", other.map(|r| r.code)),
        }
        match c.transaction("a@b", "later@d", b"x", PIPELINED) {
            Err(SmtpError::Reply {
                step: "RCPT TO",
                code: 451,
                ..
            }) => {}
            other => panic!("RCPT 451 expected, got {:?}", other.map(|r| r.code)),
        }
        let ok = c.transaction("a@b", "fine@d", b"x", PIPELINED).unwrap();
        assert_eq!(ok.code, 250);
        let out = String::from_utf8(c.stream().output.clone()).unwrap();
        assert_eq!(
            out,
            "MAIL FROM:<a@b>\r\nRCPT TO:<gone@d>\r\nDATA\r\n\
             RSET\r\nMAIL FROM:<a@b>\r\nRCPT TO:<later@d>\r\nDATA\r\n\
             RSET\r\nMAIL FROM:<a@b>\r\nRCPT TO:<fine@d>\r\nDATA\r\nx\r\n.\r\n"
        );
    }

    #[test]
    fn data_accepted_after_a_failed_envelope_is_closed_empty() {
        let mut c = script(b"250 ok\r\n550 no\r\n354 go anyway\r\n554 no valid recipients\r\n");
        assert!(matches!(
            c.transaction("a@b", "x@d", b"body", PIPELINED),
            Err(SmtpError::Reply { code: 550, .. })
        ));
        assert!(c.stream().output.ends_with(b"DATA\r\n.\r\n"), "no body was sent");
        assert_eq!(c.replies(), 4, "in step with the server");
    }

    #[test]
    fn bdat_sends_the_body_unstuffed_in_the_envelope_flight() {
        let mut c = script(b"250 ok\r\n250 ok\r\n250 2.0.0 queued as Z9\r\n");
        let ext = Extensions {
            chunking: true,
            ..PIPELINED
        };
        c.transaction("a@b", "c@d", b".hi\n", ext).unwrap();
        assert_eq!(
            c.stream().output,
            b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 5 LAST\r\n.hi\r\n"
        );
        assert_eq!(c.stream().writes, 1, "one flight per message");
    }

    #[test]
    fn without_pipelining_each_command_waits_for_its_reply() {
        let mut c = script(b"250 ok\r\n550 no\r\n");
        let ext = Extensions::default();
        assert!(matches!(
            c.transaction("a@b", "x@d", b"body", ext),
            Err(SmtpError::Reply {
                step: "RCPT TO",
                code: 550,
                ..
            })
        ));
        assert_eq!(
            c.stream().output,
            b"MAIL FROM:<a@b>\r\nRCPT TO:<x@d>\r\n",
            "DATA never sent"
        );
        assert_eq!(c.stream().writes, 2);
    }
}
