//! Renders subject, html and text with minijinja.
//!
//! Templates see `subscriber` (id, email, name, timezone, attributes),
//! `campaign` (id, name, from_email, from_name), `unsubscribe_url` and
//! `message_id`. Compiled templates are cached per campaign inside the
//! instance, which the host reuses across messages: compiling is the
//! expensive part, rendering is cheap.

mod render;

use std::cell::RefCell;

use posta_plugin_sdk::{Campaign, Envelope, Header, Mailbox, Message, Personalizer, Subscriber, config};

struct Personalize;

thread_local! {
    static LIMITS: RefCell<Option<render::Limits>> = const { RefCell::new(None) };
}

/// The host passes `[limits]` as config; without them (an older host) the
/// same defaults apply. Read once per instance: two host calls per message
/// otherwise, for values that never change under a live instance.
fn limits() -> render::Limits {
    let load = || {
        Ok::<_, config::ConfigError>(render::Limits {
            max_bytes: config::parse_or("max_message_bytes", 2u64 << 20).unwrap_or(2 << 20),
            fuel: config::parse_or("template_fuel", 500_000u64).unwrap_or(500_000),
        })
    };
    config::cached(&LIMITS, load).expect("the defaults stand in for any unreadable value")
}

impl Personalizer for Personalize {
    fn validate(campaign: Campaign) -> Result<(), String> {
        render::validate(&campaign)
    }

    fn personalize(campaign: Campaign, subscriber: Subscriber, envelope: Envelope) -> Result<Message, String> {
        render::personalize(&campaign, subscriber, envelope, limits())
    }
}

posta_plugin_sdk::export_personalizer!(Personalize);

#[cfg(test)]
mod tests {
    use super::*;

    fn campaign(subject: &str, html: &str, text: &str) -> Campaign {
        Campaign {
            id: 1,
            name: "c".into(),
            subject: subject.into(),
            from_email: "a@b.c".into(),
            from_name: String::new(),
            html: html.into(),
            text: text.into(),
        }
    }

    #[test]
    fn a_misspelt_field_is_named_with_a_suggestion() {
        let err = render::validate(&campaign("Hi {{ subscriber.nmae }}", "", "")).unwrap_err();
        assert!(err.contains("`subscriber.nmae`"), "{err}");
        assert!(err.contains("did you mean `name`?"), "{err}");
        let err = render::validate(&campaign("", "", "{{ unsubscribe_ulr }}")).unwrap_err();
        assert!(
            err.starts_with("text template: unknown name `unsubscribe_ulr`"),
            "{err}"
        );
        assert!(err.contains("did you mean `unsubscribe_url`?"), "{err}");
        let err = render::validate(&campaign("", "{{ campaign.subjekt }}", "")).unwrap_err();
        assert!(err.starts_with("html template:"), "{err}");
    }

    #[test]
    fn attributes_locals_and_globals_are_accepted() {
        let html = "{% set greeting = 'Hi' %}{{ greeting }} {{ subscriber.attributes.anything.deep }}\
                    {% for i in range(3) %}{{ i }}{{ loop.index }}{% endfor %}\
                    {{ subscriber.name | upper }} {{ campaign.from_name }} {{ message_id }} {{ unsubscribe_url }}";
        render::validate(&campaign("{{ subscriber.email }}", html, "{{ subscriber.timezone }}")).unwrap();
    }

    fn render(c: &Campaign, attributes: &str) -> Result<Message, String> {
        let subscriber = Subscriber {
            id: 9,
            email: "x@y.z".into(),
            name: "Xy".into(),
            timezone: None,
            attributes: attributes.into(),
        };
        let envelope = Envelope {
            message_id: "<m@y.z>".into(),
            unsubscribe_url: "https://u/1/9/t".into(),
        };
        let limits = render::Limits {
            max_bytes: 1 << 20,
            fuel: 100_000,
        };
        render::personalize(c, subscriber, envelope, limits)
    }

    #[test]
    fn attributes_read_as_their_json_tree_did() {
        // The values templates saw when attributes went through a
        // serde_json tree first: parsing them straight must not change one.
        let c = campaign(
            "",
            "",
            "{% for k, v in subscriber.attributes|items %}{{ k }}={{ v }}|{{ v is mapping }}|{{ v is number }};{% endfor %}\
             {{ subscriber.attributes.n|default(0) + 1 }} {{ subscriber.attributes.list|default([])|length }} {{ subscriber.attributes.missing }}",
        );
        for json in [
            r#"{"n": 41, "list": [1, "two", null, true, 2.5], "nested": {"b": 1, "a": {"deep": "x"}}}"#,
            r#"{"z": 1, "a": 2, "n": -7, "big": 18446744073709551615, "f": 1e300, "s": "\u00e9\n<b>"}"#,
            r#"{"n": 1, "n": 2}"#,
            "{}",
        ] {
            let via_tree = minijinja::Value::from_serialize(serde_json::from_str::<serde_json::Value>(json).unwrap());
            let straight: minijinja::Value = serde_json::from_str(json).unwrap();
            assert_eq!(via_tree, straight, "{json}");
            assert_eq!(format!("{via_tree:?}"), format!("{straight:?}"), "{json}");
            render(&c, json).unwrap();
        }
        assert_eq!(render(&c, "").unwrap().text, render(&c, "{}").unwrap().text);
        let err = render(&c, "{not json").unwrap_err();
        assert!(err.starts_with("subscriber attributes are not JSON"), "{err}");
    }

    #[test]
    fn templates_compare_equal_only_when_they_are() {
        let text = "0123456789abcdefghij";
        for n in 0..text.len() {
            let (a, b) = (&text[..n], text[..n].to_string());
            assert!(render::same(a, &b));
            assert!(!render::same(a, &text[..n + 1]));
            for i in 0..n {
                let mut c = b.clone().into_bytes();
                c[i] ^= 1;
                assert!(!render::same(a, std::str::from_utf8(&c).unwrap()), "{n} {i}");
            }
        }
    }

    #[test]
    fn a_campaign_whose_templates_changed_is_compiled_again() {
        let first = render(&campaign("S", "<p>one {{ subscriber.name }}</p>", "one"), "").unwrap();
        let second = render(&campaign("S", "<p>two {{ subscriber.name }}</p>", "one"), "").unwrap();
        let third = render(&campaign("S", "<p>two {{ subscriber.name }}</p>", "two"), "").unwrap();
        assert_eq!(first.html, "<p>one Xy</p>");
        assert_eq!(second.html, "<p>two Xy</p>");
        assert_eq!((second.text.as_str(), third.text.as_str()), ("one", "two"));
    }
}
