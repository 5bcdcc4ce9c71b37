// Shared by the personalize component and, compiled natively, by the
// host's `native-bench` baseline (host/src/plugins/native.rs includes this
// file), so both pipelines run the very same code. It names its types
// through `super::`, which provides Campaign, Subscriber, Envelope,
// Message, Mailbox and Header with the WIT's field names.

use std::cell::RefCell;
use std::io;

use minijinja::{Environment, UndefinedBehavior, Value, context};

use super::{Campaign, Envelope, Header, Mailbox, Message, Subscriber};

const SUBJECT: &str = "subject";
const HTML: &str = "body.html";
const TEXT: &str = "body.txt";

/// A campaign's compiled templates, with the sources and fuel they were
/// compiled from: a message's campaign is compared with these (no hash,
/// so no collision can serve another campaign's templates).
struct Compiled {
    id: u64,
    fuel: u64,
    sources: [String; 3],
    env: Environment<'static>,
}

impl Compiled {
    fn is_for(&self, c: &Campaign, fuel: u64) -> bool {
        self.id == c.id
            && self.fuel == fuel
            && same(&self.sources[0], &c.subject)
            && same(&self.sources[1], &c.html)
            && same(&self.sources[2], &c.text)
    }
}

/// `a == b`, eight bytes at a time: in the guest `==` calls wasi-libc's
/// memcmp, which goes one byte at a time, and every message compares its
/// campaign's whole templates with the cached ones.
pub(crate) fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let (words_a, words_b) = (a.chunks_exact(8), b.chunks_exact(8));
    let word = |w: &[u8]| u64::from_ne_bytes(w.try_into().expect("chunks of 8"));
    words_a.remainder() == words_b.remainder() && words_a.zip(words_b).all(|(x, y)| word(x) == word(y))
}

thread_local! {
    // One campaign at a time per instance is the common case; a tiny cache
    // avoids recompiling when several campaigns share a pool of instances.
    static CACHE: RefCell<Vec<Compiled>> = const { RefCell::new(Vec::new()) };
}

const CACHE_SIZE: usize = 4;

/// What one message may cost: output bytes over subject, html and text,
/// and template instructions per render.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: u64,
    pub fuel: u64,
}

pub fn compile(c: &Campaign, fuel: u64) -> Result<Environment<'static>, String> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    env.set_fuel(Some(fuel));
    // Only the html body is escaped; the subject and the text body are plain.
    env.set_auto_escape_callback(|name| {
        if name == HTML {
            minijinja::AutoEscape::Html
        } else {
            minijinja::AutoEscape::None
        }
    });
    for (name, source, what) in [
        (SUBJECT, &c.subject, "subject"),
        (HTML, &c.html, "html"),
        (TEXT, &c.text, "text"),
    ] {
        env.add_template_owned(name, source.clone())
            .map_err(|e| format!("{what} template: {}", describe(&e)))?;
    }
    Ok(env)
}

/// What a template can name: the context `personalize` builds.
const SUBSCRIBER_FIELDS: &[&str] = &["id", "email", "name", "timezone", "attributes"];
const CAMPAIGN_FIELDS: &[&str] = &["id", "name", "from_email", "from_name"];
const TOP_LEVEL: &[&str] = &["subscriber", "campaign", "unsubscribe_url", "message_id"];

/// Compiles the templates and checks every name they read: a misspelt
/// `{{ subscriber.nmae }}` would otherwise render as empty for everyone.
/// Attributes are free-form (`subscriber.attributes.anything`), and names
/// a template sets itself (`{% set %}`, loop variables) are not reads.
pub fn validate(c: &Campaign) -> Result<(), String> {
    let env = compile(c, u64::MAX)?;
    let globals: Vec<&str> = env.globals().map(|(name, _)| name).collect();
    for (name, what) in [(SUBJECT, "subject"), (HTML, "html"), (TEXT, "text")] {
        let template = env.get_template(name).map_err(|e| describe(&e))?;
        let mut names: Vec<String> = template.undeclared_variables(true).into_iter().collect();
        names.sort();
        for path in names {
            if let Some(problem) = unknown_name(&path, &globals) {
                return Err(format!("{what} template: {problem}"));
            }
        }
    }
    Ok(())
}

fn unknown_name(path: &str, globals: &[&str]) -> Option<String> {
    let mut parts = path.split('.');
    let top = parts.next().unwrap_or_default();
    let field = parts.next();
    let (known, owner): (&[&str], &str) = match top {
        "subscriber" => (SUBSCRIBER_FIELDS, "subscriber"),
        "campaign" => (CAMPAIGN_FIELDS, "campaign"),
        _ if TOP_LEVEL.contains(&top) || globals.contains(&top) => return None,
        _ => {
            return Some(format!("unknown name `{top}`{}", suggestion(top, TOP_LEVEL)));
        }
    };
    let field = field?;
    if known.contains(&field) {
        return None;
    }
    Some(format!(
        "`{owner}.{field}`: {owner} has no field `{field}`{} (fields: {})",
        suggestion(field, known),
        known.join(", ")
    ))
}

/// `; did you mean `x`?` for the closest known name, when one is close.
fn suggestion(given: &str, known: &[&str]) -> String {
    known
        .iter()
        .map(|k| (edit_distance(given, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min()
        .map(|(_, k)| format!("; did you mean `{k}`?"))
        .unwrap_or_default()
}

/// Levenshtein distance, counting a swap of two neighbours as one edit
/// (the usual typo: `nmae`).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

fn describe(e: &minijinja::Error) -> String {
    let mut s = e.kind().to_string();
    if let Some(detail) = e.detail() {
        s.push_str(": ");
        s.push_str(detail);
    }
    if let Some(line) = e.line() {
        s.push_str(&format!(" (line {line})"));
    }
    s
}

fn with_env<R>(c: &Campaign, fuel: u64, f: impl FnOnce(&Environment<'static>) -> R) -> Result<R, String> {
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(pos) = cache.iter().position(|e| e.is_for(c, fuel)) {
            return Ok(f(&cache[pos].env));
        }
        let env = compile(c, fuel)?;
        if cache.len() >= CACHE_SIZE {
            cache.remove(0);
        }
        cache.push(Compiled {
            id: c.id,
            fuel,
            sources: [c.subject.clone(), c.html.clone(), c.text.clone()],
            env,
        });
        Ok(f(&cache.last().expect("just pushed").env))
    })
}

/// Collects output until the message's byte budget is spent, then fails
/// the write, which stops the render: an oversized template costs at most
/// the limit in memory and little more in time.
struct Bounded<'a> {
    out: Vec<u8>,
    left: &'a mut u64,
    over: bool,
}

impl io::Write for Bounded<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() as u64 > *self.left {
            self.over = true;
            return Err(io::Error::other("message size limit"));
        }
        *self.left -= buf.len() as u64;
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn render(
    env: &Environment<'static>,
    name: &str,
    ctx: &Value,
    left: &mut u64,
    limits: Limits,
) -> Result<String, String> {
    let template = env
        .get_template(name)
        .map_err(|e| format!("rendering {name}: {}", describe(&e)))?;
    // Most of a render is the template's own text: room for that at once
    // (within the budget) saves the growing copies.
    let room = template
        .source()
        .len()
        .min(usize::try_from(*left).unwrap_or(usize::MAX));
    let mut out = Bounded {
        out: Vec::with_capacity(room),
        left,
        over: false,
    };
    match template.render_captured_to(ctx, &mut out) {
        Ok(_) => Ok(String::from_utf8(out.out).map_err(|e| format!("rendering {name}: {e}"))?),
        Err(_) if out.over => Err(format!(
            "the rendered message is larger than the limit of {} bytes (limits.max_message_bytes)",
            limits.max_bytes
        )),
        Err(e) if e.kind() == minijinja::ErrorKind::OutOfFuel => Err(format!(
            "rendering {name}: the template ran more than {} instructions (limits.template_fuel); does it loop?",
            limits.fuel
        )),
        Err(e) => Err(format!("rendering {name}: {}", describe(&e))),
    }
}

pub fn personalize(
    campaign: &Campaign,
    subscriber: Subscriber,
    envelope: Envelope,
    limits: Limits,
) -> Result<Message, String> {
    // Parsed straight into template values: no JSON tree in between.
    let attributes = match subscriber.attributes.as_str() {
        "" => "{}",
        text => text,
    };
    let attributes: Value =
        serde_json::from_str(attributes).map_err(|e| format!("subscriber attributes are not JSON: {e}"))?;
    let ctx = context! {
        subscriber => context! {
            id => subscriber.id,
            email => &subscriber.email,
            name => &subscriber.name,
            timezone => &subscriber.timezone,
            attributes => attributes,
        },
        campaign => context! {
            id => campaign.id,
            name => &campaign.name,
            from_email => &campaign.from_email,
            from_name => &campaign.from_name,
        },
        // Built by the host from URL-safe parts; escaping it would only
        // turn `/` into entities inside href attributes.
        unsubscribe_url => Value::from_safe_string(envelope.unsubscribe_url.clone()),
        message_id => &envelope.message_id,
    };
    // One budget for all three parts.
    let mut left = limits.max_bytes;
    let (subject, html, text) = with_env(campaign, limits.fuel, |env| {
        Ok::<_, String>((
            render(env, SUBJECT, &ctx, &mut left, limits)?,
            render(env, HTML, &ctx, &mut left, limits)?,
            render(env, TEXT, &ctx, &mut left, limits)?,
        ))
    })??;
    Ok(Message {
        message_id: envelope.message_id,
        from: Mailbox {
            email: campaign.from_email.clone(),
            name: campaign.from_name.clone(),
        },
        to: Mailbox {
            email: subscriber.email,
            name: subscriber.name,
        },
        // Subjects are one line: a template that renders newlines would
        // otherwise inject headers in transports that write raw MIME.
        subject: subject.replace(['\r', '\n'], " ").trim().to_string(),
        html,
        text,
        headers: vec![
            Header {
                name: "List-Unsubscribe".into(),
                value: format!("<{}>", envelope.unsubscribe_url),
            },
            Header {
                name: "List-Unsubscribe-Post".into(),
                value: "List-Unsubscribe=One-Click".into(),
            },
        ],
    })
}
