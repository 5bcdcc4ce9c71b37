//! Subscribers as CSV rows: the header names the columns (`email`, then
//! any of `name`, `timezone`, `status`; every other column is an
//! attribute), a row becomes a `NewSubscriber`, and a subscriber becomes a
//! row again. Attribute values are text both ways: a column of zip codes
//! keeps its leading zeros. Pure: the streaming lives in the API.

use serde_json::{Map, Value};

use super::subscriber::{NewSubscriber, Subscriber, SubscriberStatus};
use super::{Email, FieldError};

/// Attribute columns one file may have, in and out: a header of a million
/// columns would otherwise become a million keys on every subscriber.
/// (Each subscriber's attributes stay under 16 KiB either way.)
pub const MAX_ATTRIBUTE_COLUMNS: usize = 1000;
const MAX_COLUMN_NAME: usize = 128;

/// Which column holds what, from the header row.
#[derive(Debug, Clone)]
pub struct Columns {
    email: usize,
    name: Option<usize>,
    timezone: Option<usize>,
    status: Option<usize>,
    attributes: Vec<(usize, String)>,
}

impl Columns {
    pub fn from_header<'a>(header: impl IntoIterator<Item = &'a str>) -> Result<Columns, String> {
        let (mut email, mut name, mut timezone, mut status) = (None, None, None, None);
        let mut attributes: Vec<(usize, String)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, raw) in header.into_iter().enumerate() {
            let column = raw.trim().trim_start_matches('\u{feff}').to_string();
            if column.is_empty() {
                return Err(format!("column {} of the header row has no name", i + 1));
            }
            if column.len() > MAX_COLUMN_NAME {
                return Err(format!(
                    "column {} is named with more than {MAX_COLUMN_NAME} bytes",
                    i + 1
                ));
            }
            if !seen.insert(column.to_ascii_lowercase()) {
                return Err(format!("column {column:?} appears twice in the header row"));
            }
            let slot = match column.to_ascii_lowercase().as_str() {
                "email" => &mut email,
                "name" => &mut name,
                "timezone" => &mut timezone,
                "status" => &mut status,
                _ => {
                    attributes.push((i, column));
                    continue;
                }
            };
            *slot = Some(i);
        }
        if attributes.len() > MAX_ATTRIBUTE_COLUMNS {
            return Err(format!(
                "{} attribute columns; at most {MAX_ATTRIBUTE_COLUMNS}",
                attributes.len()
            ));
        }
        let email = email.ok_or("the header row must name an `email` column (then name, timezone, attributes)")?;
        Ok(Columns {
            email,
            name,
            timezone,
            status,
            attributes,
        })
    }

    /// One data row as a validated subscriber. An empty cell is an absent
    /// value; errors name the column.
    pub fn row(&self, cells: &[&str]) -> Result<NewSubscriber, FieldError> {
        let cell = |i: Option<usize>| i.and_then(|i| cells.get(i)).map(|c| c.trim()).filter(|c| !c.is_empty());
        let status = match cell(self.status) {
            None => SubscriberStatus::Subscribed,
            Some(s) => SubscriberStatus::parse(s).ok_or_else(|| {
                FieldError::new(
                    "status",
                    format!("{s:?} is not one of subscribed, unsubscribed, bounced"),
                )
            })?,
        };
        let attributes: Map<String, Value> = self
            .attributes
            .iter()
            .filter_map(|(i, key)| cell(Some(*i)).map(|v| (key.clone(), Value::String(v.to_string()))))
            .collect();
        let email = cell(Some(self.email)).unwrap_or_default();
        NewSubscriber {
            email: Email::parse(email).map_err(|e| e.at("email"))?,
            name: cell(self.name).unwrap_or_default().to_string(),
            timezone: cell(self.timezone).map(str::to_string),
            attributes,
            status,
        }
        .validate("")
    }
}

/// The export's header: the fixed columns, then `keys` (the attribute
/// names found on the list, sorted).
pub fn header(keys: &[String]) -> Vec<String> {
    let mut h: Vec<String> = ["email", "name", "timezone", "status"].map(String::from).to_vec();
    h.extend(keys.iter().cloned());
    h
}

/// A subscriber as an export row under `header(keys)`. Text attributes are
/// written as they are; other JSON values as their JSON text.
pub fn row(s: &Subscriber, keys: &[String]) -> Vec<String> {
    let mut r = vec![
        s.email.to_string(),
        s.name.clone(),
        s.timezone.clone().unwrap_or_default(),
        s.status.as_str().to_string(),
    ];
    r.extend(keys.iter().map(|k| match s.attributes.get(k) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(v)) => v.clone(),
        Some(other) => other.to_string(),
    }));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_the_columns_in_any_order() {
        let c = Columns::from_header(["Plan", "Email", "name", "zip"]).unwrap();
        let s = c.row(&["pro", " Ada@Example.ORG ", "Ada", "01234"]).unwrap();
        assert_eq!(s.email.as_str(), "Ada@example.org");
        assert_eq!(s.name, "Ada");
        assert_eq!(s.attributes["zip"], "01234", "text stays text");
        assert_eq!(s.attributes["Plan"], "pro");
        assert!(Columns::from_header(["name", "plan"]).unwrap_err().contains("email"));
        assert!(Columns::from_header(["email", "Email"]).unwrap_err().contains("twice"));
        assert!(Columns::from_header(["email", ""]).is_err());
    }

    #[test]
    fn rows_are_validated_by_column() {
        let c = Columns::from_header(["email", "timezone", "status"]).unwrap();
        assert_eq!(c.row(&["nope", "", ""]).unwrap_err().field, "email");
        assert_eq!(
            c.row(&["a@example.org", "Mars/Base", ""]).unwrap_err().field,
            "timezone"
        );
        assert_eq!(c.row(&["a@example.org", "", "gone"]).unwrap_err().field, "status");
        // A short row is missing values, not malformed.
        assert_eq!(c.row(&["a@example.org"]).unwrap().timezone, None);
    }
}
