//! PostgreSQL migrations: the same tables as `sqlite/schema.rs` in PostgreSQL's dialect.
//! Applied under an advisory lock so several servers starting at once migrate once.

use crate::StoreError;
use deadpool_postgres::Client;

pub(crate) const MIGRATIONS: &[(i64, &str)] = &[
    (
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
    ),
    (
        2,
        r#"
CREATE TABLE search_token (
    tenant TEXT NOT NULL, rtype TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL,
    system TEXT NOT NULL, code TEXT NOT NULL
);
CREATE INDEX search_token_value ON search_token (tenant, rtype, param, code, system);
CREATE INDEX search_token_owner ON search_token (id, tenant, rtype);
CREATE TABLE search_string (
    tenant TEXT NOT NULL, rtype TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL,
    norm TEXT NOT NULL , exact TEXT NOT NULL
);
CREATE INDEX search_string_value ON search_string (tenant, rtype, param, norm text_pattern_ops);
CREATE INDEX search_string_owner ON search_string (id, tenant, rtype);
CREATE TABLE search_blind (
    tenant TEXT NOT NULL, rtype TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, tag BYTEA NOT NULL
);
CREATE INDEX search_blind_value ON search_blind (tenant, rtype, param, tag);
CREATE INDEX search_blind_owner ON search_blind (id, tenant, rtype);
CREATE TABLE search_reference (
    tenant TEXT NOT NULL, rtype TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL,
    target_type TEXT NOT NULL, target_id TEXT NOT NULL
);
CREATE INDEX search_reference_value ON search_reference (tenant, rtype, param, target_id);
CREATE INDEX search_reference_owner ON search_reference (id, tenant, rtype);
CREATE TABLE search_date (
    tenant TEXT NOT NULL, rtype TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL,
    lo BIGINT NOT NULL, hi BIGINT NOT NULL
);
CREATE INDEX search_date_value ON search_date (tenant, rtype, param, lo);
CREATE INDEX search_date_owner ON search_date (id, tenant, rtype);
CREATE TABLE search_number (
    tenant TEXT NOT NULL, rtype TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL, system TEXT NOT NULL, code TEXT NOT NULL
);
CREATE INDEX search_number_value ON search_number (tenant, rtype, param, value);
CREATE INDEX search_number_owner ON search_number (id, tenant, rtype);
CREATE TABLE search_uri (
    tenant TEXT NOT NULL, rtype TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, uri TEXT NOT NULL
);
CREATE INDEX search_uri_value ON search_uri (tenant, rtype, param, uri text_pattern_ops);
CREATE INDEX search_uri_owner ON search_uri (id, tenant, rtype);
"#,
    ),
];

pub(crate) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock(7411200)", &[]).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await?;
    for (version, sql) in MIGRATIONS {
        let done = tx
            .query_opt("SELECT 1 FROM schema_migrations WHERE version = $1", &[version])
            .await?;
        if done.is_some() {
            continue;
        }
        tx.batch_execute(sql)
            .await
            .map_err(|e| StoreError::Migration(format!("postgres v{version}: {e}")))?;
        tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[version])
            .await?;
    }
    tx.commit().await?;
    Ok(())
}
