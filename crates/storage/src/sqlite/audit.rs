//! The audit log on SQLite.

use super::SqliteStore;
use crate::audit::{AUDIT_COLUMNS, PRUNE_SET};
use crate::{AuditFilter, AuditMaker, AuditRecord, AuditStore, JournalMark, StoreError, StoredHead};
use rusqlite::types::Value as V;
use rusqlite::{Row, params, params_from_iter};

fn record_from_row(r: &Row<'_>) -> rusqlite::Result<AuditRecord> {
    Ok(AuditRecord {
        index: r.get(0)?,
        recorded: r.get(1)?,
        body: r.get(2)?,
        leaf: r.get(3)?,
        mac: r.get(4)?,
        agent: r.get(5)?,
        patient: r.get(6)?,
        subtype: r.get(7)?,
        outcome: r.get(8)?,
        entity: r.get(9)?,
    })
}

fn head_from_row(r: &Row<'_>) -> rusqlite::Result<StoredHead> {
    Ok(StoredHead {
        size: r.get(0)?,
        root: r.get(1)?,
        at: r.get(2)?,
        signature: r.get(3)?,
    })
}

/// Numbers and inserts entries inside the writer's transaction; the first index.
pub(crate) fn insert_made(conn: &rusqlite::Connection, makers: &[AuditMaker]) -> Result<i64, StoreError> {
    let first: i64 = conn
        .prepare_cached("SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_log")?
        .query_row([], |r| r.get(0))?;
    let mut stmt = conn.prepare_cached(&format!(
        "INSERT INTO audit_log ({AUDIT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
    ))?;
    for (i, m) in makers.iter().enumerate() {
        let r = (m.0)(first + i as i64);
        stmt.execute(params![
            r.index, r.recorded, r.body, r.leaf, r.mac, r.agent, r.patient, r.subtype, r.outcome, r.entity
        ])?;
    }
    Ok(first)
}

/// Appends `audit`'s entry inside the writer's transaction when the change it records
/// happened.
pub(crate) fn append_if(
    conn: &rusqlite::Connection,
    changed: bool,
    audit: &Option<AuditMaker>,
) -> Result<(), StoreError> {
    if changed && let Some(maker) = audit {
        insert_made(conn, std::slice::from_ref(maker))?;
    }
    Ok(())
}

impl AuditStore for SqliteStore {
    async fn append_audit(&self, makers: Vec<AuditMaker>) -> Result<i64, StoreError> {
        // Only a backend error can fail an append: it runs without a savepoint.
        self.pool.write_checked(move |conn| insert_made(conn, &makers)).await
    }

    async fn ingest_audit(&self, makers: Vec<AuditMaker>, mark: JournalMark) -> Result<i64, StoreError> {
        // Like an append, only a backend error can fail it: no savepoint.
        self.pool
            .write_checked(move |conn| {
                let first = insert_made(conn, &makers)?;
                conn.prepare_cached(
                    "INSERT INTO audit_journal_mark (id, generation, byte_offset, next_seq) VALUES (1, ?1, ?2, ?3)
                     ON CONFLICT (id) DO UPDATE SET generation = ?1, byte_offset = ?2, next_seq = ?3",
                )?
                .execute(params![mark.generation, mark.offset, mark.next_seq])?;
                Ok(first)
            })
            .await
    }

    async fn journal_mark(&self) -> Result<Option<JournalMark>, StoreError> {
        self.pool
            .read(|conn| {
                let mut stmt =
                    conn.prepare_cached("SELECT generation, byte_offset, next_seq FROM audit_journal_mark")?;
                let mut rows = stmt.query_map([], |r| {
                    Ok(JournalMark {
                        generation: r.get(0)?,
                        offset: r.get(1)?,
                        next_seq: r.get(2)?,
                    })
                })?;
                Ok(rows.next().transpose()?)
            })
            .await
    }

    async fn prune_audit(&self, from: i64, through: i64, record: AuditMaker) -> Result<i64, StoreError> {
        self.pool
            .write(move |conn| {
                conn.prepare_cached(&format!(
                    "UPDATE audit_log SET body = x'', {PRUNE_SET} WHERE idx >= ?1 AND idx < ?2 AND length(body) > 0"
                ))?
                .execute(params![from, through])?;
                insert_made(conn, std::slice::from_ref(&record))
            })
            .await
    }

    async fn audit_size(&self) -> Result<i64, StoreError> {
        self.pool
            .read(|conn| {
                Ok(conn
                    .prepare_cached("SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_log")?
                    .query_row([], |r| r.get(0))?)
            })
            .await
    }

    async fn audit_leaves(&self, from: i64, limit: u32) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        self.pool
            .read(move |conn| {
                let mut stmt =
                    conn.prepare_cached("SELECT idx, leaf FROM audit_log WHERE idx >= ?1 ORDER BY idx LIMIT ?2")?;
                let rows = stmt.query_map(params![from, i64::from(limit)], |r| Ok((r.get(0)?, r.get(1)?)))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    async fn audit_blocks(&self, from: i64, limit: u32) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        self.pool
            .read(move |conn| {
                let mut stmt = conn
                    .prepare_cached("SELECT block, root FROM audit_blocks WHERE block >= ?1 ORDER BY block LIMIT ?2")?;
                let rows = stmt.query_map(params![from, i64::from(limit)], |r| Ok((r.get(0)?, r.get(1)?)))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    async fn insert_audit_blocks(&self, blocks: Vec<(i64, Vec<u8>)>) -> Result<(), StoreError> {
        self.pool
            .write(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "INSERT INTO audit_blocks (block, root) VALUES (?1, ?2) ON CONFLICT (block) DO UPDATE SET root = excluded.root",
                )?;
                for (block, root) in &blocks {
                    stmt.execute(params![block, root])?;
                }
                Ok(())
            })
            .await
    }

    async fn latest_head(&self) -> Result<Option<StoredHead>, StoreError> {
        self.pool
            .read(|conn| {
                let mut stmt = conn
                    .prepare_cached("SELECT size, root, at, signature FROM audit_heads ORDER BY size DESC LIMIT 1")?;
                let mut rows = stmt.query_map([], head_from_row)?;
                Ok(rows.next().transpose()?)
            })
            .await
    }

    async fn audit_range(&self, from: i64, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        self.pool
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE idx >= ?1 ORDER BY idx LIMIT ?2"
                ))?;
                let rows = stmt.query_map(params![from, i64::from(limit)], record_from_row)?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    async fn audit_search(&self, f: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        let f = f.clone();
        self.pool
            .read(move |conn| {
                let mut sql = format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE 1 = 1");
                let mut args: Vec<V> = Vec::new();
                let mut cond = |sql: &mut String, col: &str, op: &str, v: V| {
                    args.push(v);
                    sql.push_str(&format!(" AND {col} {op} ?{}", args.len()));
                };
                if let Some(v) = f.since {
                    cond(&mut sql, "recorded", ">=", V::Integer(v));
                }
                if let Some(v) = f.until {
                    cond(&mut sql, "recorded", "<", V::Integer(v));
                }
                for (col, v) in [
                    ("agent", &f.agent),
                    ("patient", &f.patient),
                    ("subtype", &f.subtype),
                    ("outcome", &f.outcome),
                    ("entity", &f.entity),
                ] {
                    if let Some(v) = v {
                        cond(&mut sql, col, "=", V::Text(v.clone()));
                    }
                }
                if let Some(v) = f.before {
                    cond(&mut sql, "idx", "<", V::Integer(v));
                }
                sql.push_str(&format!(" ORDER BY idx DESC LIMIT {}", f.limit.max(1)));
                let mut stmt = conn.prepare(&sql)?;
                let rows = stmt.query_map(params_from_iter(args.iter()), record_from_row)?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    async fn insert_head(&self, h: StoredHead, audit: Option<AuditMaker>) -> Result<bool, StoreError> {
        self.pool
            .write(move |conn| {
                let n = conn
                    .prepare_cached(
                        "INSERT INTO audit_heads (size, root, at, signature) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (size) DO NOTHING",
                    )?
                    .execute(params![h.size, h.root, h.at, h.signature])?;
                append_if(conn, n == 1, &audit)?;
                Ok(n == 1)
            })
            .await
    }

    async fn heads(&self) -> Result<Vec<StoredHead>, StoreError> {
        self.pool
            .read(|conn| {
                let mut stmt =
                    conn.prepare_cached("SELECT size, root, at, signature FROM audit_heads ORDER BY size")?;
                let rows = stmt.query_map([], head_from_row)?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }
}
