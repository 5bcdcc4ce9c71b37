//! The segment builder: a segment's name, list, match and rules as rows of
//! field, op and value, made and changed through the same store calls as
//! the API, with a live count of who the rules match as they are typed
//! (`/segments/count`, the unsaved rules counted like a saved segment).

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use serde_json::Value;

use super::Web;
use super::pages::{csrf, error_page, field_error, form_error, render};
use super::session::Signed;
use crate::api::ApiError;
use crate::app::AppError;
use crate::domain::segment::{Match, Rule, Segment, SegmentDraft, SegmentPatch};
use crate::domain::{FieldError, ListId, SegmentId};

/// Rule rows on the form: empty ones are left out.
const ROWS: usize = 8;

/// Fields the builder offers (any `attributes.KEY` may be typed).
const FIELDS: &[&str] = &[
    "email",
    "name",
    "timezone",
    "status",
    "created_at",
    "attributes.",
    "engagement",
];
const OPS: &[&str] = &[
    "eq",
    "ne",
    "contains",
    "starts_with",
    "in",
    "gt",
    "gte",
    "lt",
    "lte",
    "exists",
    "not_exists",
    "opened",
    "clicked",
    "not_opened",
    "not_clicked",
];

#[derive(Deserialize, Default)]
pub struct SegmentForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    list_id: String,
    #[serde(default, rename = "match")]
    match_: String,
    /// `field0`, `op0`, `value0`, … `field7`, …
    #[serde(flatten)]
    rows: HashMap<String, String>,
}

/// A value as typed: a JSON number or boolean as such (`9`, `true`; not
/// `01234`, which JSON does not take as a number), a comma-separated list
/// for `in`, nothing for `exists` and `not_exists`, else text.
fn value(op: &str, typed: &str) -> Value {
    let scalar = |t: &str| match serde_json::from_str::<Value>(t.trim()) {
        Ok(v @ (Value::Number(_) | Value::Bool(_))) => v,
        _ => Value::String(t.trim().to_string()),
    };
    match op {
        "exists" | "not_exists" => Value::Null,
        "in" => Value::Array(typed.split(',').map(scalar).collect()),
        _ => scalar(typed),
    }
}

/// A value shown in its row: strings bare, lists comma-separated.
fn typed(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(typed).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

impl SegmentForm {
    fn of(s: &Segment) -> SegmentForm {
        let mut rows = HashMap::new();
        for (i, r) in s.rules.iter().enumerate() {
            rows.insert(format!("field{i}"), r.field.clone());
            rows.insert(format!("op{i}"), r.op.clone());
            rows.insert(format!("value{i}"), typed(&r.value));
        }
        SegmentForm {
            csrf: String::new(),
            name: s.name.clone(),
            list_id: s.list_id.to_string(),
            match_: match s.match_ {
                Match::All => "all".into(),
                Match::Any => "any".into(),
            },
            rows,
        }
    }

    fn row(&self, part: &str, i: usize) -> &str {
        self.rows.get(&format!("{part}{i}")).map_or("", |s| s.trim())
    }

    fn rules(&self) -> Vec<Rule> {
        (0..ROWS)
            .filter(|&i| !self.row("field", i).is_empty())
            .map(|i| Rule {
                field: self.row("field", i).to_string(),
                op: self.row("op", i).to_string(),
                value: value(self.row("op", i), self.row("value", i)),
            })
            .collect()
    }

    fn match_(&self) -> Match {
        if self.match_ == "any" { Match::Any } else { Match::All }
    }

    fn draft(&self) -> Result<SegmentDraft, FieldError> {
        Ok(SegmentDraft {
            name: self.name.clone(),
            list_id: self
                .list_id
                .parse::<ListId>()
                .map_err(|_| FieldError::new("list_id", "choose a list"))?,
            match_: self.match_(),
            rules: self.rules(),
        })
    }
}

async fn form_page(
    web: &Web,
    signed: &Signed,
    editing: Option<SegmentId>,
    form: &SegmentForm,
    error: Option<ApiError>,
) -> Response {
    let lists = match web.app.store.lists(signed.user.id, None, 1000).await {
        Ok(p) => p.items,
        Err(e) => return error_page(signed, e),
    };
    let action = editing.map_or("/segments/new".to_string(), |id| format!("/segments/{id}/edit"));
    let mut fields = vec!["name".to_string(), "list_id".into(), "rules".into()];
    fields.extend((0..ROWS).map(|i| format!("rules[{i}]")));
    let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
    let body = html! {
        (form_error(&error, &fields))
        form.segment method="post" action=(action) {
            (csrf(signed))
            label for="name" { "Name" }
            input id="name" name="name" value=(form.name) required maxlength="256";
            (field_error(&error, "name"))
            label for="list_id" { "List" }
            select id="list_id" name="list_id" required disabled[editing.is_some()] {
                option value="" { "Choose a list" }
                @for l in &lists {
                    option value=(l.id) selected[form.list_id == l.id.to_string()] { (l.name) " (" (l.subscriber_count) ")" }
                }
            }
            @if editing.is_some() {
                input type="hidden" name="list_id" value=(form.list_id);
                p.hint { "A segment stays on its list." }
            }
            (field_error(&error, "list_id"))
            label for="match" { "Match" }
            select id="match" name="match" {
                option value="all" selected[form.match_() == Match::All] { "All of the rules" }
                option value="any" selected[form.match_() == Match::Any] { "Any of the rules" }
            }
            datalist id="fields" { @for f in FIELDS { option value=(f) {} } }
            table.rules {
                caption { "Rules (empty rows are left out)" }
                thead { tr { th scope="col" { "Field" } th scope="col" { "Op" } th scope="col" { "Value" } } }
                tbody {
                    @for i in 0..ROWS {
                        tr {
                            td {
                                input name={"field" (i)} list="fields" value=(form.row("field", i))
                                    aria-label={"Rule " (i + 1) " field"};
                            }
                            td {
                                select name={"op" (i)} aria-label={"Rule " (i + 1) " op"} {
                                    @for o in OPS { option value=(o) selected[form.row("op", i) == *o] { (o) } }
                                }
                            }
                            td {
                                input name={"value" (i)} value=(form.row("value", i))
                                    aria-label={"Rule " (i + 1) " value"};
                                (field_error(&error, &format!("rules[{}]", i)))
                            }
                        }
                    }
                }
            }
            (field_error(&error, "rules"))
            p.hint {
                "Fields: email, name, timezone, status, created_at, attributes.KEY, engagement (the value a campaign id). "
                "A number or true/false compares as such; " code { "in" } " takes values separated by commas."
            }
            p role="status" data-live-count { "" }
            button type="submit" { @if editing.is_some() { "Save segment" } @else { "Create segment" } }
        }
    };
    render(
        if editing.is_some() {
            "Edit segment"
        } else {
            "New segment"
        },
        signed,
        body,
    )
}

/// The rows the API named `rules[i]` are the form's non-empty rows in
/// order: map the index back to the row.
fn row_error(form: &SegmentForm, e: AppError) -> ApiError {
    let mut e = ApiError::from(e);
    let Some(field) = e.field.clone() else { return e };
    if let Some(i) = field
        .strip_prefix("rules[")
        .and_then(|f| f.strip_suffix(']'))
        .and_then(|i| i.parse::<usize>().ok())
    {
        let row = (0..ROWS)
            .filter(|&r| !form.row("field", r).is_empty())
            .nth(i)
            .unwrap_or(i);
        let said = e.message.strip_prefix(&format!("{field}: ")).unwrap_or(&e.message);
        e.message = format!("rule {}: {said}", row + 1);
        e.field = Some(format!("rules[{row}]"));
    }
    e
}

pub async fn new(State(web): State<Web>, signed: Signed) -> Response {
    form_page(&web, &signed, None, &SegmentForm::default(), None).await
}

pub async fn create(State(web): State<Web>, signed: Signed, Form(f): Form<SegmentForm>) -> Response {
    if let Some(r) = signed.forged(&f.csrf) {
        return r;
    }
    let made = match f.draft() {
        Ok(d) => web
            .app
            .store
            .create_segment(signed.user.id, d, chrono::Utc::now())
            .await
            .map_err(AppError::from),
        Err(e) => Err(e.into()),
    };
    match made {
        Ok(s) => Redirect::to(&format!("/segments/{}", s.id)).into_response(),
        Err(e) => form_page(&web, &signed, None, &f, Some(row_error(&f, e))).await,
    }
}

pub async fn edit(State(web): State<Web>, signed: Signed, Path(id): Path<SegmentId>) -> Response {
    match web.app.store.segment(signed.user.id, id).await {
        Ok(s) => form_page(&web, &signed, Some(id), &SegmentForm::of(&s), None).await,
        Err(e) => error_page(&signed, e),
    }
}

pub async fn update(
    State(web): State<Web>,
    signed: Signed,
    Path(id): Path<SegmentId>,
    Form(f): Form<SegmentForm>,
) -> Response {
    if let Some(r) = signed.forged(&f.csrf) {
        return r;
    }
    let patch = SegmentPatch {
        name: Some(f.name.clone()),
        match_: Some(f.match_()),
        rules: Some(f.rules()),
    };
    match web
        .app
        .store
        .update_segment(signed.user.id, id, patch, chrono::Utc::now())
        .await
    {
        Ok(_) => Redirect::to(&format!("/segments/{id}")).into_response(),
        Err(crate::store::StoreError::NotFound) => super::pages::not_found(Some(&signed)),
        Err(e) => form_page(&web, &signed, Some(id), &f, Some(row_error(&f, e.into()))).await,
    }
}

/// The live count: the form's rules counted as they stand, or the error
/// that saving them would give.
pub async fn count(State(web): State<Web>, signed: Signed, Form(f): Form<SegmentForm>) -> Response {
    if let Some(r) = signed.forged(&f.csrf) {
        return r;
    }
    let user = signed.user.id;
    let counted = match f
        .draft()
        .and_then(|d| Segment::new(SegmentId::new(0), user, d, chrono::Utc::now()))
    {
        Ok(s) => crate::app::segments::count_of(&web.app, user, &s).await,
        Err(e) => Err(e.into()),
    };
    let body = match counted {
        Ok(c) => serde_json::json!({"count": c.count, "subscribed": c.subscribed}),
        Err(e) => serde_json::json!({"error": row_error(&f, e).message}),
    };
    axum::Json(body).into_response()
}
