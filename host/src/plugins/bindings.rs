//! Host-side bindings of the WIT worlds in `wit/`.

pub mod personalizer {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "posta:plugin/personalizer",
        exports: { default: async },
        // The one host function that waits on I/O: it runs on the call's
        // fiber while tokio drives the request.
        imports: { "posta:plugin/host.http-send": async },
    });
}

pub mod transport {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "posta:plugin/transport",
        exports: { default: async },
        with: {
            "posta:plugin/types": super::personalizer::posta::plugin::types,
            "posta:plugin/host": super::personalizer::posta::plugin::host,
        },
    });
}

pub use personalizer::posta::plugin::{host, types};

/// The domain's records as the contract carries them: converted here and
/// nowhere else.
impl From<&crate::domain::Campaign> for types::Campaign {
    fn from(c: &crate::domain::Campaign) -> types::Campaign {
        types::Campaign {
            id: c.id.get(),
            name: c.name.clone(),
            subject: c.subject.clone(),
            from_email: c.from_email.clone(),
            from_name: c.from_name.clone(),
            html: c.html.clone(),
            text: c.text.clone(),
        }
    }
}

impl From<&crate::domain::Subscriber> for types::Subscriber {
    fn from(s: &crate::domain::Subscriber) -> types::Subscriber {
        types::Subscriber {
            id: s.id.get(),
            email: s.email.to_string(),
            name: s.name.clone(),
            timezone: s.timezone.clone(),
            // Templates see the attributes as JSON; a map of JSON values
            // always serializes.
            attributes: serde_json::to_string(&s.attributes).unwrap_or_else(|_| "{}".into()),
        }
    }
}
