//! The fixture transport, version 2: the hot-reload test's replacement,
//! and a batch transport (see behaviour.rs).

const VERSION: &str = "2";
include!("../../fixture/src/behaviour.rs");

impl posta_plugin_sdk::BatchTransport for Fixture {
    fn deliver_batch(messages: Vec<Message>) -> Vec<Result<Receipt, DeliveryError>> {
        messages.into_iter().map(Fixture::deliver).collect()
    }
}

posta_plugin_sdk::export_batch_transport!(Fixture);
