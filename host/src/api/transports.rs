//! GET /transports: what campaigns can name. Config values never leave the
//! host; config keys, grants and limits (which name the operator's internal
//! hosts and ports) only for admins. GET /providers: the mailbox providers
//! mail is paced to, and whether each is backing off.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Auth;
use super::error::ErrorBody;
use super::{ApiResult, AppState};
use crate::config::{Capabilities, Limits};
use crate::engine::ProviderState;
use crate::engine::route::MemberState;
use crate::plugins::TransportInfo;

/// A transport as a user sees it; the operator's details only for admins.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TransportView {
    pub name: String,
    pub component: String,
    pub default: bool,
    pub rate_limit: Option<u32>,
    /// Admins only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,
    /// Admins only: messages per transport call at most (1 unless its
    /// component exports `deliver-batch`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_batch: Option<usize>,
    /// Admins only: the config keys (never their values).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_keys: Option<Vec<String>>,
    /// Admins only: the network and directory grants.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    /// Admins only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// A pool's transports (`component` is `pool`), each with its weight
    /// and whether it takes messages now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<MemberState>>,
    /// While it warms up: today's cap, what it was handed today, and when
    /// the next day (and cap) begins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup: Option<WarmupToday>,
}

/// A warming-up transport's day (UTC).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WarmupToday {
    pub cap: u64,
    pub sent: u64,
    pub next_day_at: chrono::DateTime<chrono::Utc>,
}

impl TransportView {
    fn of(info: &TransportInfo, admin: bool) -> TransportView {
        TransportView {
            name: info.name.clone(),
            component: info.component.clone(),
            default: info.default,
            rate_limit: info.rate_limit,
            max_in_flight: admin.then_some(info.max_in_flight),
            max_batch: None,
            config_keys: admin.then(|| info.config_keys.clone()),
            capabilities: admin.then(|| info.capabilities.clone()),
            limits: admin.then_some(info.limits),
            members: None,
            warmup: None,
        }
    }

    fn of_pool(name: String, members: Vec<MemberState>, default: bool) -> TransportView {
        TransportView {
            name,
            component: "pool".into(),
            default,
            rate_limit: None,
            max_in_flight: None,
            max_batch: None,
            config_keys: None,
            capabilities: None,
            limits: None,
            members: Some(members),
            warmup: None,
        }
    }
}

/// Every transport and pool a campaign may name.
pub async fn views(engine: &crate::engine::Engine, admin: bool) -> crate::store::Result<Vec<TransportView>> {
    let default = engine.default_transport();
    let mut out = Vec::new();
    for t in engine.plugins().transports.values() {
        let mut view = TransportView::of(&t.info, admin);
        view.max_batch = admin.then(|| t.max_batch());
        if let Some((cap, day)) = engine.warmup_today(&t.info.name) {
            let sent = engine.store().warmup_used(t.info.name.clone(), day).await?;
            view.warmup = Some(WarmupToday {
                cap,
                sent,
                next_day_at: crate::domain::warmup::next_day(engine.now()),
            });
        }
        out.push(view);
    }
    out.extend(engine.pools().into_iter().map(|(name, members)| {
        let is_default = name == default;
        TransportView::of_pool(name, members, is_default)
    }));
    Ok(out)
}

#[utoipa::path(get, path = "/api/v1/users/me/transports", tag = "transports",
    responses((status = 200, body = Vec<TransportView>), (status = 401, body = ErrorBody)))]
pub async fn index(State(s): State<AppState>, Auth(user): Auth) -> ApiResult<Json<Vec<TransportView>>> {
    Ok(Json(views(&s.engine, user.admin).await?))
}

#[utoipa::path(get, path = "/api/v1/users/me/providers", tag = "transports",
    responses((status = 200, body = Vec<ProviderState>), (status = 401, body = ErrorBody)))]
pub async fn providers(State(s): State<AppState>, _auth: Auth) -> Json<Vec<ProviderState>> {
    Json(s.engine.providers())
}
