//! CSV in and out of a list, streamed both ways: an import of a million
//! rows holds one batch and one physical line at a time; an export holds
//! one chunk. The row mapping is `domain::subscriber_csv`.

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::auth::Auth;
use super::error::ErrorBody;
use super::{ApiError, ApiResult, AppState};
use crate::domain::subscriber_csv::{self, Columns};
use crate::domain::{ListId, UserId};
use crate::store::{RowError, Store, StoreError, UpsertReport};

/// Rows per storage transaction.
const BATCH: usize = 1000;
/// Row errors listed in the report; the rest are only counted.
const MAX_LISTED_ERRORS: usize = 1000;
/// A physical line longer than this ends the import: the CSV reader
/// buffers a whole record, so this bounds its memory.
const MAX_LINE: usize = 1 << 20;
/// Chunks in flight between the request body and the importer (or the
/// exporter and the response).
const CHANNEL: usize = 8;
/// Bytes of CSV per response chunk.
const CHUNK: usize = 64 << 10;

/// The response body as a blocking `Write`: full chunks go to the
/// handler's stream; a send fails once the client is gone.
struct Chunks {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl std::io::Write for Chunks {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::other("the client went away"))
    }
}

/// The request body as a blocking `Read`, fed by the async handler.
struct BodyReader {
    rx: mpsc::Receiver<Result<Bytes, String>>,
    current: Bytes,
    line: usize,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
            }
        }
        let n = buf.len().min(self.current.len());
        let chunk = self.current.split_to(n);
        match chunk.iter().rposition(|&b| b == b'\n') {
            Some(i) => self.line = n - i - 1,
            None => self.line += n,
        }
        if self.line > MAX_LINE {
            return Err(std::io::Error::other(format!(
                "a line is longer than {} KiB",
                MAX_LINE >> 10
            )));
        }
        buf[..n].copy_from_slice(&chunk);
        Ok(n)
    }
}

/// Why an import stopped before the end of the file.
enum Stop {
    Header(String),
    Store(StoreError),
}

fn import(store: &Store, user_id: UserId, list_id: ListId, reader: BodyReader) -> Result<UpsertReport, Stop> {
    // Records end at `\n` only (a `\r` before it is trimmed with the last
    // cell): the reader then counts a record's terminator within the
    // record, so a position's line is the line the next record starts on,
    // for LF and CRLF files alike. (With the default terminator a CRLF
    // record ends at `\r`, its `\n` counted with the next record, and LF
    // and CRLF files numbered their rows differently.)
    let mut csv = csv::ReaderBuilder::new()
        .flexible(true)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_reader(reader);
    let columns = match csv.headers() {
        Ok(h) => Columns::from_header(h.iter()).map_err(Stop::Header)?,
        Err(e) => return Err(Stop::Header(format!("cannot read the header row: {e}"))),
    };
    let mut report = UpsertReport {
        created: 0,
        updated: 0,
        kept_unsubscribed: 0,
        subscribers: Vec::new(),
        errors: Vec::new(),
        rejected: 0,
    };
    let mut batch = Vec::with_capacity(BATCH);
    let flush = |batch: &mut Vec<_>, report: &mut UpsertReport| -> Result<(), Stop> {
        if batch.is_empty() {
            return Ok(());
        }
        let done = store
            .upsert_subscribers(user_id, list_id, std::mem::take(batch))
            .map_err(Stop::Store)?;
        report.created += done.created;
        report.updated += done.updated;
        report.kept_unsubscribed += done.kept_unsubscribed;
        Ok(())
    };
    let mut record = csv::StringRecord::new();
    let reject = |report: &mut UpsertReport, line: u64, field: &str, reason: String| {
        report.rejected += 1;
        if report.errors.len() < MAX_LISTED_ERRORS {
            report.errors.push(RowError {
                line,
                field: field.to_string(),
                reason,
            });
        }
    };
    loop {
        let next_line = csv.position().line();
        match csv.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let cells: Vec<&str> = record.iter().collect();
                if cells.iter().all(|c| c.trim().is_empty()) {
                    continue;
                }
                match columns.row(&cells) {
                    Ok(s) => batch.push(s),
                    Err(e) => {
                        let line = record.position().map_or(next_line, |p| p.line());
                        reject(&mut report, line, &e.field, e.message)
                    }
                }
                if batch.len() == BATCH {
                    flush(&mut batch, &mut report)?;
                }
            }
            // Invalid UTF-8 spoils one record; the reader goes on.
            Err(e) if matches!(e.kind(), csv::ErrorKind::Utf8 { .. }) => {
                let line = e.position().map_or(next_line, |p| p.line());
                reject(&mut report, line, "row", "not valid UTF-8".into());
            }
            Err(e) => {
                // The stream itself failed (too long a line, the client
                // went away): what was read so far is stored and reported.
                flush(&mut batch, &mut report)?;
                reject(&mut report, next_line, "row", format!("the import stopped here: {e}"));
                return Ok(report);
            }
        }
    }
    flush(&mut batch, &mut report)?;
    Ok(report)
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
    s.db(move |st| st.list(user_id, list_id)).await?;
    let (tx, rx) = mpsc::channel(CHANNEL);
    let store = s.store.clone();
    let worker = tokio::task::spawn_blocking(move || {
        import(
            &store,
            user_id,
            list_id,
            BodyReader {
                rx,
                current: Bytes::new(),
                line: 0,
            },
        )
    });
    let mut total = 0u64;
    let mut too_large = false;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string());
        if let Ok(c) = &chunk {
            total += c.len() as u64;
        }
        let chunk = if total > max_bytes {
            too_large = true;
            Err(format!(
                "the file is larger than {max_bytes} bytes (server.max_import_bytes)"
            ))
        } else {
            chunk
        };
        let failed = chunk.is_err();
        // The importer stopped early (bad header): nothing more to feed.
        if tx.send(chunk).await.is_err() || failed {
            break;
        }
    }
    drop(tx);
    let report = worker.await.map_err(ApiError::internal)?;
    match report {
        Ok(r) if too_large => Err(ApiError::too_large(format!(
            "the file is larger than {max_bytes} bytes (server.max_import_bytes); {} rows before that were \
             imported ({} created, {} updated)",
            r.created + r.updated,
            r.created,
            r.updated
        ))),
        Ok(r) => Ok(r),
        Err(Stop::Header(m)) => Err(ApiError::invalid("header", m)),
        Err(Stop::Store(e)) => Err(e.into()),
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
    let keys = s
        .db(move |st| {
            let mut keys = std::collections::BTreeSet::new();
            st.scan_subscribers(user.id, id, |sub| {
                keys.extend(sub.attributes.keys().cloned());
                Ok(keys.len() <= subscriber_csv::MAX_ATTRIBUTE_COLUMNS)
            })?;
            Ok(keys.into_iter().collect::<Vec<String>>())
        })
        .await?;
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
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(CHANNEL);
    let store = s.store.clone();
    tokio::task::spawn_blocking(move || {
        let errors = tx.clone();
        let mut out = csv::Writer::from_writer(Chunks {
            tx,
            buf: Vec::with_capacity(CHUNK),
        });
        let result = out
            .write_record(subscriber_csv::header(&keys))
            .map_err(|e| StoreError::Db(e.to_string()))
            .and_then(|()| {
                store.scan_subscribers(user.id, id, |sub| {
                    // An error here is the client gone: stop reading.
                    Ok(out.write_record(subscriber_csv::row(&sub, &keys)).is_ok())
                })
            })
            .and_then(|()| out.flush().map_err(|e| StoreError::Db(e.to_string())));
        if let Err(e) = result {
            let _ = errors.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
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
