//! The store's schema, created and migrated by ldsync itself.

use tokio_postgres::Client;

use crate::Failure;

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: i32 = 1;

/// The advisory lock key that serialises schema changes between processes.
const MIGRATION_LOCK: i64 = 0x6c64_7379_6e63; // "ldsync"

/// Each migration, in order: the `n`th takes the schema from version `n` to `n + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: sync folders, leases and schedule claims.
    "create table ldsync.files (
        sync text not null,
        path text not null,
        hash bytea not null,
        size bigint not null,
        updated_at timestamptz not null,
        primary key (sync, path)
    );
    create table ldsync.chunks (
        sync text not null,
        path text not null,
        seq integer not null,
        content bytea not null,
        primary key (sync, path, seq),
        foreign key (sync, path) references ldsync.files (sync, path) on delete cascade
            deferrable initially deferred
    );
    create table ldsync.leases (
        sync text primary key,
        holder text not null,
        token text not null,
        acquired_at timestamptz not null,
        expires_at timestamptz not null
    );
    create table ldsync.slots (
        sync text primary key,
        due timestamptz not null,
        holder text not null,
        claimed_at timestamptz not null
    );",
];

/// Creates the schema, or migrates it to [`SCHEMA_VERSION`], inside the caller's transaction;
/// returns the version found (`None` for a new store). A newer schema is refused.
pub(crate) async fn migrate(client: &Client) -> Result<Option<i32>, Failure> {
    client.execute("select pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    client
        .batch_execute(
            "create schema if not exists ldsync;
             create table if not exists ldsync.meta (key text primary key, value text not null);",
        )
        .await?;
    let found = client
        .query_opt("select value from ldsync.meta where key = 'schema_version'", &[])
        .await?
        .map(|row| row.get::<_, String>(0));
    let found = match found {
        None => None,
        Some(text) => Some(text.parse::<i32>().map_err(|_| {
            Failure::Damaged(format!("ldsync.meta holds schema version `{text}`, not a number"))
        })?),
    };
    let from = found.unwrap_or(0);
    if from > SCHEMA_VERSION {
        return Err(Failure::Damaged(format!(
            "its schema is version {from}, newer than this ldsync's {SCHEMA_VERSION}: upgrade ldsync (every process sharing the store must run a version that knows schema {from})"
        )));
    }
    let pending = usize::try_from(from).unwrap_or(0);
    for migration in MIGRATIONS.iter().skip(pending) {
        client.batch_execute(migration).await?;
    }
    if from < SCHEMA_VERSION {
        client
            .execute(
                "insert into ldsync.meta (key, value) values ('schema_version', $1)
                 on conflict (key) do update set value = excluded.value",
                &[&SCHEMA_VERSION.to_string()],
            )
            .await?;
    }
    Ok(found)
}
