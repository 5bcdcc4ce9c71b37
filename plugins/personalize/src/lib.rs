//! Renders subject, html and text with minijinja.
//!
//! Templates see `subscriber` (id, email, name, timezone, attributes),
//! `campaign` (id, name, from_email, from_name), `unsubscribe_url` and
//! `message_id`. Compiled templates are cached per campaign inside the
//! instance, which the host reuses across messages: compiling is the
//! expensive part, rendering is cheap.

mod render;

use posta_plugin_sdk::{Campaign, Envelope, Header, Mailbox, Message, Personalizer, Subscriber, config};

struct Personalize;

/// The host passes `[limits]` as config; without them (an older host) the
/// same defaults apply.
fn limits() -> render::Limits {
    render::Limits {
        max_bytes: config::parse_or("max_message_bytes", 2u64 << 20).unwrap_or(2 << 20),
        fuel: config::parse_or("template_fuel", 500_000u64).unwrap_or(500_000),
    }
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
}
