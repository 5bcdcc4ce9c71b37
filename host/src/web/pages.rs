//! The page frame, the error pages and the read-only pages (suppressions,
//! transports).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use super::Web;
use super::session::Signed;
use crate::api::ApiError;
use crate::domain::Status;

/// A whole page: navigation for the signed-in user, `body` in `<main>`.
pub fn page(title: &str, signed: Option<&Signed>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Posta" }
                link rel="stylesheet" href="/assets/app.css";
                script type="module" src="/assets/app.js" {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    nav aria-label="Main" {
                        a.brand href="/" { "Posta" }
                        @if let Some(s) = signed {
                            ul {
                                li { a href="/campaigns" { "Campaigns" } }
                                li { a href="/lists" { "Lists" } }
                                li { a href="/segments" { "Segments" } }
                                li { a href="/suppressions" { "Suppressions" } }
                                li { a href="/bounces" { "Bounces" } }
                                li { a href="/transports" { "Transports" } }
                                @if s.user.admin {
                                    li { a href="/admin/users" { "Users" } }
                                }
                            }
                            form.signout method="post" action="/signout" {
                                (csrf(s))
                                span { (s.user.email) }
                                " "
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The hidden field every form of a session carries.
pub fn csrf(s: &Signed) -> Markup {
    html! { input type="hidden" name="csrf" value=(s.csrf); }
}

/// A status as text with its colour class: the colour never carries the
/// meaning alone.
pub fn status_badge(status: Status) -> Markup {
    html! { span class={"badge status-" (status)} data-status { (status) } }
}

/// A field's error, shown next to it and announced.
pub fn field_error(error: &Option<ApiError>, field: &str) -> Markup {
    html! {
        @if let Some(e) = error.as_ref().filter(|e| e.field.as_deref() == Some(field)) {
            p.error id={"error-" (field)} role="alert" { (e.message) }
        }
    }
}

/// An error not tied to one field.
pub fn form_error(error: &Option<ApiError>, fields: &[&str]) -> Markup {
    html! {
        @if let Some(e) = error.as_ref().filter(|e| e.field.as_deref().is_none_or(|f| !fields.contains(&f))) {
            p.error role="alert" { (e.message) }
        }
    }
}

pub fn not_found(signed: Option<&Signed>) -> Response {
    let body = html! { p { "There is nothing here, or it is not yours." } p { a href="/" { "Back to the start" } } };
    (
        StatusCode::NOT_FOUND,
        Html(page("Not found", signed, body).into_string()),
    )
        .into_response()
}

pub fn forbidden(signed: Option<&Signed>) -> Response {
    let body = html! {
        p { "This form did not come from this page, or it has expired. Go back, reload the page and try again." }
    };
    (StatusCode::FORBIDDEN, Html(page("Refused", signed, body).into_string())).into_response()
}

/// The storage could not be asked (a database outage): nothing is decided,
/// the visitor is asked to try again.
pub fn unavailable() -> Response {
    let body =
        html! { p.error role="alert" { "The server cannot reach its database right now. Try again in a moment." } };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Html(page("Unavailable", None, body).into_string()),
    )
        .into_response()
}

/// A failed operation as a page: 404s look like any missing page; the
/// rest say what went wrong.
pub fn error_page(signed: &Signed, e: impl Into<ApiError>) -> Response {
    let e = e.into();
    if e.status == StatusCode::NOT_FOUND {
        return not_found(Some(signed));
    }
    let body = html! { p.error role="alert" { (e.message) } p { a href="/" { "Back to the start" } } };
    (
        e.status,
        Html(page("Something went wrong", Some(signed), body).into_string()),
    )
        .into_response()
}

pub fn render(title: &str, signed: &Signed, body: Markup) -> Response {
    Html(page(title, Some(signed), body).into_string()).into_response()
}

pub async fn home(signed: Result<Signed, Response>) -> Redirect {
    match signed {
        Ok(_) => Redirect::to("/campaigns"),
        Err(_) => Redirect::to("/signin"),
    }
}

#[derive(Deserialize)]
pub struct AfterEmail {
    after: Option<String>,
}

pub async fn suppressions(State(web): State<Web>, signed: Signed, Query(q): Query<AfterEmail>) -> Response {
    let user = signed.user.id;
    let after = q.after.clone();
    let page_of = match web.app.store.suppressions(user, None, after.clone(), 100).await {
        Ok(p) => p,
        Err(e) => return error_page(&signed, e),
    };
    let body = html! {
        p { "Addresses no campaign mails: unsubscribed, bounced or complained, or added by hand." }
        @if page_of.items.is_empty() {
            p { "No suppressed addresses." }
        } @else {
            table {
                caption { "Suppressed addresses" }
                thead { tr { th scope="col" { "Email" } th scope="col" { "Reason" } th scope="col" { "Detail" } th scope="col" { "Since" } } }
                tbody {
                    @for s in &page_of.items {
                        tr {
                            td { (s.email) }
                            td { (s.reason.as_str()) }
                            td { (s.detail.as_deref().unwrap_or("")) }
                            td { (s.created_at.format("%Y-%m-%d %H:%M UTC")) }
                        }
                    }
                }
            }
        }
        @if let Some(next) = &page_of.next_after {
            p { a href={"/suppressions?after=" (urlencode(next))} { "Next page" } }
        }
    };
    render("Suppressions", &signed, body)
}

#[derive(Deserialize)]
pub struct AfterBounce {
    email: Option<String>,
    id: Option<u64>,
}

pub async fn bounces(State(web): State<Web>, signed: Signed, Query(q): Query<AfterBounce>) -> Response {
    let user = signed.user.id;
    let loaded = web.app.store.bounces(user, q.email.clone().zip(q.id), 100).await;
    let page_of = match loaded {
        Ok(p) => p,
        Err(e) => return error_page(&signed, e),
    };
    let body = html! {
        p { "Bounces and complaints, by address: reported to the API, read from DSN or ARF reports, or "
            "answered by the transport with a permanent rejection. Suppressions follow the bounce policy." }
        @if page_of.items.is_empty() {
            p { "No bounces." }
        } @else {
            table {
                caption { "Bounces" }
                thead { tr { th scope="col" { "Email" } th scope="col" { "Type" } th scope="col" { "Reason" } th scope="col" { "Message" } th scope="col" { "When" } } }
                tbody {
                    @for b in &page_of.items {
                        tr {
                            td { (b.email) }
                            td { (b.kind.as_str()) }
                            td { (b.reason.as_deref().unwrap_or("")) }
                            td { (b.message_id.as_deref().unwrap_or("")) }
                            td { (b.at.format("%Y-%m-%d %H:%M UTC")) }
                        }
                    }
                }
            }
        }
        @if let Some((email, id)) = &page_of.next_after {
            p { a href={"/bounces?email=" (urlencode(email)) "&id=" (id)} { "Next page" } }
        }
    };
    render("Bounces", &signed, body)
}

pub async fn transports(State(web): State<Web>, signed: Signed) -> Response {
    let mut list = match crate::api::transports::views(&web.app.engine, false).await {
        Ok(l) => l,
        Err(e) => return error_page(&signed, e),
    };
    let providers = web.app.engine.providers();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    let (pools, list): (Vec<_>, Vec<_>) = list.into_iter().partition(|t| t.members.is_some());
    let body = html! {
        p { "The transports campaigns can send through, as the operator configured them." }
        table {
            caption { "Transports" }
            thead { tr {
                th scope="col" { "Name" } th scope="col" { "Component" } th scope="col" { "Rate limit" }
                th scope="col" { "Default" } th scope="col" { "Warm-up today" }
            } }
            tbody {
                @for t in &list {
                    tr {
                        td { (t.name) }
                        td { (t.component) }
                        td { @if let Some(r) = t.rate_limit { (r) " per minute" } @else { "none" } }
                        td { @if t.default { "yes" } @else { "no" } }
                        td {
                            @if let Some(w) = &t.warmup {
                                (w.sent) " of " (w.cap) "; the next day from " (w.next_day_at.format("%Y-%m-%d %H:%M UTC"))
                            } @else { "—" }
                        }
                    }
                }
            }
        }
        @if !providers.is_empty() {
            table {
                caption { "Mailbox providers" }
                thead { tr { th scope="col" { "Provider" } th scope="col" { "State" } th scope="col" { "Backoffs" } } }
                tbody {
                    @for p in &providers {
                        tr {
                            td { (p.name) }
                            td {
                                @if p.backing_off {
                                    span class="badge member-down" { "backing off" }
                                    @if let Some(s) = p.retry_in_seconds { " (probed in " (s) " s)" }
                                } @else {
                                    span class="badge member-up" { "taking mail" }
                                }
                            }
                            td.num { (p.backoffs) }
                        }
                    }
                }
            }
        }
        @for p in &pools {
            table {
                caption { "Pool " (p.name) @if p.default { " (default)" } }
                thead { tr { th scope="col" { "Member" } th scope="col" { "Weight" } th scope="col" { "State" } th scope="col" { "Taken out" } } }
                tbody {
                    @for m in p.members.iter().flatten() {
                        tr {
                            td { (m.name) }
                            td.num { (m.weight) }
                            td {
                                span class={"badge member-" (m.state)} { (m.state) }
                                @if let Some(s) = m.retry_in_seconds { " (probed in " (s) " s)" }
                            }
                            td.num { (m.trips) " times" }
                        }
                    }
                }
            }
        }
    };
    render("Transports", &signed, body)
}

/// A query value, percent-encoded.
pub fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
