//! Renders subject, html and text with minijinja.
//!
//! Templates see `subscriber` (id, email, name, timezone, attributes),
//! `campaign` (id, name, from_email, from_name), `unsubscribe_url` and
//! `message_id`. Compiled templates are cached per campaign inside the
//! instance, which the host reuses across messages: compiling is the
//! expensive part, rendering is cheap.

mod render;

use posta_plugin_sdk::{Campaign, Envelope, Header, Mailbox, Message, Personalizer, Subscriber};

struct Personalize;

impl Personalizer for Personalize {
    fn validate(campaign: Campaign) -> Result<(), String> {
        render::compile(&campaign).map(|_| ())
    }

    fn personalize(campaign: Campaign, subscriber: Subscriber, envelope: Envelope) -> Result<Message, String> {
        render::personalize(&campaign, subscriber, envelope)
    }
}

posta_plugin_sdk::export_personalizer!(Personalize);
