//! Open and click tracking, the pure part: which links of a campaign are
//! tracked, the signed marks in tracked URLs, rewriting a rendered message,
//! and what one open or click counts.
//!
//! A campaign's links are found in its stored templates (`Links::of`): the
//! `href` of every `<a>` and `<area>` in the HTML part and every URL in the
//! text part that is `http(s)` and not built by a template expression (its
//! target would then come from the message, not from the stored campaign).
//! Link `i` is the i-th distinct one. A rendered message's links are
//! rewritten to `BASE/t/MARK`, where the mark signs (campaign, subscriber,
//! link) — the redirect's target is always looked up in the stored
//! campaign, never read from the URL — and `BASE/o/MARK` is the open pixel.
//! The unsubscribe link comes from `{{ unsubscribe_url }}`, an expression,
//! so it is never rewritten; `mailto:` and other schemes neither.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use super::message::{MessageRecord, MessageStatus};
use super::webhook::EventKind;
use super::{CampaignId, CampaignRun, SubscriberId};

/// Links tracked per campaign; any after these stay as written.
pub const MAX_LINKS: usize = 1_000;
/// Longest URL tracked: longer ones stay as written.
pub const MAX_URL: usize = 2_048;
/// Bytes of HMAC-SHA256 kept in a mark: 96 bits, beyond guessing.
const MAC_BYTES: usize = 12;
/// A request this soon after its message's delivery is a mail scanner
/// fetching every link, not a person.
pub const SCANNER_WINDOW_MS: i64 = 1_000;

/// The tracked links of one campaign, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Links {
    /// The target of each link, entities decoded.
    targets: Vec<String>,
    /// An `href` as written in the HTML (its source text) → link index.
    html: HashMap<String, u16>,
    /// A URL as written in the text part → link index.
    text: HashMap<String, u16>,
}

fn trackable(url: &str) -> bool {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    (lower.starts_with("http://") || lower.starts_with("https://"))
        && url.len() <= MAX_URL
        && !url.contains("{{")
        && !url.contains("{%")
}

impl Links {
    /// The links of a campaign with these templates.
    pub fn of(html: &str, text: &str) -> Links {
        let mut links = Links::default();
        links.add(html, text);
        links
    }

    /// The links of a campaign and of its A/B test's variants, numbered
    /// in that order: one numbering, whichever variant a message has.
    pub fn of_campaign(c: &crate::domain::Campaign) -> Links {
        let mut links = Links::of(&c.html, &c.text);
        for v in c.variants() {
            links.add(&v.html, &v.text);
        }
        links
    }

    fn add(&mut self, html: &str, text: &str) {
        let links = self;
        for raw in hrefs(html) {
            let target = html_escape::decode_html_entities(&raw).into_owned();
            if let Some(i) = links.index(target) {
                links.html.insert(raw, i);
            }
        }
        for (at, url) in text_urls(text) {
            // `https://x/?id={{ subscriber.id }}`: the template builds it.
            if text[at + url.len()..].starts_with('{') {
                continue;
            }
            if let Some(i) = links.index(url.to_string()) {
                links.text.insert(url.to_string(), i);
            }
        }
    }

    fn index(&mut self, target: String) -> Option<u16> {
        if !trackable(&target) {
            return None;
        }
        if let Some(i) = self.targets.iter().position(|t| *t == target) {
            return Some(i as u16);
        }
        if self.targets.len() >= MAX_LINKS {
            return None;
        }
        self.targets.push(target);
        Some((self.targets.len() - 1) as u16)
    }

    pub fn target(&self, i: u16) -> Option<&str> {
        self.targets.get(usize::from(i)).map(String::as_str)
    }

    pub fn targets(&self) -> &[String] {
        &self.targets
    }
}

/// Every `href` of an `<a>` or `<area>`, as written.
fn hrefs(html: &str) -> Vec<String> {
    use lol_html::{RewriteStrSettings, element, rewrite_str};
    let mut found = Vec::new();
    let _ = rewrite_str(
        html,
        RewriteStrSettings {
            element_content_handlers: vec![element!("a[href], area[href]", |el| {
                if let Some(href) = el.get_attribute("href") {
                    found.push(href.trim().to_string());
                }
                Ok(())
            })],
            ..RewriteStrSettings::new()
        },
    );
    found
}

/// Every `http(s)` URL in plain text, with its byte offset.
fn text_urls(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut finder = linkify::LinkFinder::new();
    finder.kinds(&[linkify::LinkKind::Url]);
    finder.links(text).map(|l| (l.start(), l.as_str()))
}

/// What a tracked URL stands for: a message, and the link (none: the open
/// pixel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub campaign: CampaignId,
    pub subscriber: SubscriberId,
    pub link: Option<u16>,
}

fn mac(secret: &[u8; 32], body: &[u8]) -> [u8; MAC_BYTES] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(b"posta-track\0");
    mac.update(body);
    let full = mac.finalize().into_bytes();
    full[..MAC_BYTES].try_into().expect("long enough")
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn take_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        n |= u64::from(b & 0x7f).checked_shl(shift)?;
        if b < 0x80 {
            return Some(n);
        }
    }
    None
}

impl Mark {
    /// The URL-safe token: the three numbers and a MAC over them.
    pub fn seal(&self, secret: &[u8; 32]) -> String {
        let mut body = Vec::with_capacity(24);
        put_varint(&mut body, self.campaign.get());
        put_varint(&mut body, self.subscriber.get());
        put_varint(&mut body, self.link.map_or(0, |l| u64::from(l) + 1));
        let tag = mac(secret, &body);
        body.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(body)
    }

    /// The mark a token was sealed from, if this server sealed it.
    pub fn open(secret: &[u8; 32], token: &str) -> Option<Mark> {
        if token.len() > 64 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        let (body, tag) = bytes.split_at_checked(bytes.len().checked_sub(MAC_BYTES)?)?;
        if !bool::from(mac(secret, body).ct_eq(tag)) {
            return None;
        }
        let mut rest = body;
        let campaign = take_varint(&mut rest)?;
        let subscriber = take_varint(&mut rest)?;
        let link = take_varint(&mut rest)?;
        if !rest.is_empty() {
            return None;
        }
        let link = match link {
            0 => None,
            n => Some(u16::try_from(n - 1).ok()?),
        };
        Some(Mark {
            campaign: CampaignId::new(campaign),
            subscriber: SubscriberId::new(subscriber),
            link,
        })
    }
}

/// Rewrites one campaign's rendered messages.
pub struct Rewriter {
    pub links: Links,
    /// `server.base_url`, without a trailing slash.
    pub base: String,
    pub secret: [u8; 32],
    pub opens: bool,
    pub clicks: bool,
}

impl Rewriter {
    fn url(&self, kind: &str, mark: Mark) -> String {
        format!("{}/{kind}/{}", self.base, mark.seal(&self.secret))
    }

    /// The HTML part with its tracked links rewritten and, for opens, the
    /// pixel before `</body>` (or at the end).
    pub fn html(&self, html: &str, campaign: CampaignId, subscriber: SubscriberId) -> String {
        use lol_html::html_content::ContentType;
        use lol_html::{RewriteStrSettings, element, rewrite_str};
        if html.is_empty() {
            return String::new();
        }
        let mark = |link| Mark {
            campaign,
            subscriber,
            link,
        };
        let pixel = self.opens.then(|| {
            format!(
                "<img src=\"{}\" width=\"1\" height=\"1\" alt=\"\" style=\"display:block;border:0;width:1px;height:1px\">",
                self.url("o", mark(None))
            )
        });
        let placed = std::rc::Rc::new(std::cell::Cell::new(false));
        let mut handlers = Vec::new();
        if self.clicks && !self.links.html.is_empty() {
            handlers.push(element!("a[href], area[href]", |el| {
                let href = el.get_attribute("href").unwrap_or_default();
                if let Some(&i) = self.links.html.get(href.trim()) {
                    el.set_attribute("href", &self.url("t", mark(Some(i))))?;
                }
                Ok(())
            }));
        }
        if let Some(pixel) = &pixel {
            let placed = placed.clone();
            handlers.push(element!("body", move |el| {
                let (pixel, placed) = (pixel.clone(), placed.clone());
                el.on_end_tag(lol_html::end_tag!(move |end| {
                    end.before(&pixel, ContentType::Html);
                    placed.set(true);
                    Ok(())
                }))?;
                Ok(())
            }));
        }
        let mut out = rewrite_str(
            html,
            RewriteStrSettings {
                element_content_handlers: handlers,
                ..RewriteStrSettings::new()
            },
        )
        // The tokenizer does not give up on malformed markup; if it ever
        // did, the message goes out untracked rather than not at all.
        .unwrap_or_else(|_| html.to_string());
        if let (Some(pixel), false) = (&pixel, placed.get()) {
            out.push_str(pixel);
        }
        out
    }

    /// The text part with its tracked URLs rewritten.
    pub fn text(&self, text: &str, campaign: CampaignId, subscriber: SubscriberId) -> String {
        if !self.clicks || self.links.text.is_empty() {
            return text.to_string();
        }
        let mut out = String::with_capacity(text.len() + 64);
        let mut from = 0;
        for (at, url) in text_urls(text) {
            if let Some(&i) = self.links.text.get(url) {
                out.push_str(&text[from..at]);
                out.push_str(&self.url(
                    "t",
                    Mark {
                        campaign,
                        subscriber,
                        link: Some(i),
                    },
                ));
                from = at + url.len();
            }
        }
        out.push_str(&text[from..]);
        out
    }
}

/// What one person did: opened the message, or clicked link `i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Open,
    Click(u16),
}

/// One open or click as the endpoint saw it, before it is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub campaign: CampaignId,
    pub subscriber: SubscriberId,
    pub action: Action,
    pub at: DateTime<Utc>,
}

/// A message's opens and clicks, kept on its record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Engagement {
    pub opens: u32,
    pub clicks: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_opened_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_clicked_at: Option<DateTime<Utc>>,
    /// Links clicked at least once, by index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<u16>,
}

/// What recording a hit on a message counts, beyond the message itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counted {
    /// The message's first open: the campaign has one more opener.
    pub first_open: bool,
    /// The message's first click of any link: one more clicker.
    pub first_click: bool,
    /// The message's first click of this link: one more unique click.
    pub first_of_link: bool,
}

impl Engagement {
    /// Counts `action` at `at`. A first click also makes the message
    /// opened when no pixel was seen (images off): the person read it;
    /// `opens` stays the pixel's count.
    pub fn record(&mut self, action: Action, at: DateTime<Utc>) -> Counted {
        let mut counted = Counted::default();
        match action {
            Action::Open => {
                counted.first_open = self.first_opened_at.is_none();
                self.opens = self.opens.saturating_add(1);
                self.first_opened_at.get_or_insert(at);
            }
            Action::Click(i) => {
                counted.first_click = self.clicks == 0;
                self.clicks = self.clicks.saturating_add(1);
                self.first_clicked_at.get_or_insert(at);
                if !self.links.contains(&i) {
                    self.links.push(i);
                    counted.first_of_link = true;
                }
                if self.first_opened_at.is_none() {
                    counted.first_open = true;
                    self.first_opened_at = Some(at);
                }
            }
        }
        counted
    }
}

/// Clicks of one link of a campaign, kept with the campaign.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkCount {
    pub clicks: u64,
    pub unique: u64,
}

/// A row of `GET …/campaigns/{id}/links`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct LinkStats {
    pub url: String,
    pub clicks: u64,
    /// Subscribers who clicked it.
    pub unique_clicks: u64,
}

/// What recording a hit did, for the backend to store: the events it
/// announces, and whether the subscriber's `last_opened_at` /
/// `last_clicked_at` move.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Recorded {
    pub events: Vec<(EventKind, serde_json::Value)>,
    pub opened: bool,
    pub clicked: bool,
}

/// Records `hit` on its message and campaign run: the message's
/// engagement, the campaign's stats and link counts. `None` when it counts
/// nothing: the message was not sent (or not yet recorded as sent, which
/// a scanner fetching on arrival outruns), the hit came within a second
/// of delivery (a scanner), or the link is not one of the campaign's.
pub fn record(hit: &Hit, message: &mut MessageRecord, run: &mut CampaignRun, links: &Links) -> Option<Recorded> {
    if message.status != MessageStatus::Sent || is_scanner(message.sent_at, hit.at) {
        return None;
    }
    if let Action::Click(i) = hit.action {
        links.target(i)?;
    }
    let counted = message
        .engagement
        .get_or_insert_with(Engagement::default)
        .record(hit.action, hit.at);
    if let (true, Some(v), Some(ab)) = (message.in_test, message.variant, run.campaign.ab_test.as_mut()) {
        ab.count_engagement(v, counted.first_open, counted.first_click);
    }
    let stats = &mut run.campaign.stats;
    let mut recorded = Recorded::default();
    if counted.first_open {
        stats.opened += 1;
        recorded
            .events
            .push((EventKind::MessageOpened, hit_data(hit, message, None)));
    }
    recorded.opened = true;
    match hit.action {
        Action::Open => stats.opens += 1,
        Action::Click(i) => {
            stats.clicks += 1;
            stats.clicked += u64::from(counted.first_click);
            let i = usize::from(i);
            if run.link_clicks.len() <= i {
                run.link_clicks.resize(i + 1, LinkCount::default());
            }
            run.link_clicks[i].clicks += 1;
            if counted.first_of_link {
                run.link_clicks[i].unique += 1;
                let url = links.target(i as u16);
                recorded
                    .events
                    .push((EventKind::MessageClicked, hit_data(hit, message, url)));
            }
            recorded.clicked = true;
        }
    }
    message.updated_at = hit.at;
    Some(recorded)
}

fn hit_data(hit: &Hit, m: &MessageRecord, url: Option<&str>) -> serde_json::Value {
    let mut data = serde_json::json!({
        "campaign_id": hit.campaign,
        "subscriber_id": m.subscriber_id,
        "email": m.email,
        "message_id": m.message_id,
        "at": hit.at,
    });
    if let Some(url) = url {
        data["url"] = url.into();
    }
    data
}

/// A campaign's links with their clicks, for `GET …/links`.
pub fn link_stats(links: &Links, counts: &[LinkCount]) -> Vec<LinkStats> {
    links
        .targets()
        .iter()
        .enumerate()
        .map(|(i, url)| {
            let c = counts.get(i).copied().unwrap_or_default();
            LinkStats {
                url: url.clone(),
                clicks: c.clicks,
                unique_clicks: c.unique,
            }
        })
        .collect()
}

/// Whether a request at `at` for a message delivered at `delivered` (none:
/// its delivery is not recorded yet) is a scanner: mail security gateways
/// fetch every link of a message as it arrives; people take longer.
pub fn is_scanner(delivered: Option<DateTime<Utc>>, at: DateTime<Utc>) -> bool {
    match delivered {
        Some(d) => (at - d).num_milliseconds() < SCANNER_WINDOW_MS,
        None => true,
    }
}

/// The 1×1 transparent GIF the open pixel answers.
pub const PIXEL_GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff,
    0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02,
    0x02, 0x44, 0x01, 0x00, 0x3b,
];

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: [u8; 32] = [9; 32];

    fn rewriter(html: &str, text: &str) -> Rewriter {
        Rewriter {
            links: Links::of(html, text),
            base: "https://mail.example.org".into(),
            secret: SECRET,
            opens: true,
            clicks: true,
        }
    }

    fn ids() -> (CampaignId, SubscriberId) {
        (CampaignId::new(7), SubscriberId::new(42))
    }

    /// The tracked URL of `ids()`'s message: `t` a link, `o` the pixel.
    fn tracked(kind: &str, link: Option<u16>) -> String {
        let (campaign, subscriber) = ids();
        let mark = Mark {
            campaign,
            subscriber,
            link,
        };
        format!("https://mail.example.org/{kind}/{}", mark.seal(&SECRET))
    }

    #[test]
    fn links_are_the_distinct_http_targets_not_built_by_expressions() {
        let html = r#"<p><a href="https://a.example/x?p=1&amp;q=2">A</a>
            <a href='HTTPS://b.example/'>B</a> <a href="mailto:x@example.org">mail</a>
            <a href="{{ unsubscribe_url }}">unsubscribe</a>
            <a href="https://shop.example/?u={{ subscriber.id }}">mine</a>
            <map><area href="https://a.example/x?p=1&amp;q=2"></map>
            <a href="/relative">r</a> <a>none</a></p>"#;
        let text = "See https://c.example/page. Or https://a.example/x?p=1&q=2 \
                    and https://d.example/?id={{ subscriber.id }} and {{ unsubscribe_url }}";
        let links = Links::of(html, text);
        assert_eq!(
            links.targets(),
            [
                "https://a.example/x?p=1&q=2",
                "HTTPS://b.example/",
                "https://c.example/page"
            ]
        );
    }

    #[test]
    fn marks_round_trip_and_refuse_any_change() {
        for link in [None, Some(0), Some(999)] {
            let m = Mark {
                campaign: CampaignId::new(123_456),
                subscriber: SubscriberId::new(u64::MAX),
                link,
            };
            let t = m.seal(&SECRET);
            assert!(t.len() <= 64, "{t}");
            assert_eq!(Mark::open(&SECRET, &t), Some(m));
            assert_eq!(Mark::open(&[1; 32], &t), None, "another server's secret");
            // Any one character changed is refused.
            for i in 0..t.len() {
                let mut bytes = t.clone().into_bytes();
                bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
                assert_eq!(Mark::open(&SECRET, std::str::from_utf8(&bytes).unwrap()), None);
            }
        }
        for junk in ["", "x", "!!!!", &"A".repeat(65), "AAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
            assert_eq!(Mark::open(&SECRET, junk), None, "{junk}");
        }
    }

    #[test]
    fn a_message_gets_its_own_tracked_links_and_a_pixel() {
        let html = r#"<html><body><a href="https://a.example/x?p=1&amp;q=2">A</a>
            <a href="mailto:x@example.org">m</a><a href="https://other.example/">o</a></body></html>"#;
        let r = rewriter(
            r#"<a href="https://a.example/x?p=1&amp;q=2">A</a><a href="mailto:x@example.org">m</a>"#,
            "",
        );
        let (c, s) = ids();
        let out = r.html(html, c, s);
        let click = tracked("t", Some(0));
        let open = tracked("o", None);
        assert!(out.contains(&format!("href=\"{click}\"")), "{out}");
        assert!(out.contains("mailto:x@example.org"), "{out}");
        assert!(
            out.contains("https://other.example/"),
            "not in the stored campaign: {out}"
        );
        let pixel_at = out.find(&open).expect("pixel");
        assert!(pixel_at < out.find("</body>").unwrap(), "{out}");
        // No body: the pixel goes at the end.
        assert!(r.html("<p>hi</p>", c, s).ends_with("height:1px\">"));
    }

    #[test]
    fn text_urls_are_rewritten_in_place() {
        let r = rewriter("", "Read https://c.example/page.\nBye {{ unsubscribe_url }}");
        let (c, s) = ids();
        let out = r.text(
            "Read https://c.example/page.\nBye https://mail.example.org/unsubscribe/7/42/abc",
            c,
            s,
        );
        let click = tracked("t", Some(0));
        assert_eq!(
            out,
            format!("Read {click}.\nBye https://mail.example.org/unsubscribe/7/42/abc")
        );
    }

    #[test]
    fn engagement_counts_first_opens_clicks_and_links_once() {
        let now = Utc::now();
        let mut e = Engagement::default();
        let c = e.record(Action::Click(3), now);
        assert_eq!(
            (c.first_open, c.first_click, c.first_of_link),
            (true, true, true),
            "a click is an open"
        );
        let c = e.record(Action::Open, now);
        assert_eq!((c.first_open, c.first_click, c.first_of_link), (false, false, false));
        assert_eq!(e.record(Action::Click(3), now), Counted::default());
        assert!(e.record(Action::Click(1), now).first_of_link);
        assert_eq!((e.opens, e.clicks, e.links.as_slice()), (1, 3, &[3, 1][..]));
    }

    #[test]
    fn requests_within_a_second_of_delivery_are_scanners() {
        let d = Utc::now();
        assert!(is_scanner(None, d));
        assert!(is_scanner(Some(d), d + chrono::Duration::milliseconds(999)));
        assert!(!is_scanner(Some(d), d + chrono::Duration::milliseconds(1_000)));
    }
}
