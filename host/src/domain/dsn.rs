//! Reading bounce and complaint reports: RFC 3464 delivery status
//! notifications and RFC 5965 ARF feedback reports, as MTAs and mailbox
//! providers send them back.
//!
//! mail-parser does the MIME work (multipart walking, transfer encodings,
//! nested messages). What is ours is only the report's field blocks
//! (`message/delivery-status`, `message/feedback-report`), which are
//! header-like lines grouped by blank lines and which no well-kept crate
//! reads, and finding the original Message-ID (a nested message, a
//! `text/rfc822-headers` part, or `X-Original-Message-ID`).

use mail_parser::{MessageParser, MimeHeaders, PartType};

use super::bounce::BounceType;

/// One bounce a report tells of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    pub email: String,
    pub kind: BounceType,
    /// Status and diagnostic (`5.1.1; smtp; 550 5.1.1 User unknown`).
    pub reason: Option<String>,
}

/// What a report says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The report's own Message-ID.
    pub id: Option<String>,
    /// The Message-ID of the mail that bounced or was complained about.
    pub original_message_id: Option<String>,
    pub bounces: Vec<Reported>,
    /// Recipients the report names that are not bounces (`delayed`,
    /// `delivered`, `relayed`, `expanded`).
    pub not_bounces: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("not a MIME message")]
    NotMime,
    #[error("no message/delivery-status or message/feedback-report part")]
    NoReport,
    #[error("the report names no recipient (Final-Recipient, Original-Recipient, Original-Rcpt-To or the original To)")]
    NoRecipient,
    #[error("the report names more than {MAX_RECIPIENTS} recipients; an MTA's report names the few of one message")]
    TooManyRecipients,
}

/// Recipient blocks one report may have. A real DSN answers one message
/// and names its recipients at one domain; thousands are an attack on
/// the writer, not a report.
pub const MAX_RECIPIENTS: usize = 1000;

/// Header-like `Name: value` fields with folded continuation lines, in
/// blocks separated by blank lines (RFC 3464 section 2.1).
fn field_blocks(text: &str) -> Vec<Vec<(String, String)>> {
    let mut blocks: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            if !blocks.last().is_some_and(Vec::is_empty) {
                blocks.push(Vec::new());
            }
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = blocks.last_mut().and_then(|b| b.last_mut()) {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            blocks
                .last_mut()
                .expect("one block")
                .push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    blocks.retain(|b| !b.is_empty());
    blocks
}

fn field<'a>(block: &'a [(String, String)], name: &str) -> Option<&'a str> {
    block.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// `rfc822; Ann@Example.org` or `<ann@example.org>` → `Ann@Example.org`.
fn address(value: &str) -> Option<String> {
    let addr = value.split_once(';').map_or(value, |(_, a)| a).trim();
    let addr = addr.trim_start_matches('<').trim_end_matches('>').trim();
    addr.contains('@').then(|| addr.to_string())
}

fn angle_free(id: &str) -> String {
    id.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim()
        .to_string()
}

/// Reads a delivery status notification or a feedback report.
pub fn parse(raw: &[u8]) -> Result<Report, ReportError> {
    let message = MessageParser::default().parse(raw).ok_or(ReportError::NotMime)?;
    let mut report = Report {
        id: message.message_id().map(angle_free),
        original_message_id: None,
        bounces: Vec::new(),
        not_bounces: Vec::new(),
    };
    let mut status_blocks = None;
    let mut feedback = None;
    let mut original_to = None;
    for part in &message.parts {
        let Some(ct) = part.content_type() else { continue };
        let (ctype, subtype) = (
            ct.ctype().to_ascii_lowercase(),
            ct.subtype().unwrap_or("").to_ascii_lowercase(),
        );
        match (ctype.as_str(), subtype.as_str()) {
            ("message", "delivery-status" | "global-delivery-status") => {
                status_blocks = Some(field_blocks(&String::from_utf8_lossy(part.contents())));
            }
            ("message", "feedback-report") => {
                feedback = Some(field_blocks(&String::from_utf8_lossy(part.contents())));
            }
            ("message", "rfc822" | "global") => {
                if let PartType::Message(original) = &part.body {
                    if report.original_message_id.is_none() {
                        report.original_message_id = original.message_id().map(angle_free);
                    }
                    if original_to.is_none() {
                        original_to = original
                            .to()
                            .and_then(|to| to.first())
                            .and_then(|a| a.address())
                            .map(str::to_string);
                    }
                }
            }
            ("text", "rfc822-headers") => {
                let headers = field_blocks(&String::from_utf8_lossy(part.contents()));
                if let Some(first) = headers.first() {
                    if report.original_message_id.is_none() {
                        report.original_message_id = field(first, "message-id").map(angle_free);
                    }
                    if original_to.is_none() {
                        original_to = field(first, "to").and_then(address);
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(blocks) = status_blocks {
        let per_message = blocks.first().cloned().unwrap_or_default();
        if report.original_message_id.is_none() {
            report.original_message_id = field(&per_message, "x-original-message-id").map(angle_free);
        }
        if blocks.len() > MAX_RECIPIENTS + 1 {
            return Err(ReportError::TooManyRecipients);
        }
        for block in blocks.iter().skip(1) {
            let Some(email) = field(block, "final-recipient")
                .or_else(|| field(block, "original-recipient"))
                .and_then(address)
            else {
                continue;
            };
            let action = field(block, "action").unwrap_or("").to_ascii_lowercase();
            let status = field(block, "status").unwrap_or("");
            if action != "failed" {
                report.not_bounces.push(email);
                continue;
            }
            // 5.x.x is permanent; a failed 4.x.x is an MTA giving up on a
            // temporary refusal (mailbox full): soft.
            let kind = if status.starts_with('4') {
                BounceType::Soft
            } else {
                BounceType::Hard
            };
            let reason = [Some(status), field(block, "diagnostic-code")]
                .into_iter()
                .flatten()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            report.bounces.push(Reported {
                email,
                kind,
                reason: (!reason.is_empty()).then_some(reason),
            });
        }
        if report.bounces.is_empty() && report.not_bounces.is_empty() {
            return Err(ReportError::NoRecipient);
        }
        return Ok(report);
    }
    if let Some(blocks) = feedback {
        let fields = blocks.first().cloned().unwrap_or_default();
        let email = field(&fields, "original-rcpt-to")
            .and_then(address)
            .or(original_to)
            .ok_or(ReportError::NoRecipient)?;
        let reason = field(&fields, "feedback-type").map(|t| format!("feedback: {t}"));
        report.bounces.push(Reported {
            email,
            kind: BounceType::Complaint,
            reason,
        });
        return Ok(report);
    }
    Err(ReportError::NoReport)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/dsn/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(path)
            .unwrap()
            .replace("RCPT@example.com", "Ann@Example.com")
            .replace("MSGID", "posta.7.42@example.org")
            .into_bytes()
    }

    #[test]
    fn the_usual_mtas_reports_are_read() {
        for (name, kind, status) in [
            ("postfix-hard.eml", BounceType::Hard, "5.1.1"),
            ("microsoft-hard.eml", BounceType::Hard, "5.1.10"),
            ("exim-hard.eml", BounceType::Hard, "5.0.0"),
            ("gmail-soft.eml", BounceType::Soft, "4.2.2"),
            ("arf-complaint.eml", BounceType::Complaint, "feedback: abuse"),
        ] {
            let r = parse(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                r.original_message_id.as_deref(),
                Some("posta.7.42@example.org"),
                "{name}"
            );
            assert_eq!(r.bounces.len(), 1, "{name}: {r:?}");
            let b = &r.bounces[0];
            assert_eq!((b.email.as_str(), b.kind), ("Ann@Example.com", kind), "{name}");
            assert!(
                b.reason.as_deref().unwrap().starts_with(status),
                "{name}: {:?}",
                b.reason
            );
            assert!(r.id.is_some(), "{name}");
        }
    }

    #[test]
    fn delays_are_not_bounces_and_junk_is_refused() {
        let delayed = String::from_utf8(fixture("postfix-hard.eml"))
            .unwrap()
            .replace("Action: failed", "Action: delayed");
        let r = parse(delayed.as_bytes()).unwrap();
        assert!(r.bounces.is_empty());
        assert_eq!(r.not_bounces, ["Ann@Example.com"]);
        assert_eq!(
            parse(b"Subject: hi\r\n\r\njust text\r\n").unwrap_err(),
            ReportError::NoReport
        );
        let no_rcpt = String::from_utf8(fixture("postfix-hard.eml"))
            .unwrap()
            .replace("Final-Recipient: rfc822; Ann@Example.com\r\n", "")
            .replace("Original-Recipient: rfc822;Ann@Example.com\r\n", "");
        assert_eq!(parse(no_rcpt.as_bytes()).unwrap_err(), ReportError::NoRecipient);
    }

    #[test]
    fn a_report_naming_thousands_of_recipients_is_refused() {
        let text = String::from_utf8(fixture("gmail-soft.eml")).unwrap();
        let block = "Final-Recipient: rfc822; x@example.com\r\nAction: failed\r\nStatus: 4.2.2\r\n\r\n";
        let at = text.find("Final-Recipient").expect("a recipient block");
        let many = |n: usize| format!("{}{}{}", &text[..at], block.repeat(n), &text[at..]);
        assert_eq!(
            parse(many(MAX_RECIPIENTS - 1).as_bytes()).unwrap().bounces.len(),
            MAX_RECIPIENTS
        );
        assert_eq!(
            parse(many(MAX_RECIPIENTS).as_bytes()).unwrap_err(),
            ReportError::TooManyRecipients
        );
    }

    #[test]
    fn folded_fields_are_joined() {
        let blocks = field_blocks("A: one\r\n  two\r\n\r\nB: three\r\n");
        assert_eq!(
            blocks,
            [vec![("a".into(), "one two".into())], vec![("b".into(), "three".into())]]
        );
    }
}
