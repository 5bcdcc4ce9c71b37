// Shared by the personalize component and, compiled natively, by the
// host's `native-bench` baseline (host/src/plugins/native.rs includes this
// file), so both pipelines run the very same code. It names its types
// through `super::`, which provides Campaign, Subscriber, Envelope,
// Message, Mailbox and Header with the WIT's field names.

use std::cell::RefCell;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use minijinja::{Environment, UndefinedBehavior, Value, context};

use super::{Campaign, Envelope, Header, Mailbox, Message, Subscriber};

const SUBJECT: &str = "subject";
const HTML: &str = "body.html";
const TEXT: &str = "body.txt";

struct Compiled {
    key: u64,
    env: Environment<'static>,
}

thread_local! {
    // One campaign at a time per instance is the common case; a tiny cache
    // avoids recompiling when several campaigns share a pool of instances.
    static CACHE: RefCell<Vec<Compiled>> = const { RefCell::new(Vec::new()) };
}

const CACHE_SIZE: usize = 4;

fn key(c: &Campaign) -> u64 {
    let mut h = DefaultHasher::new();
    (c.id, &c.subject, &c.html, &c.text).hash(&mut h);
    h.finish()
}

pub fn compile(c: &Campaign) -> Result<Environment<'static>, String> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
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

fn with_env<R>(c: &Campaign, f: impl FnOnce(&Environment<'static>) -> R) -> Result<R, String> {
    let k = key(c);
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(pos) = cache.iter().position(|e| e.key == k) {
            return Ok(f(&cache[pos].env));
        }
        let env = compile(c)?;
        if cache.len() >= CACHE_SIZE {
            cache.remove(0);
        }
        cache.push(Compiled { key: k, env });
        Ok(f(&cache.last().expect("just pushed").env))
    })
}

fn render(env: &Environment<'static>, name: &str, ctx: &Value) -> Result<String, String> {
    env.get_template(name)
        .and_then(|t| t.render(ctx))
        .map_err(|e| format!("rendering {name}: {}", describe(&e)))
}

pub fn personalize(campaign: &Campaign, subscriber: Subscriber, envelope: Envelope) -> Result<Message, String> {
    let attributes: serde_json::Value = if subscriber.attributes.is_empty() {
        serde_json::Value::Object(Default::default())
    } else {
        serde_json::from_str(&subscriber.attributes).map_err(|e| format!("subscriber attributes are not JSON: {e}"))?
    };
    let ctx = context! {
        subscriber => context! {
            id => subscriber.id,
            email => &subscriber.email,
            name => &subscriber.name,
            timezone => &subscriber.timezone,
            attributes => Value::from_serialize(&attributes),
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
    let (subject, html, text) = with_env(campaign, |env| {
        Ok::<_, String>((
            render(env, SUBJECT, &ctx)?,
            render(env, HTML, &ctx)?,
            render(env, TEXT, &ctx)?,
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
