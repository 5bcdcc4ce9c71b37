//! Schema migrations, applied at start: all pending ones in one
//! transaction under an advisory lock, so nodes starting together apply
//! each exactly once and none sees half a schema.

use tokio_postgres::Client;

/// Versions in order; a released version is never edited, only followed.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("migrations/0001_delivery.sql")),
    (2, include_str!("migrations/0002_lists_events.sql")),
    (3, include_str!("migrations/0003_accounts.sql")),
    (4, include_str!("migrations/0004_campaign_ids.sql")),
    (5, include_str!("migrations/0005_reports_secrets.sql")),
    (6, include_str!("migrations/0006_delivery_claims.sql")),
    (7, include_str!("migrations/0007_soft_windows.sql")),
    (8, include_str!("migrations/0008_sender_domains.sql")),
    (9, include_str!("migrations/0009_node_ttl.sql")),
    (10, include_str!("migrations/0010_segments.sql")),
    (11, include_str!("migrations/0011_campaign_members.sql")),
    (12, include_str!("migrations/0012_warmup_counts.sql")),
    (13, include_str!("migrations/0013_provider_state.sql")),
];

/// The advisory lock key migrations hold ("posta_mg").
const MIGRATION_LOCK: i64 = 0x706f_7374_615f_6d67;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    #[error("the database's schema is version {found}, newer than this build's {known}: upgrade this node")]
    TooNew { found: i32, known: i32 },
}

/// Applies the migrations `client`'s database does not have yet; returns
/// how many.
pub async fn migrate(client: &mut Client) -> Result<usize, MigrateError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    integer     PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await?;
    let found: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM schema_migrations", &[])
        .await?
        .get(0);
    if found > latest() {
        return Err(MigrateError::TooNew { found, known: latest() });
    }
    let mut applied = 0;
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        tx.batch_execute(sql).await?;
        tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[version])
            .await?;
        applied += 1;
    }
    tx.commit().await?;
    Ok(applied)
}

/// The newest version this build knows.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |(v, _)| *v)
}
