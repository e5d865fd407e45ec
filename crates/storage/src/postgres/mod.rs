//! The PostgreSQL backend, for hospitals that outgrow one machine: a pool of connections,
//! each change set in one transaction.

mod accounts;
pub(crate) mod audit;
mod claims;
mod export;
mod oauth;
mod schema;

use crate::sql::{Arg, Dialect, Driver, SortType, Sql};
use crate::{
    ChangeSet, Cond, Expect, HistoryQuery, KeyStore, NewKey, Op, ResourceKey, ResourceStore, SearchHit, SearchQuery,
    SearchRow, SortValue, StoreError, StoredKey, StoredVersion, Table, TokenStore,
};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::str::FromStr;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

/// The PostgreSQL store. Cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// The audit log's next index as this server last saw it (-1: unknown): an append tries
    /// it first and reads the log's size only when it was wrong.
    audit_next: std::sync::Arc<std::sync::atomic::AtomicI64>,
    /// Resources indexed by this server since it last folded the tally deltas into the
    /// counts (see `compact_tallies`).
    tally_writes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// Resources indexed between two foldings of the tally deltas: the deltas a count also
/// reads stay a few thousand rows.
const COMPACT_EVERY: usize = 5_000;

fn map_err(e: tokio_postgres::Error) -> StoreError {
    if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
        StoreError::Conflict
    } else {
        StoreError::backend("postgres", e)
    }
}

impl PgStore {
    /// Connects (a `postgres://` URL) and applies pending migrations.
    pub async fn connect(url: &str, max_connections: usize) -> Result<Self, StoreError> {
        let cfg = tokio_postgres::Config::from_str(url).map_err(|e| StoreError::backend("database url", e))?;
        let mgr = Manager::from_config(
            cfg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(max_connections.max(2))
            .build()
            .map_err(|e| StoreError::backend("pool", e))?;
        let mut client = pool.get().await.map_err(|e| StoreError::backend("connect", e))?;
        schema::migrate(&mut client).await?;
        Ok(Self {
            pool,
            audit_next: std::sync::Arc::new(std::sync::atomic::AtomicI64::new(-1)),
            tally_writes: std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        })
    }

    /// `VACUUM (ANALYZE)` of this store's tables after a bulk load: fresh statistics (without
    /// them PostgreSQL takes a common search value for a rare one), and a visibility map, so
    /// that index-only scans of the search tables skip the heap.
    pub async fn refresh_after_bulk_load(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        self.compact_tallies().await?;
        let tables: Vec<&str> = ["resources", "resource_versions", "identifier_index", "tally_counts"]
            .into_iter()
            .chain(Table::ALL.iter().map(|t| t.name()))
            .collect();
        client
            .batch_execute(&format!("VACUUM (ANALYZE) {}", tables.join(", ")))
            .await?;
        Ok(())
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| StoreError::backend("connect", e))
    }

    /// Folds the tally deltas into the counts and empties them, in one transaction (a count,
    /// which reads both, sees either side of it). The deltas are truncated, not deleted: dead
    /// rows left in their index would be read by every count until a vacuum (2.9 million of
    /// them after importing 10,000 patients took a count from 2.6 to 14.8 ms). Skipped while
    /// another server folds, and given up when a writer holds the table for more than a
    /// moment (the lock would queue every other writer behind it); the next folding takes
    /// what is left. A count is one READ COMMITTED statement, whose snapshot is taken once
    /// its table locks are held: it sees the folding whole or not at all.
    pub async fn compact_tallies(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        let mine: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock(7411201)", &[])
            .await
            .map_err(map_err)?
            .get(0);
        if !mine {
            return Ok(());
        }
        tx.batch_execute("SET LOCAL lock_timeout = '200ms'")
            .await
            .map_err(map_err)?;
        if let Err(e) = tx
            .batch_execute("LOCK TABLE tally_deltas IN ACCESS EXCLUSIVE MODE")
            .await
        {
            if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) {
                return Ok(());
            }
            return Err(map_err(e));
        }
        tx.batch_execute(
            "INSERT INTO tally_counts (pkey, code, system, kind, first_day, last_day, n)
             SELECT pkey, code, system, kind, first_day, last_day, sum(n)::bigint FROM tally_deltas
             GROUP BY 1, 2, 3, 4, 5, 6
             ON CONFLICT (pkey, code, system, kind, first_day, last_day) DO UPDATE SET n = tally_counts.n + EXCLUDED.n;
             TRUNCATE tally_deltas",
        )
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }
}

const VERSION_COLUMNS: &str =
    "v.tenant, v.rtype, v.id, v.version, v.seq, v.last_updated, v.op, v.key_id, v.patient, v.body";

fn version_from_row(r: &Row) -> StoredVersion {
    let op: i16 = r.get(6);
    StoredVersion {
        key: ResourceKey {
            tenant: r.get(0),
            rtype: r.get(1),
            id: r.get(2),
        },
        version: r.get::<_, i64>(3) as u64,
        seq: r.get(4),
        last_updated: r.get(5),
        op: Op::from_i64(i64::from(op)).unwrap_or(Op::Update),
        key_id: r.get(7),
        patient: r.get(8),
        body: r.get(9),
    }
}

fn history_where(q: &HistoryQuery) -> (String, Vec<Box<dyn ToSql + Sync + Send>>) {
    let mut sql = String::from(" WHERE v.tenant = $1");
    let mut args: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(q.tenant.clone())];
    if let Some(t) = &q.rtype {
        args.push(Box::new(t.clone()));
        sql.push_str(&format!(" AND v.rtype = ${}", args.len()));
    }
    match (&q.rtype, &q.id) {
        (Some(_), Some(id)) => {
            // A resource's versions are found by its row id (the `(rid, version)` index);
            // $1 is the tenant and $2 the type.
            args.push(Box::new(id.clone()));
            sql.push_str(&format!(
                " AND v.rid = (SELECT r.rid FROM resources r WHERE r.tenant = $1 AND r.rtype = $2 AND r.id = ${})",
                args.len()
            ));
        }
        (None, Some(id)) => {
            args.push(Box::new(id.clone()));
            sql.push_str(&format!(" AND v.id = ${}", args.len()));
        }
        _ => {}
    }
    if let Some(since) = q.since {
        args.push(Box::new(since));
        sql.push_str(&format!(" AND v.last_updated >= ${}", args.len()));
    }
    if q.patients.is_some() {
        // Limited to some patients but no type to find their compartment by: nothing.
        let Some((pkey, patients)) = crate::types::history_patients(q) else {
            sql.push_str(" AND false");
            return (sql, args);
        };
        args.push(Box::new(pkey));
        let pk = args.len();
        args.push(Box::new(patients.to_vec()));
        sql.push_str(&format!(
            " AND v.rid IN (SELECT rid FROM search_reference WHERE pkey = ${pk} AND target_type = 'Patient' AND target_id = ANY(${}))",
            args.len()
        ));
    }
    (sql, args)
}

impl ResourceStore for PgStore {
    async fn apply(&self, changes: ChangeSet) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        claims::take(&tx, &changes).await?;
        let select = tx
            .prepare_cached(
                "SELECT version, rid FROM resources WHERE tenant = $1 AND rtype = $2 AND id = $3 FOR UPDATE",
            )
            .await?;
        let insert = tx
            .prepare_cached(
                // The seq is drawn first so that a new resource's first version can carry it as
                // its row id (`rid`) in the same insert.
                "WITH s AS (SELECT nextval(pg_get_serial_sequence('resource_versions', 'seq')) AS seq)
                 INSERT INTO resource_versions (seq, rid, tenant, rtype, id, version, last_updated, op, key_id, patient, body)
                 SELECT s.seq, COALESCE($10::bigint, s.seq), $1::text, $2::text, $3::text, $4::bigint, $5::bigint,
                        $6::smallint, $7::bigint, $8::text, $9::bytea FROM s RETURNING seq",
            )
            .await?;
        // A create inserts (two concurrent creates of one id: the second violates the key and
        // is a conflict); an update changes the row it locked above.
        let insert_current = tx
            .prepare_cached(
                "INSERT INTO resources (rid, tenant, rtype, id, version, seq, deleted, facts)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .await?;
        let update_current = tx
            .prepare_cached(
                "UPDATE resources SET version = $5, seq = $6, deleted = $7, facts = $8
                 WHERE rid = $1 AND tenant = $2 AND rtype = $3 AND id = $4",
            )
            .await?;
        let unindex = tx
            .prepare_cached("DELETE FROM identifier_index WHERE tenant = $1 AND rtype = $2 AND id = $3")
            .await?;
        let index = tx
            .prepare_cached(
                "INSERT INTO identifier_index (tenant, rtype, tag, id) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .await?;
        // A set of creates only (an import's bundle, most transactions) is checked and written
        // in a few statements for the whole set; anything else one version at a time.
        // What the indexes replaced here added to the tallies.
        let mut removed = Vec::new();
        let rids = if changes.versions.len() > 1 && changes.versions.iter().all(|v| v.expect == Expect::Absent) {
            create_all(&tx, &changes).await?
        } else {
            let mut rids = Vec::with_capacity(changes.versions.len());
            for v in &changes.versions {
                let k = &v.key;
                let current: Option<(i64, i64)> = tx
                    .query_opt(&select, &[&k.tenant, &k.rtype, &k.id])
                    .await
                    .map_err(map_err)?
                    .map(|r| (r.get(0), r.get(1)));
                let holds = match (v.expect, current) {
                    (Expect::Absent, None) => true,
                    (Expect::Version(want), Some((have, _))) => want as i64 == have,
                    _ => false,
                };
                if !holds {
                    return Err(StoreError::Conflict);
                }
                let version = v.version as i64;
                let op = v.op as i16;
                let row = tx
                    .query_one(
                        &insert,
                        &[
                            &k.tenant,
                            &k.rtype,
                            &k.id,
                            &version,
                            &v.last_updated,
                            &op,
                            &v.key_id,
                            &v.patient,
                            &v.body,
                            &current.map(|(_, rid)| rid),
                        ],
                    )
                    .await
                    .map_err(map_err)?;
                let seq: i64 = row.get(0);
                // A resource keeps the row id its first version gave it; index rows point there.
                let rid = current.map_or(seq, |(_, rid)| rid);
                rids.push(rid);
                let deleted = v.op == Op::Delete;
                let current_row = if current.is_some() {
                    &update_current
                } else {
                    &insert_current
                };
                let facts = crate::types::encode_facts(&v.search_rows);
                tx.execute(
                    current_row,
                    &[&rid, &k.tenant, &k.rtype, &k.id, &version, &seq, &deleted, &facts],
                )
                .await
                .map_err(map_err)?;
                if current.is_some() {
                    tx.execute(&unindex, &[&k.tenant, &k.rtype, &k.id])
                        .await
                        .map_err(map_err)?;
                    for table in Table::ALL {
                        if matches!(table, Table::Token | Table::Date) {
                            continue;
                        }
                        let stmt = tx
                            .prepare_cached(&format!("DELETE FROM {} WHERE rid = $1", table.name()))
                            .await?;
                        tx.execute(&stmt, &[&rid]).await.map_err(map_err)?;
                    }
                    // The token and date rows say what the replaced index added to the tallies.
                    let tokens = tx
                        .prepare_cached("DELETE FROM search_token WHERE rid = $1 RETURNING pkey, system, code")
                        .await?;
                    let tokens: Vec<(i64, String, String)> = tx
                        .query(&tokens, &[&rid])
                        .await
                        .map_err(map_err)?
                        .iter()
                        .map(|r| (r.get(0), r.get(1), r.get(2)))
                        .collect();
                    let dates = tx
                        .prepare_cached("DELETE FROM search_date WHERE rid = $1 RETURNING pkey, lo, hi")
                        .await?;
                    let dates: Vec<(i64, i64, i64)> = tx
                        .query(&dates, &[&rid])
                        .await
                        .map_err(map_err)?
                        .iter()
                        .map(|r| (r.get(0), r.get(1), r.get(2)))
                        .collect();
                    removed.extend(crate::tally::removed(k, &tokens, &dates));
                }
                for tag in &v.identifier_tags {
                    tx.execute(&index, &[&k.tenant, &k.rtype, tag, &k.id])
                        .await
                        .map_err(map_err)?;
                }
            }
            rids
        };
        let mut rows: Vec<(&ResourceKey, i64, &[SearchRow])> = changes
            .versions
            .iter()
            .zip(&rids)
            .map(|(v, rid)| (&v.key, *rid, v.search_rows.as_slice()))
            .collect();
        rows.extend(reindex(&tx, &changes.reindex, &mut removed).await?);
        insert_search_rows(&tx, &rows).await?;
        write_tallies(&tx, &rows, removed).await?;
        if let Some(maker) = &changes.audit {
            audit::insert_made(&tx, std::slice::from_ref(maker)).await?;
        }
        tx.commit().await.map_err(map_err)?;
        drop(client);
        let written = rows.len();
        let since = self
            .tally_writes
            .fetch_add(written, std::sync::atomic::Ordering::Relaxed)
            + written;
        if since >= COMPACT_EVERY {
            self.tally_writes.store(0, std::sync::atomic::Ordering::Relaxed);
            // The change is committed whatever happens here: deltas not folded now are
            // still read by every count and folded next time.
            self.compact_tallies().await.ok();
        }
        Ok(())
    }

    async fn current(&self, key: &ResourceKey) -> Result<Option<StoredVersion>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM resources r JOIN resource_versions v ON v.seq = r.seq
             WHERE r.tenant = $1 AND r.rtype = $2 AND r.id = $3"
        );
        let stmt = client.prepare_cached(&sql).await?;
        Ok(client
            .query_opt(&stmt, &[&key.tenant, &key.rtype, &key.id])
            .await?
            .map(|r| version_from_row(&r)))
    }

    async fn facts(&self, key: &ResourceKey) -> Result<Option<crate::ResourceFacts>, StoreError> {
        let client = self.client().await?;
        let cpk = crate::param_key(&key.tenant, &key.rtype, crate::COMPARTMENT_PARAM);
        let spk = crate::param_key(&key.tenant, &key.rtype, crate::SECURITY_PARAM);
        // One round trip: the row (if live), then its compartment and label rows.
        let stmt = client
            .prepare_cached(
                "WITH r AS (SELECT rid FROM resources WHERE tenant = $1 AND rtype = $2 AND id = $3 AND NOT deleted)
                 SELECT 0, '', '' FROM r
                 UNION ALL SELECT 1, x.target_id, '' FROM search_reference x, r
                     WHERE x.rid = r.rid AND x.pkey = $4 AND x.target_type = 'Patient'
                 UNION ALL SELECT 2, t.system, t.code FROM search_token t, r WHERE t.rid = r.rid AND t.pkey = $5",
            )
            .await?;
        let rows = client
            .query(&stmt, &[&key.tenant, &key.rtype, &key.id, &cpk, &spk])
            .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut facts = crate::ResourceFacts::default();
        for row in rows {
            match row.get::<_, i32>(0) {
                1 => facts.patients.push(row.get(1)),
                2 => facts.labels.push((row.get(1), row.get(2))),
                _ => {}
            }
        }
        Ok(Some(facts))
    }

    async fn current_with_facts(
        &self,
        key: &ResourceKey,
    ) -> Result<Option<(StoredVersion, crate::ResourceFacts)>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {VERSION_COLUMNS}, r.facts FROM resources r JOIN resource_versions v ON v.seq = r.seq
             WHERE r.tenant = $1 AND r.rtype = $2 AND r.id = $3"
        );
        let stmt = client.prepare_cached(&sql).await?;
        let Some(row) = client.query_opt(&stmt, &[&key.tenant, &key.rtype, &key.id]).await? else {
            return Ok(None);
        };
        let v = version_from_row(&row);
        match row.get::<_, Option<String>>(10) {
            Some(facts) => Ok(Some((v, crate::types::decode_facts(&facts)))),
            // A row written before the facts column: its index rows say the same.
            None => {
                drop(client);
                Ok(Some((v, self.facts(key).await?.unwrap_or_default())))
            }
        }
    }

    async fn current_many(&self, tenant: &str, rtype: &str, ids: &[String]) -> Result<Vec<StoredVersion>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM resources r JOIN resource_versions v ON v.seq = r.seq
             WHERE r.tenant = $1 AND r.rtype = $2 AND r.id = ANY($3)"
        );
        let stmt = client.prepare_cached(&sql).await?;
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        Ok(client
            .query(&stmt, &[&tenant, &rtype, &ids])
            .await?
            .iter()
            .map(version_from_row)
            .collect())
    }

    async fn current_by_rid(&self, tenant: &str, rtype: &str, rids: &[i64]) -> Result<Vec<StoredVersion>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM resources r JOIN resource_versions v ON v.seq = r.seq
             WHERE r.rid = ANY($3) AND r.tenant = $1 AND r.rtype = $2"
        );
        let stmt = client.prepare_cached(&sql).await?;
        Ok(client
            .query(&stmt, &[&tenant, &rtype, &rids])
            .await?
            .iter()
            .map(version_from_row)
            .collect())
    }

    async fn version(&self, key: &ResourceKey, version: u64) -> Result<Option<StoredVersion>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM resources r JOIN resource_versions v ON v.rid = r.rid
             WHERE r.tenant = $1 AND r.rtype = $2 AND r.id = $3 AND v.version = $4"
        );
        let stmt = client.prepare_cached(&sql).await?;
        let version = version as i64;
        Ok(client
            .query_opt(&stmt, &[&key.tenant, &key.rtype, &key.id, &version])
            .await?
            .map(|r| version_from_row(&r)))
    }

    async fn history(&self, query: &HistoryQuery) -> Result<Vec<StoredVersion>, StoreError> {
        let client = self.client().await?;
        let (mut where_sql, mut args) = history_where(query);
        if let Some(before) = query.before_seq {
            args.push(Box::new(before));
            where_sql.push_str(&format!(" AND v.seq < ${}", args.len()));
        }
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM resource_versions v{where_sql} ORDER BY v.seq DESC LIMIT {}",
            query.limit
        );
        let refs: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref() as &(dyn ToSql + Sync)).collect();
        let rows = client.query(&sql, &refs).await?;
        Ok(rows.iter().map(version_from_row).collect())
    }

    async fn history_count(&self, query: &HistoryQuery) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let (where_sql, args) = history_where(query);
        let sql = format!("SELECT count(*) FROM resource_versions v{where_sql}");
        let refs: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref() as &(dyn ToSql + Sync)).collect();
        let n: i64 = client.query_one(&sql, &refs).await?.get(0);
        Ok(n as u64)
    }

    async fn find_by_identifier(&self, tenant: &str, rtype: &str, tag: &[u8]) -> Result<Vec<String>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT i.id FROM identifier_index i JOIN resources r
                   ON r.tenant = i.tenant AND r.rtype = i.rtype AND r.id = i.id
                 WHERE i.tenant = $1 AND i.rtype = $2 AND i.tag = $3 AND NOT r.deleted ORDER BY i.id",
            )
            .await?;
        let rows = client.query(&stmt, &[&tenant, &rtype, &tag]).await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
    async fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, StoreError> {
        let client = self.client().await?;
        let mut sql = Sql::new(Dialect::Postgres);
        let mut driver = Sql::driver(query);
        // An update-time range is measured first, as SQLite measures every range: listing a
        // wide one (all Claims since 2020) before sorting costs far more than walking the type
        // in row-id order, which the planner's generic plan would not see.
        if let Some(i) = driver
            && query.sort.is_empty()
            && Sql::on_update_time(query, i)
        {
            let mut probe = Sql::new(Dialect::Postgres);
            if probe.probe(query, i, crate::sql::DENSE_DRIVER) {
                let args = boxed(&probe.args);
                let stmt = client.prepare_cached(&probe.text).await?;
                let n: i64 = client.query_one(&stmt, &refs(&args)).await?.get(0);
                if n >= i64::from(crate::sql::DENSE_DRIVER) {
                    driver = None;
                }
            }
        }
        let driver = Sql::joined(query, driver);
        let types = sql.page(query, driver);
        let args = boxed(&sql.args);
        // A blind tag or a code drives with a plan made for its value (an unnamed statement):
        // their frequencies are skewed, and a generic plan judges a common name prefix or
        // code by the average and joins all its candidates before sorting. References (a
        // patient's compartment, say) are even enough for the cached statement's plan, which
        // spares `$everything` a planning per compartment type. A page that resumes after a
        // row id is planned for its bound too: a generic plan takes `rid > $n` for a third of
        // the rows and hashes everything past it (an export's Patient-level page of 5,000
        // took 200 ms so, 30 ms planned for the bound).
        let value_planned = query.after.is_some()
            || matches!(driver, Driver::Joined(i)
            if matches!(query.conds.get(i), Some(Cond::Blind { .. } | Cond::Token { .. })));
        let rows = if value_planned {
            client.query(sql.text.as_str(), &refs(&args)).await?
        } else {
            let stmt = client.prepare_cached(&sql.text).await?;
            client.query(&stmt, &refs(&args)).await?
        };
        let mut hits: Vec<SearchHit> = rows
            .iter()
            .map(|r| SearchHit {
                id: r.get(0),
                rid: r.get(1),
                sort: types
                    .iter()
                    .enumerate()
                    .map(|(i, t)| match t {
                        SortType::Int => SortValue::Int(r.get(i + 2)),
                        SortType::Real => SortValue::Real(r.get(i + 2)),
                        SortType::Text => SortValue::Text(r.get(i + 2)),
                    })
                    .collect(),
            })
            .collect();
        if query.backwards {
            hits.reverse();
        }
        Ok(hits)
    }

    async fn search_count(&self, query: &SearchQuery) -> Result<u64, StoreError> {
        let client = self.client().await?;
        if let Some(ask) = crate::tally::Ask::of(query)
            && let Some(n) = tally_count(&client, &ask).await?
        {
            return Ok(n);
        }
        let mut sql = Sql::new(Dialect::Postgres);
        sql.count(query, Sql::driver(query).map_or(Driver::Walk, Driver::List));
        let args = boxed(&sql.args);
        let stmt = client.prepare_cached(&sql.text).await?;
        let n: i64 = client.query_one(&stmt, &refs(&args)).await?.get(0);
        Ok(n as u64)
    }

    async fn referenced_types(
        &self,
        tenant: &str,
        patient: &str,
        compartment_types: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let client = self.client().await?;
        let mut sql = Sql::new(Dialect::Postgres);
        sql.referenced_types(tenant, patient, compartment_types);
        let args = boxed(&sql.args);
        let stmt = client.prepare_cached(&sql.text).await?;
        let rows = client.query(&stmt, &refs(&args)).await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn purge_claims(&self, before: i64) -> Result<u64, StoreError> {
        let client = self.client().await?;
        Ok(client
            .execute("DELETE FROM condition_claims WHERE created < $1", &[&before])
            .await?)
    }

    async fn tallies_complete(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .batch_execute(
                "INSERT INTO tally_state (complete) SELECT true WHERE NOT EXISTS (SELECT 1 FROM tally_state)",
            )
            .await?;
        Ok(())
    }
}

/// Every index row of a change set, one multi-row `INSERT … SELECT FROM UNNEST(…)` per
/// table instead of a round trip per row. `rids[i]` is the row id of `changes.versions[i]`.
/// Writes a change set whose every version creates a resource: none of them may exist (a
/// concurrent create of one of these ids loses on the unique key and is a conflict), their
/// row ids are drawn in one statement in the set's order, and versions, current rows and
/// identifier tags are each inserted in one statement. The row ids, in order.
async fn create_all(tx: &deadpool_postgres::Transaction<'_>, changes: &ChangeSet) -> Result<Vec<i64>, StoreError> {
    let vs = &changes.versions;
    let tenants: Vec<&str> = vs.iter().map(|v| v.key.tenant.as_str()).collect();
    let rtypes: Vec<&str> = vs.iter().map(|v| v.key.rtype.as_str()).collect();
    let ids: Vec<&str> = vs.iter().map(|v| v.key.id.as_str()).collect();
    let taken = tx
        .prepare_cached(
            "SELECT 1 FROM unnest($1::text[], $2::text[], $3::text[]) AS u(tenant, rtype, id)
             JOIN resources r ON r.tenant = u.tenant AND r.rtype = u.rtype AND r.id = u.id LIMIT 1",
        )
        .await?;
    if tx
        .query_opt(&taken, &[&tenants, &rtypes, &ids])
        .await
        .map_err(map_err)?
        .is_some()
    {
        return Err(StoreError::Conflict);
    }
    let draw = tx
        .prepare_cached(
            "SELECT nextval(pg_get_serial_sequence('resource_versions', 'seq')) AS seq
             FROM generate_series(1, $1::bigint) ORDER BY seq",
        )
        .await?;
    let seqs: Vec<i64> = tx
        .query(&draw, &[&(vs.len() as i64)])
        .await
        .map_err(map_err)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if seqs.len() != vs.len() {
        return Err(StoreError::backend("postgres", "row ids were not drawn"));
    }
    let versions: Vec<i64> = vs.iter().map(|v| v.version as i64).collect();
    let updated: Vec<i64> = vs.iter().map(|v| v.last_updated).collect();
    let ops: Vec<i16> = vs.iter().map(|v| v.op as i16).collect();
    let key_ids: Vec<i64> = vs.iter().map(|v| v.key_id).collect();
    let patients: Vec<&str> = vs.iter().map(|v| v.patient.as_str()).collect();
    let bodies: Vec<&[u8]> = vs.iter().map(|v| v.body.as_slice()).collect();
    let insert = tx
        .prepare_cached(
            "INSERT INTO resource_versions (seq, rid, tenant, rtype, id, version, last_updated, op, key_id, patient, body)
             SELECT seq, seq, tenant, rtype, id, version, last_updated, op, key_id, patient, body
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[],
                         $7::smallint[], $8::bigint[], $9::text[], $10::bytea[])
                  AS u(seq, tenant, rtype, id, version, last_updated, op, key_id, patient, body)",
        )
        .await?;
    tx.execute(
        &insert,
        &[
            &seqs, &tenants, &rtypes, &ids, &versions, &updated, &ops, &key_ids, &patients, &bodies,
        ],
    )
    .await
    .map_err(map_err)?;
    let deleted: Vec<bool> = vs.iter().map(|v| v.op == Op::Delete).collect();
    let facts: Vec<String> = vs.iter().map(|v| crate::types::encode_facts(&v.search_rows)).collect();
    let current = tx
        .prepare_cached(
            "INSERT INTO resources (rid, tenant, rtype, id, version, seq, deleted, facts)
             SELECT rid, tenant, rtype, id, version, rid, deleted, facts
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bool[], $7::text[])
                  AS u(rid, tenant, rtype, id, version, deleted, facts)",
        )
        .await?;
    tx.execute(&current, &[&seqs, &tenants, &rtypes, &ids, &versions, &deleted, &facts])
        .await
        .map_err(map_err)?;
    let (mut t_tenants, mut t_rtypes, mut t_tags, mut t_ids) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for v in vs {
        for tag in &v.identifier_tags {
            t_tenants.push(v.key.tenant.as_str());
            t_rtypes.push(v.key.rtype.as_str());
            t_tags.push(tag.as_slice());
            t_ids.push(v.key.id.as_str());
        }
    }
    if !t_tags.is_empty() {
        let index = tx
            .prepare_cached(
                "INSERT INTO identifier_index (tenant, rtype, tag, id)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[]) ON CONFLICT DO NOTHING",
            )
            .await?;
        tx.execute(&index, &[&t_tenants, &t_rtypes, &t_tags, &t_ids])
            .await
            .map_err(map_err)?;
    }
    Ok(seqs)
}

/// Replaces the index of the resources of `reindex` still at the version each names, a few
/// statements for all of them (tag by tag and row by row took ten round trips a resource):
/// returns their keys, row ids and rows for `insert_search_rows`.
async fn reindex<'a>(
    tx: &deadpool_postgres::Transaction<'_>,
    reindex: &'a [crate::Reindex],
    removed: &mut Vec<crate::tally::TallyRow>,
) -> Result<Vec<(&'a ResourceKey, i64, &'a [SearchRow])>, StoreError> {
    let mut out = Vec::new();
    if reindex.is_empty() {
        return Ok(out);
    }
    let live = tx
        .prepare_cached(
            "SELECT r.tenant, r.rtype, r.id, r.version, r.rid FROM resources r
             JOIN UNNEST($1::text[], $2::text[], $3::text[]) AS k(tenant, rtype, id)
               ON r.tenant = k.tenant AND r.rtype = k.rtype AND r.id = k.id
             WHERE NOT r.deleted ORDER BY r.rid FOR UPDATE OF r",
        )
        .await?;
    let tenants: Vec<&str> = reindex.iter().map(|r| r.key.tenant.as_str()).collect();
    let rtypes: Vec<&str> = reindex.iter().map(|r| r.key.rtype.as_str()).collect();
    let ids: Vec<&str> = reindex.iter().map(|r| r.key.id.as_str()).collect();
    // (tenant, type, id) → (current version, row id), for the live ones.
    let found: std::collections::HashMap<(String, String, String), (i64, i64)> = tx
        .query(&live, &[&tenants, &rtypes, &ids])
        .await
        .map_err(map_err)?
        .iter()
        .map(|row| ((row.get(0), row.get(1), row.get(2)), (row.get(3), row.get(4))))
        .collect();
    let (mut rids, mut facts, mut tag_keys, mut tags) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in reindex {
        let key = (r.key.tenant.clone(), r.key.rtype.clone(), r.key.id.clone());
        let Some(&(_, rid)) = found.get(&key).filter(|(version, _)| *version == r.version as i64) else {
            continue;
        };
        rids.push(rid);
        facts.push(crate::types::encode_facts(&r.search_rows));
        for tag in &r.identifier_tags {
            tag_keys.push(rid);
            tags.push(tag.clone());
        }
        out.push((&r.key, rid, r.search_rows.as_slice()));
    }
    if rids.is_empty() {
        return Ok(out);
    }
    let set_facts = tx
        .prepare_cached(
            "UPDATE resources r SET facts = u.facts FROM UNNEST($1::bigint[], $2::text[]) AS u(rid, facts)
             WHERE r.rid = u.rid",
        )
        .await?;
    tx.execute(&set_facts, &[&rids, &facts]).await.map_err(map_err)?;
    let untag = tx
        .prepare_cached(
            "DELETE FROM identifier_index i USING resources r
             WHERE r.rid = ANY($1) AND i.tenant = r.tenant AND i.rtype = r.rtype AND i.id = r.id",
        )
        .await?;
    tx.execute(&untag, &[&rids]).await.map_err(map_err)?;
    for table in Table::ALL {
        if matches!(table, Table::Token | Table::Date) {
            continue;
        }
        let stmt = tx
            .prepare_cached(&format!("DELETE FROM {} WHERE rid = ANY($1)", table.name()))
            .await?;
        tx.execute(&stmt, &[&rids]).await.map_err(map_err)?;
    }
    // The token and date rows say what the replaced indexes added to the tallies.
    let tokens = tx
        .prepare_cached("DELETE FROM search_token WHERE rid = ANY($1) RETURNING rid, pkey, system, code")
        .await?;
    let mut tokens_of: std::collections::HashMap<i64, Vec<(i64, String, String)>> = std::collections::HashMap::new();
    for r in tx.query(&tokens, &[&rids]).await.map_err(map_err)? {
        tokens_of
            .entry(r.get(0))
            .or_default()
            .push((r.get(1), r.get(2), r.get(3)));
    }
    let dates = tx
        .prepare_cached("DELETE FROM search_date WHERE rid = ANY($1) RETURNING rid, pkey, lo, hi")
        .await?;
    let mut dates_of: std::collections::HashMap<i64, Vec<(i64, i64, i64)>> = std::collections::HashMap::new();
    for r in tx.query(&dates, &[&rids]).await.map_err(map_err)? {
        dates_of
            .entry(r.get(0))
            .or_default()
            .push((r.get(1), r.get(2), r.get(3)));
    }
    for (key, rid, _) in &out {
        let tokens = tokens_of.remove(rid).unwrap_or_default();
        let dates = dates_of.remove(rid).unwrap_or_default();
        removed.extend(crate::tally::removed(key, &tokens, &dates));
    }
    let tag = tx
        .prepare_cached(
            "INSERT INTO identifier_index (tenant, rtype, tag, id)
             SELECT r.tenant, r.rtype, t.tag, r.id FROM UNNEST($1::bigint[], $2::bytea[]) AS t(rid, tag)
             JOIN resources r ON r.rid = t.rid
             ON CONFLICT DO NOTHING",
        )
        .await?;
    tx.execute(&tag, &[&tag_keys, &tags]).await.map_err(map_err)?;
    Ok(out)
}

/// Inserts the index rows of resources (key, row id, rows), a statement per table.
async fn insert_search_rows(
    tx: &deadpool_postgres::Transaction<'_>,
    resources: &[(&ResourceKey, i64, &[SearchRow])],
) -> Result<(), StoreError> {
    #[derive(Default)]
    struct Cols {
        pkey: Vec<i64>,
        rid: Vec<i64>,
        a: Vec<String>,
        b: Vec<String>,
        ints: (Vec<i64>, Vec<i64>),
        reals: Vec<f64>,
        /// A position's unit vector.
        unit: (Vec<f64>, Vec<f64>, Vec<f64>),
        blobs: Vec<Vec<u8>>,
    }
    let mut by_table: std::collections::HashMap<Table, Cols> = std::collections::HashMap::new();
    for (key, rid, rows) in resources {
        for row in rows.iter() {
            let c = by_table.entry(row.table()).or_default();
            c.pkey.push(crate::param_key(&key.tenant, &key.rtype, row.param()));
            c.rid.push(*rid);
            match row {
                SearchRow::Token { system, code, .. } => {
                    c.a.push(code.clone());
                    c.b.push(system.clone());
                }
                SearchRow::String { norm, exact, .. } => {
                    c.a.push(norm.clone());
                    c.b.push(exact.clone());
                }
                SearchRow::Blind { tag, .. } => c.blobs.push(tag.clone()),
                SearchRow::Reference {
                    target_type, target_id, ..
                } => {
                    c.a.push(target_id.clone());
                    c.b.push(target_type.clone());
                }
                SearchRow::Date { lo, hi, .. } => {
                    c.ints.0.push(*lo);
                    c.ints.1.push(*hi);
                }
                SearchRow::Number {
                    value, system, code, ..
                } => {
                    c.reals.push(*value);
                    c.a.push(code.clone());
                    c.b.push(system.clone());
                }
                SearchRow::Uri { uri, .. } => c.a.push(uri.clone()),
                SearchRow::Geo { lat, lon, .. } => {
                    let (ux, uy, uz) = crate::unit_vector(*lat, *lon);
                    c.reals.push(*lat);
                    c.unit.0.push(ux);
                    c.unit.1.push(uy);
                    c.unit.2.push(uz);
                }
            }
        }
    }
    for (table, c) in &by_table {
        let name = table.name();
        let keys = "$1::bigint[], $2::bigint[]";
        let (cols, arrays, extra): (&str, &str, Vec<&(dyn ToSql + Sync)>) = match table {
            Table::Token => ("code, system", "$3::text[], $4::text[]", vec![&c.a, &c.b]),
            Table::String => ("norm, exact", "$3::text[], $4::text[]", vec![&c.a, &c.b]),
            Table::Blind => ("tag", "$3::bytea[]", vec![&c.blobs]),
            Table::Reference => ("target_id, target_type", "$3::text[], $4::text[]", vec![&c.a, &c.b]),
            Table::Date => ("lo, hi", "$3::bigint[], $4::bigint[]", vec![&c.ints.0, &c.ints.1]),
            Table::Number => (
                "value, code, system",
                "$3::float8[], $4::text[], $5::text[]",
                vec![&c.reals, &c.a, &c.b],
            ),
            Table::Uri => ("uri", "$3::text[]", vec![&c.a]),
            Table::Geo => (
                "lat, ux, uy, uz",
                "$3::float8[], $4::float8[], $5::float8[], $6::float8[]",
                vec![&c.reals, &c.unit.0, &c.unit.1, &c.unit.2],
            ),
        };
        let sql = format!("INSERT INTO {name} (pkey, rid, {cols}) SELECT * FROM UNNEST({keys}, {arrays})");
        let mut args: Vec<&(dyn ToSql + Sync)> = vec![&c.pkey, &c.rid];
        args.extend(extra);
        let stmt = tx.prepare_cached(&sql).await?;
        tx.execute(&stmt, &args).await.map_err(map_err)?;
    }
    Ok(())
}

/// Appends the net change to the tallies of indexing `resources` (key, row id, index rows)
/// in place of the indexes that added `removed`, in one statement (no shared row is
/// locked: `compact_tallies` folds the deltas in later).
async fn write_tallies(
    tx: &deadpool_postgres::Transaction<'_>,
    resources: &[(&ResourceKey, i64, &[SearchRow])],
    removed: Vec<crate::tally::TallyRow>,
) -> Result<(), StoreError> {
    let added = resources
        .iter()
        .flat_map(|(key, _, rows)| crate::tally::rows(key, rows))
        .collect();
    let changes = crate::tally::net(added, removed);
    if changes.is_empty() {
        return Ok(());
    }
    let (mut pkey, mut code, mut system) = (Vec::new(), Vec::new(), Vec::new());
    let (mut kind, mut first, mut last, mut n) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (t, delta) in changes {
        pkey.push(t.pkey);
        code.push(t.code);
        system.push(t.system);
        kind.push(t.kind as i64);
        first.push(t.first_day);
        last.push(t.last_day);
        n.push(delta);
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO tally_deltas (pkey, code, system, kind, first_day, last_day, n)
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[])",
        )
        .await?;
    tx.execute(&stmt, &[&pkey, &code, &system, &kind, &first, &last, &n])
        .await
        .map_err(map_err)?;
    Ok(())
}

fn boxed(args: &[Arg]) -> Vec<Box<dyn ToSql + Sync + Send>> {
    args.iter()
        .map(|a| -> Box<dyn ToSql + Sync + Send> {
            match a {
                Arg::Text(t) => Box::new(t.clone()),
                Arg::Int(i) => Box::new(*i),
                Arg::Real(f) => Box::new(*f),
                Arg::Blob(b) => Box::new(b.clone()),
                Arg::TextList(list) => Box::new(list.clone()),
            }
        })
        .collect()
}

fn refs(args: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter().map(|a| a.as_ref() as &(dyn ToSql + Sync)).collect()
}

fn key_from_row(r: &Row) -> StoredKey {
    StoredKey {
        key_id: r.get(0),
        tenant: r.get(1),
        scope: r.get(2),
        kek_version: r.get::<_, i32>(3) as u32,
        wrapped: r.get(4),
    }
}

impl KeyStore for PgStore {
    async fn data_key(&self, tenant: &str, scope: &str) -> Result<Option<StoredKey>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT key_id, tenant, scope, kek_version, wrapped FROM data_keys WHERE tenant = $1 AND scope = $2",
            )
            .await?;
        Ok(client
            .query_opt(&stmt, &[&tenant, &scope])
            .await?
            .map(|r| key_from_row(&r)))
    }

    async fn data_key_by_id(&self, key_id: i64) -> Result<Option<StoredKey>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT key_id, tenant, scope, kek_version, wrapped FROM data_keys WHERE key_id = $1")
            .await?;
        Ok(client.query_opt(&stmt, &[&key_id]).await?.map(|r| key_from_row(&r)))
    }

    async fn insert_data_key(&self, key: NewKey) -> Result<StoredKey, StoreError> {
        let client = self.client().await?;
        let kek_version = key.kek_version as i32;
        client
            .execute(
                "INSERT INTO data_keys (tenant, scope, kek_version, wrapped, created) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (tenant, scope) DO NOTHING",
                &[&key.tenant, &key.scope, &kek_version, &key.wrapped, &key.created],
            )
            .await?;
        let row = client
            .query_one(
                "SELECT key_id, tenant, scope, kek_version, wrapped FROM data_keys WHERE tenant = $1 AND scope = $2",
                &[&key.tenant, &key.scope],
            )
            .await?;
        Ok(key_from_row(&row))
    }
}

impl TokenStore for PgStore {
    async fn insert_token(&self, hash: &[u8], label: &str, created: i64) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO api_tokens (hash, label, created) VALUES ($1, $2, $3)",
                &[&hash, &label, &created],
            )
            .await?;
        Ok(())
    }

    async fn active_tokens(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT hash FROM api_tokens WHERE NOT revoked", &[])
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn replace_tokens(
        &self,
        hash: &[u8],
        label: &str,
        created: i64,
        audit: Option<crate::AuditMaker>,
    ) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "INSERT INTO api_tokens (hash, label, created) VALUES ($1, $2, $3)",
            &[&hash, &label, &created],
        )
        .await?;
        let n = tx
            .execute(
                "UPDATE api_tokens SET revoked = true WHERE NOT revoked AND hash <> $1",
                &[&hash],
            )
            .await?;
        audit::append_if(&tx, true, &audit).await?;
        tx.commit().await?;
        Ok(n)
    }
}

/// The counts and the deltas not yet folded into them, as one source of signed counts.
const TALLY_SOURCE: &str = "(SELECT pkey, code, system, kind, first_day, last_day, n FROM tally_counts
     UNION ALL SELECT pkey, code, system, kind, first_day, last_day, n FROM tally_deltas)";

/// The count `ask` reads from the tallies, when they are complete and can answer it exactly.
async fn tally_count(client: &deadpool_postgres::Object, ask: &crate::tally::Ask) -> Result<Option<u64>, StoreError> {
    let complete = client
        .query_opt("SELECT 1 FROM tally_state LIMIT 1", &[])
        .await?
        .is_some();
    if !complete {
        return Ok(None);
    }
    let sql = ask.sql(Dialect::Postgres, TALLY_SOURCE);
    let args = boxed(&sql.args);
    let stmt = client.prepare_cached(&sql.text).await?;
    let groups: Vec<(String, i64, i64, i64)> = client
        .query(&stmt, &refs(&args))
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    Ok(ask.answer(&groups))
}
