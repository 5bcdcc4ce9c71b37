//! The HTTP API under /api/v1 (axum). Handlers are thin: they parse,
//! authorize, call the store or engine, and shape the answer.

mod admin;
mod auth;
mod bounces;
pub(crate) mod campaigns;
mod domains;
mod error;
mod json;
mod lists;
mod metrics;
mod openapi;
pub(crate) mod per_client;
pub(crate) mod previews;
mod segments;
pub(crate) mod subscribers_csv;
mod suppressions;
mod tracking;
pub mod transports;
mod unsubscribe;
mod webhooks;

pub use error::{ApiError, ApiResult};
pub use json::{ApiJson, bulk};

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::app::App;
use crate::domain::bounce::BouncePolicy;

#[derive(Clone)]
pub struct AppState {
    /// The store and engine, which the use cases (`crate::app`) work with.
    pub app: App,
    pub secret: Arc<[u8; 32]>,
    pub bounces: BouncePolicy,
    /// Largest CSV import, in bytes (`server.max_import_bytes`).
    pub max_import_bytes: u64,
    /// The bearer token `GET /metrics` requires, when configured.
    pub metrics_token: Option<Arc<str>>,
    /// `webhooks.allow_private`: URLs naming private addresses accepted.
    pub allow_private_webhooks: bool,
    /// CSV imports and exports under way, per user.
    pub transfers: subscribers_csv::transfers::Transfers,
    /// Opens and clicks on their way to storage; campaigns' links.
    pub tracker: Arc<crate::tracking::Tracker>,
    /// Hits recorded per client address (`server.tracking_rate_per_ip`).
    pub tracking_limit: Arc<per_client::PerClient>,
}

/// `s.store`, `s.engine`: the app's.
impl std::ops::Deref for AppState {
    type Target = App;

    fn deref(&self) -> &App {
        &self.app
    }
}

pub const MAX_PAGE: usize = 1000;

/// Cursor paging: `?limit=100&after=ID`; the answer's `next_after` is the
/// `after` of the next page.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Paging {
    /// Items per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// Id after which the page starts.
    #[serde(default, deserialize_with = "id_param")]
    #[param(minimum = 0)]
    pub after: Option<u64>,
}

/// A page size from a query string: 100 unless given, at most `MAX_PAGE`.
pub fn page_limit(limit: Option<usize>) -> ApiResult<usize> {
    match limit {
        None => Ok(100),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid("limit", format!("must be between 1 and {MAX_PAGE}"))),
    }
}

/// An id in a query string, within the document's `int64`: a larger number
/// is refused (400) rather than accepted as a `u64` no client can send back.
pub fn id_param<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v: Option<u64> = Option::deserialize(d)?;
    match v {
        Some(n) if n > i64::MAX as u64 => Err(serde::de::Error::custom(format!(
            "{n} is larger than the largest id ({})",
            i64::MAX
        ))),
        other => Ok(other),
    }
}

impl Paging {
    pub fn limit(&self) -> ApiResult<usize> {
        page_limit(self.limit)
    }
}

/// `ok`, or `degraded` with the loops that cannot reach storage (a
/// database outage): still 200, because the process is alive and resumes
/// by itself once storage answers — restarting it would not help.
#[utoipa::path(get, path = "/api/v1/health", tag = "server", security(()),
    responses((status = 200, description = "the server is up; `status` is `ok` or `degraded` (storage out of reach, with `storage` naming the loops waiting for it)", body = Object)))]
pub async fn health(axum::extract::State(s): axum::extract::State<AppState>) -> Json<serde_json::Value> {
    let failing = s.store.health().failing();
    if failing.is_empty() {
        Json(serde_json::json!({"status": "ok"}))
    } else {
        Json(serde_json::json!({"status": "degraded", "storage": failing}))
    }
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "server", security(()),
    responses((status = 200, description = "this document", body = Object)))]
pub async fn openapi_document() -> Json<serde_json::Value> {
    openapi::document().await
}

pub fn router(state: AppState, max_body_bytes: usize, public_rate_per_ip: u32) -> Router {
    let public = Router::new()
        .route("/api/v1/health", get(health))
        .route("/metrics", get(metrics::metrics))
        .route(
            "/unsubscribe/{campaign}/{subscriber}/{token}",
            get(unsubscribe::page).post(unsubscribe::confirm),
        )
        .layer(axum::middleware::from_fn_with_state(
            per_client::PerClient::new(public_rate_per_ip),
            per_client::limit,
        ));
    let me = Router::new()
        .route("/lists", post(lists::create).get(lists::index))
        .route("/lists/{id}", get(lists::show).delete(lists::delete))
        .route(
            "/lists/{id}/subscribers",
            post(lists::add_subscribers).get(lists::subscribers),
        )
        .route("/lists/{id}/subscribers.csv", get(subscribers_csv::export_csv))
        .route(
            "/lists/{id}/subscribers/{sid}",
            get(lists::subscriber).patch(lists::update_subscriber),
        )
        .route("/campaigns", post(campaigns::create).get(campaigns::index))
        .route(
            "/campaigns/{id}",
            get(campaigns::show).patch(campaigns::update).delete(campaigns::delete),
        )
        .route("/campaigns/{id}/send", post(campaigns::send))
        .route("/campaigns/{id}/pause", post(campaigns::pause))
        .route("/campaigns/{id}/resume", post(campaigns::resume))
        .route("/campaigns/{id}/cancel", post(campaigns::cancel))
        .route("/campaigns/{id}/duplicate", post(campaigns::duplicate))
        .route("/campaigns/{id}/messages", get(campaigns::messages))
        .route("/campaigns/{id}/links", get(campaigns::links))
        .route("/campaigns/{id}/ab/winner", post(campaigns::pick_winner))
        .route("/campaigns/{id}/preview", get(previews::preview))
        .route("/campaigns/{id}/test", post(previews::test))
        .route("/bounces", post(bounces::create))
        .route("/bounces/dsn", post(bounces::dsn))
        .route("/suppressions", post(suppressions::create).get(suppressions::index))
        .route(
            "/suppressions/{email}",
            get(suppressions::show).delete(suppressions::delete),
        )
        .route("/transports", get(transports::index))
        .route("/providers", get(transports::providers))
        .route("/domains", get(domains::mine))
        .route("/segments", post(segments::create).get(segments::index))
        .route(
            "/segments/{id}",
            get(segments::show).patch(segments::update).delete(segments::delete),
        )
        .route("/segments/{id}/count", get(segments::count))
        .route("/webhooks", post(webhooks::create).get(webhooks::index))
        .route("/webhooks/{id}", get(webhooks::show).delete(webhooks::delete))
        .route("/webhooks/{id}/deliveries", get(webhooks::deliveries));
    Router::new()
        .nest("/api/v1/users/me", me)
        .route("/api/v1/openapi.json", get(openapi_document))
        .route("/api/v1/plugins/reload", post(admin::reload))
        .route("/api/v1/admin/users", get(admin::users).post(admin::create_user))
        .route("/api/v1/admin/users/{id}/keys", get(admin::keys).post(admin::issue_key))
        .route(
            "/api/v1/admin/users/{id}/keys/{key_id}",
            axum::routing::delete(admin::revoke_key),
        )
        .route(
            "/api/v1/admin/users/{id}/domains",
            get(domains::index).post(domains::add),
        )
        .route(
            "/api/v1/admin/users/{id}/domains/{domain}",
            axum::routing::delete(domains::remove),
        )
        .merge(public)
        // Not behind the public rate limit: a person clicking must reach
        // the link whatever their proxy's rate; only recording is limited.
        .route("/t/{token}", get(tracking::click))
        .route("/o/{token}", get(tracking::open))
        .fallback(|| async { ApiError::new(axum::http::StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(axum::middleware::map_response(error::json_rejections))
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}
