//! Warm-up counts: (transport, UTC day as days since 1970) → messages
//! taken that day (`domain::warmup`).

use chrono::NaiveDate;
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::{Redb, Result};

const WARMUPS: TableDefinition<(&str, i64), u64> = TableDefinition::new("warmup_counts");

pub(crate) fn create_tables(tx: &WriteTransaction) -> Result<()> {
    tx.open_table(WARMUPS)?;
    Ok(())
}

fn day_key(day: NaiveDate) -> i64 {
    (day - NaiveDate::default()).num_days()
}

impl Redb {
    pub fn take_warmup(&self, transport: String, day: NaiveDate, cap: u64, want: u64) -> Result<u64> {
        let tx = self.write()?;
        let granted = {
            let mut t = tx.open_table(WARMUPS)?;
            let key = (transport.as_str(), day_key(day));
            let used = t.get(key)?.map(|v| v.value()).unwrap_or(0);
            let granted = want.min(cap.saturating_sub(used));
            if granted > 0 {
                t.insert(key, used + granted)?;
            }
            granted
        };
        tx.commit()?;
        Ok(granted)
    }

    pub fn give_back_warmup(&self, transport: String, day: NaiveDate, n: u64) -> Result<()> {
        let tx = self.write()?;
        {
            let mut t = tx.open_table(WARMUPS)?;
            let key = (transport.as_str(), day_key(day));
            let used = t.get(key)?.map(|v| v.value()).unwrap_or(0);
            t.insert(key, used.saturating_sub(n))?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn warmup_used(&self, transport: String, day: NaiveDate) -> Result<u64> {
        let tx = self.read()?;
        let t = tx.open_table(WARMUPS)?;
        Ok(t.get((transport.as_str(), day_key(day)))?
            .map(|v| v.value())
            .unwrap_or(0))
    }
}
