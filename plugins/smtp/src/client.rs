//! The SMTP dialog (RFC 5321) over any byte stream. smtp-proto interprets
//! replies (codes, enhanced status codes, EHLO capabilities); this module
//! frames them, writes commands and dot-stuffs the data.

use std::io::{self, Read, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use smtp_proto::response::parser::ResponseReceiver;
use smtp_proto::{EhloResponse, Response};

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
}

impl<S: Read + Write> Client<S> {
    pub fn new(stream: S) -> Client<S> {
        Client {
            stream,
            pending: Vec::new(),
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

    fn send(&mut self, line: &str) -> Result<(), SmtpError> {
        if line.contains(['\r', '\n']) {
            return Err(SmtpError::Unsupported(format!(
                "refusing a command with a line break: {line:?}"
            )));
        }
        self.stream.write_all(line.as_bytes())?;
        self.stream.write_all(b"\r\n")?;
        self.stream.flush()?;
        Ok(())
    }

    /// Sends a command and checks the reply code's first digit.
    pub fn command(&mut self, step: &'static str, line: &str, expect: u16) -> Result<Reply, SmtpError> {
        self.send(line)?;
        expect_class(step, self.read_reply()?, expect)
    }

    pub fn greeting(&mut self) -> Result<Reply, SmtpError> {
        expect_class("greeting", self.read_reply()?, 220)
    }

    pub fn ehlo(&mut self, name: &str) -> Result<EhloResponse<String>, SmtpError> {
        self.send(&format!("EHLO {name}"))?;
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

    /// MAIL, RCPT, DATA and the dot-stuffed message; returns the final reply.
    pub fn transaction(&mut self, from: &str, to: &str, body: &[u8], utf8: bool) -> Result<Reply, SmtpError> {
        let param = if utf8 { " SMTPUTF8" } else { "" };
        self.command("MAIL FROM", &format!("MAIL FROM:<{from}>{param}"), 250)?;
        self.command("RCPT TO", &format!("RCPT TO:<{to}>"), 250)?;
        self.command("DATA", "DATA", 354)?;
        self.stream.write_all(&dot_stuff(body))?;
        self.stream.flush()?;
        expect_class("end of DATA", self.read_reply()?, 250)
    }

    pub fn rset(&mut self) -> Result<(), SmtpError> {
        self.command("RSET", "RSET", 250).map(drop)
    }

    pub fn quit(mut self) {
        let _ = self.send("QUIT");
        let _ = self.read_reply();
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

/// CRLF line ends, a leading dot doubled on every line, and the closing
/// `.` line (RFC 5321 §4.5.2).
pub fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 64 + 8);
    let mut at_line_start = true;
    let mut prev = 0u8;
    for &b in body {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
        prev = b;
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
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

    #[test]
    fn dot_stuffing_doubles_leading_dots_and_ends_the_data() {
        assert_eq!(dot_stuff(b"a\r\n.b\r\n..c\r\n"), b"a\r\n..b\r\n...c\r\n.\r\n");
        assert_eq!(dot_stuff(b".\nx"), b"..\r\nx\r\n.\r\n");
        assert_eq!(dot_stuff(b""), b"\r\n.\r\n");
    }

    #[test]
    fn queue_ids_are_found() {
        assert_eq!(queue_id("2.0.0 Ok: queued as 4Bc1X").as_deref(), Some("4Bc1X"));
        assert_eq!(queue_id("OK"), None);
    }

    struct Script {
        input: io::Cursor<Vec<u8>>,
        output: Vec<u8>,
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
            self.output.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn multiline_replies_are_framed() {
        let server = b"220 hi\r\n250-mx\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n451 4.3.0 later\r\n".to_vec();
        let mut c = Client::new(Script {
            input: io::Cursor::new(server),
            output: vec![],
        });
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
        let mut c = Client::new(Script {
            input: io::Cursor::new(vec![]),
            output: vec![],
        });
        assert!(c.command("RCPT TO", "RCPT TO:<a@b>\r\nDATA", 250).is_err());
        assert!(c.stream().output.is_empty());
    }
}
