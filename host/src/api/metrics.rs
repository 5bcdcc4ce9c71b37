//! `GET /metrics` (the Prometheus text format) and the middleware that
//! counts and times every API request by its route pattern.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::{ApiError, ApiResult, AppState};
use crate::metrics::{CAMPAIGN_IN_FLIGHT, CAMPAIGN_QUEUED, HTTP_REQUEST, HTTP_REQUESTS, IN_FLIGHT, QUEUED, STORAGE_UP};

#[utoipa::path(get, path = "/metrics", tag = "server", security(()),
    description = "Prometheus metrics: messages by status and transport, transport and personalize call latency, \
                   queued and in-flight messages (per sending campaign only with the token), plugin sandbox failures, API requests by \
                   route and status, storage commit latency. Requires `Authorization: Bearer TOKEN` when \
                   `[server] metrics_token` is set.",
    responses((status = 200, description = "the exposition", content_type = "text/plain", body = String),
              (status = 401, body = super::error::ErrorBody)))]
pub async fn metrics(State(s): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    if let Some(token) = &s.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            return Err(ApiError::unauthorized("GET /metrics needs the configured bearer token"));
        }
    }
    // Gauges are read when scraped: the engine's in-flight counts, and the
    // stored queue of each campaign it is running.
    let in_flight = s.engine.in_flight();
    // While storage is out of reach the queue is not read (each read would
    // wait out a connect timeout): the exposition is what an operator
    // needs then, and it says so.
    let storage_up = s.store.health().failing().is_empty();
    metrics::gauge!(STORAGE_UP).set(if storage_up { 1.0 } else { 0.0 });
    let ids: Vec<_> = if storage_up {
        in_flight.iter().map(|(id, _)| *id).collect()
    } else {
        Vec::new()
    };
    let mut queued = Vec::with_capacity(ids.len());
    for id in ids {
        if let Ok(c) = s.store.campaign_by_id(id).await {
            queued.push((id, c.stats.queued));
        }
    }
    metrics::gauge!(IN_FLIGHT).set(in_flight.iter().map(|(_, n)| *n as f64).sum::<f64>());
    metrics::gauge!(QUEUED).set(queued.iter().map(|(_, n)| *n as f64).sum::<f64>());
    // Campaign ids name tenants' work: only a scraper holding the token
    // sees them (an open /metrics shows the totals above).
    if s.metrics_token.is_some() {
        for (id, n) in in_flight {
            metrics::gauge!(CAMPAIGN_IN_FLIGHT, "campaign" => id.to_string()).set(n as f64);
        }
        for (id, n) in queued {
            metrics::gauge!(CAMPAIGN_QUEUED, "campaign" => id.to_string()).set(n as f64);
        }
    }
    let body = tokio::task::spawn_blocking(crate::metrics::render)
        .await
        .map_err(ApiError::internal)?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
        .into_response())
}

/// Counts and times a request under its route pattern (`/api/v1/users/me/
/// campaigns/{id}`), never its raw path: ids in labels would grow the
/// exposition without bound.
pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    // A client can send any method token; only the standard ones are labels.
    let method = match *req.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status();
    metrics::histogram!(HTTP_REQUEST, "method" => method, "route" => route.clone()).record(started.elapsed());
    metrics::counter!(HTTP_REQUESTS, "method" => method, "route" => route, "status" => status_label(status))
        .increment(1);
    response
}

fn status_label(status: StatusCode) -> String {
    status.as_u16().to_string()
}
