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
    rid     BIGINT  NOT NULL UNIQUE, -- the seq of the resource's first version; index rows point here
    tenant  TEXT    NOT NULL,
    rtype   TEXT    NOT NULL,
    id      TEXT    NOT NULL,
    version BIGINT  NOT NULL,
    seq     BIGINT  NOT NULL,
    deleted BOOLEAN NOT NULL,
    PRIMARY KEY (tenant, rtype, id)
);
-- A search walks a type in row-id order. Keyed by an expression (which only the search SQL
-- names) so that the planner, before a table has statistics, never mistakes it for the
-- primary key in a lookup by id.
CREATE INDEX resources_by_type ON resources ((tenant || '/' || rtype), rid);
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
-- Narrow index rows, as in SQLite: `pkey` is the 64-bit key of (tenant, type, parameter)
-- (`search::param_key`), `rid` the owning resource. The value index ends in `rid` so a
-- search is an index-only scan; the owner index serves deletes on update and sort keys.
CREATE TABLE search_token (pkey BIGINT NOT NULL, code TEXT NOT NULL, system TEXT NOT NULL, rid BIGINT NOT NULL);
CREATE INDEX search_token_value ON search_token (pkey, code, system, rid);
CREATE INDEX search_token_owner ON search_token (rid);
CREATE TABLE search_string (pkey BIGINT NOT NULL, norm TEXT NOT NULL, exact TEXT NOT NULL, rid BIGINT NOT NULL);
CREATE INDEX search_string_value ON search_string (pkey, norm text_pattern_ops, rid);
CREATE INDEX search_string_owner ON search_string (rid);
CREATE TABLE search_blind (pkey BIGINT NOT NULL, tag BYTEA NOT NULL, rid BIGINT NOT NULL);
CREATE INDEX search_blind_value ON search_blind (pkey, tag, rid);
CREATE INDEX search_blind_owner ON search_blind (rid);
CREATE TABLE search_reference (
    pkey BIGINT NOT NULL, target_id TEXT NOT NULL, target_type TEXT NOT NULL, rid BIGINT NOT NULL
);
CREATE INDEX search_reference_value ON search_reference (pkey, target_id, target_type, rid);
CREATE INDEX search_reference_owner ON search_reference (rid);
CREATE TABLE search_date (pkey BIGINT NOT NULL, lo BIGINT NOT NULL, hi BIGINT NOT NULL, rid BIGINT NOT NULL);
CREATE INDEX search_date_value ON search_date (pkey, lo, hi, rid);
CREATE INDEX search_date_owner ON search_date (rid);
CREATE TABLE search_number (
    pkey BIGINT NOT NULL, value DOUBLE PRECISION NOT NULL, code TEXT NOT NULL, system TEXT NOT NULL, rid BIGINT NOT NULL
);
CREATE INDEX search_number_value ON search_number (pkey, value, code, system, rid);
CREATE INDEX search_number_owner ON search_number (rid);
CREATE TABLE search_uri (pkey BIGINT NOT NULL, uri TEXT NOT NULL, rid BIGINT NOT NULL);
CREATE INDEX search_uri_value ON search_uri (pkey, uri text_pattern_ops, rid);
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
    state            BIGINT NOT NULL,
    created          BIGINT NOT NULL,
    updated          BIGINT NOT NULL,
    expires          BIGINT NOT NULL,
    transaction_time BIGINT NOT NULL,
    request          TEXT   NOT NULL,
    error            TEXT,
    written          BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX export_jobs_by_expiry ON export_jobs (expires);
CREATE TABLE export_files (
    tenant TEXT   NOT NULL,
    job    TEXT   NOT NULL,
    n      BIGINT NOT NULL,
    rtype  TEXT   NOT NULL,
    count  BIGINT NOT NULL,
    key_id BIGINT NOT NULL,
    body   BYTEA  NOT NULL,
    PRIMARY KEY (tenant, job, n)
);
"#,
    ),
    (
        4,
        r#"
-- Versions are found by their resource's row id (`rid`, the seq of its first version), not by
-- (tenant, type, id): a new resource's versions then append to the index instead of landing
-- on a random page of it (see sqlite/schema.rs, v4).
ALTER TABLE resource_versions ADD COLUMN rid BIGINT;
UPDATE resource_versions v SET rid = r.rid FROM resources r
    WHERE r.tenant = v.tenant AND r.rtype = v.rtype AND r.id = v.id;
ALTER TABLE resource_versions ALTER COLUMN rid SET NOT NULL;
ALTER TABLE resource_versions DROP CONSTRAINT resource_versions_tenant_rtype_id_version_key;
ALTER TABLE resource_versions ADD CONSTRAINT resource_versions_rid_version_key UNIQUE (rid, version);
-- A search may now join a value index directly (a blind tag, a typed reference, a code with
-- its system), which lists a resource once per row: earlier versions could write a row twice.
DELETE FROM search_blind a USING search_blind b
    WHERE a.ctid < b.ctid AND a.pkey = b.pkey AND a.tag = b.tag AND a.rid = b.rid;
DELETE FROM search_reference a USING search_reference b
    WHERE a.ctid < b.ctid AND a.pkey = b.pkey AND a.target_id = b.target_id AND a.target_type = b.target_type
      AND a.rid = b.rid;
DELETE FROM search_token a USING search_token b
    WHERE a.ctid < b.ctid AND a.pkey = b.pkey AND a.code = b.code AND a.system = b.system AND a.rid = b.rid;
"#,
    ),
    (
        5,
        r#"
-- Accounts: the username only as a blind tag (lookup) and sealed (display).
CREATE TABLE users (
    id              TEXT    PRIMARY KEY,
    tenant          TEXT    NOT NULL,
    username_tag    BYTEA    NOT NULL,
    username_sealed BYTEA    NOT NULL,
    username_key_id BIGINT NOT NULL,
    role            TEXT    NOT NULL,
    patient         TEXT,
    practitioner    TEXT,
    password_hash   TEXT    NOT NULL,
    disabled        BOOLEAN NOT NULL DEFAULT false,
    created         BIGINT NOT NULL,
    -- Raised on every change to an account, so servers notice (see `access_epoch`).
    changed         BIGINT NOT NULL DEFAULT 0,
    UNIQUE (tenant, username_tag)
);
-- Break-the-glass grants: time-boxed, each a review item until a privacy officer rules on it.
-- Account change stamps: a sequence, so concurrent changes never share a stamp.
CREATE SEQUENCE users_changed_seq;
CREATE TABLE emergency_access (
    id            TEXT    PRIMARY KEY,
    tenant        TEXT    NOT NULL,
    user_id       TEXT    NOT NULL,
    patient       TEXT    NOT NULL,
    started       BIGINT NOT NULL,
    expires       BIGINT NOT NULL,
    reason_sealed BYTEA    NOT NULL,
    reason_key_id BIGINT NOT NULL,
    reviewed_at   BIGINT,
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
    created  BIGINT NOT NULL,
    disabled BOOLEAN NOT NULL DEFAULT false
);
-- Sign-in sessions: the authorization code and the refresh-token chain, as hashes only.
-- `revoked` is 0 or a change stamp (the access epoch reads its maximum).
CREATE SEQUENCE sessions_revoked_seq;
CREATE TABLE oauth_sessions (
    id                TEXT    PRIMARY KEY,
    tenant            TEXT    NOT NULL,
    user_id           TEXT,
    client_id         TEXT    NOT NULL,
    code_hash         BYTEA UNIQUE,
    refresh_hash      BYTEA UNIQUE,
    prev_refresh_hash BYTEA UNIQUE,
    doc               TEXT    NOT NULL,
    created           BIGINT NOT NULL,
    last_active       BIGINT NOT NULL,
    expires           BIGINT NOT NULL,
    generation        BIGINT NOT NULL DEFAULT 0,
    revoked           BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX oauth_sessions_by_user ON oauth_sessions (tenant, user_id);
CREATE INDEX oauth_sessions_by_revoked ON oauth_sessions (tenant, revoked);
-- A bulk export's status and files belong to whoever started it.
ALTER TABLE export_jobs ADD COLUMN owner TEXT NOT NULL DEFAULT '';
-- Each account's second factor (sealed) and failed sign-in attempts.
CREATE TABLE user_security (
    user_id        TEXT    PRIMARY KEY,
    tenant         TEXT    NOT NULL,
    totp_sealed    BYTEA,
    totp_key_id    BIGINT NOT NULL DEFAULT 0,
    totp_last_step BIGINT NOT NULL DEFAULT 0,
    failed         BIGINT NOT NULL DEFAULT 0,
    locked_until   BIGINT NOT NULL DEFAULT 0
);
"#,
    ),
    (
        8,
        r#"
-- The audit log: append-only, numbered from 0 (the Merkle tree's leaves), each entry with its
-- leaf hash and keyed MAC, and the search columns an auditor filters on (opaque ids, codes).
CREATE TABLE audit_log (
    idx      BIGINT PRIMARY KEY,
    recorded BIGINT NOT NULL,
    body     BYTEA NOT NULL,
    leaf     BYTEA NOT NULL,
    mac      BYTEA NOT NULL,
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
    size      BIGINT PRIMARY KEY,
    root      BYTEA NOT NULL,
    at        BIGINT NOT NULL,
    signature BYTEA NOT NULL
);
"#,
    ),
    (
        9,
        r#"
-- Conditional creates' claims on their conditions (`Claim`): the keyed tag of tenant, type
-- and condition, the resource the claim's create made and its version then.
CREATE TABLE condition_claims (
    tag     BYTEA PRIMARY KEY,
    tenant  TEXT NOT NULL,
    rtype   TEXT NOT NULL,
    id      TEXT NOT NULL,
    version BIGINT NOT NULL,
    created BIGINT NOT NULL
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
    pkey BIGINT NOT NULL, lat DOUBLE PRECISION NOT NULL, ux DOUBLE PRECISION NOT NULL,
    uy DOUBLE PRECISION NOT NULL, uz DOUBLE PRECISION NOT NULL, rid BIGINT NOT NULL
);
CREATE INDEX search_geo_value ON search_geo (pkey, lat, rid);
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
ALTER TABLE export_jobs ADD COLUMN filters_key BIGINT;
ALTER TABLE export_jobs ADD COLUMN filters BYTEA;
"#,
    ),
    (
        13,
        r#"
-- How far the server's audit journal (a file beside the database, where a read's entry is
-- made durable before its response) has been copied into audit_log: one row.
CREATE TABLE audit_journal_mark (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    generation  BIGINT NOT NULL,
    byte_offset BIGINT NOT NULL,
    next_seq    BIGINT NOT NULL
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
    block BIGINT PRIMARY KEY,
    root  BYTEA NOT NULL
);
"#,
    ),
    (
        15,
        r#"
-- Tallies (see carevault_domain::search::tally): how many resources have each (system, code)
-- of a tallied pair's token with `kind` 0 and one date (its first and last day), 1 no date,
-- 2 several. Concurrent transactions would queue (or deadlock) on shared count rows, so a
-- change set only appends its signed deltas, and `compact_tallies` folds them into
-- tally_counts now and then; a count reads both.
CREATE TABLE tally_counts (
    pkey BIGINT NOT NULL, code TEXT NOT NULL, system TEXT NOT NULL,
    kind BIGINT NOT NULL, first_day BIGINT NOT NULL, last_day BIGINT NOT NULL, n BIGINT NOT NULL,
    PRIMARY KEY (pkey, code, system, kind, first_day, last_day) INCLUDE (n)
);
-- A count reads a code's rows from the index alone (its rows lie all over the heap: 18 ms
-- against 2 for a code's 7,000 days), which needs the visibility map kept up to date after
-- each folding: vacuumed after a thousand changed rows, not a fifth of the table.
ALTER TABLE tally_counts SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 1000);
CREATE TABLE tally_deltas (
    pkey BIGINT NOT NULL, code TEXT NOT NULL, system TEXT NOT NULL,
    kind BIGINT NOT NULL, first_day BIGINT NOT NULL, last_day BIGINT NOT NULL, n BIGINT NOT NULL
);
CREATE INDEX tally_deltas_by_code ON tally_deltas (pkey, code);
-- The tallies count every resource only when they were kept from the first one: a store
-- that had resources before this version counts the slow way until `carevault reindex`.
CREATE TABLE tally_state (complete BOOLEAN NOT NULL);
INSERT INTO tally_state (complete) SELECT true WHERE NOT EXISTS (SELECT 1 FROM resources);
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::MIGRATIONS;
    use crate::{ResourceKey, ResourceStore};

    /// v4 on a database written at v3: every version gets its resource's row id, lookups by
    /// version and history still answer, and index rows written twice are left once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn v4_keys_versions_by_row_id() {
        let Ok(base) = std::env::var("CAREVAULT_TEST_POSTGRES_URL") else {
            eprintln!("NOT RUN: v4_keys_versions_by_row_id needs CAREVAULT_TEST_POSTGRES_URL (.ci/run sets it)");
            return;
        };
        let url = crate::conformance::fresh_pg_schema(&base).await;
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client
            .batch_execute(
                "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied TIMESTAMPTZ NOT NULL DEFAULT now())",
            )
            .await
            .unwrap();
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v <= 3) {
            client.batch_execute(sql).await.unwrap();
            client
                .execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[version])
                .await
                .unwrap();
        }
        client
            .batch_execute(
                "INSERT INTO resource_versions (seq, tenant, rtype, id, version, last_updated, op, key_id, patient, body)
                     VALUES (1, 't', 'Patient', 'a', 1, 10, 0, 1, 'a', '\\x01'),
                            (2, 't', 'Patient', 'b', 1, 11, 0, 1, 'b', '\\x02'),
                            (3, 't', 'Patient', 'a', 2, 12, 1, 1, 'a', '\\x03');
                 SELECT setval(pg_get_serial_sequence('resource_versions', 'seq'), 3);
                 INSERT INTO resources (rid, tenant, rtype, id, version, seq, deleted)
                     VALUES (1, 't', 'Patient', 'a', 2, 3, false), (2, 't', 'Patient', 'b', 1, 2, false);
                 INSERT INTO search_blind (pkey, tag, rid) VALUES (7, '\\x0a', 1), (7, '\\x0a', 1), (7, '\\x0a', 2);",
            )
            .await
            .unwrap();
        let store = crate::postgres::PgStore::connect(&url, 2).await.unwrap();
        let rows: Vec<(i64, i64, i64)> = client
            .query("SELECT seq, rid, version FROM resource_versions ORDER BY seq", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        assert_eq!(rows, vec![(1, 1, 1), (2, 2, 1), (3, 1, 2)]);
        let blind: i64 = client
            .query_one("SELECT count(*) FROM search_blind", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(blind, 2, "the repeated row is gone, the others stay");
        let key = ResourceKey {
            tenant: "t".into(),
            rtype: "Patient".into(),
            id: "a".into(),
        };
        let first = store.version(&key, 1).await.unwrap().expect("version 1 of a");
        assert_eq!(first.body, vec![1]);
        let current = store.current(&key).await.unwrap().expect("a");
        assert_eq!((current.version, current.seq), (2, 3));
    }
}
