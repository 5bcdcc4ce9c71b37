//! The OpenAPI document, generated from the handlers' annotations, with
//! links between operations and examples (`examples`).

mod examples;

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::error::{ErrorBody, ErrorDetail};
use super::{admin, bounces, campaigns, lists, previews, segments, suppressions, transports, unsubscribe, webhooks};
use crate::domain::bounce::{Bounce, BounceType};
use crate::domain::message::{MessageBounce, MessageRecord, MessageStatus};
use crate::domain::suppression::{NewSuppression, Suppression, SuppressionReason};
use crate::domain::{
    Campaign, CampaignDraft, CampaignPatch, List, NewSubscriber, Stats, Status, StatusChange, Subscriber,
    SubscriberPatch, SubscriberStatus,
};
use crate::engine::{Preview, PreviewHeader, TestDelivery};
use crate::store::{BounceReport, SuppressReport, SuppressionPage, UpsertReport};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Errors any operation can answer besides its own: the framework's
/// rejections (400 malformed path, query or body; 413; 415), a missing key
/// (401, except on public operations), a rate limit (429, public ones) and
/// exhausted capacity (503). All in the one error shape.
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |what: &str| {
            ResponseBuilder::new()
                .description(what)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for (path, item) in doc.paths.paths.iter_mut() {
            let public = path.starts_with("/unsubscribe") || path == "/api/v1/health" || path == "/api/v1/openapi.json";
            let ops = [
                item.get.as_mut(),
                item.post.as_mut(),
                item.patch.as_mut(),
                item.delete.as_mut(),
                item.put.as_mut(),
            ];
            for op in ops.into_iter().flatten() {
                let mut add = |code: &str, what: &str| {
                    op.responses
                        .responses
                        .entry(code.to_string())
                        .or_insert_with(|| error(what).into());
                };
                add("400", "malformed request (path, query or body)");
                add("413", "request body too large");
                add("415", "unsupported content type");
                add("422", "invalid field");
                add("503", "busy: retry after Retry-After seconds");
                if public {
                    add("429", "too many requests from this address");
                    add("404", "no such resource");
                } else {
                    add("401", "missing or unknown API key");
                }
            }
        }
    }
}

/// OpenAPI links from a created resource to the operations on it, so a
/// client generator (and schemathesis's stateful phase) can follow real
/// ids instead of guessing them.
struct Links;

impl Modify for Links {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::link::LinkBuilder;
        const ME: &str = "/api/v1/users/me";
        let targets: [(&str, &[(&str, &str)]); 3] = [
            (
                "lists",
                &[
                    ("{id}", "get"),
                    ("{id}", "delete"),
                    ("{id}/subscribers", "get"),
                    ("{id}/subscribers", "post"),
                ],
            ),
            (
                "campaigns",
                &[
                    ("{id}", "get"),
                    ("{id}", "patch"),
                    ("{id}", "delete"),
                    ("{id}/send", "post"),
                    ("{id}/pause", "post"),
                    ("{id}/resume", "post"),
                    ("{id}/cancel", "post"),
                    ("{id}/duplicate", "post"),
                    ("{id}/messages", "get"),
                ],
            ),
            (
                "webhooks",
                &[("{id}", "get"), ("{id}", "delete"), ("{id}/deliveries", "get")],
            ),
        ];
        for (kind, ops) in targets {
            let created = format!("{ME}/{kind}");
            let Some(item) = doc.paths.paths.get_mut(&created) else {
                continue;
            };
            let Some(post) = item.post.as_mut() else { continue };
            let Some(RefOr::T(response)) = post.responses.responses.get_mut("201") else {
                continue;
            };
            for (rest, method) in ops {
                let path = format!("{created}/{rest}");
                // A JSON pointer into `paths`: `/` is written `~1`.
                let pointer = format!("#/paths/{}/{method}", path.replace('~', "~0").replace('/', "~1"));
                let name = format!("{method}_{}", rest.replace(['{', '}'], "").replace('/', "_"));
                let link = LinkBuilder::new()
                    .operation_ref(pointer)
                    .parameter("id", "$response.body#/id")
                    .build();
                response.links.insert(name, RefOr::T(link));
            }
        }
        // Subscribers added to a list: the first one's own operations.
        let added = format!("{ME}/lists/{{id}}/subscribers");
        let one = format!("{added}/{{sid}}");
        if let Some(RefOr::T(response)) = doc
            .paths
            .paths
            .get_mut(&added)
            .and_then(|item| item.post.as_mut())
            .and_then(|post| post.responses.responses.get_mut("200"))
        {
            for method in ["get", "patch"] {
                let pointer = format!("#/paths/{}/{method}", one.replace('~', "~0").replace('/', "~1"));
                let link = LinkBuilder::new()
                    .operation_ref(pointer)
                    .parameter("id", "$request.path.id")
                    .parameter("sid", "$response.body#/subscribers/0/id")
                    .build();
                response.links.insert(format!("{method}_subscriber"), RefOr::T(link));
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Posta", description = "Campaign email sender with sandboxed WebAssembly delivery adapters"),
    paths(
        lists::create, lists::index, lists::show, lists::delete, lists::add_subscribers, lists::subscribers, lists::subscriber,
        lists::update_subscriber, super::subscribers_csv::export_csv,
        campaigns::create, campaigns::index, campaigns::show, campaigns::update, campaigns::delete,
        campaigns::send, campaigns::pause, campaigns::resume, campaigns::cancel, campaigns::duplicate,
        campaigns::messages, previews::preview, previews::test, bounces::create, bounces::dsn, suppressions::index, suppressions::create, suppressions::show, suppressions::delete,
        transports::index, transports::providers, unsubscribe::page, unsubscribe::confirm,
        super::health, super::openapi_document, super::metrics::metrics, admin::reload,
        admin::users, admin::create_user, admin::issue_key, admin::keys, admin::revoke_key,
        super::domains::mine, super::domains::index, super::domains::add, super::domains::remove,
        webhooks::create, webhooks::index, webhooks::show, webhooks::delete, webhooks::deliveries,
        segments::create, segments::index, segments::show, segments::update, segments::delete, segments::count,
        campaigns::links, super::tracking::click, super::tracking::open, campaigns::pick_winner,
    ),
    components(schemas(
        ErrorBody, ErrorDetail, List, lists::NewList, NewSubscriber, Subscriber, SubscriberStatus, UpsertReport,
        crate::store::RowError,
        SubscriberPatch, StatusChange,
        lists::SubscribersBody, Campaign, CampaignDraft, CampaignPatch, Stats, Status, MessageRecord, MessageStatus,
        super::transports::TransportView, super::transports::WarmupToday, crate::engine::route::MemberState, crate::engine::ProviderState, Suppression, SuppressionReason, NewSuppression, SuppressReport,
        SuppressionPage, suppressions::SuppressionsBody, bounces::NewBounce, bounces::DsnReport, Preview, PreviewHeader, TestDelivery, previews::TestSend, previews::TestReport, Bounce, BounceType, BounceReport,
        MessageBounce, crate::plugins::reload::ReloadReport, crate::plugins::reload::Refusal,
        admin::NewUser, admin::IssuedKey, admin::KeyList, crate::store::KeyInfo, crate::domain::User,
        super::domains::NewDomain, super::domains::DomainList, crate::domain::sender::SenderDomain,
        crate::domain::webhook::NewWebhook, crate::domain::webhook::EventKind, webhooks::WebhookView,
        webhooks::CreatedWebhook, webhooks::WebhookList, crate::domain::webhook::Delivery, crate::domain::webhook::DeliveryState,
        crate::domain::webhook::Attempt,
        crate::domain::segment::Segment, crate::domain::segment::SegmentDraft, crate::domain::segment::SegmentPatch,
        crate::domain::segment::Rule, crate::domain::segment::Match,
        crate::domain::ab::AbTest, crate::domain::ab::AbTestSetup, crate::domain::ab::Variant, crate::domain::ab::Metric,
        crate::domain::ab::Decision, crate::domain::ab::VariantResult, campaigns::WinnerChoice, crate::app::segments::SegmentCount,
        campaigns::LinkList, crate::domain::tracking::LinkStats, crate::domain::tracking::Engagement,
    )),
    modifiers(&BearerAuth, &CommonErrors, &Links),
    security(("api_key" = [])),
)]
pub struct ApiDoc;

pub async fn document() -> Json<serde_json::Value> {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
    camel_case_links(&mut doc);
    examples::add(&mut doc);
    Json(doc)
}

/// utoipa 5 writes a link's `operationRef` and `operationId` in snake case;
/// the OpenAPI field names are camel case.
fn camel_case_links(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            if let Some(links) = map.get_mut("links").and_then(|l| l.as_object_mut()) {
                for link in links.values_mut().filter_map(|l| l.as_object_mut()) {
                    for (from, to) in [("operation_ref", "operationRef"), ("operation_id", "operationId")] {
                        if let Some(x) = link.remove(from) {
                            link.insert(to.to_string(), x);
                        }
                    }
                }
            }
            map.values_mut().for_each(camel_case_links);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(camel_case_links),
        _ => {}
    }
}
