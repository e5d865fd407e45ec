//! The audit log on PostgreSQL. Appends — by themselves or inside a write's transaction —
//! take a transaction-scoped advisory lock, read the log's size and insert in one statement.

use super::{PgStore, map_err};
use crate::audit::{AUDIT_COLUMNS, PRUNE_SET};
use crate::{AuditFilter, AuditMaker, AuditRecord, AuditStore, JournalMark, StoreError, StoredHead};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

fn record_from_row(r: &Row) -> AuditRecord {
    AuditRecord {
        index: r.get(0),
        recorded: r.get(1),
        body: r.get(2),
        leaf: r.get(3),
        mac: r.get(4),
        agent: r.get(5),
        patient: r.get(6),
        subtype: r.get(7),
        outcome: r.get(8),
        entity: r.get(9),
    }
}

fn head_from_row(r: &Row) -> StoredHead {
    StoredHead {
        size: r.get(0),
        root: r.get(1),
        at: r.get(2),
        signature: r.get(3),
    }
}

/// The advisory lock that orders audit appends (the transaction holds it until it ends).
const AUDIT_LOCK: i64 = 0x6361_7265_5661_7564;

/// Numbers and inserts entries inside `tx`: the lock, the log's size, one insert for all.
/// Appends `audit`'s entry inside `tx` when the change it records happened.
pub(crate) async fn append_if(
    tx: &deadpool_postgres::Transaction<'_>,
    changed: bool,
    audit: &Option<AuditMaker>,
) -> Result<(), StoreError> {
    if changed && let Some(maker) = audit {
        insert_made(tx, std::slice::from_ref(maker)).await?;
    }
    Ok(())
}

pub(crate) async fn insert_made(
    tx: &deadpool_postgres::Transaction<'_>,
    makers: &[AuditMaker],
) -> Result<i64, StoreError> {
    if makers.is_empty() {
        return Ok(0);
    }
    // The lock first, in a statement of its own: the next statement's snapshot then sees
    // every entry committed before the lock was granted. Appends outside write transactions
    // do not take it, so the insert may still collide with one: it is then retried from a
    // savepoint, and the write itself never fails for it.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])
        .await
        .map_err(map_err)?;
    for _ in 0..16 {
        tx.batch_execute("SAVEPOINT audit_entry").await.map_err(map_err)?;
        let first: i64 = tx
            .query_one("SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_log", &[])
            .await
            .map_err(map_err)?
            .get(0);
        let records: Vec<AuditRecord> = makers
            .iter()
            .enumerate()
            .map(|(i, m)| (m.0)(first + i as i64))
            .collect();
        match insert_records(tx, &records, None).await {
            Ok(_) => {
                tx.batch_execute("RELEASE SAVEPOINT audit_entry")
                    .await
                    .map_err(map_err)?;
                return Ok(first);
            }
            Err(StoreError::Conflict) => {
                tx.batch_execute("ROLLBACK TO SAVEPOINT audit_entry")
                    .await
                    .map_err(map_err)?;
            }
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict)
}

/// Inserts `records` in one statement; with `expect`, only if the log's size is still that
/// (the number of rows inserted says whether it was).
async fn insert_records<C: deadpool_postgres::GenericClient>(
    client: &C,
    records: &[AuditRecord],
    expect: Option<i64>,
) -> Result<u64, StoreError> {
    let col = |f: fn(&AuditRecord) -> i64| records.iter().map(f).collect::<Vec<i64>>();
    let bytes = |f: fn(&AuditRecord) -> &Vec<u8>| records.iter().map(|r| f(r).clone()).collect::<Vec<Vec<u8>>>();
    let text = |f: fn(&AuditRecord) -> &String| records.iter().map(|r| f(r).clone()).collect::<Vec<String>>();
    let opt =
        |f: fn(&AuditRecord) -> &Option<String>| records.iter().map(|r| f(r).clone()).collect::<Vec<Option<String>>>();
    let (idx, recorded) = (col(|r| r.index), col(|r| r.recorded));
    let (body, leaf, mac) = (bytes(|r| &r.body), bytes(|r| &r.leaf), bytes(|r| &r.mac));
    let (agent, subtype, outcome) = (text(|r| &r.agent), text(|r| &r.subtype), text(|r| &r.outcome));
    let (patient, entity) = (opt(|r| &r.patient), opt(|r| &r.entity));
    let check = if expect.is_some() {
        " WHERE (SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_log) = $11"
    } else {
        ""
    };
    let stmt = client
        .prepare_cached(&format!(
            "INSERT INTO audit_log ({AUDIT_COLUMNS})
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[], $4::bytea[], $5::bytea[],
                                  $6::text[], $7::text[], $8::text[], $9::text[], $10::text[]){check}"
        ))
        .await
        .map_err(map_err)?;
    let first = expect.unwrap_or(0);
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![
        &idx, &recorded, &body, &leaf, &mac, &agent, &patient, &subtype, &outcome, &entity,
    ];
    if expect.is_some() {
        params.push(&first);
    }
    client.execute(&stmt, &params).await.map_err(map_err)
}

impl AuditStore for PgStore {
    async fn append_audit(&self, makers: Vec<AuditMaker>) -> Result<i64, StoreError> {
        if makers.is_empty() {
            return Ok(0);
        }
        // Without a transaction: insert at the size last seen, only if it still holds (a
        // write's transaction or another server may have appended meanwhile: the check or the
        // primary key says so), else read the size and try again. One round trip when this
        // server is the only one appending.
        use std::sync::atomic::Ordering;
        let client = self.client().await?;
        let mut guess = self.audit_next.load(Ordering::Relaxed);
        for _ in 0..16 {
            let first = if guess >= 0 {
                guess
            } else {
                client
                    .query_one("SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_log", &[])
                    .await
                    .map_err(map_err)?
                    .get(0)
            };
            let records: Vec<AuditRecord> = makers
                .iter()
                .enumerate()
                .map(|(i, m)| (m.0)(first + i as i64))
                .collect();
            match insert_records(&client, &records, Some(first)).await {
                Ok(n) if n as usize == records.len() => {
                    self.audit_next.store(first + n as i64, Ordering::Relaxed);
                    return Ok(first);
                }
                Ok(_) | Err(StoreError::Conflict) => guess = -1,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict)
    }

    async fn ingest_audit(&self, makers: Vec<AuditMaker>, mark: JournalMark) -> Result<i64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        let first = insert_made(&tx, &makers).await?;
        tx.execute(
            "INSERT INTO audit_journal_mark (id, generation, byte_offset, next_seq) VALUES (1, $1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET generation = $1, byte_offset = $2, next_seq = $3",
            &[&mark.generation, &mark.offset, &mark.next_seq],
        )
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(first)
    }

    async fn journal_mark(&self) -> Result<Option<JournalMark>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT generation, byte_offset, next_seq FROM audit_journal_mark", &[])
            .await
            .map_err(map_err)?;
        Ok(row.map(|r| JournalMark {
            generation: r.get(0),
            offset: r.get(1),
            next_seq: r.get(2),
        }))
    }

    async fn prune_audit(&self, from: i64, through: i64, record: AuditMaker) -> Result<i64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        tx.execute(
            &format!(
                "UPDATE audit_log SET body = ''::bytea, {PRUNE_SET} WHERE idx >= $1 AND idx < $2 AND length(body) > 0"
            ),
            &[&from, &through],
        )
        .await
        .map_err(map_err)?;
        let at = insert_made(&tx, std::slice::from_ref(&record)).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(at)
    }

    async fn audit_size(&self) -> Result<i64, StoreError> {
        let client = self.client().await?;
        Ok(client
            .query_one("SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_log", &[])
            .await
            .map_err(map_err)?
            .get(0))
    }

    async fn audit_leaves(&self, from: i64, limit: u32) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT idx, leaf FROM audit_log WHERE idx >= $1 ORDER BY idx LIMIT $2",
                &[&from, &i64::from(limit)],
            )
            .await
            .map_err(map_err)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn audit_blocks(&self, from: i64, limit: u32) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT block, root FROM audit_blocks WHERE block >= $1 ORDER BY block LIMIT $2",
                &[&from, &i64::from(limit)],
            )
            .await
            .map_err(map_err)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn insert_audit_blocks(&self, blocks: Vec<(i64, Vec<u8>)>) -> Result<(), StoreError> {
        let client = self.client().await?;
        let (numbers, roots): (Vec<i64>, Vec<Vec<u8>>) = blocks.into_iter().unzip();
        client
            .execute(
                "INSERT INTO audit_blocks (block, root) SELECT * FROM unnest($1::bigint[], $2::bytea[])
                 ON CONFLICT (block) DO UPDATE SET root = excluded.root",
                &[&numbers, &roots],
            )
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn latest_head(&self) -> Result<Option<StoredHead>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT size, root, at, signature FROM audit_heads ORDER BY size DESC LIMIT 1",
                &[],
            )
            .await
            .map_err(map_err)?;
        Ok(row.as_ref().map(head_from_row))
    }

    async fn audit_range(&self, from: i64, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE idx >= $1 ORDER BY idx LIMIT $2"),
                &[&from, &i64::from(limit)],
            )
            .await
            .map_err(map_err)?;
        Ok(rows.iter().map(record_from_row).collect())
    }

    async fn audit_search(&self, f: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        let client = self.client().await?;
        let mut sql = format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE true");
        let mut ints: Vec<(String, &'static str, i64)> = Vec::new();
        let mut texts: Vec<(&'static str, String)> = Vec::new();
        if let Some(v) = f.since {
            ints.push(("recorded".into(), ">=", v));
        }
        if let Some(v) = f.until {
            ints.push(("recorded".into(), "<", v));
        }
        if let Some(v) = f.before {
            ints.push(("idx".into(), "<", v));
        }
        for (col, v) in [
            ("agent", &f.agent),
            ("patient", &f.patient),
            ("subtype", &f.subtype),
            ("outcome", &f.outcome),
            ("entity", &f.entity),
        ] {
            if let Some(v) = v {
                texts.push((col, v.clone()));
            }
        }
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
        for (col, op, v) in &ints {
            params.push(v);
            sql.push_str(&format!(" AND {col} {op} ${}", params.len()));
        }
        for (col, v) in &texts {
            params.push(v);
            sql.push_str(&format!(" AND {col} = ${}", params.len()));
        }
        sql.push_str(&format!(" ORDER BY idx DESC LIMIT {}", f.limit.max(1)));
        let rows = client.query(&sql, &params).await.map_err(map_err)?;
        Ok(rows.iter().map(record_from_row).collect())
    }

    async fn insert_head(&self, h: StoredHead, audit: Option<AuditMaker>) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        let n = tx
            .execute(
                "INSERT INTO audit_heads (size, root, at, signature) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (size) DO NOTHING",
                &[&h.size, &h.root, &h.at, &h.signature],
            )
            .await
            .map_err(map_err)?;
        append_if(&tx, n == 1, &audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(n == 1)
    }

    async fn heads(&self) -> Result<Vec<StoredHead>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT size, root, at, signature FROM audit_heads ORDER BY size", &[])
            .await
            .map_err(map_err)?;
        Ok(rows.iter().map(head_from_row).collect())
    }
}
