//! JSON request bodies, read straight into their types. Nothing is
//! parsed into a `serde_json::Value` first: a value tree costs ten to
//! twenty times its text (a 15 MiB array of small objects took 270 MiB),
//! while typed items cost about what their text does, unknown fields are
//! refused at their key, and a bulk body stops at its item limit. So a
//! request's memory stays within a small multiple of `max_body_bytes`.
//!
//! Errors have the API's shape: 400 for malformed JSON or a missing
//! content type, 422 naming the field (`subscribers[3].email`; `body` for
//! the body itself), 413 for too large a body or too many items.

use std::cell::Cell;
use std::fmt;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{ApiError, ApiResult};

/// A JSON object body read into `T`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = json_bytes(req, state).await?;
        if first_byte(&bytes) != Some(b'{') {
            // Valid JSON of another kind is a wrong value, not bad syntax.
            serde_json::from_slice::<IgnoredAny>(&bytes).map_err(syntax)?;
            return Err(ApiError::invalid("body", "expected a JSON object"));
        }
        parse(&bytes, |de| serde_path_to_error::deserialize(de), |path| path).map(ApiJson)
    }
}

/// The body of a JSON request, checked for its content type and size.
pub async fn json_bytes<S: Send + Sync>(req: Request, state: &S) -> ApiResult<Bytes> {
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .is_some_and(|v| v == "application/json" || (v.starts_with("application/") && v.ends_with("+json")));
    if !json {
        return Err(ApiError::bad_request(
            "expected a JSON body with Content-Type: application/json",
        ));
    }
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large("request body is too large")
        } else {
            ApiError::bad_request(e.body_text())
        }
    })
}

fn first_byte(bytes: &[u8]) -> Option<u8> {
    bytes.iter().copied().find(|b| !b.is_ascii_whitespace())
}

/// Deserializes `bytes` with `read` (which tracks the field path), then
/// checks nothing follows; a data error names its field, as `rename`
/// turns the tracked path into the field the client wrote.
fn parse<'a, T>(
    bytes: &'a [u8],
    read: impl FnOnce(
        &mut serde_json::Deserializer<serde_json::de::SliceRead<'a>>,
    ) -> Result<T, serde_path_to_error::Error<serde_json::Error>>,
    rename: impl FnOnce(String) -> String,
) -> ApiResult<T> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = read(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_data() {
            let field = if path == "." { "body".to_string() } else { rename(path) };
            let message = inner.to_string();
            // `… at line L column C`: a field's name says where.
            let message = message
                .rsplit_once(" at line ")
                .filter(|(_, pos)| pos.contains(" column "))
                .map_or(message.as_str(), |(m, _)| m)
                .to_string();
            ApiError::invalid(field, message)
        } else {
            syntax(inner)
        }
    })?;
    de.end().map_err(syntax)?;
    Ok(value)
}

fn syntax(e: serde_json::Error) -> ApiError {
    ApiError::bad_request(format!("malformed JSON: {e}"))
}

/// A bulk body: one object, an array of them, or `{"KEY": [...]}`, at most
/// `max` items. Each item comes with the field path its errors name (""
/// for a lone object, `KEY[i]` in an array).
pub async fn bulk<T: DeserializeOwned, S: Send + Sync>(
    req: Request,
    state: &S,
    key: &'static str,
    max: usize,
) -> ApiResult<Vec<(String, T)>> {
    let bytes = json_bytes(req, state).await?;
    bulk_items(&bytes, key, max)
}

/// `bulk`'s reading of a body already in hand.
pub fn bulk_items<T: DeserializeOwned>(bytes: &[u8], key: &'static str, max: usize) -> ApiResult<Vec<(String, T)>> {
    let over = Cell::new(false);
    let seed = BulkSeed::<T> {
        key,
        max,
        over: &over,
        item: std::marker::PhantomData,
    };
    let parsed = parse(
        bytes,
        |de| {
            let mut track = serde_path_to_error::Track::new();
            seed.deserialize(serde_path_to_error::Deserializer::new(de, &mut track))
                .map_err(|e| serde_path_to_error::Error::new(track.path(), e))
        },
        |path| {
            if path.starts_with('[') {
                format!("{key}{path}")
            } else {
                path
            }
        },
    );
    if over.get() {
        return Err(ApiError::too_large(format!("more than {max} {key} in one request")));
    }
    let (items, in_array) = parsed?;
    Ok(items
        .into_iter()
        .enumerate()
        .map(|(i, item)| (if in_array { format!("{key}[{i}]") } else { String::new() }, item))
        .collect())
}

struct BulkSeed<'a, T> {
    key: &'static str,
    max: usize,
    over: &'a Cell<bool>,
    item: std::marker::PhantomData<T>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for BulkSeed<'_, T> {
    /// The items, and whether they came in an array.
    type Value = (Vec<T>, bool);

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for BulkSeed<'_, T> {
    type Value = (Vec<T>, bool);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an object, an array of them, or {{\"{}\": [...]}}", self.key)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Items::<T> {
            max: self.max,
            over: self.over,
            item: std::marker::PhantomData,
        }
        .visit_seq(seq)
        .map(|items| (items, true))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let first: Option<String> = map.next_key()?;
        if first.as_deref() == Some(self.key) {
            let items = map.next_value_seed(Items::<T> {
                max: self.max,
                over: self.over,
                item: std::marker::PhantomData,
            })?;
            if map.next_key::<IgnoredAny>()?.is_some() {
                return Err(de::Error::custom(format!("{} must be the only key", self.key)));
            }
            return Ok((items, true));
        }
        // A lone object: its first key is read already, so it is handed
        // back in front of the rest.
        let item = T::deserialize(de::value::MapAccessDeserializer::new(Prepend { first, rest: map }))?;
        Ok((vec![item], false))
    }
}

/// An array of at most `max` items; the one past it is skipped unread and
/// flags `over`.
struct Items<'a, T> {
    max: usize,
    over: &'a Cell<bool>,
    item: std::marker::PhantomData<T>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for Items<'_, T> {
    type Value = Vec<T>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for Items<'_, T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max).min(1024));
        while items.len() < self.max {
            match seq.next_element_seed(Object::<T>(std::marker::PhantomData))? {
                Some(item) => items.push(item),
                None => return Ok(items),
            }
        }
        if seq.next_element::<IgnoredAny>()?.is_some() {
            self.over.set(true);
            return Err(de::Error::custom("too many items"));
        }
        Ok(items)
    }
}

/// An item that must be a JSON object: serde would read an array into a
/// struct field by field, and the API must not.
struct Object<T>(std::marker::PhantomData<T>);

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for Object<T> {
    type Value = T;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for Object<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map))
    }
}

/// A map whose first key was already taken off it.
struct Prepend<A> {
    first: Option<String>,
    rest: A,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Prepend<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, A::Error> {
        match self.first.take() {
            Some(k) => seed
                .deserialize(de::value::StringDeserializer::<A::Error>::new(k))
                .map(Some),
            None => self.rest.next_key_seed(seed),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.rest.next_value_seed(seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Item {
        email: String,
        #[serde(default)]
        n: u32,
    }

    fn items(body: &str, max: usize) -> ApiResult<Vec<(String, Item)>> {
        bulk_items(body.as_bytes(), "subscribers", max)
    }

    #[test]
    fn the_three_forms() {
        let one = items(r#"{"n": 2, "email": "a"}"#, 5).unwrap();
        assert_eq!(
            one,
            vec![(
                String::new(),
                Item {
                    email: "a".into(),
                    n: 2
                }
            )]
        );
        let arr = items(r#"[{"email": "a"}, {"email": "b"}]"#, 5).unwrap();
        assert_eq!(arr[1].0, "subscribers[1]");
        let keyed = items(r#"{"subscribers": [{"email": "a"}]}"#, 5).unwrap();
        assert_eq!(keyed[0].0, "subscribers[0]");
    }

    #[test]
    fn errors_name_the_field_and_the_limit_is_a_413() {
        let e = items(r#"[{"email": "a"}, {"email": 3}]"#, 5).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.field.as_deref()),
            (422, Some("subscribers[1].email")),
            "{e:?}"
        );
        let e = items(r#"{"subscribers": [{"email": "a", "x": 1}]}"#, 5).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("subscribers[0].x"), "{e:?}");
        let e = items(r#"{"email": 1}"#, 5).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("email"), "{e:?}");
        let e = items(r#"[1]"#, 5).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("subscribers[0]"), "{e:?}");
        let e = items(r#"[["a"]]"#, 5).unwrap_err();
        assert_eq!(
            e.field.as_deref(),
            Some("subscribers[0]"),
            "an array is no object: {e:?}"
        );
        let e = items(r#"{"subscribers": [], "more": 1}"#, 5).unwrap_err();
        assert_eq!(e.status.as_u16(), 422, "{e:?}");
        let e = items(r#"[{"email":"a"},{"email":"b"},{"email":"c"}]"#, 2).unwrap_err();
        assert_eq!(e.status.as_u16(), 413, "{e:?}");
        let e = items(r#"[{"email":"a"}"#, 5).unwrap_err();
        assert_eq!(e.status.as_u16(), 400, "{e:?}");
        let e = items(r#"[{"email":"a"}] x"#, 5).unwrap_err();
        assert_eq!(e.status.as_u16(), 400, "trailing text: {e:?}");
        let e = items("3", 5).unwrap_err();
        assert_eq!((e.status.as_u16(), e.field.as_deref()), (422, Some("body")), "{e:?}");
    }
}
