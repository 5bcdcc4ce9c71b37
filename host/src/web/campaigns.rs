//! Campaigns: create and edit drafts with a preview, run the lifecycle
//! from the page, watch a send's progress live, read its messages.

use std::convert::Infallible;
use std::time::Duration;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::Web;
use super::ab_form;
use super::pages::{csrf, error_page, field_error, form_error, not_found, render, status_badge};
use super::session::Signed;
use crate::api::ApiError;
use crate::app::{AppError, campaigns, previews};
use crate::domain::lifecycle::transition;
use crate::domain::message::MessageStatus;
use crate::domain::{
    Action, Campaign, CampaignDraft, CampaignId, CampaignPatch, FieldError, List, ListId, SegmentId, Status,
    SubscriberId,
};

const PAGE: usize = 50;

#[derive(Deserialize)]
pub struct After {
    after: Option<u64>,
}

pub async fn index(State(web): State<Web>, signed: Signed, Query(q): Query<After>) -> Response {
    let user = signed.user.id;
    let campaigns = match web.app.store.campaigns(user, None, q.after, PAGE).await {
        Ok(c) => c,
        Err(e) => return error_page(&signed, e),
    };
    let body = html! {
        p { a.button href="/campaigns/new" { "New campaign" } }
        @if campaigns.items.is_empty() {
            p { "No campaigns yet." }
        } @else {
            table {
                caption { "Your campaigns" }
                thead { tr { th scope="col" { "Name" } th scope="col" { "Status" } th scope="col" { "Sent" } th scope="col" { "Of" } th scope="col" { "Created" } } }
                tbody {
                    @for c in &campaigns.items {
                        tr {
                            td { a href={"/campaigns/" (c.id)} { (c.name) } }
                            td { (status_badge(c.status)) }
                            td.num { (c.stats.sent) }
                            td.num { (c.stats.total) }
                            td { (c.created_at.format("%Y-%m-%d %H:%M")) }
                        }
                    }
                }
            }
            @if let Some(next) = campaigns.next_after {
                p { a href={"/campaigns?after=" (next)} { "Next page" } }
            }
        }
    };
    render("Campaigns", &signed, body)
}

/// The draft form's fields, as typed (so a refused form comes back as it
/// was sent).
#[derive(Deserialize, Default, Clone)]
pub struct DraftForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    from_email: String,
    #[serde(default)]
    from_name: String,
    #[serde(default)]
    list_id: String,
    #[serde(default)]
    transport: String,
    #[serde(default)]
    send_rate: String,
    #[serde(default)]
    html: String,
    #[serde(default)]
    text: String,
    /// `YYYY-MM-DDTHH:MM` in UTC (a `datetime-local` field), or empty.
    #[serde(default)]
    scheduled_at: String,
    /// The checkbox: present when ticked.
    #[serde(default)]
    local_time: Option<String>,
    /// A segment id, or empty for the whole list.
    #[serde(default)]
    segment_id: String,
    #[serde(default)]
    track_opens: Option<String>,
    #[serde(default)]
    track_clicks: Option<String>,
    /// Whom the live preview renders for: a subscriber id or `sample`.
    #[serde(default)]
    preview: String,
    /// The A/B test's fields (`ab_form`).
    #[serde(flatten)]
    ab: ab_form::AbFields,
}

/// The `datetime-local` form of a time, in UTC.
const LOCAL_INPUT: &str = "%Y-%m-%dT%H:%M";

impl DraftForm {
    fn of(c: &Campaign) -> DraftForm {
        DraftForm {
            csrf: String::new(),
            name: c.name.clone(),
            subject: c.subject.clone(),
            from_email: c.from_email.clone(),
            from_name: c.from_name.clone(),
            list_id: c.list_id.to_string(),
            transport: c.transport.clone(),
            send_rate: c.send_rate.map(|r| r.to_string()).unwrap_or_default(),
            html: c.html.clone(),
            text: c.text.clone(),
            scheduled_at: c
                .scheduled_at
                .map(|t| t.format(LOCAL_INPUT).to_string())
                .unwrap_or_default(),
            local_time: c.send_at_local_time.then(|| "on".to_string()),
            segment_id: c.segment_id.map(|s| s.to_string()).unwrap_or_default(),
            track_opens: c.track_opens.then(|| "on".to_string()),
            track_clicks: c.track_clicks.then(|| "on".to_string()),
            preview: String::new(),
            ab: ab_form::fields_of(c.ab_test.as_ref()),
        }
    }

    /// The form as the API's draft body, so the same checks apply.
    fn draft(&self) -> Result<CampaignDraft, FieldError> {
        let list_id = self
            .list_id
            .parse::<ListId>()
            .map_err(|_| FieldError::new("list_id", "choose a list"))?;
        let send_rate = match self.send_rate.trim() {
            "" => None,
            r => Some(
                r.parse::<u32>()
                    .map_err(|_| FieldError::new("send_rate", "a whole number of emails per minute"))?,
            ),
        };
        let scheduled_at = match self.scheduled_at.trim() {
            "" => None,
            t => Some(
                chrono::NaiveDateTime::parse_from_str(t, LOCAL_INPUT)
                    .map_err(|_| FieldError::new("scheduled_at", "a date and time, such as 2030-01-31T09:00"))?
                    .and_utc(),
            ),
        };
        let segment_id = match self.segment_id.trim() {
            "" => None,
            s => Some(
                s.parse::<SegmentId>()
                    .map_err(|_| FieldError::new("segment_id", "choose a segment"))?,
            ),
        };
        Ok(CampaignDraft {
            name: self.name.clone(),
            subject: self.subject.clone(),
            from_email: self.from_email.clone(),
            from_name: self.from_name.clone(),
            list_id: Some(list_id),
            segment_id,
            html: self.html.clone(),
            text: self.text.clone(),
            transport: Some(self.transport.clone()).filter(|t| !t.is_empty()),
            send_rate,
            send_at_local_time: self.local_time.is_some(),
            scheduled_at,
            track_opens: self.track_opens.is_some(),
            track_clicks: self.track_clicks.is_some(),
            ab_test: ab_form::setup(&self.ab)?,
        })
    }
}

async fn draft_page(
    web: &Web,
    signed: &Signed,
    editing: Option<CampaignId>,
    form: &DraftForm,
    error: Option<ApiError>,
) -> Response {
    let user = signed.user.id;
    let lists: Vec<List> = match web.app.store.lists(user, None, 1000).await {
        Ok(p) => p.items,
        Err(e) => return error_page(signed, e),
    };
    let segments = match web
        .app
        .store
        .segments(user, None, crate::domain::segment::MAX_PER_USER)
        .await
    {
        Ok(p) => p.items,
        Err(e) => return error_page(signed, e),
    };
    // The domains the From address may be at, shown beside it.
    let domains: Vec<String> = match web.app.store.domains(user).await {
        Ok(d) => d.into_iter().map(|d| d.domain).collect(),
        Err(e) => return error_page(signed, e),
    };
    let mut transports: Vec<String> = web.app.engine.route_names();
    transports.sort_unstable();
    let default = web.app.engine.default_transport();
    // The preview as the page opens (the saved draft); the script renders
    // it again from the form as it changes.
    let (rendered, subscribers) = match editing {
        Some(id) => {
            let list = form.list_id.parse::<ListId>().ok();
            let subs = match list {
                Some(l) => web
                    .app
                    .store
                    .subscribers(user, l, None, None, 100)
                    .await
                    .map(|p| p.items)
                    .unwrap_or_default(),
                None => Vec::new(),
            };
            let chosen = form.preview.parse::<SubscriberId>().ok();
            (
                Some(
                    previews::preview(&web.app, user, id, chosen, None)
                        .await
                        .map_err(ApiError::from),
                ),
                subs,
            )
        }
        None => (None, Vec::new()),
    };
    let preview_error = match &rendered {
        Some(Err(e)) => Some(e.message.as_str()),
        _ => None,
    };
    let preview = rendered.as_ref().and_then(|p| p.as_ref().ok());
    let subscribers = &subscribers;
    let chosen = if form.transport.is_empty() {
        default.as_str()
    } else {
        form.transport.as_str()
    };
    let action = match editing {
        Some(id) => format!("/campaigns/{id}/edit"),
        None => "/campaigns".to_string(),
    };
    let fields = [
        "name",
        "subject",
        "from_email",
        "from_name",
        "list_id",
        "segment_id",
        "transport",
        "send_rate",
        "scheduled_at",
        "send_at_local_time",
        "html",
        "text",
        "templates",
    ];
    // The A/B fieldset shows its own errors.
    let ab_field = error
        .as_ref()
        .and_then(|e| e.field.as_deref())
        .filter(|f| f.starts_with("ab_test"));
    let fields: Vec<&str> = fields.into_iter().chain(ab_field).collect();
    let described = |f: &str| {
        error
            .as_ref()
            .filter(|e| e.field.as_deref() == Some(f))
            .map(|_| format!("error-{f}"))
    };
    let body = html! {
        (form_error(&error, &fields))
        form.draft method="post" action=(action) {
            (csrf(signed))
            label for="name" { "Name" }
            input id="name" name="name" value=(form.name) required maxlength="256" aria-describedby=[described("name")];
            (field_error(&error, "name"))
            label for="subject" { "Subject" }
            input id="subject" name="subject" value=(form.subject) required aria-describedby=[described("subject")];
            (field_error(&error, "subject"))
            label for="from_email" { "From address" }
            input id="from_email" name="from_email" type="email" value=(form.from_email) required
                aria-describedby=(described("from_email").map_or("from-domains".to_string(), |e| format!("{e} from-domains")));
            p.hint id="from-domains" {
                @if domains.is_empty() {
                    "You have no sender domains yet: an admin grants them."
                } @else {
                    "Your sender domains: " (domains.join(", "))
                }
            }
            (field_error(&error, "from_email"))
            label for="from_name" { "From name" }
            input id="from_name" name="from_name" value=(form.from_name) aria-describedby=[described("from_name")];
            (field_error(&error, "from_name"))
            label for="list_id" { "List" }
            select id="list_id" name="list_id" required aria-describedby=[described("list_id")] {
                option value="" { "Choose a list" }
                @for l in &lists {
                    option value=(l.id) selected[form.list_id == l.id.to_string()] { (l.name) " (" (l.subscriber_count) ")" }
                }
            }
            (field_error(&error, "list_id"))
            label for="segment_id" { "Send to" }
            select id="segment_id" name="segment_id" aria-describedby=[described("segment_id")] {
                option value="" { "The whole list" }
                @for s in &segments {
                    option value=(s.id) selected[form.segment_id == s.id.to_string()] {
                        "Segment: " (s.name) " (list " (s.list_id) ")"
                    }
                }
            }
            p.hint { "A segment is read when the send starts: who matches then gets the campaign." }
            (field_error(&error, "segment_id"))
            label for="transport" { "Transport" }
            select id="transport" name="transport" aria-describedby=[described("transport")] {
                @for t in &transports {
                    option value=(t) selected[*t == chosen] { (t) }
                }
            }
            (field_error(&error, "transport"))
            label for="send_rate" { "Emails per minute (empty: as fast as the transport allows)" }
            input id="send_rate" name="send_rate" inputmode="numeric" value=(form.send_rate) aria-describedby=[described("send_rate")];
            (field_error(&error, "send_rate"))
            label for="scheduled_at" { "Send at (UTC; empty: when you press Send)" }
            input id="scheduled_at" name="scheduled_at" type="datetime-local" value=(form.scheduled_at)
                aria-describedby=[described("scheduled_at")];
            (field_error(&error, "scheduled_at"))
            div.check {
                input id="local_time" name="local_time" type="checkbox" checked[form.local_time.is_some()]
                    aria-describedby=[described("send_at_local_time")];
                label for="local_time" { "At that time in each subscriber's time zone" }
            }
            (field_error(&error, "send_at_local_time"))
            div.check {
                input id="track_opens" name="track_opens" type="checkbox" checked[form.track_opens.is_some()];
                label for="track_opens" { "Track opens (a 1×1 image at the end of the HTML part)" }
            }
            div.check {
                input id="track_clicks" name="track_clicks" type="checkbox" checked[form.track_clicks.is_some()];
                label for="track_clicks" { "Track clicks (links in the templates go through a redirect)" }
            }
            (ab_form::fieldset(&form.ab, &error))
            label for="html" { "HTML body (a template: " code { "{{ subscriber.name }}" } ")" }
            textarea id="html" name="html" rows="10" aria-describedby=[described("html")] { (form.html) }
            (field_error(&error, "html"))
            label for="text" { "Text body" }
            textarea id="text" name="text" rows="6" aria-describedby=[described("text")] { (form.text) }
            (field_error(&error, "text"))
            section.live-preview aria-labelledby="preview-h" {
                h2 id="preview-h" { "Preview" }
                label for="preview" { "Render for" }
                select id="preview" name="preview" {
                    option value="sample" { "Sample data" }
                    @for s in subscribers {
                        option value=(s.id) selected[form.preview == s.id.to_string()] { (s.email) }
                    }
                }
                p { "Subject: " strong data-live-subject { (preview.map(|p| p.subject.as_str()).unwrap_or("")) } }
                p.error data-live-error role="status" { (preview_error.unwrap_or("")) }
                iframe.preview sandbox="" title="HTML preview" data-live-html
                    srcdoc=(preview.map(|p| p.html.as_str()).unwrap_or("")) {}
                pre.preview-text data-live-text { (preview.map(|p| p.text.as_str()).unwrap_or("")) }
            }
            button type="submit" { @if editing.is_some() { "Save draft" } @else { "Create draft" } }
        }
    };
    let status = error.as_ref().map_or(StatusCode::OK, |e| e.status);
    let title = if editing.is_some() {
        "Edit draft"
    } else {
        "New campaign"
    };
    (status, render(title, signed, body)).into_response()
}

pub async fn new(State(web): State<Web>, signed: Signed) -> Response {
    draft_page(&web, &signed, None, &DraftForm::default(), None).await
}

pub async fn create(State(web): State<Web>, signed: Signed, Form(f): Form<DraftForm>) -> Response {
    if let Some(r) = signed.forged(&f.csrf) {
        return r;
    }
    let result = match f.draft() {
        Ok(d) => campaigns::create(&web.app, signed.user.id, d).await,
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(c) => Redirect::to(&format!("/campaigns/{}", c.id)).into_response(),
        Err(e) => draft_page(&web, &signed, None, &f, Some(e.into())).await,
    }
}

/// The draft form rendered as it stands, unsaved: the live preview.
pub async fn preview(State(web): State<Web>, signed: Signed, Form(f): Form<DraftForm>) -> Response {
    if let Some(r) = signed.forged(&f.csrf) {
        return r;
    }
    let user = signed.user.id;
    let chosen = f.preview.parse::<SubscriberId>().ok();
    let unsaved = f
        .draft()
        .map_err(AppError::from)
        .and_then(|d| campaigns::unsaved(&web.app, user, d));
    let rendered = match unsaved {
        Ok(c) => previews::preview_unsaved(&web.app, user, c, chosen).await,
        Err(e) => Err(e),
    }
    .map_err(ApiError::from);
    let body = match rendered {
        Ok(p) => serde_json::json!({"subject": p.subject, "html": p.html, "text": p.text}),
        Err(e) => serde_json::json!({"error": e.message}),
    };
    axum::Json(body).into_response()
}

pub async fn edit(State(web): State<Web>, signed: Signed, Path(id): Path<CampaignId>) -> Response {
    let user = signed.user.id;
    match web.app.store.campaign(user, id).await {
        Ok(c) if transition(c.status, Action::Edit).is_ok() => {
            draft_page(&web, &signed, Some(id), &DraftForm::of(&c), None).await
        }
        Ok(_) => Redirect::to(&format!("/campaigns/{id}")).into_response(),
        Err(e) => error_page(&signed, e),
    }
}

pub async fn update(
    State(web): State<Web>,
    signed: Signed,
    Path(id): Path<CampaignId>,
    Form(f): Form<DraftForm>,
) -> Response {
    if let Some(r) = signed.forged(&f.csrf) {
        return r;
    }
    let result = match f.draft() {
        Ok(d) => {
            let patch = CampaignPatch {
                name: Some(d.name),
                subject: Some(d.subject),
                from_email: Some(d.from_email),
                from_name: Some(d.from_name),
                list_id: d.list_id,
                segment_id: Some(d.segment_id),
                html: Some(d.html),
                text: Some(d.text),
                transport: d.transport,
                send_rate: Some(d.send_rate),
                send_at_local_time: Some(d.send_at_local_time),
                scheduled_at: Some(d.scheduled_at),
                track_opens: Some(d.track_opens),
                track_clicks: Some(d.track_clicks),
                ab_test: Some(d.ab_test),
            };
            campaigns::update(&web.app, signed.user.id, id, patch).await
        }
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(_) => Redirect::to(&format!("/campaigns/{id}")).into_response(),
        Err(e) if e.is_not_found() => not_found(Some(&signed)),
        Err(e) => draft_page(&web, &signed, Some(id), &f, Some(e.into())).await,
    }
}

#[derive(Deserialize)]
pub struct ShowQuery {
    status: Option<String>,
    after: Option<u64>,
    /// Preview for this subscriber ("sample" for sample data).
    preview: Option<String>,
    /// Preview this A/B variant (empty: the campaign).
    #[serde(default)]
    variant: Option<String>,
}

/// The actions the lifecycle allows now, as (form value, label).
fn allowed(status: Status) -> Vec<(&'static str, &'static str)> {
    [
        (Action::Send { future: false }, "send", "Send now"),
        (Action::Pause, "pause", "Pause"),
        (Action::Resume, "resume", "Resume"),
        (Action::Cancel, "cancel", "Cancel"),
        (Action::Duplicate, "duplicate", "Duplicate"),
    ]
    .into_iter()
    .filter(|(a, _, _)| transition(status, *a).is_ok())
    .map(|(_, v, l)| (v, l))
    .collect()
}

fn progress(c: &Campaign) -> Markup {
    let s = &c.stats;
    let done = s.finished();
    let percent = (done * 100).checked_div(s.total).unwrap_or(0);
    html! {
        section.progress aria-labelledby="progress-h" data-events={"/campaigns/" (c.id) "/events"} {
            h2 id="progress-h" { "Progress" }
            p { "Status: " (status_badge(c.status)) }
            progress id="progress-bar" max=(s.total.max(1)) value=(done) aria-labelledby="progress-text" { (percent) "%" }
            p id="progress-text" data-progress-text {
                (done) " of " (s.total) " done (" (percent) "%): "
                (s.sent) " sent, " (s.failed) " failed, " (s.skipped) " skipped, " (s.cancelled) " cancelled, "
                (s.queued) " queued."
            }
            figure {
                figcaption { "Sent per minute" }
                div.chart data-chart role="img" aria-label="Sent per minute, updated live" {}
            }
        }
    }
}

/// Opens and clicks: who and how often, and each tracked link's clicks.
fn engagement(c: &Campaign, clicks: &[crate::domain::tracking::LinkCount]) -> Markup {
    let s = &c.stats;
    let rate = |n: u64| {
        (n * 1000)
            .checked_div(s.sent)
            .map(|r| format!("{}.{}%", r / 10, r % 10))
    };
    let links = crate::domain::tracking::link_stats(&crate::domain::tracking::Links::of_campaign(c), clicks);
    html! {
        section aria-labelledby="engagement-h" {
            h2 id="engagement-h" { "Opens and clicks" }
            dl.facts {
                @if c.track_opens {
                    dt { "Opened" } dd { (s.opened) " of " (s.sent) " sent" @if let Some(r) = rate(s.opened) { " (" (r) ")" } }
                    dt { "Opens" } dd { (s.opens) " in all" }
                }
                @if c.track_clicks {
                    dt { "Clicked" } dd { (s.clicked) " of " (s.sent) " sent" @if let Some(r) = rate(s.clicked) { " (" (r) ")" } }
                    dt { "Clicks" } dd { (s.clicks) " in all" }
                }
            }
            p.hint { "Requests within a second of delivery (mail scanners) and HEAD requests are not counted; a click counts as an open when images were off." }
            @if c.track_clicks && !links.is_empty() {
                table {
                    caption { "Links" }
                    thead { tr { th scope="col" { "Link" } th scope="col" { "Clicks" } th scope="col" { "People" } } }
                    tbody {
                        @for l in &links {
                            tr { td { (l.url) } td.num { (l.clicks) } td.num { (l.unique_clicks) } }
                        }
                    }
                }
            }
        }
    }
}

pub async fn show(
    State(web): State<Web>,
    signed: Signed,
    Path(id): Path<CampaignId>,
    Query(q): Query<ShowQuery>,
) -> Response {
    campaign_page(&web, &signed, id, q, None).await
}

async fn campaign_page(web: &Web, signed: &Signed, id: CampaignId, q: ShowQuery, error: Option<ApiError>) -> Response {
    let user = signed.user.id;
    let status = q.status.as_deref().and_then(MessageStatus::parse);
    let after = q.after;
    let store = &web.app.store;
    let loaded = async {
        let (c, clicks) = store.link_clicks(user, id).await?;
        let messages = store.messages(user, id, status, after, PAGE).await?;
        // Up to 100 of the list's subscribers to preview with.
        let subs = store.subscribers(user, c.list_id, None, None, 100).await?;
        Ok::<_, crate::store::StoreError>((c, clicks, messages, subs))
    }
    .await;
    let (c, clicks, messages, subs) = match loaded {
        Ok(x) => x,
        Err(e) => return error_page(signed, e),
    };
    let preview_for = q.preview.clone();
    let q_variant = q.variant.clone();
    let preview = match preview_for.as_deref() {
        None => None,
        Some(p) => {
            let sub = p.parse::<SubscriberId>().ok();
            let variant = q.variant.as_deref().and_then(|v| v.parse::<u8>().ok());
            Some(
                previews::preview(&web.app, user, id, sub, variant)
                    .await
                    .map_err(ApiError::from),
            )
        }
    };
    let filter = status.map(|s| s.as_str()).unwrap_or("");
    let body = html! {
        @if let Some(e) = &error { p.error role="alert" { (e.message) } }
        dl.facts {
            dt { "Subject" } dd { (c.subject) }
            dt { "From" } dd { (c.from_name) " <" (c.from_email) ">" }
            dt { "List" } dd { a href={"/lists/" (c.list_id)} { "list " (c.list_id) } }
            @if let Some(s) = c.segment_id {
                dt { "Segment" } dd { a href={"/segments/" (s)} { "segment " (s) } " (as it was when the send started)" }
            }
            dt { "Transport" } dd { (c.transport) }
            dt { "Tracking" } dd {
                @match (c.track_opens, c.track_clicks) {
                    (true, true) => "opens and clicks",
                    (true, false) => "opens",
                    (false, true) => "clicks",
                    (false, false) => "off",
                }
            }
            dt { "Rate" } dd { @if let Some(r) = c.send_rate { (r) " per minute" } @else { "as fast as the transport allows" } }
        }
        div.actions {
            @if transition(c.status, Action::Edit).is_ok() {
                a.button href={"/campaigns/" (c.id) "/edit"} { "Edit draft" }
            }
            @for (value, label) in allowed(c.status) {
                @let label = if value == "send" && c.starts_after(chrono::Utc::now()) { "Schedule" } else { label };
                form method="post" action={"/campaigns/" (c.id) "/action"} {
                    (csrf(signed))
                    input type="hidden" name="do" value=(value);
                    button type="submit" data-confirm=[(value == "cancel").then_some("Cancel this campaign for good?")] { (label) }
                }
            }
        }
        (progress(&c))
        (ab_form::results(&c, signed))
        @if c.track_opens || c.track_clicks {
            (engagement(&c, &clicks))
        }
        section aria-labelledby="preview-h" {
            h2 id="preview-h" { "Preview" }
            form method="get" action={"/campaigns/" (c.id)} {
                label for="preview" { "Render for" }
                select id="preview" name="preview" {
                    option value="sample" { "Sample data" }
                    @for s in &subs.items {
                        option value=(s.id) selected[preview_for.as_deref() == Some(&s.id.to_string())] { (s.email) }
                    }
                }
                @if let Some(ab) = &c.ab_test {
                    label for="variant" { "Variant" }
                    select id="variant" name="variant" {
                        option value="" { "The campaign" }
                        @for i in 0..ab.variants.len() {
                            option value=(i) selected[q_variant.as_deref() == Some(&i.to_string())] {
                                "Variant " (ab_form::variant_name(i))
                            }
                        }
                    }
                }
                button type="submit" { "Preview" }
            }
            @match &preview {
                None => {}
                Some(Ok(p)) => {
                    dl.facts { dt { "Subject" } dd data-preview-subject { (p.subject) } }
                    @if !p.html.is_empty() {
                        // Sandboxed: the user's HTML runs no script and
                        // reaches nothing of this page.
                        iframe.preview sandbox="" title="HTML preview" srcdoc=(p.html) {}
                    }
                    h3 { "Text" }
                    pre.preview-text { (p.text) }
                }
                Some(Err(e)) => { p.error role="alert" { (e.message) } }
            }
        }
        section aria-labelledby="messages-h" {
            h2 id="messages-h" { "Messages" }
            form method="get" action={"/campaigns/" (c.id)} {
                label for="status" { "Status" }
                select id="status" name="status" {
                    option value="" selected[filter.is_empty()] { "All" }
                    @for s in ["queued", "sent", "failed", "skipped", "cancelled"] {
                        option value=(s) selected[filter == s] { (s) }
                    }
                }
                button type="submit" { "Filter" }
            }
            @if messages.items.is_empty() {
                p { "No messages on this page." }
            } @else {
                table {
                    caption { "Messages" }
                    thead { tr { th scope="col" { "Email" } th scope="col" { "Status" } th scope="col" { "Attempts" } th scope="col" { "Error" } } }
                    tbody {
                        @for m in &messages.items {
                            tr {
                                td { (m.email) }
                                td { span class={"badge msg-" (m.status.as_str())} { (m.status.as_str()) } }
                                td.num { (m.attempts) }
                                td { (m.last_error.as_deref().or(m.skip_reason.as_deref()).unwrap_or("")) }
                            }
                        }
                    }
                }
                @if let Some(next) = messages.next_after {
                    p { a href={"/campaigns/" (c.id) "?status=" (filter) "&after=" (next)} { "Next page" } }
                }
            }
        }
    };
    let code = error.as_ref().map_or(StatusCode::OK, |e| e.status);
    (code, render(&c.name, signed, body)).into_response()
}

#[derive(Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default, rename = "do")]
    action: String,
    /// For `winner`: the variant's index.
    #[serde(default)]
    variant: Option<u8>,
}

pub async fn action(
    State(web): State<Web>,
    signed: Signed,
    Path(id): Path<CampaignId>,
    Form(f): Form<ActionForm>,
) -> Response {
    if let Some(r) = signed.forged(&f.csrf) {
        return r;
    }
    let user = signed.user.id;
    let result = match f.action.as_str() {
        "send" => campaigns::send(&web.app, user, id).await,
        "pause" => campaigns::act(&web.app, user, id, Action::Pause).await,
        "resume" => campaigns::act(&web.app, user, id, Action::Resume).await,
        "cancel" => campaigns::act(&web.app, user, id, Action::Cancel).await,
        "winner" => match f.variant {
            Some(v) => campaigns::pick_winner(&web.app, user, id, v).await,
            None => Err(FieldError::new("variant", "choose a variant").into()),
        },
        "duplicate" => web
            .app
            .store
            .duplicate_campaign(user, id, chrono::Utc::now())
            .await
            .map_err(AppError::from),
        other => Err(FieldError::new("do", format!("unknown action {other:?}")).into()),
    };
    match result {
        Ok(c) => Redirect::to(&format!("/campaigns/{}", c.id)).into_response(),
        Err(e) if e.is_not_found() => not_found(Some(&signed)),
        Err(e) => {
            let e = ApiError::from(e);
            let q = ShowQuery {
                status: None,
                after: None,
                preview: None,
                variant: None,
            };
            campaign_page(&web, &signed, id, q, Some(e)).await
        }
    }
}

/// Server-sent events: the campaign's counters once a second while it may
/// still change, then one last event and the end of the stream.
pub async fn events(State(web): State<Web>, signed: Signed, Path(id): Path<CampaignId>) -> Response {
    let user = signed.user.id;
    if let Err(e) = web.app.store.campaign(user, id).await {
        return error_page(&signed, e);
    }
    let Some(permit) = web.streams.open(user) else {
        // The page still shows the figures it was rendered with.
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many live views open; close some and reload",
        )
            .into_response();
    };
    let app = web.app.clone();
    // (state, first, done): the first event goes at once, then one a second.
    let stream = futures_util::stream::unfold(
        (app, true, false, permit),
        move |(app, first, done, permit)| async move {
            if done {
                return None;
            }
            if !first {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let c = app.store.campaign(user, id).await.ok()?;
            let s = &c.stats;
            let data = serde_json::json!({
                "status": c.status,
                "total": s.total,
                "done": s.finished(),
                "sent": s.sent,
                "failed": s.failed,
                "skipped": s.skipped,
                "cancelled": s.cancelled,
                "queued": s.queued,
            });
            let last = matches!(c.status, Status::Sent | Status::Cancelled if s.queued == 0)
                || matches!(c.status, Status::Draft);
            let event = Event::default().event("progress").data(data.to_string());
            Some((Ok::<Event, Infallible>(event), (app, false, last, permit)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}
