//! A user's suppression list, keyed (user, lower-case email).

use redb::ReadableTable;

use super::{Redb, Result, SCAN_LIMIT, SUPPRESSIONS, StoreError, decode, encode};
use crate::domain::suppression::{Suppression, SuppressionReason, normalize};
use crate::domain::{Email, UserId};
use crate::store::{SuppressReport, SuppressionPage};

/// Whether `email` is on `user_id`'s suppression list, inside a caller's
/// transaction (message creation).
pub(crate) fn suppressed(
    table: &impl ReadableTable<(u64, &'static str), &'static [u8]>,
    user_id: UserId,
    email: &Email,
) -> Result<Option<SuppressionReason>> {
    match table.get((user_id.get(), email.suppression_key().as_str()))? {
        Some(v) => Ok(Some(decode::<Suppression>(v.value())?.reason)),
        None => Ok(None),
    }
}

/// Adds or updates suppressions inside a caller's transaction.
pub(crate) fn suppress_in(
    table: &mut redb::Table<(u64, &'static str), &'static [u8]>,
    user_id: UserId,
    items: &[Suppression],
    report: &mut SuppressReport,
) -> Result<()> {
    for s in items {
        let existing = table
            .get((user_id.get(), s.email.as_str()))?
            .map(|v| decode::<Suppression>(v.value()))
            .transpose()?;
        let Some(stored) = report.count(Suppression::merged(existing.as_ref(), s)) else {
            continue;
        };
        table.insert((user_id.get(), s.email.as_str()), encode(&stored).as_slice())?;
    }
    Ok(())
}

impl Redb {
    pub fn suppress(&self, user_id: UserId, items: Vec<Suppression>) -> Result<SuppressReport> {
        let items = items.as_slice();
        let tx = self.write()?;
        let mut report = SuppressReport::default();
        {
            let mut table = tx.open_table(SUPPRESSIONS)?;
            suppress_in(&mut table, user_id, items, &mut report)?;
        }
        tx.commit()?;
        Ok(report)
    }

    /// Removes an address from the list; the next campaign mails it again.
    pub fn unsuppress(&self, user_id: UserId, email: String) -> Result<()> {
        let email = email.as_str();
        let key = normalize(email);
        let tx = self.write()?;
        let removed = tx
            .open_table(SUPPRESSIONS)?
            .remove((user_id.get(), key.as_str()))?
            .is_some();
        if !removed {
            return Err(StoreError::NotFound);
        }
        tx.commit()?;
        Ok(())
    }

    pub fn suppression(&self, user_id: UserId, email: String) -> Result<Suppression> {
        let email = email.as_str();
        let key = normalize(email);
        let tx = self.read()?;
        let table = tx.open_table(SUPPRESSIONS)?;
        let v = table.get((user_id.get(), key.as_str()))?.ok_or(StoreError::NotFound)?;
        decode(v.value())
    }

    /// Suppressions in email order after `after`, optionally of one reason.
    /// A reason filter reads past the others, at most `SCAN_LIMIT` entries
    /// per page, and then answers with fewer items and a cursor.
    pub fn suppressions(
        &self,
        user_id: UserId,
        reason: Option<SuppressionReason>,
        after: Option<String>,
        limit: usize,
    ) -> Result<SuppressionPage> {
        let after = after.as_deref();
        let tx = self.read()?;
        let table = tx.open_table(SUPPRESSIONS)?;
        let start = after.map(normalize).unwrap_or_default();
        let mut items = Vec::new();
        let mut last = None;
        let mut scanned = 0;
        let mut more = false;
        let range = table.range((user_id.get(), start.as_str())..(user_id.get().saturating_add(1), ""))?;
        for entry in range {
            let (k, v) = entry?;
            let email = k.value().1;
            if after.is_some() && email == start {
                continue;
            }
            if items.len() == limit || scanned == SCAN_LIMIT {
                more = true;
                break;
            }
            scanned += 1;
            last = Some(email.to_string());
            let s: Suppression = decode(v.value())?;
            if reason.is_none_or(|r| r == s.reason) {
                items.push(s);
            }
        }
        Ok(SuppressionPage {
            items,
            next_after: if more { last } else { None },
        })
    }
}
