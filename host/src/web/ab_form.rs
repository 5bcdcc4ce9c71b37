//! The A/B test on the dashboard: its part of the draft form (share,
//! metric, wait, and a row per variant: subject, sender name, and bodies
//! that may be left empty for the campaign's), read into the API's
//! `AbTestSetup` so the same checks apply; and the results on the campaign
//! page, each variant's rate with a button that sends it to the rest.

use std::collections::HashMap;

use maud::{Markup, html};

use super::pages::csrf;
use super::session::Signed;
use crate::api::ApiError;
use crate::domain::ab::{AbTest, AbTestSetup, MAX_VARIANTS, Metric, Variant};
use crate::domain::{Campaign, FieldError};

/// The form's A/B fields (`ab`, `ab_share`, `ab_metric`, `ab_wait`,
/// `ab_subject0`, `ab_from_name0`, `ab_html0`, `ab_text0`, …), as typed.
pub type AbFields = HashMap<String, String>;

const PARTS: [&str; 4] = ["subject", "from_name", "html", "text"];

/// The fields showing a stored test.
pub fn fields_of(ab: Option<&AbTest>) -> AbFields {
    let mut f = AbFields::new();
    let Some(ab) = ab else { return f };
    f.insert("ab".into(), "on".into());
    f.insert(
        "ab_share".into(),
        format!("{}", (ab.test_share * 100.0 * 100.0).round() / 100.0),
    );
    f.insert("ab_metric".into(), metric_name(ab.metric).into());
    f.insert("ab_wait".into(), ab.wait_minutes.to_string());
    for (i, v) in ab.variants.iter().enumerate() {
        for (part, value) in PARTS.iter().zip([&v.subject, &v.from_name, &v.html, &v.text]) {
            if let Some(value) = value {
                f.insert(format!("ab_{part}{i}"), value.clone());
            }
        }
    }
    f
}

fn metric_name(m: Metric) -> &'static str {
    match m {
        Metric::Opens => "opens",
        Metric::Clicks => "clicks",
    }
}

/// The test the fields set up: none unless `ab` is ticked. Rows left
/// empty are no variants; a number that does not parse is named.
pub fn setup(f: &AbFields) -> Result<Option<AbTestSetup>, FieldError> {
    if f.get("ab").is_none_or(|v| v.is_empty()) {
        return Ok(None);
    }
    let text = |k: &str| f.get(k).map(|v| v.trim()).unwrap_or("");
    let share: f64 = text("ab_share")
        .parse()
        .map_err(|_| FieldError::new("ab_test.test_share", "a percentage, such as 20"))?;
    let wait: u32 = text("ab_wait")
        .parse()
        .map_err(|_| FieldError::new("ab_test.wait_minutes", "a number of minutes"))?;
    let metric = match text("ab_metric") {
        "clicks" => Metric::Clicks,
        _ => Metric::Opens,
    };
    let variants = (0..MAX_VARIANTS)
        .filter_map(|i| {
            let part = |p: &str| Some(text(&format!("ab_{p}{i}")).to_string()).filter(|v| !v.is_empty());
            let v = Variant {
                subject: part("subject"),
                from_name: part("from_name"),
                html: part("html"),
                text: part("text"),
            };
            (v != Variant::default()).then_some(v)
        })
        .collect();
    Ok(Some(AbTestSetup {
        variants,
        test_share: share / 100.0,
        metric,
        wait_minutes: wait,
    }))
}

/// The A/B part of the draft form.
pub fn fieldset(f: &AbFields, error: &Option<ApiError>) -> Markup {
    let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
    // Named by its field: which variant, and which of its parts.
    let error_on = |prefix: &str| {
        let e = error.as_ref()?;
        let field = e.field.as_deref().filter(|f| f.starts_with(prefix))?;
        Some(format!("{field}: {}", e.message))
    };
    let share = if get("ab_share").is_empty() {
        "20"
    } else {
        get("ab_share")
    };
    let wait = if get("ab_wait").is_empty() {
        "240"
    } else {
        get("ab_wait")
    };
    html! {
        fieldset.ab aria-describedby="ab-hint" {
            legend { "A/B test" }
            div.check {
                input id="ab" name="ab" type="checkbox" checked[!get("ab").is_empty()];
                label for="ab" { "Test variants on part of the audience first; the rest gets the winner" }
            }
            p.hint id="ab-hint" {
                "Fields left empty in a variant are the campaign's. The winner's rate needs its tracking on (opens or clicks, above). Not with local-time sending."
            }
            label for="ab_share" { "Test group (% of the audience, 5 to 50)" }
            input id="ab_share" name="ab_share" inputmode="decimal" value=(share);
            label for="ab_metric" { "Winner by" }
            select id="ab_metric" name="ab_metric" {
                option value="opens" selected[get("ab_metric") != "clicks"] { "Open rate" }
                option value="clicks" selected[get("ab_metric") == "clicks"] { "Click rate" }
            }
            label for="ab_wait" { "Decide after (minutes once the test is sent)" }
            input id="ab_wait" name="ab_wait" inputmode="numeric" value=(wait);
            @if let Some(message) = error_on("ab_test") {
                p.error id="error-ab_test" role="alert" { (message) }
            }
            @for i in 0..MAX_VARIANTS {
                fieldset.variant {
                    @let name = variant_name(i);
                    legend { "Variant " (name) }
                    label for={"ab_subject" (i)} { "Variant " (name) " subject" }
                    input id={"ab_subject" (i)} name={"ab_subject" (i)} value=(get(&format!("ab_subject{i}")));
                    label for={"ab_from_name" (i)} { "Variant " (name) " from name" }
                    input id={"ab_from_name" (i)} name={"ab_from_name" (i)} value=(get(&format!("ab_from_name{i}")));
                    details open[!get(&format!("ab_html{i}")).is_empty() || !get(&format!("ab_text{i}")).is_empty()] {
                        summary { "Variant " (name) " bodies" }
                        label for={"ab_html" (i)} { "Variant " (name) " HTML body" }
                        textarea id={"ab_html" (i)} name={"ab_html" (i)} rows="4" { (get(&format!("ab_html{i}"))) }
                        label for={"ab_text" (i)} { "Variant " (name) " text body" }
                        textarea id={"ab_text" (i)} name={"ab_text" (i)} rows="3" { (get(&format!("ab_text{i}"))) }
                    }
                }
            }
        }
    }
}

/// A, B, C …
pub fn variant_name(i: usize) -> char {
    (b'A' + i as u8) as char
}

/// The test's results on the campaign page: per variant its subject,
/// recipients, opens, clicks and rate; the winner; before the decision,
/// a button per variant to send it to the rest now.
pub fn results(c: &Campaign, signed: &Signed) -> Markup {
    let Some(ab) = &c.ab_test else { return html! {} };
    let variants = c.variants();
    let undecided =
        ab.winner.is_none() && matches!(c.status, crate::domain::Status::Sending | crate::domain::Status::Paused);
    html! {
        section.ab-results aria-labelledby="ab-h" {
            h2 id="ab-h" { "A/B test" }
            p {
                (format!("{}%", (ab.test_share * 100.0).round())) " of the audience, winner by "
                (if ab.metric == Metric::Opens { "open rate" } else { "click rate" })
                " " (ab.wait_minutes) " minutes after the test is sent. "
                @match (ab.winner, ab.decides_at) {
                    (Some(w), _) => {
                        strong { "Variant " (variant_name(usize::from(w))) " won" }
                        @if ab.decided_by == Some(crate::domain::ab::Decision::Choice) { " (picked)" }
                        "; the rest of the audience gets it."
                    }
                    (None, Some(at)) => { "Decided at " (at.format("%Y-%m-%d %H:%M UTC")) "." }
                    (None, None) => { "The test is being sent." }
                }
            }
            table {
                caption { "Variants" }
                thead { tr {
                    th scope="col" { "Variant" } th scope="col" { "Subject" } th scope="col" { "Recipients" }
                    th scope="col" { "Opened" } th scope="col" { "Clicked" } th scope="col" { "Rate" }
                    @if undecided { th scope="col" { "Pick" } }
                } }
                tbody {
                    @for (i, v) in variants.iter().enumerate() {
                        @let r = ab.results.get(i).copied().unwrap_or_default();
                        tr {
                            th scope="row" {
                                (variant_name(i))
                                @if ab.winner == Some(i as u8) { " ★" }
                            }
                            td { (v.subject) }
                            td.num { (r.recipients) }
                            td.num { (r.opened) }
                            td.num { (r.clicked) }
                            td.num { (format!("{:.1}%", r.rate * 100.0)) }
                            @if undecided {
                                td {
                                    form method="post" action={"/campaigns/" (c.id) "/action"} {
                                        (csrf(signed))
                                        input type="hidden" name="do" value="winner";
                                        input type="hidden" name="variant" value=(i);
                                        button type="submit"
                                            data-confirm={"Send variant " (variant_name(i)) " to the rest of the audience now?"} {
                                            "Send " (variant_name(i)) " to the rest"
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
