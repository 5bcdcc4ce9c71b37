//! CSV in and out of a list, streamed both ways and never waiting on the
//! client with a thread: an import parses each chunk as it arrives
//! (`records`, a push parser) and stores every 1,000 rows; an export reads
//! a page of subscribers only when the client has taken the last one, so a
//! slow reader holds no thread and no database connection. Both are
//! bounded per user (`transfers`). The row mapping is
//! `domain::subscriber_csv`.

mod records;
pub mod transfers;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use super::auth::Auth;
use super::error::ErrorBody;
use super::{ApiError, ApiResult, AppState};
use crate::domain::subscriber_csv::{self, Columns};
use crate::domain::{ListId, NewSubscriber, UserId};
use crate::store::{RowError, UpsertReport};
use records::{Record, Records};

/// Rows per storage transaction.
const BATCH: usize = 1000;
/// Row errors listed in the report; the rest are only counted.
const MAX_LISTED_ERRORS: usize = 1000;
/// A record (all its fields, quoted newlines included) longer than this
/// ends the import: it bounds the parser's memory whatever the file.
const MAX_RECORD: usize = 1 << 20;
/// Subscribers per export page: one page's CSV is one response chunk.
const EXPORT_PAGE: usize = 256;

/// The import's state between chunks: the columns once the header is
/// read, the rows waiting for the next batch, and the report.
struct Import {
    records: Records,
    columns: Option<Columns>,
    batch: Vec<NewSubscriber>,
    report: UpsertReport,
    /// The header could not be read: nothing is imported.
    header_error: Option<String>,
}

impl Import {
    fn new() -> Import {
        Import {
            records: Records::new(MAX_RECORD),
            columns: None,
            batch: Vec::with_capacity(BATCH),
            report: UpsertReport {
                created: 0,
                updated: 0,
                kept_unsubscribed: 0,
                subscribers: Vec::new(),
                errors: Vec::new(),
                rejected: 0,
            },
            header_error: None,
        }
    }

    /// Parses a chunk (empty: the end of the file). Returns false once the
    /// import has stopped (a bad header, a record over the cap).
    fn feed(&mut self, chunk: &[u8]) -> bool {
        let Import {
            records,
            columns,
            batch,
            report,
            header_error,
        } = self;
        let fed = records.feed(chunk, |record| {
            match columns {
                None => match header(&record) {
                    Ok(c) => *columns = Some(c),
                    Err(e) => {
                        *header_error = Some(e);
                        return false;
                    }
                },
                Some(columns) => row(columns, &record, batch, report),
            }
            true
        });
        if header_error.is_some() {
            return false;
        }
        if let Err(e) = fed {
            self.stop(e.line(), e.to_string());
            return false;
        }
        true
    }

    /// The stream ended early (too long a record, the client went away):
    /// what was read so far is stored, and the report says where it
    /// stopped.
    fn stop(&mut self, line: u64, why: String) {
        reject(&mut self.report, line, "row", format!("the import stopped here: {why}"));
    }

    fn full_batch(&mut self) -> Option<Vec<NewSubscriber>> {
        (self.batch.len() >= BATCH).then(|| std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH)))
    }
}

fn header(record: &Record<'_>) -> Result<Columns, String> {
    let cells: Result<Vec<&str>, _> = record.fields().map(std::str::from_utf8).collect();
    let cells = cells.map_err(|_| "cannot read the header row: not valid UTF-8".to_string())?;
    Columns::from_header(cells)
}

fn row(columns: &Columns, record: &Record<'_>, batch: &mut Vec<NewSubscriber>, report: &mut UpsertReport) {
    let cells: Result<Vec<&str>, _> = record.fields().map(std::str::from_utf8).collect();
    let Ok(cells) = cells else {
        reject(report, record.line, "row", "not valid UTF-8".into());
        return;
    };
    if cells.iter().all(|c| c.trim().is_empty()) {
        return;
    }
    match columns.row(&cells) {
        Ok(s) => batch.push(s),
        Err(e) => reject(report, record.line, &e.field, e.message),
    }
}

fn reject(report: &mut UpsertReport, line: u64, field: &str, reason: String) {
    report.rejected += 1;
    if report.errors.len() < MAX_LISTED_ERRORS {
        report.errors.push(RowError {
            line,
            field: field.to_string(),
            reason,
        });
    }
}

async fn store_batch(
    s: &AppState,
    user: UserId,
    list: ListId,
    batch: Vec<NewSubscriber>,
    report: &mut UpsertReport,
) -> ApiResult<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let done = s.store.upsert_subscribers(user, list, batch).await?;
    report.created += done.created;
    report.updated += done.updated;
    report.kept_unsubscribed += done.kept_unsubscribed;
    Ok(())
}

/// `POST /lists/{id}/subscribers` with `Content-Type: text/csv`, and the
/// dashboard's upload: `body` is the file's chunks as they arrive.
pub async fn import_csv<E: std::fmt::Display>(
    s: AppState,
    user_id: UserId,
    list_id: ListId,
    mut stream: impl futures_util::Stream<Item = Result<Bytes, E>> + Unpin,
    max_bytes: u64,
) -> ApiResult<UpsertReport> {
    // A foreign or missing list is a 404 before a byte is read.
    s.store.list(user_id, list_id).await?;
    let _turn = s.transfers.begin(user_id)?;
    let mut import = Import::new();
    let mut total = 0u64;
    let mut too_large = false;
    // Parsing until the import stops (the end, a bad header, a record
    // over the cap), then reading what is left of the body unparsed, so
    // the client, still sending, gets its report rather than a reset.
    let mut parsing = true;
    loop {
        let chunk = match stream.next().await {
            None => {
                if parsing {
                    import.feed(b"");
                }
                break;
            }
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => {
                if parsing {
                    let line = import.records.line();
                    import.stop(line, e.to_string());
                }
                break;
            }
        };
        total += chunk.len() as u64;
        if total > max_bytes {
            too_large = true;
            break;
        }
        if parsing && !import.feed(&chunk) {
            parsing = false;
        }
        if let Some(batch) = import.full_batch() {
            store_batch(&s, user_id, list_id, batch, &mut import.report).await?;
        }
    }
    if let Some(m) = import.header_error.take() {
        return Err(ApiError::invalid("header", m));
    }
    if import.columns.is_none() && !too_large {
        return Err(ApiError::invalid(
            "header",
            "the file is empty: it needs a header row naming `email`",
        ));
    }
    let rest = std::mem::take(&mut import.batch);
    store_batch(&s, user_id, list_id, rest, &mut import.report).await?;
    let r = import.report;
    if too_large {
        return Err(ApiError::too_large(format!(
            "the file is larger than {max_bytes} bytes (server.max_import_bytes); {} rows before that were \
             imported ({} created, {} updated)",
            r.created + r.updated,
            r.created,
            r.updated
        )));
    }
    Ok(r)
}

/// An export in progress: where the next page starts.
struct Export {
    s: AppState,
    user: UserId,
    list: ListId,
    keys: Vec<String>,
    after: Option<u64>,
    header: bool,
    done: bool,
    _turn: transfers::Turn,
}

impl Export {
    /// The next piece of the file: the header with the first page, then a
    /// page per call, until the last.
    async fn next_chunk(&mut self) -> Result<Bytes, std::io::Error> {
        let (user, list, after) = (self.user, self.list, self.after);
        let page = self
            .s
            .store
            .subscribers(user, list, None, after, EXPORT_PAGE)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut out = csv::Writer::from_writer(Vec::with_capacity(16 << 10));
        if std::mem::take(&mut self.header) {
            out.write_record(subscriber_csv::header(&self.keys))?;
        }
        for sub in &page.items {
            out.write_record(subscriber_csv::row(sub, &self.keys))?;
        }
        self.after = page.next_after;
        self.done = page.next_after.is_none();
        out.into_inner().map(Bytes::from).map_err(|e| e.into_error())
    }
}

#[utoipa::path(get, path = "/api/v1/users/me/lists/{id}/subscribers.csv", params(("id" = ListId, Path, description = "The list's id")), tag = "lists",
    description = "every subscriber of the list as CSV (email, name, timezone, status, then one column per \
                   attribute name found on the list), streamed; importing it again changes nothing",
    responses((status = 200, description = "the list as CSV", content_type = "text/csv", body = String),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn export_csv(State(s): State<AppState>, Auth(user): Auth, Path(id): Path<ListId>) -> ApiResult<Response> {
    // First pass: the attribute names, so every row has the same columns.
    // More than an import takes is refused rather than cut: an export
    // must import back whole.
    let found = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let collect = found.clone();
    s.store
        .scan_subscribers(
            user.id,
            id,
            Box::new(move |sub| {
                let mut keys = collect.lock().expect("keys lock");
                keys.extend(sub.attributes.keys().cloned());
                Ok(keys.len() <= subscriber_csv::MAX_ATTRIBUTE_COLUMNS)
            }),
        )
        .await?;
    let keys: Vec<String> = std::mem::take(&mut *found.lock().expect("keys lock"))
        .into_iter()
        .collect();
    if keys.len() > subscriber_csv::MAX_ATTRIBUTE_COLUMNS {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_many_columns",
            format!(
                "the list's subscribers have more than {} attribute names; CSV carries at most that many \
                 (page through GET …/subscribers for JSON)",
                subscriber_csv::MAX_ATTRIBUTE_COLUMNS
            ),
        ));
    }
    // Then the rows, a page at a time, each read only when the client has
    // taken the one before: a slow reader holds no thread and no
    // connection. A page is read as it is then (no snapshot over the whole
    // export); a subscriber is never listed twice, as pages go by id.
    let turn = s.transfers.begin(user.id)?;
    let start = Export {
        s,
        user: user.id,
        list: id,
        keys,
        after: None,
        header: true,
        done: false,
        _turn: turn,
    };
    let body = Body::from_stream(futures_util::stream::unfold(start, |mut e| async move {
        if e.done {
            return None;
        }
        let chunk = e.next_chunk().await;
        if chunk.is_err() {
            e.done = true;
        }
        Some((chunk, e))
    }));
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"subscribers.csv\""),
        ],
        body,
    )
        .into_response())
}
