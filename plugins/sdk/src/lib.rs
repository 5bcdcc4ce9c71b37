//! The Posta plugin SDK: everything a Rust author needs to write a
//! personalizer or a transport for Posta.
//!
//! ```ignore
//! use posta_plugin_sdk::{DeliveryError, Message, Receipt, Transport};
//!
//! struct Hello;
//! impl Transport for Hello {
//!     fn deliver(message: Message) -> Result<Receipt, DeliveryError> {
//!         posta_plugin_sdk::info!("would deliver {} to {}", message.message_id, message.to.email);
//!         Ok(Receipt { remote_id: None, detail: "ok".into() })
//!     }
//! }
//! posta_plugin_sdk::export_transport!(Hello);
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2 --release` and check the
//! result with `posta plugin check target/wasm32-wasip2/release/NAME.wasm`.

mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "posta:plugin-sdk/sdk",
        features: ["tls"],
        generate_all,
    });
}

pub use bindings::posta::plugin::{host, types};
pub use types::{Campaign, DeliveryError, Envelope, Header, Mailbox, Message, Receipt, Subscriber};
#[doc(hidden)]
pub use wit_bindgen;

include!(concat!(env!("OUT_DIR"), "/export_macros.rs"));

/// With the `talc` feature the component allocates with talc rather than
/// dlmalloc, Rust's default on wasm. Components allocate many small,
/// short-lived values per call (template values, MIME parts, JSON), and
/// the allocator was 8–10% of a personalize call in the guest: the bundled
/// personalizer's call took 6–8% less time with talc (criterion, both
/// builds in one run). Freed small blocks are kept per size class in front
/// of it (`size_classes`). Left off, a component keeps dlmalloc or sets its
/// own `#[global_allocator]`.
#[cfg(all(feature = "talc", target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: size_classes::SizeClasses<talc::wasm::WasmDynamicTalc> =
    size_classes::SizeClasses::new(talc::wasm::new_wasm_dynamic_allocator());

#[cfg(any(test, all(feature = "talc", target_family = "wasm", not(target_feature = "atomics"))))]
mod size_classes;

pub mod config;
pub mod fs;
pub mod http;
/// JSON strings for a component that writes JSON itself: `json::string`
/// appends one, quoted and escaped, the bytes serde_json writes for it,
/// eight bytes a step (serde_json goes one at a time, which in a component
/// costs a large body dearly). The bundled `log` and `webhook` components
/// write their JSON with it.
pub mod json;
pub mod log;
pub mod net;

/// A transport delivers personalized messages.
pub trait Transport {
    /// Delivers one message. Return [`DeliveryError::Transient`] for errors
    /// worth retrying (connection refused, 4xx SMTP replies, HTTP 5xx),
    /// [`DeliveryError::Rejected`] when the receiver refused the recipient's
    /// address for good (SMTP 550 5.1.1 at RCPT: the host records a hard
    /// bounce and suppresses it) and [`DeliveryError::Permanent`] for the
    /// rest. To DKIM-sign, pass the finished message to
    /// [`host::dkim_sign`] and put the header it returns in front.
    fn deliver(message: Message) -> Result<Receipt, DeliveryError>;
}

/// A transport that does better with several messages per call than with
/// one (pipelining, one write for all); export it with
/// [`export_batch_transport!`]. The host hands it the messages queued for
/// the transport at that moment (see `plugins/README.md`, "Batches").
pub trait BatchTransport: Transport {
    /// Delivers `messages`, returning one result per message, in their
    /// order. A message's result must be about that message only, and a
    /// message that fails must fail alone (its own `Err`, not a panic):
    /// a trap fails the whole call, and the host then sends every message
    /// of it again, one per call.
    fn deliver_batch(messages: Vec<Message>) -> Vec<Result<Receipt, DeliveryError>>;
}

/// A personalizer renders one subscriber's message from a campaign.
pub trait Personalizer {
    /// Checks the campaign's templates; the error is shown to API clients.
    fn validate(campaign: Campaign) -> Result<(), String>;
    /// Renders the message. The envelope's message id must be kept as is.
    fn personalize(campaign: Campaign, subscriber: Subscriber, envelope: Envelope) -> Result<Message, String>;
}

impl DeliveryError {
    /// A transient error saying the relay itself could not be reached
    /// (connection refused or timed out, a 4xx greeting, TLS or AUTH
    /// failing): nothing of the message got there. In a pool the host
    /// takes the message on to the next transport at once, and takes this
    /// one out after a few in a row (`unreachable: ` leads the text).
    pub fn unreachable(detail: impl std::fmt::Display) -> DeliveryError {
        DeliveryError::Transient(format!("unreachable: {detail}"))
    }
}

impl DeliveryError {
    /// A transient error saying the receiving side asked to slow down (an
    /// SMTP 421 or 4.7.x reply, a 450/451 about rates, an API's 429): the
    /// host backs off the recipient's provider as a whole (`[providers]`)
    /// instead of retrying message by message (`deferred: ` leads the text).
    pub fn deferred(detail: impl std::fmt::Display) -> DeliveryError {
        DeliveryError::Transient(format!("deferred: {detail}"))
    }
}

impl Message {
    /// The value of the first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }
}
