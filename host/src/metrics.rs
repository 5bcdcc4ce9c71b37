//! Prometheus metrics. Code records through the `metrics` facade (a
//! counter bump is a few atomic operations); metrics-exporter-prometheus
//! keeps the values and renders the text format for `GET /metrics`.
//! Names and labels live here so the exposition stays one vocabulary.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Messages that reached a final or retried state, by `status` and
/// `transport`: sent, failed, rejected, cancelled, retried, skipped.
pub const MESSAGES: &str = "posta_messages_total";
/// Seconds one transport call took (`transport`).
pub const TRANSPORT_CALL: &str = "posta_transport_call_seconds";
/// Messages one transport call carried (`transport`): 1, or a batch's.
pub const TRANSPORT_CALL_MESSAGES: &str = "posta_transport_call_messages";
/// Seconds one personalize call took.
pub const PERSONALIZE_CALL: &str = "posta_personalize_call_seconds";
/// Plugin calls stopped by the sandbox, by `plugin` and `kind`: trap,
/// deadline, memory, instantiate.
pub const PLUGIN_FAILURES: &str = "posta_plugin_failures_total";
/// Messages queued (created, no final outcome yet) over every sending
/// campaign …
pub const QUEUED: &str = "posta_queued_messages";
/// … and per sending `campaign`, only when `metrics_token` guards the
/// exposition: campaign ids are tenants' business.
pub const CAMPAIGN_QUEUED: &str = "posta_campaign_queued";
/// Messages handed to the delivery tasks and not yet stored, in all …
pub const IN_FLIGHT: &str = "posta_in_flight_messages";
/// … and per `campaign` (with the token, as `CAMPAIGN_QUEUED`).
pub const CAMPAIGN_IN_FLIGHT: &str = "posta_campaign_in_flight";
/// API requests by `method`, `route` (the matched pattern) and `status`.
pub const HTTP_REQUESTS: &str = "posta_http_requests_total";
/// API request latency by `method` and `route`.
pub const HTTP_REQUEST: &str = "posta_http_request_seconds";
/// Storage commit latency by `kind`: interactive (API) or bulk (engine).
pub const DB_COMMIT: &str = "posta_db_commit_seconds";
/// Seconds an API write waited for the writer (or for the commit that
/// carried it).
pub const DB_WRITER_WAIT: &str = "posta_db_writer_wait_seconds";
/// 1 while every loop of the process reaches storage, 0 while one
/// retries (`store::health`).
pub const STORAGE_UP: &str = "posta_storage_up";
/// Event webhook attempts by `result`: delivered, retrying, failed.
pub const WEBHOOK_ATTEMPTS: &str = "posta_webhook_attempts_total";
/// Tracking requests by `kind` (open, click) and `outcome`: queued for
/// recording, `dropped` (the queue was full), `unrecorded` (a HEAD, or a
/// client over `tracking_rate_per_ip`), `lost` (storage refused a batch).
/// Gauge per pool member (`pool`, `member`): 1 while it takes messages.
pub const POOL_MEMBER_UP: &str = "posta_pool_member_up";
/// Counter per pool member: times it was taken out (unreachable).
pub const POOL_MEMBER_TRIPS: &str = "posta_pool_member_trips_total";
/// Counter per pool member: messages its relay took.
pub const POOL_MEMBER_DELIVERED: &str = "posta_pool_member_delivered_total";
/// Gauge per provider: 1 while it is backed off (it deferred).
pub const PROVIDER_BACKING_OFF: &str = "posta_provider_backing_off";
/// Counter per provider: deferrals it answered.
pub const PROVIDER_DEFERRALS: &str = "posta_provider_deferrals_total";
/// Counter per provider: messages it took.
pub const PROVIDER_DELIVERED: &str = "posta_provider_delivered_total";
pub const TRACKING_HITS: &str = "posta_tracking_hits_total";
/// Hits stored as opens or clicks (not scanners, not for messages gone).
pub const TRACKING_RECORDED: &str = "posta_tracking_recorded_total";
/// Seconds one batch of hits took to store.
pub const TRACKING_BATCH: &str = "posta_tracking_batch_seconds";

/// Latency buckets from 100 µs to 30 s: transport calls span a log write
/// (µs) to a slow relay (s).
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Batch sizes: powers of two up to past `max_batch`'s usual range.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// The process-wide recorder, installed on first use. A second server in
/// the same process (tests) shares it.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = || {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .expect("buckets are not empty")
                .set_buckets_for_metric(Matcher::Full(TRANSPORT_CALL_MESSAGES.into()), BATCH_BUCKETS)
                .expect("buckets are not empty")
                // Per-campaign gauges of finished campaigns fade out.
                .idle_timeout(metrics_util::MetricKindMask::GAUGE, Some(Duration::from_secs(300)))
        };
        builder().install_recorder().unwrap_or_else(|e| {
            // Another recorder owns the facade (an embedding program): serve
            // an empty exposition rather than fail the server.
            tracing::warn!("metrics: {e}; /metrics will be empty");
            builder().build_recorder().handle()
        })
    })
}

/// `posta_messages_total` for one transport, by status: handles made once
/// per campaign run, so counting a message is an atomic add, not a label
/// lookup with a fresh `String` per message.
pub struct MessageCounters {
    pub sent: metrics::Counter,
    pub failed: metrics::Counter,
    pub rejected: metrics::Counter,
    pub cancelled: metrics::Counter,
    pub deferred: metrics::Counter,
    pub retried: metrics::Counter,
    pub skipped: metrics::Counter,
}

impl MessageCounters {
    pub fn new(transport: &str) -> MessageCounters {
        let c = |status: &'static str| metrics::counter!(MESSAGES, "status" => status, "transport" => transport.to_string());
        MessageCounters {
            sent: c("sent"),
            failed: c("failed"),
            rejected: c("rejected"),
            cancelled: c("cancelled"),
            deferred: c("deferred"),
            retried: c("retried"),
            skipped: c("skipped"),
        }
    }
}

/// The exposition: upkeep (histogram compaction, idle series) first.
pub fn render() -> String {
    let h = handle();
    h.run_upkeep();
    h.render()
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_what_was_recorded() {
        super::handle();
        metrics::counter!(super::MESSAGES, "status" => "sent", "transport" => "t").increment(2);
        let text = super::render();
        assert!(
            text.contains("posta_messages_total{status=\"sent\",transport=\"t\"} 2"),
            "{text}"
        );
        // Batch sizes are a histogram with buckets of their own.
        metrics::histogram!(super::TRANSPORT_CALL_MESSAGES, "transport" => "t").record(3.0);
        let text = super::render();
        for line in [
            "posta_transport_call_messages_bucket{transport=\"t\",le=\"4\"} 1",
            "posta_transport_call_messages_sum{transport=\"t\"} 3",
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
    }
}
