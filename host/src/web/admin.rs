//! Administration for admins: the users, and the sender domains each may
//! send from (granted and taken away as through the admin API). To anyone
//! else these pages do not exist (404), as the API's admin routes answer
//! 403 to a key that is not an admin's.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use maud::html;
use serde::Deserialize;

use super::Web;
use super::pages::{csrf, error_page, field_error, form_error, not_found, render};
use super::session::Signed;
use crate::api::ApiError;
use crate::domain::UserId;
use crate::domain::sender::{SenderDomain, parse_domain};

const PAGE: usize = 100;

/// The refusal of anyone but an admin: the page does not exist for them.
fn not_admin(signed: &Signed) -> Option<Response> {
    (!signed.user.admin).then(|| not_found(Some(signed)))
}

/// The refusal of a form post: from anyone but an admin (404, checked
/// first: a stranger learns nothing), or without this session's token.
fn refused_post(signed: &Signed, csrf: &str) -> Option<Response> {
    not_admin(signed).or_else(|| signed.forged(csrf))
}

#[derive(Deserialize)]
pub struct After {
    after: Option<u64>,
}

pub async fn users(State(web): State<Web>, signed: Signed, Query(q): Query<After>) -> Response {
    if let Some(r) = not_admin(&signed) {
        return r;
    }
    let loaded = async {
        let page = web.app.store.users(q.after, PAGE).await?;
        let mut rows = Vec::with_capacity(page.items.len());
        for u in page.items {
            let domains = web.app.store.domains(u.id).await?;
            rows.push((u, domains));
        }
        Ok::<_, crate::store::StoreError>((rows, page.next_after))
    }
    .await;
    let (rows, next) = match loaded {
        Ok(l) => l,
        Err(e) => return error_page(&signed, e),
    };
    let body = html! {
        p { "Each user's campaigns may send only from the sender domains granted here "
            "(also " code { "posta user domain" } " and the admin API)." }
        table {
            caption { "Users" }
            thead { tr { th scope="col" { "Email" } th scope="col" { "Role" } th scope="col" { "Sender domains" } } }
            tbody {
                @for (u, domains) in &rows {
                    tr {
                        td { a href={"/admin/users/" (u.id)} { (u.email) } }
                        td { @if u.admin { "admin" } @else { "user" } }
                        td {
                            @if domains.is_empty() { "none" }
                            @else { (domains.iter().map(|d| d.domain.as_str()).collect::<Vec<_>>().join(", ")) }
                        }
                    }
                }
            }
        }
        @if let Some(next) = next {
            p { a href={"/admin/users?after=" (next)} { "Next page" } }
        }
    };
    render("Users", &signed, body)
}

async fn user_page(web: &Web, signed: &Signed, id: UserId, error: Option<ApiError>) -> Response {
    let loaded =
        async { Ok::<_, crate::store::StoreError>((web.app.store.user(id).await?, web.app.store.domains(id).await?)) }
            .await;
    let (user, domains): (_, Vec<SenderDomain>) = match loaded {
        Ok(l) => l,
        Err(e) => return error_page(signed, e),
    };
    let body = html! {
        p { a href="/admin/users" { "All users" } }
        @if domains.is_empty() {
            p { "No sender domains: this user's campaigns cannot be sent until one is granted." }
        } @else {
            table {
                caption { "Sender domains of " (user.email) }
                thead { tr { th scope="col" { "Domain" } th scope="col" { "Granted" } th scope="col" { "Action" } } }
                tbody {
                    @for d in &domains {
                        tr {
                            td { (d.domain) }
                            td { (d.added_at.format("%Y-%m-%d")) }
                            td {
                                form method="post" action={"/admin/users/" (id) "/domains/remove"} {
                                    (csrf(signed))
                                    input type="hidden" name="domain" value=(d.domain);
                                    button type="submit" aria-label={"Take away " (d.domain)} { "Take away" }
                                }
                            }
                        }
                    }
                }
            }
            p { "Taking a domain away refuses new campaigns, edits, sends and resumes from it; "
                "campaigns already sending go on (cancel them to stop them)." }
        }
        h2 { "Grant a sender domain" }
        form method="post" action={"/admin/users/" (id) "/domains"} {
            (csrf(signed))
            label for="domain" { "Domain" }
            input id="domain" name="domain" required maxlength="253" placeholder="example.org"
                aria-describedby=[error.as_ref().map(|_| "error-domain")];
            (field_error(&error, "domain"))
            (form_error(&error, &["domain"]))
            button type="submit" { "Grant" }
        }
    };
    let status = error.as_ref().map_or(StatusCode::OK, |e| e.status);
    (status, render(user.email.as_str(), signed, body)).into_response()
}

pub async fn user(State(web): State<Web>, signed: Signed, Path(id): Path<UserId>) -> Response {
    if let Some(r) = not_admin(&signed) {
        return r;
    }
    user_page(&web, &signed, id, None).await
}

#[derive(Deserialize)]
pub struct DomainForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    domain: String,
}

pub async fn grant(
    State(web): State<Web>,
    signed: Signed,
    Path(id): Path<UserId>,
    Form(f): Form<DomainForm>,
) -> Response {
    if let Some(r) = refused_post(&signed, &f.csrf) {
        return r;
    }
    let granted = match parse_domain(&f.domain) {
        Ok(domain) => web
            .app
            .store
            .add_domain(id, domain, Utc::now())
            .await
            .map(drop)
            .map_err(ApiError::from),
        Err(e) => Err(e.into()),
    };
    match granted {
        Ok(()) => Redirect::to(&format!("/admin/users/{id}")).into_response(),
        Err(e) => user_page(&web, &signed, id, Some(e)).await,
    }
}

pub async fn take_away(
    State(web): State<Web>,
    signed: Signed,
    Path(id): Path<UserId>,
    Form(f): Form<DomainForm>,
) -> Response {
    if let Some(r) = refused_post(&signed, &f.csrf) {
        return r;
    }
    let Ok(domain) = parse_domain(&f.domain) else {
        return not_found(Some(&signed));
    };
    match web.app.store.remove_domain(id, domain).await {
        Ok(()) => Redirect::to(&format!("/admin/users/{id}")).into_response(),
        Err(e) => error_page(&signed, e),
    }
}
