//! PostgreSQL migrations: the same tables as `sqlite/schema.rs` in PostgreSQL's dialect.
//! Applied under an advisory lock so several servers starting at once migrate once.

use crate::StoreError;
use deadpool_postgres::Client;

pub(crate) const MIGRATIONS: &[(i64, &str)] = &[(
    1,
    r#"
CREATE TABLE resource_versions (
    seq          BIGSERIAL PRIMARY KEY,
    tenant       TEXT   NOT NULL,
    rtype        TEXT   NOT NULL,
    id           TEXT   NOT NULL,
    version      BIGINT NOT NULL,
    last_updated BIGINT NOT NULL,
    op           SMALLINT NOT NULL,
    key_id       BIGINT NOT NULL,
    patient      TEXT   NOT NULL,
    body         BYTEA  NOT NULL,
    UNIQUE (tenant, rtype, id, version)
);
CREATE INDEX resource_versions_by_type ON resource_versions (tenant, rtype, seq);
CREATE TABLE resources (
    tenant  TEXT    NOT NULL,
    rtype   TEXT    NOT NULL,
    id      TEXT    NOT NULL,
    version BIGINT  NOT NULL,
    seq     BIGINT  NOT NULL,
    deleted BOOLEAN NOT NULL,
    PRIMARY KEY (tenant, rtype, id)
);
CREATE TABLE identifier_index (
    tenant TEXT  NOT NULL,
    rtype  TEXT  NOT NULL,
    tag    BYTEA NOT NULL,
    id     TEXT  NOT NULL,
    PRIMARY KEY (tenant, rtype, tag, id)
);
CREATE INDEX identifier_index_by_id ON identifier_index (tenant, rtype, id);
CREATE TABLE data_keys (
    key_id      BIGSERIAL PRIMARY KEY,
    tenant      TEXT    NOT NULL,
    scope       TEXT    NOT NULL,
    kek_version INTEGER NOT NULL,
    wrapped     BYTEA   NOT NULL,
    created     BIGINT  NOT NULL,
    UNIQUE (tenant, scope)
);
CREATE TABLE api_tokens (
    hash    BYTEA   PRIMARY KEY,
    label   TEXT    NOT NULL,
    created BIGINT  NOT NULL,
    revoked BOOLEAN NOT NULL DEFAULT FALSE
);
"#,
)];

pub(crate) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock(7411200)", &[])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await?;
    for (version, sql) in MIGRATIONS {
        let done = tx
            .query_opt(
                "SELECT 1 FROM schema_migrations WHERE version = $1",
                &[version],
            )
            .await?;
        if done.is_some() {
            continue;
        }
        tx.batch_execute(sql)
            .await
            .map_err(|e| StoreError::Migration(format!("postgres v{version}: {e}")))?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[version],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
