//! SQLite migrations, applied in order, each once, each in its own transaction.
//! Compare with `postgres/schema.rs`: the same tables in the other dialect.

use crate::StoreError;
use rusqlite::Connection;

pub(crate) const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
CREATE TABLE resource_versions (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant       TEXT    NOT NULL,
    rtype        TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    last_updated INTEGER NOT NULL,
    op           INTEGER NOT NULL,
    key_id       INTEGER NOT NULL,
    patient      TEXT    NOT NULL,
    body         BLOB    NOT NULL,
    UNIQUE (tenant, rtype, id, version)
);
CREATE INDEX resource_versions_by_type ON resource_versions (tenant, rtype, seq);
CREATE TABLE resources (
    tenant  TEXT    NOT NULL,
    rtype   TEXT    NOT NULL,
    id      TEXT    NOT NULL,
    version INTEGER NOT NULL,
    seq     INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    PRIMARY KEY (tenant, rtype, id)
) WITHOUT ROWID;
CREATE TABLE identifier_index (
    tenant TEXT NOT NULL,
    rtype  TEXT NOT NULL,
    tag    BLOB NOT NULL,
    id     TEXT NOT NULL,
    PRIMARY KEY (tenant, rtype, tag, id)
) WITHOUT ROWID;
CREATE INDEX identifier_index_by_id ON identifier_index (tenant, rtype, id);
CREATE TABLE data_keys (
    key_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant      TEXT    NOT NULL,
    scope       TEXT    NOT NULL,
    kek_version INTEGER NOT NULL,
    wrapped     BLOB    NOT NULL,
    created     INTEGER NOT NULL,
    UNIQUE (tenant, scope)
);
CREATE TABLE api_tokens (
    hash    BLOB    PRIMARY KEY,
    label   TEXT    NOT NULL,
    created INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
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
    norm TEXT NOT NULL COLLATE NOCASE, exact TEXT NOT NULL
);
CREATE INDEX search_string_value ON search_string (tenant, rtype, param, norm);
CREATE INDEX search_string_owner ON search_string (id, tenant, rtype);
CREATE TABLE search_blind (
    tenant TEXT NOT NULL, rtype TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, tag BLOB NOT NULL
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
    lo INTEGER NOT NULL, hi INTEGER NOT NULL
);
CREATE INDEX search_date_value ON search_date (tenant, rtype, param, lo);
CREATE INDEX search_date_owner ON search_date (id, tenant, rtype);
CREATE TABLE search_number (
    tenant TEXT NOT NULL, rtype TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL,
    value REAL NOT NULL, system TEXT NOT NULL, code TEXT NOT NULL
);
CREATE INDEX search_number_value ON search_number (tenant, rtype, param, value);
CREATE INDEX search_number_owner ON search_number (id, tenant, rtype);
CREATE TABLE search_uri (
    tenant TEXT NOT NULL, rtype TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, uri TEXT NOT NULL
);
CREATE INDEX search_uri_value ON search_uri (tenant, rtype, param, uri);
CREATE INDEX search_uri_owner ON search_uri (id, tenant, rtype);
"#,
    ),
];

pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied INTEGER NOT NULL)",
    )?;
    for (version, sql) in MIGRATIONS {
        let done: i64 = conn.query_row(
            "SELECT count(*) FROM schema_migrations WHERE version = ?1",
            [version],
            |r| r.get(0),
        )?;
        if done > 0 {
            continue;
        }
        let tx = conn.transaction()?;
        tx.execute_batch(sql)
            .map_err(|e| StoreError::Migration(format!("sqlite v{version}: {e}")))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied) VALUES (?1, strftime('%s','now'))",
            [version],
        )?;
        tx.commit()?;
    }
    Ok(())
}
