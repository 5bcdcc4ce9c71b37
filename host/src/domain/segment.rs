//! Segments: the subscribers of one list who match a set of rules, such as
//! "plan is pro and signed up before March". Rules are stored as the user
//! sent them and compiled into a `Filter` (checked once, then applied to
//! each subscriber without parsing anything again).
//!
//! Comparisons: text compares case-insensitively (`eq`, `ne`, `contains`,
//! `starts_with`, `in`) and by code point for `gt`…`lte` (ISO dates order
//! right); a rule whose value is a JSON number compares numerically, with
//! an attribute that is a number or a string holding one (CSV imports store
//! text); `created_at` compares as a time (RFC 3339 or `YYYY-MM-DD`, UTC).

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{CampaignId, FieldError, ListId, SegmentId, Subscriber, SubscriberStatus, UserId, validate_len};

/// Rules in one segment: enough for any real audience, and a bound on the
/// work one subscriber costs to test.
pub const MAX_RULES: usize = 50;
/// Values one `in` rule may list.
pub const MAX_IN: usize = 1_000;
/// Characters in one rule's text value or attribute key.
pub const MAX_TEXT: usize = 1_000;
/// Segments one user may keep.
pub const MAX_PER_USER: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Match {
    /// Every rule holds.
    #[default]
    All,
    /// At least one rule holds.
    Any,
}

/// One condition as the API takes it: `{"field": "attributes.plan", "op":
/// "eq", "value": "pro"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// `email`, `name`, `timezone`, `status`, `created_at` or
    /// `attributes.KEY`.
    pub field: String,
    /// `eq`, `ne`, `contains`, `starts_with`, `in`, `gt`, `gte`, `lt`,
    /// `lte`, `exists`, `not_exists`.
    pub op: String,
    /// A string, number or boolean; a list of them for `in`; absent for
    /// `exists` and `not_exists`.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Segment {
    pub id: SegmentId,
    pub user_id: UserId,
    pub list_id: ListId,
    pub name: String,
    #[serde(rename = "match")]
    pub match_: Match,
    pub rules: Vec<Rule>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SegmentDraft {
    pub name: String,
    pub list_id: ListId,
    #[serde(rename = "match", default)]
    pub match_: Match,
    pub rules: Vec<Rule>,
}

/// What `PATCH` may change; the list stays (a segment is of one list).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SegmentPatch {
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub match_: Option<Match>,
    pub rules: Option<Vec<Rule>>,
}

impl Segment {
    /// A new segment, its name and rules checked.
    pub fn new(id: SegmentId, user_id: UserId, draft: SegmentDraft, now: DateTime<Utc>) -> Result<Segment, FieldError> {
        let s = Segment {
            id,
            user_id,
            list_id: draft.list_id,
            name: draft.name.trim().to_string(),
            match_: draft.match_,
            rules: draft.rules,
            created_at: now,
            updated_at: now,
        };
        s.validate()?;
        Ok(s)
    }

    /// The segment with `patch` applied and checked.
    pub fn patched(&self, patch: SegmentPatch, now: DateTime<Utc>) -> Result<Segment, FieldError> {
        let mut s = self.clone();
        if let Some(name) = patch.name {
            s.name = name.trim().to_string();
        }
        if let Some(m) = patch.match_ {
            s.match_ = m;
        }
        if let Some(rules) = patch.rules {
            s.rules = rules;
        }
        s.updated_at = now;
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> Result<(), FieldError> {
        validate_len("name", &self.name, 256)?;
        if self.name.is_empty() {
            return Err(FieldError::new("name", "must not be empty"));
        }
        self.filter().map(drop)
    }

    /// The rules, compiled; the error names the first bad rule
    /// (`rules[2]`).
    pub fn filter(&self) -> Result<Filter, FieldError> {
        Filter::compile(self.match_, &self.rules)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Subject {
    Email,
    Name,
    Timezone,
    Status,
    CreatedAt,
    Attribute(String),
    /// What the subscriber did with a tracked campaign's message.
    Engagement(CampaignId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Contains,
    StartsWith,
    In,
    Gt,
    Gte,
    Lt,
    Lte,
    Exists,
    NotExists,
    Opened,
    Clicked,
    NotOpened,
    NotClicked,
}

/// Who got a campaign's message and who opened or clicked it: subscriber
/// ids, sorted. Loaded by the store for a filter's engagement rules
/// (`Filter::needs`, `Filter::provide`) before a scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Engaged {
    pub received: Vec<u64>,
    pub opened: Vec<u64>,
    pub clicked: Vec<u64>,
}

impl Engaged {
    /// Sorts the three sets (a backend may gather them in any order).
    pub fn sorted(mut self) -> Engaged {
        for set in [&mut self.received, &mut self.opened, &mut self.clicked] {
            set.sort_unstable();
            set.dedup();
        }
        self
    }
}

/// The rule naming a campaign that is not the user's.
pub fn unknown_campaign(rule: usize, campaign: CampaignId) -> FieldError {
    FieldError::new(format!("rules[{rule}]"), format!("no campaign {}", campaign.get()))
}

/// A rule's value, parsed once for its subject.
#[derive(Debug, Clone, PartialEq)]
enum Operand {
    None,
    /// Lower-cased, for the case-insensitive comparisons; the original for
    /// ordering.
    Text {
        folded: String,
        raw: String,
    },
    Number(f64),
    Bool(bool),
    Time(DateTime<Utc>),
    Status(SubscriberStatus),
    Any(Vec<Operand>),
}

#[derive(Debug, Clone, PartialEq)]
struct Condition {
    subject: Subject,
    op: Op,
    operand: Operand,
}

/// Compiled rules: `matches` tests one subscriber.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    any: bool,
    conditions: Vec<Condition>,
    /// The engagement rules' campaigns, as provided.
    engaged: std::collections::HashMap<CampaignId, std::sync::Arc<Engaged>>,
}

impl Filter {
    pub fn compile(m: Match, rules: &[Rule]) -> Result<Filter, FieldError> {
        if rules.is_empty() {
            return Err(FieldError::new("rules", "at least one rule is needed"));
        }
        if rules.len() > MAX_RULES {
            return Err(FieldError::new("rules", format!("at most {MAX_RULES} rules")));
        }
        let conditions = rules
            .iter()
            .enumerate()
            .map(|(i, r)| condition(r).map_err(|message| FieldError::new(format!("rules[{i}]"), message)))
            .collect::<Result<_, _>>()?;
        Ok(Filter {
            any: m == Match::Any,
            conditions,
            engaged: Default::default(),
        })
    }

    /// The campaigns engagement rules name, with the index of the first
    /// rule naming each: their `Engaged` must be provided before `matches`.
    pub fn needs(&self) -> Vec<(usize, CampaignId)> {
        let mut out: Vec<(usize, CampaignId)> = Vec::new();
        for (i, c) in self.conditions.iter().enumerate() {
            if let Subject::Engagement(id) = c.subject
                && !out.iter().any(|(_, seen)| *seen == id)
            {
                out.push((i, id));
            }
        }
        out
    }

    pub fn provide(&mut self, campaign: CampaignId, engaged: Engaged) {
        self.engaged.insert(campaign, std::sync::Arc::new(engaged.sorted()));
    }

    pub fn matches(&self, s: &Subscriber) -> bool {
        if self.any {
            self.conditions.iter().any(|c| c.holds(s, &self.engaged))
        } else {
            self.conditions.iter().all(|c| c.holds(s, &self.engaged))
        }
    }
}

fn condition(rule: &Rule) -> Result<Condition, String> {
    let subject = match rule.field.as_str() {
        "email" => Subject::Email,
        "name" => Subject::Name,
        "timezone" => Subject::Timezone,
        "status" => Subject::Status,
        "created_at" => Subject::CreatedAt,
        "engagement" => return engagement(rule),
        f => match f.strip_prefix("attributes.") {
            Some("") => return Err("attributes. needs a key: attributes.KEY".into()),
            Some(key) if key.chars().count() > MAX_TEXT => {
                return Err(format!("attribute key over {MAX_TEXT} characters"));
            }
            Some(key) => Subject::Attribute(key.to_string()),
            None => {
                return Err(format!(
                    "unknown field {f:?}: email, name, timezone, status, created_at or attributes.KEY"
                ));
            }
        },
    };
    let op = match rule.op.as_str() {
        "eq" => Op::Eq,
        "ne" => Op::Ne,
        "contains" => Op::Contains,
        "starts_with" => Op::StartsWith,
        "in" => Op::In,
        "gt" => Op::Gt,
        "gte" => Op::Gte,
        "lt" => Op::Lt,
        "lte" => Op::Lte,
        "exists" => Op::Exists,
        "not_exists" => Op::NotExists,
        o => {
            return Err(format!(
                "unknown op {o:?}: eq, ne, contains, starts_with, in, gt, gte, lt, lte, exists or not_exists"
            ));
        }
    };
    let applies = match (&subject, op) {
        (_, Op::Exists | Op::NotExists) => !matches!(subject, Subject::Email | Subject::Status | Subject::CreatedAt),
        (Subject::Status, o) => matches!(o, Op::Eq | Op::Ne | Op::In),
        (Subject::CreatedAt, o) => !matches!(o, Op::Contains | Op::StartsWith | Op::In),
        (Subject::Email | Subject::Name | Subject::Timezone, o) => !matches!(o, Op::Gt | Op::Gte | Op::Lt | Op::Lte),
        (Subject::Attribute(_), _) => true,
        (Subject::Engagement(_), _) => false,
    };
    if !applies {
        return Err(format!("op {} does not apply to {}", rule.op, rule.field));
    }
    let operand = match op {
        Op::Exists | Op::NotExists => match rule.value {
            Value::Null => Operand::None,
            _ => return Err(format!("op {} takes no value", rule.op)),
        },
        Op::In => match &rule.value {
            Value::Array(items) if !items.is_empty() && items.len() <= MAX_IN => {
                Operand::Any(items.iter().map(|v| operand(&subject, v)).collect::<Result<_, _>>()?)
            }
            _ => return Err(format!("op in takes a list of 1 to {MAX_IN} values")),
        },
        Op::Contains | Op::StartsWith => match &rule.value {
            Value::String(_) => operand(&subject, &rule.value)?,
            _ => return Err(format!("op {} takes a string", rule.op)),
        },
        _ => operand(&subject, &rule.value)?,
    };
    Ok(Condition { subject, op, operand })
}

/// `{"field": "engagement", "op": "opened", "value": CAMPAIGN_ID}`:
/// `opened` and `clicked` hold for subscribers who did so with that
/// campaign's message; `not_opened` and `not_clicked` for those who were
/// sent it and did not.
fn engagement(rule: &Rule) -> Result<Condition, String> {
    let op = match rule.op.as_str() {
        "opened" => Op::Opened,
        "clicked" => Op::Clicked,
        "not_opened" => Op::NotOpened,
        "not_clicked" => Op::NotClicked,
        o => {
            return Err(format!(
                "unknown op {o:?} for engagement: opened, clicked, not_opened or not_clicked"
            ));
        }
    };
    let campaign = rule
        .value
        .as_u64()
        .filter(|id| (1..=i64::MAX as u64).contains(id))
        .ok_or("the value must be a campaign id")?;
    Ok(Condition {
        subject: Subject::Engagement(CampaignId::new(campaign)),
        op,
        operand: Operand::None,
    })
}

fn operand(subject: &Subject, value: &Value) -> Result<Operand, String> {
    let text = |s: &str| {
        if s.chars().count() > MAX_TEXT {
            return Err(format!("value over {MAX_TEXT} characters"));
        }
        Ok(Operand::Text {
            folded: s.to_lowercase(),
            raw: s.to_string(),
        })
    };
    match (subject, value) {
        (Subject::Status, Value::String(s)) => SubscriberStatus::parse(s)
            .map(Operand::Status)
            .ok_or_else(|| format!("unknown status {s:?}: subscribed, unsubscribed or bounced")),
        (Subject::CreatedAt, Value::String(s)) => time(s)
            .map(Operand::Time)
            .ok_or_else(|| format!("{s:?} is not a time: RFC 3339 or YYYY-MM-DD")),
        (Subject::Status | Subject::CreatedAt, _) => Err("the value must be a string".into()),
        (Subject::Attribute(_), Value::Number(n)) => n
            .as_f64()
            .filter(|f| f.is_finite())
            .map(Operand::Number)
            .ok_or_else(|| "the number is out of range".to_string()),
        (Subject::Attribute(_), Value::Bool(b)) => Ok(Operand::Bool(*b)),
        (_, Value::String(s)) => text(s),
        (Subject::Attribute(_), _) => Err("the value must be a string, number or boolean".into()),
        _ => Err("the value must be a string".into()),
    }
}

fn time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            Some(
                NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
                    .ok()?
                    .and_hms_opt(0, 0, 0)?
                    .and_utc(),
            )
        })
}

/// A subscriber's value for a subject, in the shape its operands take.
enum Found<'a> {
    Missing,
    Text(&'a str),
    Json(&'a Value),
    Time(DateTime<Utc>),
    Status(SubscriberStatus),
}

impl Condition {
    fn holds(&self, s: &Subscriber, engaged: &std::collections::HashMap<CampaignId, std::sync::Arc<Engaged>>) -> bool {
        if let Subject::Engagement(campaign) = self.subject {
            // Not provided: the caller skipped `needs`; nobody matches.
            let Some(e) = engaged.get(&campaign) else { return false };
            let id = s.id.get();
            let has = |set: &[u64]| set.binary_search(&id).is_ok();
            return match self.op {
                Op::Opened => has(&e.opened),
                Op::Clicked => has(&e.clicked),
                Op::NotOpened => has(&e.received) && !has(&e.opened),
                Op::NotClicked => has(&e.received) && !has(&e.clicked),
                _ => false,
            };
        }
        let found = match &self.subject {
            Subject::Email => Found::Text(s.email.as_str()),
            Subject::Name if s.name.is_empty() => Found::Missing,
            Subject::Name => Found::Text(&s.name),
            Subject::Timezone => s.timezone.as_deref().map_or(Found::Missing, Found::Text),
            Subject::Status => Found::Status(s.status),
            Subject::CreatedAt => Found::Time(s.created_at),
            Subject::Attribute(key) => match s.attributes.get(key) {
                None | Some(Value::Null) => Found::Missing,
                Some(v) => Found::Json(v),
            },
            Subject::Engagement(_) => Found::Missing,
        };
        match self.op {
            Op::Exists => !matches!(found, Found::Missing),
            Op::NotExists => matches!(found, Found::Missing),
            // A missing value is unequal to anything: `ne` holds for it.
            Op::Ne => !compare(&found, Op::Eq, &self.operand),
            Op::In => match &self.operand {
                Operand::Any(options) => options.iter().any(|o| compare(&found, Op::Eq, o)),
                _ => false,
            },
            op => compare(&found, op, &self.operand),
        }
    }
}

/// `found op operand` for eq, contains, starts_with and the orderings.
fn compare(found: &Found<'_>, op: Op, operand: &Operand) -> bool {
    use std::cmp::Ordering;
    let ordered = |o: Ordering| match op {
        Op::Eq => o == Ordering::Equal,
        Op::Gt => o == Ordering::Greater,
        Op::Gte => o != Ordering::Less,
        Op::Lt => o == Ordering::Less,
        Op::Lte => o != Ordering::Greater,
        _ => false,
    };
    match (found, operand) {
        (Found::Missing, _) => false,
        (Found::Status(s), Operand::Status(want)) => op == Op::Eq && s == want,
        (Found::Time(t), Operand::Time(want)) => ordered(t.cmp(want)),
        (Found::Json(Value::Bool(b)), Operand::Bool(want)) => op == Op::Eq && b == want,
        (Found::Json(Value::String(s)), Operand::Bool(want)) => {
            op == Op::Eq && s.trim().eq_ignore_ascii_case(if *want { "true" } else { "false" })
        }
        (found, Operand::Number(want)) => {
            let n = match found {
                Found::Json(Value::Number(n)) => n.as_f64(),
                Found::Json(Value::String(s)) => s.trim().parse::<f64>().ok(),
                Found::Text(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            };
            n.filter(|n| n.is_finite())
                .and_then(|n| n.partial_cmp(want))
                .is_some_and(ordered)
        }
        (found, Operand::Text { folded, raw }) => {
            let text: std::borrow::Cow<'_, str> = match found {
                Found::Text(s) => (*s).into(),
                Found::Json(Value::String(s)) => s.as_str().into(),
                Found::Json(Value::Number(n)) => n.to_string().into(),
                Found::Json(Value::Bool(b)) => b.to_string().into(),
                _ => return false,
            };
            match op {
                Op::Eq => text.to_lowercase() == *folded,
                Op::Contains => text.to_lowercase().contains(folded.as_str()),
                Op::StartsWith => text.to_lowercase().starts_with(folded.as_str()),
                _ => ordered(text.as_ref().cmp(raw.as_str())),
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::{Email, SubscriberId};

    fn subscriber(email: &str, name: &str, attributes: Value) -> Subscriber {
        Subscriber {
            id: SubscriberId::new(1),
            list_id: ListId::new(1),
            email: Email::parse(email).unwrap(),
            name: name.into(),
            timezone: Some("Europe/Paris".into()),
            attributes: attributes.as_object().cloned().unwrap_or_default(),
            status: SubscriberStatus::Subscribed,
            status_changed: None,
            last_opened_at: None,
            last_clicked_at: None,
            created_at: "2025-03-10T12:00:00Z".parse().unwrap(),
            updated_at: "2025-03-10T12:00:00Z".parse().unwrap(),
        }
    }

    fn rules(v: Value) -> Vec<Rule> {
        serde_json::from_value(v).unwrap()
    }

    fn holds(rule: Value, s: &Subscriber) -> bool {
        Filter::compile(Match::All, &rules(json!([rule]))).unwrap().matches(s)
    }

    #[test]
    fn text_compares_without_case_and_numbers_as_numbers() {
        let s = subscriber(
            "Ada@Example.org",
            "Ada Lovelace",
            json!({"plan": "Pro", "seats": "12", "score": 7.5}),
        );
        assert!(holds(
            json!({"field": "email", "op": "eq", "value": "ada@example.ORG"}),
            &s
        ));
        assert!(holds(
            json!({"field": "email", "op": "contains", "value": "EXAMPLE"}),
            &s
        ));
        assert!(holds(
            json!({"field": "name", "op": "starts_with", "value": "ada "}),
            &s
        ));
        assert!(holds(
            json!({"field": "attributes.plan", "op": "in", "value": ["free", "pro"]}),
            &s
        ));
        // "12" from a CSV compares as the number 12, not the text "12".
        assert!(holds(json!({"field": "attributes.seats", "op": "gt", "value": 9}), &s));
        assert!(!holds(
            json!({"field": "attributes.seats", "op": "gt", "value": 100}),
            &s
        ));
        assert!(holds(
            json!({"field": "attributes.score", "op": "lte", "value": 7.5}),
            &s
        ));
        assert!(holds(
            json!({"field": "attributes.score", "op": "eq", "value": 7.5}),
            &s
        ));
        // A text value orders as text: "12" < "9".
        assert!(holds(
            json!({"field": "attributes.seats", "op": "lt", "value": "9"}),
            &s
        ));
    }

    #[test]
    fn missing_values_exist_nowhere_and_differ_from_everything() {
        let s = subscriber("a@example.org", "", json!({"plan": null}));
        assert!(holds(json!({"field": "attributes.plan", "op": "not_exists"}), &s));
        assert!(holds(json!({"field": "name", "op": "not_exists"}), &s));
        assert!(!holds(
            json!({"field": "attributes.plan", "op": "eq", "value": "pro"}),
            &s
        ));
        assert!(holds(
            json!({"field": "attributes.plan", "op": "ne", "value": "pro"}),
            &s
        ));
        assert!(!holds(json!({"field": "attributes.nope", "op": "lt", "value": 5}), &s));
        assert!(holds(json!({"field": "timezone", "op": "exists"}), &s));
    }

    #[test]
    fn status_and_created_at() {
        let s = subscriber("a@example.org", "A", json!({}));
        assert!(holds(json!({"field": "status", "op": "eq", "value": "subscribed"}), &s));
        assert!(holds(
            json!({"field": "status", "op": "in", "value": ["bounced", "subscribed"]}),
            &s
        ));
        assert!(holds(
            json!({"field": "created_at", "op": "gte", "value": "2025-03-10"}),
            &s
        ));
        assert!(holds(
            json!({"field": "created_at", "op": "lt", "value": "2025-03-10T12:00:01+00:00"}),
            &s
        ));
        assert!(!holds(
            json!({"field": "created_at", "op": "gt", "value": "2025-04-01"}),
            &s
        ));
    }

    #[test]
    fn all_and_any() {
        let s = subscriber("a@example.org", "A", json!({"plan": "pro"}));
        let r = rules(json!([
            {"field": "attributes.plan", "op": "eq", "value": "pro"},
            {"field": "email", "op": "ends_with_typo", "value": "x"},
        ]));
        let err = Filter::compile(Match::All, &r).unwrap_err();
        assert_eq!(err.field, "rules[1]", "the bad rule is named: {err}");
        let r = rules(json!([
            {"field": "attributes.plan", "op": "eq", "value": "pro"},
            {"field": "email", "op": "contains", "value": "@nowhere"},
        ]));
        assert!(!Filter::compile(Match::All, &r).unwrap().matches(&s));
        assert!(Filter::compile(Match::Any, &r).unwrap().matches(&s));
    }

    #[test]
    fn bad_rules_are_refused_with_their_index() {
        for (rule, says) in [
            (json!({"field": "colour", "op": "eq", "value": "red"}), "unknown field"),
            (json!({"field": "email", "op": "gt", "value": "a"}), "does not apply"),
            (
                json!({"field": "status", "op": "eq", "value": "gone"}),
                "unknown status",
            ),
            (
                json!({"field": "created_at", "op": "gt", "value": "yesterday"}),
                "not a time",
            ),
            (json!({"field": "attributes.x", "op": "in", "value": []}), "list of 1"),
            (
                json!({"field": "attributes.x", "op": "exists", "value": 1}),
                "takes no value",
            ),
            (
                json!({"field": "attributes.x", "op": "contains", "value": 1}),
                "takes a string",
            ),
            (
                json!({"field": "attributes.x", "op": "eq", "value": {"a": 1}}),
                "string, number or boolean",
            ),
            (json!({"field": "attributes.", "op": "exists"}), "needs a key"),
            (json!({"field": "engagement", "op": "eq", "value": 1}), "for engagement"),
            (
                json!({"field": "engagement", "op": "opened", "value": "7"}),
                "campaign id",
            ),
            (
                json!({"field": "engagement", "op": "clicked", "value": 0}),
                "campaign id",
            ),
        ] {
            let r = rules(json!([{"field": "email", "op": "exists"}, rule]));
            let err = Filter::compile(Match::All, &r);
            // `email exists` itself is refused: every subscriber has one.
            assert_eq!(err.as_ref().unwrap_err().field, "rules[0]");
            let r = rules(json!([{"field": "name", "op": "exists"}, rule]));
            let err = Filter::compile(Match::All, &r).unwrap_err();
            assert_eq!(err.field, "rules[1]", "{rule}");
            assert!(err.message.contains(says), "{rule}: {err}");
        }
        assert!(Filter::compile(Match::All, &[]).is_err());
        let many = vec![
            Rule {
                field: "name".into(),
                op: "exists".into(),
                value: Value::Null
            };
            MAX_RULES + 1
        ];
        assert_eq!(Filter::compile(Match::All, &many).unwrap_err().field, "rules");
    }

    #[test]
    fn engagement_rules_ask_for_their_campaigns_and_test_membership() {
        let r = rules(json!([
            {"field": "engagement", "op": "opened", "value": 7},
            {"field": "engagement", "op": "not_clicked", "value": 7},
            {"field": "engagement", "op": "clicked", "value": 8},
        ]));
        let mut any = Filter::compile(Match::Any, &r).unwrap();
        let (seven, eight) = (CampaignId::new(7), CampaignId::new(8));
        assert_eq!(any.needs(), [(0, seven), (2, eight)]);
        let with_id = |id| Subscriber {
            id: SubscriberId::new(id),
            ..subscriber("a@example.org", "", json!({}))
        };
        // Nothing provided yet: nobody matches.
        assert!(!any.matches(&with_id(1)));
        any.provide(
            seven,
            Engaged {
                received: vec![3, 1, 2],
                opened: vec![2, 1],
                clicked: vec![1],
            },
        );
        any.provide(eight, Engaged::default());
        // 1 opened; 2 opened (and did not click); 3 got it and did not
        // click; 4 never got it.
        let matched: Vec<u64> = (1..=4).filter(|&i| any.matches(&with_id(i))).collect();
        assert_eq!(matched, [1, 2, 3]);
        let mut all = Filter::compile(Match::All, &r[..2]).unwrap();
        all.provide(
            seven,
            Engaged {
                received: vec![1, 2, 3],
                opened: vec![1, 2],
                clicked: vec![1],
            },
        );
        let matched: Vec<u64> = (1..=4).filter(|&i| all.matches(&with_id(i))).collect();
        assert_eq!(matched, [2], "opened but did not click");
    }
}
