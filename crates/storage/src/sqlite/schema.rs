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
    rid     INTEGER PRIMARY KEY, -- the seq of the resource's first version; index rows point here
    tenant  TEXT    NOT NULL,
    rtype   TEXT    NOT NULL,
    id      TEXT    NOT NULL,
    version INTEGER NOT NULL,
    seq     INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    UNIQUE (tenant, rtype, id)
);
-- A search walks a type in row-id order (SQLite appends the rowid to every index).
CREATE INDEX resources_by_type ON resources (tenant, rtype);
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
-- Index rows are narrow: `pkey` is the 64-bit param key of (tenant, type, parameter) (see
-- `search::param_key`) and `rid` the owning resource. The primary key serves searches by
-- value (its last column answers `SELECT x.rid` without touching the row); the owner
-- index serves deletes on update and sort keys.
CREATE TABLE search_token (
    pkey INTEGER NOT NULL, code TEXT NOT NULL, system TEXT NOT NULL, rid INTEGER NOT NULL,
    PRIMARY KEY (pkey, code, system, rid)
) WITHOUT ROWID;
CREATE INDEX search_token_owner ON search_token (rid);
CREATE TABLE search_string (
    pkey INTEGER NOT NULL, norm TEXT NOT NULL COLLATE NOCASE, exact TEXT NOT NULL, rid INTEGER NOT NULL,
    PRIMARY KEY (pkey, norm, exact, rid)
) WITHOUT ROWID;
CREATE INDEX search_string_owner ON search_string (rid);
CREATE TABLE search_blind (
    pkey INTEGER NOT NULL, tag BLOB NOT NULL, rid INTEGER NOT NULL,
    PRIMARY KEY (pkey, tag, rid)
) WITHOUT ROWID;
CREATE INDEX search_blind_owner ON search_blind (rid);
CREATE TABLE search_reference (
    pkey INTEGER NOT NULL, target_id TEXT NOT NULL, target_type TEXT NOT NULL, rid INTEGER NOT NULL,
    PRIMARY KEY (pkey, target_id, target_type, rid)
) WITHOUT ROWID;
CREATE INDEX search_reference_owner ON search_reference (rid);
CREATE TABLE search_date (
    pkey INTEGER NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL, rid INTEGER NOT NULL,
    PRIMARY KEY (pkey, lo, hi, rid)
) WITHOUT ROWID;
CREATE INDEX search_date_owner ON search_date (rid);
CREATE TABLE search_number (
    pkey INTEGER NOT NULL, value REAL NOT NULL, code TEXT NOT NULL, system TEXT NOT NULL, rid INTEGER NOT NULL,
    PRIMARY KEY (pkey, value, code, system, rid)
) WITHOUT ROWID;
CREATE INDEX search_number_owner ON search_number (rid);
CREATE TABLE search_uri (
    pkey INTEGER NOT NULL, uri TEXT NOT NULL, rid INTEGER NOT NULL,
    PRIMARY KEY (pkey, uri, rid)
) WITHOUT ROWID;
CREATE INDEX search_uri_owner ON search_uri (rid);
"#,
    ),
    (
        3,
        r#"
-- Bulk export: a job and its output files (NDJSON, sealed under the tenant's data key).
CREATE TABLE export_jobs (
    tenant           TEXT   NOT NULL,
    id               TEXT   NOT NULL,
    state            INTEGER NOT NULL,
    created          INTEGER NOT NULL,
    updated          INTEGER NOT NULL,
    expires          INTEGER NOT NULL,
    transaction_time INTEGER NOT NULL,
    request          TEXT   NOT NULL,
    error            TEXT,
    written          INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX export_jobs_by_expiry ON export_jobs (expires);
CREATE TABLE export_files (
    tenant TEXT   NOT NULL,
    job    TEXT   NOT NULL,
    n      INTEGER NOT NULL,
    rtype  TEXT   NOT NULL,
    count  INTEGER NOT NULL,
    key_id INTEGER NOT NULL,
    body   BLOB  NOT NULL,
    PRIMARY KEY (tenant, job, n)
);
"#,
    ),
    (
        4,
        r#"
-- Versions are found by their resource's row id (`rid`, the seq of its first version), not by
-- (tenant, type, id): a new resource's versions then append to the index instead of landing
-- on a random page of it (at millions of resources, random index pages bound imports).
CREATE TABLE resource_versions_v4 (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    rid          INTEGER NOT NULL,
    tenant       TEXT    NOT NULL,
    rtype        TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    last_updated INTEGER NOT NULL,
    op           INTEGER NOT NULL,
    key_id       INTEGER NOT NULL,
    patient      TEXT    NOT NULL,
    body         BLOB    NOT NULL,
    UNIQUE (rid, version)
);
INSERT INTO resource_versions_v4 (seq, rid, tenant, rtype, id, version, last_updated, op, key_id, patient, body)
    SELECT v.seq, r.rid, v.tenant, v.rtype, v.id, v.version, v.last_updated, v.op, v.key_id, v.patient, v.body
    FROM resource_versions v JOIN resources r ON r.tenant = v.tenant AND r.rtype = v.rtype AND r.id = v.id;
DROP TABLE resource_versions;
ALTER TABLE resource_versions_v4 RENAME TO resource_versions;
CREATE INDEX resource_versions_by_type ON resource_versions (tenant, rtype, seq);
"#,
    ),
    (
        5,
        r#"
-- Accounts: the username only as a blind tag (lookup) and sealed (display).
CREATE TABLE users (
    id              TEXT    PRIMARY KEY,
    tenant          TEXT    NOT NULL,
    username_tag    BLOB    NOT NULL,
    username_sealed BLOB    NOT NULL,
    username_key_id INTEGER NOT NULL,
    role            TEXT    NOT NULL,
    patient         TEXT,
    practitioner    TEXT,
    password_hash   TEXT    NOT NULL,
    disabled        INTEGER NOT NULL DEFAULT 0,
    created         INTEGER NOT NULL,
    -- Raised on every change to an account, so servers notice (see `access_epoch`).
    changed         INTEGER NOT NULL DEFAULT 0,
    UNIQUE (tenant, username_tag)
);
-- Break-the-glass grants: time-boxed, each a review item until a privacy officer rules on it.
CREATE TABLE emergency_access (
    id            TEXT    PRIMARY KEY,
    tenant        TEXT    NOT NULL,
    user_id       TEXT    NOT NULL,
    patient       TEXT    NOT NULL,
    started       INTEGER NOT NULL,
    expires       INTEGER NOT NULL,
    reason_sealed BLOB    NOT NULL,
    reason_key_id INTEGER NOT NULL,
    reviewed_at   INTEGER,
    reviewer      TEXT,
    verdict       TEXT
);
CREATE INDEX emergency_access_by_user ON emergency_access (tenant, user_id, expires);
CREATE INDEX emergency_access_by_patient ON emergency_access (tenant, patient, started);
"#,
    ),
    (
        6,
        r#"
-- A resource's compartment patients and security labels beside its row, so a read by id
-- is decided with the row it fetches (NULL for rows written before: read from the index).
ALTER TABLE resources ADD COLUMN facts TEXT;
"#,
    ),
    (
        7,
        r#"
-- Registered OAuth clients (SMART apps and backend services).
CREATE TABLE oauth_clients (
    id       TEXT    PRIMARY KEY,
    tenant   TEXT    NOT NULL,
    doc      TEXT    NOT NULL,
    created  INTEGER NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0
);
-- Sign-in sessions: the authorization code and the refresh-token chain, as hashes only.
-- `revoked` is 0 or a change stamp (the access epoch reads its maximum).
CREATE TABLE oauth_sessions (
    id                TEXT    PRIMARY KEY,
    tenant            TEXT    NOT NULL,
    user_id           TEXT,
    client_id         TEXT    NOT NULL,
    code_hash         BLOB UNIQUE,
    refresh_hash      BLOB UNIQUE,
    prev_refresh_hash BLOB UNIQUE,
    doc               TEXT    NOT NULL,
    created           INTEGER NOT NULL,
    last_active       INTEGER NOT NULL,
    expires           INTEGER NOT NULL,
    generation        INTEGER NOT NULL DEFAULT 0,
    revoked           INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX oauth_sessions_by_user ON oauth_sessions (tenant, user_id);
CREATE INDEX oauth_sessions_by_revoked ON oauth_sessions (tenant, revoked);
-- A bulk export's status and files belong to whoever started it.
ALTER TABLE export_jobs ADD COLUMN owner TEXT NOT NULL DEFAULT '';
-- Each account's second factor (sealed) and failed sign-in attempts.
CREATE TABLE user_security (
    user_id        TEXT    PRIMARY KEY,
    tenant         TEXT    NOT NULL,
    totp_sealed    BLOB,
    totp_key_id    INTEGER NOT NULL DEFAULT 0,
    totp_last_step INTEGER NOT NULL DEFAULT 0,
    failed         INTEGER NOT NULL DEFAULT 0,
    locked_until   INTEGER NOT NULL DEFAULT 0
);
"#,
    ),
    (
        8,
        r#"
-- The audit log: append-only, numbered from 0 (the Merkle tree's leaves), each entry with its
-- leaf hash and keyed MAC, and the search columns an auditor filters on (opaque ids, codes).
CREATE TABLE audit_log (
    idx      INTEGER PRIMARY KEY,
    recorded INTEGER NOT NULL,
    body     BLOB NOT NULL,
    leaf     BLOB NOT NULL,
    mac      BLOB NOT NULL,
    agent    TEXT NOT NULL,
    patient  TEXT,
    subtype  TEXT NOT NULL,
    outcome  TEXT NOT NULL,
    entity   TEXT
);
CREATE INDEX audit_log_by_patient ON audit_log (patient, idx);
CREATE INDEX audit_log_by_agent ON audit_log (agent, idx);
CREATE INDEX audit_log_by_recorded ON audit_log (recorded);
-- Signed tree heads.
CREATE TABLE audit_heads (
    size      INTEGER PRIMARY KEY,
    root      BLOB NOT NULL,
    at        INTEGER NOT NULL,
    signature BLOB NOT NULL
);
"#,
    ),
    (
        9,
        r#"
-- Conditional creates' claims on their conditions (`Claim`): the keyed tag of tenant, type
-- and condition, the resource the claim's create made and its version then.
CREATE TABLE condition_claims (
    tag     BLOB PRIMARY KEY,
    tenant  TEXT NOT NULL,
    rtype   TEXT NOT NULL,
    id      TEXT NOT NULL,
    version INTEGER NOT NULL,
    created INTEGER NOT NULL
);
CREATE INDEX condition_claims_by_created ON condition_claims (created);
"#,
    ),
    (
        10,
        r#"
-- Positions (Location's `near`): latitude in degrees, which the value index narrows by, and
-- the unit vector whose dot product with the search point's gives the great-circle distance.
CREATE TABLE search_geo (
    pkey INTEGER NOT NULL, lat REAL NOT NULL, ux REAL NOT NULL, uy REAL NOT NULL, uz REAL NOT NULL,
    rid INTEGER NOT NULL,
    PRIMARY KEY (pkey, lat, rid)
) WITHOUT ROWID;
CREATE INDEX search_geo_owner ON search_geo (rid);
"#,
    ),
    (
        11,
        r#"
-- Versions by update time, so that `_lastUpdated` can drive a search: a client asking what
-- changed since its last poll no longer walks the whole type.
CREATE INDEX resource_versions_by_update ON resource_versions (tenant, rtype, last_updated, rid);
"#,
    ),
    (
        12,
        r#"
-- An export's `_typeFilter` queries, sealed under the tenant's data key (they are caller
-- text and may hold identifying search values); the key's id opens them.
ALTER TABLE export_jobs ADD COLUMN filters_key INTEGER;
ALTER TABLE export_jobs ADD COLUMN filters BLOB;
"#,
    ),
    (
        13,
        r#"
-- How far the server's audit journal (a file beside the database, where a read's entry is
-- made durable before its response) has been copied into audit_log: one row.
CREATE TABLE audit_journal_mark (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    generation  INTEGER NOT NULL,
    byte_offset INTEGER NOT NULL,
    next_seq    INTEGER NOT NULL
);
"#,
    ),
    (
        14,
        r#"
-- The roots of the audit tree's complete blocks of 1,024 entries, in order: a server rebuilds
-- its tree from them and the leaves after them (checked against the newest signed head)
-- instead of reading every leaf hash when it starts.
CREATE TABLE audit_blocks (
    block INTEGER PRIMARY KEY,
    root  BLOB NOT NULL
);
"#,
    ),
    (
        15,
        r#"
-- Tallies (see carevault_domain::search::tally): how many resources have each (system, code)
-- of a tallied pair's token with `kind` 0 and one date (its first and last day), 1 no date,
-- 2 several. The writer adds a version's rows and takes away those of the index it replaces
-- in the same transaction.
CREATE TABLE tally_counts (
    pkey INTEGER NOT NULL, code TEXT NOT NULL, system TEXT NOT NULL,
    kind INTEGER NOT NULL, first_day INTEGER NOT NULL, last_day INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (pkey, code, system, kind, first_day, last_day)
) WITHOUT ROWID;
-- The tallies count every resource only when they were kept from the first one: a store
-- that had resources before this version counts the slow way until `carevault reindex`.
CREATE TABLE tally_state (complete INTEGER NOT NULL);
INSERT INTO tally_state (complete) SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM resources);
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// v4 moves versions onto their resource's row id: a database written at v3 keeps every
    /// version, each now carrying the right `rid`, and the old key is gone.
    #[test]
    fn v4_keys_versions_by_row_id() {
        let mut conn = Connection::open_in_memory().expect("memory db");
        conn.execute_batch("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied INTEGER NOT NULL)")
            .expect("ledger");
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v <= 3) {
            conn.execute_batch(sql).expect("old migration");
            conn.execute("INSERT INTO schema_migrations VALUES (?1, 0)", [version])
                .expect("ledger row");
        }
        conn.execute_batch(
            "INSERT INTO resource_versions (seq, tenant, rtype, id, version, last_updated, op, key_id, patient, body)
                 VALUES (1, 't', 'Patient', 'a', 1, 10, 0, 1, 'a', x'01'),
                        (2, 't', 'Patient', 'b', 1, 11, 0, 1, 'b', x'02'),
                        (3, 't', 'Patient', 'a', 2, 12, 1, 1, 'a', x'03');
             INSERT INTO resources (rid, tenant, rtype, id, version, seq, deleted)
                 VALUES (1, 't', 'Patient', 'a', 2, 3, 0), (2, 't', 'Patient', 'b', 1, 2, 0);",
        )
        .expect("v3 rows");
        migrate(&mut conn).expect("migrate");
        let rows: Vec<(i64, i64, String, i64)> = conn
            .prepare("SELECT seq, rid, id, version FROM resource_versions ORDER BY seq")
            .expect("select")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("collect");
        assert_eq!(
            rows,
            vec![(1, 1, "a".into(), 1), (2, 2, "b".into(), 1), (3, 1, "a".into(), 2)]
        );
        let duplicate = conn.execute(
            "INSERT INTO resource_versions (rid, tenant, rtype, id, version, last_updated, op, key_id, patient, body)
             VALUES (1, 't', 'Patient', 'a', 2, 13, 0, 1, 'a', x'04')",
            [],
        );
        assert!(duplicate.is_err(), "(rid, version) is unique");
        let next: i64 = conn
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'resource_versions'",
                [],
                |r| r.get(0),
            )
            .expect("sequence carried over");
        assert_eq!(next, 3);
    }
}
