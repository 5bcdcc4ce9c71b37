//! Lists: create them, page through subscribers, upload a CSV.

use axum::Form;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use bytes::Bytes;
use maud::{Markup, html};
use serde::Deserialize;

use super::Web;
use super::pages::{csrf, error_page, field_error, form_error, render};
use super::session::Signed;
use crate::api::ApiError;
use crate::domain::{List, ListId, SubscriberStatus};
use crate::store::{Page, UpsertReport};

const PAGE: usize = 50;

fn index_page(signed: &Signed, lists: &Page<List>, error: Option<ApiError>) -> Response {
    let body = html! {
        @if lists.items.is_empty() {
            p { "No lists yet." }
        } @else {
            table {
                caption { "Your lists" }
                thead { tr { th scope="col" { "Name" } th scope="col" { "Subscribers" } th scope="col" { "Created" } } }
                tbody {
                    @for l in &lists.items {
                        tr {
                            td { a href={"/lists/" (l.id)} { (l.name) } }
                            td.num { (l.subscriber_count) }
                            td { (l.created_at.format("%Y-%m-%d")) }
                        }
                    }
                }
            }
            @if let Some(next) = lists.next_after {
                p { a href={"/lists?after=" (next)} { "Next page" } }
            }
        }
        h2 { "New list" }
        form method="post" action="/lists" {
            (csrf(signed))
            label for="name" { "Name" }
            input id="name" name="name" required maxlength="256"
                aria-describedby=[error.as_ref().map(|_| "error-name")];
            (field_error(&error, "name"))
            (form_error(&error, &["name"]))
            button type="submit" { "Create list" }
        }
    };
    let status = error.as_ref().map_or(StatusCode::OK, |e| e.status);
    (status, render("Lists", signed, body)).into_response()
}

#[derive(Deserialize)]
pub struct After {
    after: Option<u64>,
}

pub async fn index(State(web): State<Web>, signed: Signed, Query(q): Query<After>) -> Response {
    let user = signed.user.id;
    match web.app.store.lists(user, q.after, PAGE).await {
        Ok(lists) => index_page(&signed, &lists, None),
        Err(e) => error_page(&signed, e),
    }
}

#[derive(Deserialize)]
pub struct NewList {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
}

pub async fn create(State(web): State<Web>, signed: Signed, Form(f): Form<NewList>) -> Response {
    if let Some(r) = signed.forged(&f.csrf) {
        return r;
    }
    let user = signed.user.id;
    match web.app.store.create_list(user, f.name).await {
        Ok(l) => Redirect::to(&format!("/lists/{}", l.id)).into_response(),
        Err(e) => match web.app.store.lists(user, None, PAGE).await {
            Ok(lists) => index_page(&signed, &lists, Some(e.into())),
            Err(e) => error_page(&signed, e),
        },
    }
}

#[derive(Deserialize)]
pub struct SubscriberFilter {
    status: Option<String>,
    after: Option<u64>,
}

pub async fn show(
    State(web): State<Web>,
    signed: Signed,
    Path(id): Path<ListId>,
    Query(q): Query<SubscriberFilter>,
) -> Response {
    list_page(&web, &signed, id, q, None).await
}

async fn list_page(
    web: &Web,
    signed: &Signed,
    id: ListId,
    q: SubscriberFilter,
    report: Option<Result<UpsertReport, ApiError>>,
) -> Response {
    let user = signed.user.id;
    let status = q.status.as_deref().and_then(SubscriberStatus::parse);
    let after = q.after;
    let store = &web.app.store;
    let loaded = async {
        let list = store.list(user, id).await?;
        let subs = store.subscribers(user, id, status, after, PAGE).await?;
        Ok::<_, crate::store::StoreError>((list, subs))
    }
    .await;
    let (list, subs) = match loaded {
        Ok(x) => x,
        Err(e) => return error_page(signed, e),
    };
    let filter = status.map(|s| s.as_str()).unwrap_or("");
    let body = html! {
        p { (list.subscriber_count) " subscribers." }
        @if let Some(r) = &report { (import_report(r)) }
        h2 { "Upload a CSV" }
        p { "A header row naming " code { "email" } ", then any of " code { "name" } ", " code { "timezone" } ", "
            code { "status" } "; other columns become attributes. People who unsubscribed stay unsubscribed." }
        form method="post" action={"/lists/" (list.id) "/import"} enctype="multipart/form-data" {
            (csrf(signed))
            label for="file" { "CSV file" }
            input id="file" name="file" type="file" accept=".csv,text/csv" required;
            button type="submit" { "Upload" }
        }
        h2 { "Subscribers" }
        form method="get" action={"/lists/" (list.id)} {
            label for="status" { "Status" }
            select id="status" name="status" {
                option value="" selected[filter.is_empty()] { "All" }
                @for s in ["subscribed", "unsubscribed", "bounced"] {
                    option value=(s) selected[filter == s] { (s) }
                }
            }
            button type="submit" { "Filter" }
        }
        (subscriber_table(&subs))
        @if let Some(next) = subs.next_after {
            p { a href={"/lists/" (list.id) "?status=" (filter) "&after=" (next)} { "Next page" } }
        }
    };
    let code = match &report {
        Some(Err(e)) => e.status,
        _ => StatusCode::OK,
    };
    (code, render(&list.name, signed, body)).into_response()
}

fn subscriber_table(subs: &Page<crate::domain::Subscriber>) -> Markup {
    html! {
        @if subs.items.is_empty() {
            p { "No subscribers on this page." }
        } @else {
            table {
                caption { "Subscribers" }
                thead { tr { th scope="col" { "Email" } th scope="col" { "Name" } th scope="col" { "Time zone" } th scope="col" { "Status" } } }
                tbody {
                    @for s in &subs.items {
                        tr {
                            td { (s.email) }
                            td { (s.name) }
                            td { (s.timezone.as_deref().unwrap_or("")) }
                            td { span class={"badge sub-" (s.status.as_str())} { (s.status.as_str()) } }
                        }
                    }
                }
            }
        }
    }
}

fn import_report(r: &Result<UpsertReport, ApiError>) -> Markup {
    html! {
        section aria-labelledby="import-result" {
            h2 id="import-result" { "Upload result" }
            @match r {
                Ok(r) => {
                    p role="status" {
                        (r.created) " created, " (r.updated) " updated, " (r.rejected) " rejected"
                        @if r.kept_unsubscribed > 0 { ", " (r.kept_unsubscribed) " kept unsubscribed" } "."
                    }
                    @if !r.errors.is_empty() {
                        table {
                            caption { "Rows not imported" }
                            thead { tr { th scope="col" { "Line" } th scope="col" { "Field" } th scope="col" { "Reason" } } }
                            tbody {
                                @for e in &r.errors {
                                    tr.row-error { td.num { (e.line) } td { (e.field) } td { (e.reason) } }
                                }
                            }
                        }
                    }
                }
                Err(e) => { p.error role="alert" { (e.message) } }
            }
        }
    }
}

/// A small form field's text, or `None` past `max` bytes (read no further)
/// or on a broken body.
async fn bounded_text(mut field: axum::extract::multipart::Field<'_>, max: usize) -> Option<String> {
    let mut text = Vec::new();
    while let Some(chunk) = field.chunk().await.ok()? {
        if text.len() + chunk.len() > max {
            return None;
        }
        text.extend_from_slice(&chunk);
    }
    String::from_utf8(text).ok()
}

/// The upload: the CSRF field comes first in the form, so a forged post is
/// refused before a byte of the file is read; the file then streams into
/// the API's CSV import.
pub async fn import(State(web): State<Web>, signed: Signed, Path(id): Path<ListId>, mut form: Multipart) -> Response {
    let bad_form = |m: String| ApiError::invalid("file", m);
    let mut authorized = false;
    let result = loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break Err(bad_form("no file was uploaded".into())),
            Err(e) => break Err(bad_form(e.to_string())),
        };
        match field.name() {
            Some("csrf") => {
                // A token is 64 characters: read no more than that needs.
                let given = bounded_text(field, 256).await.unwrap_or_default();
                if let Some(r) = signed.forged(&given) {
                    return r;
                }
                authorized = true;
            }
            Some("file") if authorized => {
                let chunks = futures_util::stream::unfold(field, |mut f| async move {
                    match f.chunk().await {
                        Ok(Some(c)) => Some((Ok::<Bytes, String>(c), f)),
                        Ok(None) => None,
                        Err(e) => Some((Err(e.to_string()), f)),
                    }
                });
                let max = web.app.max_import_bytes;
                break crate::api::subscribers_csv::import_csv(
                    web.app.clone(),
                    signed.user.id,
                    id,
                    Box::pin(chunks),
                    max,
                )
                .await;
            }
            _ => {
                if !authorized {
                    return super::pages::forbidden(Some(&signed));
                }
            }
        }
    };
    if matches!(&result, Err(e) if e.status == StatusCode::NOT_FOUND) {
        return super::pages::not_found(Some(&signed));
    }
    let q = SubscriberFilter {
        status: None,
        after: None,
    };
    list_page(&web, &signed, id, q, Some(result)).await
}
