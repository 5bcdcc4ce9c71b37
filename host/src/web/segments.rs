//! Segments on the dashboard: the user's segments with their rules, and
//! one segment with who it matches now (counted when the page loads); the
//! builder that makes and edits them is `segment_form`.

use axum::extract::{Path, Query, State};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::Web;
use super::pages::{error_page, render};
use super::session::Signed;
use crate::domain::SegmentId;
use crate::domain::segment::{Match, Rule, Segment};

const PAGE: usize = 100;

#[derive(Deserialize)]
pub struct After {
    after: Option<u64>,
}

/// `attributes.plan eq "pro"`: a rule as its parts, the value as JSON.
fn rule(r: &Rule) -> Markup {
    html! {
        code { (r.field) " " (r.op) @if !r.value.is_null() { " " (r.value.to_string()) } }
    }
}

fn rules(s: &Segment) -> Markup {
    let joiner = match s.match_ {
        Match::All => "all of",
        Match::Any => "any of",
    };
    html! {
        (joiner) ":"
        ul.rules {
            @for r in &s.rules { li { (rule(r)) } }
        }
    }
}

pub async fn index(State(web): State<Web>, signed: Signed, Query(q): Query<After>) -> Response {
    let page_of = match web.app.store.segments(signed.user.id, q.after, PAGE).await {
        Ok(p) => p,
        Err(e) => return error_page(&signed, e),
    };
    let body = html! {
        p { "Rules over one list's subscribers; open one to count who it matches now. "
            "A campaign sent to a segment reads it when its send starts." }
        p { a.button href="/segments/new" { "New segment" } }
        @if page_of.items.is_empty() {
            p { "No segments yet." }
        } @else {
            table {
                caption { "Segments" }
                thead { tr { th scope="col" { "Name" } th scope="col" { "List" } th scope="col" { "Rules" } } }
                tbody {
                    @for s in &page_of.items {
                        tr {
                            td { a href={"/segments/" (s.id)} { (s.name) } }
                            td { a href={"/lists/" (s.list_id)} { "List " (s.list_id) } }
                            td { (rules(s)) }
                        }
                    }
                }
            }
        }
        @if let Some(next) = page_of.next_after {
            p { a href={"/segments?after=" (next)} { "Next page" } }
        }
    };
    render("Segments", &signed, body)
}

pub async fn show(State(web): State<Web>, signed: Signed, Path(id): Path<SegmentId>) -> Response {
    let user = signed.user.id;
    let segment = match web.app.store.segment(user, id).await {
        Ok(s) => s,
        Err(e) => return error_page(&signed, e),
    };
    let count = match crate::app::segments::count(&web.app, user, id).await {
        Ok(c) => c,
        Err(e) => return error_page(&signed, e),
    };
    let body = html! {
        p { "Of " a href={"/lists/" (segment.list_id)} { "list " (segment.list_id) } ", " (rules(&segment)) }
        p role="status" {
            strong data-count { (count.count) } " subscribers match now; "
            strong data-subscribed { (count.subscribed) } " of them are subscribed (a campaign would mail them)."
        }
        p { a.button href={"/segments/" (segment.id) "/edit"} { "Edit segment" } " " a href="/segments" { "All segments" } }
    };
    render(&segment.name, &signed, body)
}
