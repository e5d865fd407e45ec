//! The embedded default backend: one SQLite file in WAL mode, `synchronous = FULL`, so an
//! acknowledged write survives `kill -9` and power loss.

mod accounts;
pub(crate) mod audit;
mod claims;
mod export;
mod oauth;
mod pool;
mod schema;

use crate::sql::{Arg, Dialect, Driver, SortType, Sql};
use crate::{
    ChangeSet, Expect, HistoryQuery, KeyStore, NewKey, Op, ResourceKey, ResourceStore, SearchHit, SearchQuery,
    SearchRow, SortValue, StoreError, StoredKey, StoredVersion, Table, TokenStore,
};
use pool::Pool;
use rusqlite::{Connection, OptionalExtension, Row, params};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// The SQLite store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    pool: Arc<Pool>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies pending migrations.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let readers = std::thread::available_parallelism().map(|n| n.get() * 2).unwrap_or(4);
        Ok(Self {
            pool: Pool::open(path, readers)?,
        })
    }
}

/// Ids per statement of `current_many` (SQLite allows 32,766 parameters; this keeps the
/// padded lists and their plans small).
const MANY_CHUNK: usize = 256;

const VERSION_COLUMNS: &str =
    "v.tenant, v.rtype, v.id, v.version, v.seq, v.last_updated, v.op, v.key_id, v.patient, v.body";

fn version_from_row(r: &Row<'_>) -> rusqlite::Result<StoredVersion> {
    let op: i64 = r.get(6)?;
    Ok(StoredVersion {
        key: ResourceKey {
            tenant: r.get(0)?,
            rtype: r.get(1)?,
            id: r.get(2)?,
        },
        version: r.get::<_, i64>(3)? as u64,
        seq: r.get(4)?,
        last_updated: r.get(5)?,
        op: Op::from_i64(op).unwrap_or(Op::Update),
        key_id: r.get(7)?,
        patient: r.get(8)?,
        body: r.get(9)?,
    })
}

/// What a version found before anything was written: the stored row (version, row id), or
/// that an earlier version of the same change set wrote its resource (look again).
enum Before {
    Stored(Option<(i64, i64)>),
    Repeat,
}

fn stored(conn: &Connection, key: &ResourceKey) -> Result<Option<(i64, i64)>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT version, rid FROM resources WHERE tenant = ?1 AND rtype = ?2 AND id = ?3")?
        .query_row(params![key.tenant, key.rtype, key.id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// Writes a change set. Every version's expectation is checked before anything is written,
/// so a conflict leaves nothing to undo: the writer runs this job without a savepoint
/// (`Pool::write_checked`).
fn apply_changes(conn: &Connection, changes: &ChangeSet) -> Result<(), StoreError> {
    let mut written: HashMap<&ResourceKey, u64> = HashMap::new();
    let mut before = Vec::with_capacity(changes.versions.len());
    for v in &changes.versions {
        let (have, found) = match written.get(&v.key) {
            Some(version) => (Some(*version as i64), Before::Repeat),
            None => {
                let current = stored(conn, &v.key)?;
                (current.map(|(version, _)| version), Before::Stored(current))
            }
        };
        let holds = match (v.expect, have) {
            (Expect::Absent, None) => true,
            (Expect::Version(want), Some(have)) => want as i64 == have,
            _ => false,
        };
        if !holds {
            return Err(StoreError::Conflict);
        }
        written.insert(&v.key, v.version);
        before.push(found);
    }
    claims::check(conn, changes)?;
    for (v, found) in changes.versions.iter().zip(before) {
        let current = match found {
            Before::Stored(current) => current,
            Before::Repeat => stored(conn, &v.key)?,
        };
        // The seq is chosen first so that a new resource's first version can carry it as its
        // row id (`rid`). Two statements, not `INSERT … SELECT`: a single-row insert needs no
        // statement journal (with one, the import spent half its time in savepoints).
        let seq: i64 = conn
            .prepare_cached(
                "SELECT 1 + MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'resource_versions'), 0),
                                COALESCE((SELECT MAX(seq) FROM resource_versions), 0))",
            )?
            .query_row([], |r| r.get(0))?;
        let rid = current.map_or(seq, |(_, rid)| rid);
        conn.prepare_cached(
            "INSERT INTO resource_versions (seq, rid, tenant, rtype, id, version, last_updated, op, key_id, patient, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            seq,
            rid,
            v.key.tenant,
            v.key.rtype,
            v.key.id,
            v.version as i64,
            v.last_updated,
            v.op as i64,
            v.key_id,
            v.patient,
            v.body
        ])?;
        // A resource keeps the row id its first version gave it; index rows point there. An
        // insert or an update by row id, not an upsert (`ON CONFLICT DO UPDATE`): the upsert
        // wrote through the statement journal (replacing it took the journal from 18 % to
        // 12 % of the import writer's samples, before the per-job savepoints went too).
        let facts = crate::types::encode_facts(&v.search_rows);
        if current.is_some() {
            conn.prepare_cached(
                "UPDATE resources SET version = ?2, seq = ?3, deleted = ?4, facts = ?5 WHERE rid = ?1",
            )?
            .execute(params![rid, v.version as i64, seq, v.op == Op::Delete, facts])?;
        } else {
            conn.prepare_cached(
                "INSERT INTO resources (rid, tenant, rtype, id, version, seq, deleted, facts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                rid,
                v.key.tenant,
                v.key.rtype,
                v.key.id,
                v.version as i64,
                seq,
                v.op == Op::Delete,
                facts
            ])?;
        }
        let removed = if current.is_some() {
            unindex(conn, &v.key, rid)?
        } else {
            Vec::new()
        };
        index(conn, &v.key, rid, &v.identifier_tags, &v.search_rows)?;
        tally(conn, &v.key, &v.search_rows, removed)?;
    }
    for r in &changes.reindex {
        let live: Option<(i64, i64)> = conn
            .prepare_cached(
                "SELECT version, rid FROM resources WHERE tenant = ?1 AND rtype = ?2 AND id = ?3 AND NOT deleted",
            )?
            .query_row(params![r.key.tenant, r.key.rtype, r.key.id], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()?;
        let Some((version, rid)) = live.filter(|(version, _)| *version == r.version as i64) else {
            continue;
        };
        conn.prepare_cached("UPDATE resources SET facts = ?2 WHERE rid = ?1 AND version = ?3")?
            .execute(params![rid, crate::types::encode_facts(&r.search_rows), version])?;
        let removed = unindex(conn, &r.key, rid)?;
        index(conn, &r.key, rid, &r.identifier_tags, &r.search_rows)?;
        tally(conn, &r.key, &r.search_rows, removed)?;
    }
    claims::record(conn, changes)?;
    if let Some(maker) = &changes.audit {
        audit::insert_made(conn, std::slice::from_ref(maker))?;
    }
    Ok(())
}

/// Removes a resource's identifier tags and index rows; returns what the removed index
/// added to the tallies.
fn unindex(conn: &Connection, key: &ResourceKey, rid: i64) -> Result<Vec<crate::tally::TallyRow>, StoreError> {
    conn.prepare_cached("DELETE FROM identifier_index WHERE tenant = ?1 AND rtype = ?2 AND id = ?3")?
        .execute(params![key.tenant, key.rtype, key.id])?;
    let tokens = conn
        .prepare_cached("DELETE FROM search_token WHERE rid = ?1 RETURNING pkey, system, code")?
        .query_map([rid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<Vec<(i64, String, String)>, _>>()?;
    let dates = conn
        .prepare_cached("DELETE FROM search_date WHERE rid = ?1 RETURNING pkey, lo, hi")?
        .query_map([rid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<Vec<(i64, i64, i64)>, _>>()?;
    for table in Table::ALL {
        if matches!(table, Table::Token | Table::Date) {
            continue;
        }
        conn.prepare_cached(&format!("DELETE FROM {} WHERE rid = ?1", table.name()))?
            .execute([rid])?;
    }
    Ok(crate::tally::removed(key, &tokens, &dates))
}

/// Moves the tallies from a replaced index (`removed`) to a version's `rows`.
fn tally(
    conn: &Connection,
    key: &ResourceKey,
    rows: &[SearchRow],
    removed: Vec<crate::tally::TallyRow>,
) -> Result<(), StoreError> {
    let changes = crate::tally::net(crate::tally::rows(key, rows), removed);
    if changes.is_empty() {
        return Ok(());
    }
    let mut add = conn.prepare_cached(
        "INSERT INTO tally_counts (pkey, code, system, kind, first_day, last_day, n) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (pkey, code, system, kind, first_day, last_day) DO UPDATE SET n = n + excluded.n",
    )?;
    for (t, n) in changes {
        add.execute(params![
            t.pkey,
            t.code,
            t.system,
            t.kind as i64,
            t.first_day,
            t.last_day,
            n
        ])?;
    }
    Ok(())
}

/// Writes a resource's identifier tags and index rows.
fn index(
    conn: &Connection,
    key: &ResourceKey,
    rid: i64,
    tags: &[Vec<u8>],
    rows: &[SearchRow],
) -> Result<(), StoreError> {
    let mut ins =
        conn.prepare_cached("INSERT OR IGNORE INTO identifier_index (tenant, rtype, tag, id) VALUES (?1, ?2, ?3, ?4)")?;
    for tag in tags {
        ins.execute(params![key.tenant, key.rtype, tag, key.id])?;
    }
    for row in rows {
        insert_search_row(conn, key, rid, row)?;
    }
    Ok(())
}

/// One index row, through a cached statement per table (the import hot path). A row that
/// repeats one already there (the same code twice in a resource) adds nothing.
fn insert_search_row(conn: &Connection, k: &ResourceKey, rid: i64, row: &SearchRow) -> Result<(), StoreError> {
    let pkey = crate::param_key(&k.tenant, &k.rtype, row.param());
    match row {
        SearchRow::Token { system, code, .. } => conn
            .prepare_cached("INSERT OR IGNORE INTO search_token (pkey, code, system, rid) VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![pkey, code, system, rid])?,
        SearchRow::String { norm, exact, .. } => conn
            .prepare_cached("INSERT OR IGNORE INTO search_string (pkey, norm, exact, rid) VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![pkey, norm, exact, rid])?,
        SearchRow::Blind { tag, .. } => conn
            .prepare_cached("INSERT OR IGNORE INTO search_blind (pkey, tag, rid) VALUES (?1, ?2, ?3)")?
            .execute(params![pkey, tag, rid])?,
        SearchRow::Reference {
            target_type, target_id, ..
        } => conn
            .prepare_cached(
                "INSERT OR IGNORE INTO search_reference (pkey, target_id, target_type, rid) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![pkey, target_id, target_type, rid])?,
        SearchRow::Date { lo, hi, .. } => conn
            .prepare_cached("INSERT OR IGNORE INTO search_date (pkey, lo, hi, rid) VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![pkey, lo, hi, rid])?,
        SearchRow::Number {
            value, system, code, ..
        } => conn
            .prepare_cached(
                "INSERT OR IGNORE INTO search_number (pkey, value, code, system, rid) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![pkey, value, code, system, rid])?,
        SearchRow::Uri { uri, .. } => conn
            .prepare_cached("INSERT OR IGNORE INTO search_uri (pkey, uri, rid) VALUES (?1, ?2, ?3)")?
            .execute(params![pkey, uri, rid])?,
        SearchRow::Geo { lat, lon, .. } => {
            let (ux, uy, uz) = crate::unit_vector(*lat, *lon);
            conn.prepare_cached(
                "INSERT OR IGNORE INTO search_geo (pkey, lat, ux, uy, uz, rid) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![pkey, lat, ux, uy, uz, rid])?
        }
    };
    Ok(())
}

fn to_value(a: &Arg) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match a {
        Arg::Text(t) => V::Text(t.clone()),
        Arg::Int(i) => V::Integer(*i),
        Arg::Real(f) => V::Real(*f),
        Arg::Blob(b) => V::Blob(b.clone()),
        Arg::TextList(list) => V::Text(json_array(list)),
    }
}

/// A JSON array of strings, for `json_each`.
fn json_array(list: &[String]) -> String {
    let mut out = String::from("[");
    for (i, s) in list.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push(']');
    out
}

use crate::sql::DENSE_DRIVER;

/// Which condition drives a page query. SQLite keeps no statistics here, so a code, string or
/// range driver is measured first (a bounded count) when the page is in row-id order: a
/// common code (heart rate among Observations, say) is better found by walking than by
/// listing.
fn page_driver(conn: &Connection, q: &SearchQuery) -> Result<Option<usize>, StoreError> {
    let Some(i) = Sql::driver(q) else { return Ok(None) };
    let mut probe = Sql::new(Dialect::Sqlite);
    if !q.sort.is_empty() || !probe.probe(q, i, DENSE_DRIVER) {
        return Ok(Some(i));
    }
    let n: i64 = conn
        .prepare_cached(&probe.text)?
        .query_row(rusqlite::params_from_iter(probe.args.iter().map(to_value)), |r| {
            r.get(0)
        })?;
    Ok(if n >= i64::from(DENSE_DRIVER) { None } else { Some(i) })
}

fn run_search(conn: &Connection, q: &SearchQuery) -> Result<Vec<SearchHit>, StoreError> {
    let driver = page_driver(conn, q)?;
    let mut sql = Sql::new(Dialect::Sqlite);
    let types = sql.page(q, driver.map_or(Driver::Walk, Driver::List));
    let mut stmt = conn.prepare_cached(&sql.text)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(sql.args.iter().map(to_value)), |r| {
        let mut sort = Vec::with_capacity(types.len());
        for (i, t) in types.iter().enumerate() {
            sort.push(match t {
                SortType::Int => SortValue::Int(r.get(i + 2)?),
                SortType::Real => SortValue::Real(r.get(i + 2)?),
                SortType::Text => SortValue::Text(r.get(i + 2)?),
            });
        }
        Ok(SearchHit {
            id: r.get(0)?,
            rid: r.get(1)?,
            sort,
        })
    })?;
    let mut hits = rows.collect::<Result<Vec<_>, _>>()?;
    if q.backwards {
        hits.reverse();
    }
    Ok(hits)
}

fn history_where(q: &HistoryQuery) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value as V;
    let mut sql = String::from(" WHERE v.tenant = ?");
    let mut args = vec![V::Text(q.tenant.clone())];
    if let Some(t) = &q.rtype {
        sql.push_str(" AND v.rtype = ?");
        args.push(V::Text(t.clone()));
    }
    match (&q.rtype, &q.id) {
        (Some(t), Some(id)) => {
            // A resource's versions are found by its row id (the `(rid, version)` index).
            sql.push_str(
                " AND v.rid = (SELECT r.rid FROM resources r WHERE r.tenant = ? AND r.rtype = ? AND r.id = ?)",
            );
            args.extend([V::Text(q.tenant.clone()), V::Text(t.clone()), V::Text(id.clone())]);
        }
        (None, Some(id)) => {
            sql.push_str(" AND v.id = ?");
            args.push(V::Text(id.clone()));
        }
        _ => {}
    }
    if let Some(since) = q.since {
        sql.push_str(" AND v.last_updated >= ?");
        args.push(V::Integer(since));
    }
    if q.patients.is_some() {
        // Limited to some patients but no type to find their compartment by: nothing.
        let Some((pkey, patients)) = crate::types::history_patients(q) else {
            sql.push_str(" AND 0");
            return (sql, args);
        };
        let marks = vec!["?"; patients.len()].join(", ");
        sql.push_str(&format!(
            " AND v.rid IN (SELECT rid FROM search_reference WHERE pkey = ? AND target_type = 'Patient' AND target_id IN ({marks}))"
        ));
        args.push(V::Integer(pkey));
        args.extend(patients.iter().map(|p| V::Text(p.clone())));
    }
    (sql, args)
}

impl ResourceStore for SqliteStore {
    async fn apply(&self, changes: ChangeSet) -> Result<(), StoreError> {
        self.pool.write_checked(move |conn| apply_changes(conn, &changes)).await
    }

    async fn current(&self, key: &ResourceKey) -> Result<Option<StoredVersion>, StoreError> {
        let key = key.clone();
        self.pool
            .read(move |conn| {
                let sql = format!(
                    "SELECT {VERSION_COLUMNS} FROM resources r JOIN resource_versions v ON v.seq = r.seq
                     WHERE r.tenant = ?1 AND r.rtype = ?2 AND r.id = ?3"
                );
                Ok(conn
                    .prepare_cached(&sql)?
                    .query_row(params![key.tenant, key.rtype, key.id], version_from_row)
                    .optional()?)
            })
            .await
    }

    async fn facts(&self, key: &ResourceKey) -> Result<Option<crate::ResourceFacts>, StoreError> {
        let key = key.clone();
        self.pool
            .read(move |conn| {
                let rid: Option<i64> = conn
                    .prepare_cached(
                        "SELECT rid FROM resources WHERE tenant = ?1 AND rtype = ?2 AND id = ?3 AND deleted = 0",
                    )?
                    .query_row(params![key.tenant, key.rtype, key.id], |r| r.get(0))
                    .optional()?;
                let Some(rid) = rid else { return Ok(None) };
                let cpk = crate::param_key(&key.tenant, &key.rtype, crate::COMPARTMENT_PARAM);
                let spk = crate::param_key(&key.tenant, &key.rtype, crate::SECURITY_PARAM);
                let mut facts = crate::ResourceFacts::default();
                let mut stmt = conn.prepare_cached(
                    "SELECT target_id FROM search_reference WHERE rid = ?1 AND pkey = ?2 AND target_type = 'Patient'",
                )?;
                for p in stmt.query_map(params![rid, cpk], |r| r.get(0))? {
                    facts.patients.push(p?);
                }
                let mut stmt =
                    conn.prepare_cached("SELECT system, code FROM search_token WHERE rid = ?1 AND pkey = ?2")?;
                for l in stmt.query_map(params![rid, spk], |r| Ok((r.get(0)?, r.get(1)?)))? {
                    facts.labels.push(l?);
                }
                Ok(Some(facts))
            })
            .await
    }

    async fn current_with_facts(
        &self,
        key: &ResourceKey,
    ) -> Result<Option<(StoredVersion, crate::ResourceFacts)>, StoreError> {
        let k = key.clone();
        let found = self
            .pool
            .read(move |conn| {
                let sql = format!(
                    "SELECT {VERSION_COLUMNS}, r.facts FROM resources r JOIN resource_versions v ON v.seq = r.seq
                     WHERE r.tenant = ?1 AND r.rtype = ?2 AND r.id = ?3"
                );
                Ok(conn
                    .prepare_cached(&sql)?
                    .query_row(params![k.tenant, k.rtype, k.id], |r| {
                        Ok((version_from_row(r)?, r.get::<_, Option<String>>(10)?))
                    })
                    .optional()?)
            })
            .await?;
        match found {
            None => Ok(None),
            Some((v, Some(facts))) => Ok(Some((v, crate::types::decode_facts(&facts)))),
            // A row written before the facts column: its index rows say the same.
            Some((v, None)) => Ok(Some((v, self.facts(key).await?.unwrap_or_default()))),
        }
    }

    async fn current_many(&self, tenant: &str, rtype: &str, ids: &[String]) -> Result<Vec<StoredVersion>, StoreError> {
        let (tenant, rtype, ids) = (tenant.to_owned(), rtype.to_owned(), ids.to_vec());
        self.pool
            .read(move |conn| {
                let mut out = Vec::with_capacity(ids.len());
                for chunk in ids.chunks(MANY_CHUNK) {
                    // Lists are padded to a power of two (repeating the last id) so a handful
                    // of statement texts serve every length from the statement cache.
                    let width = chunk.len().next_power_of_two();
                    let marks = vec!["?"; width].join(", ");
                    let sql = format!(
                        "SELECT {VERSION_COLUMNS} FROM resources r JOIN resource_versions v ON v.seq = r.seq
                         WHERE r.tenant = ? AND r.rtype = ? AND r.id IN ({marks})"
                    );
                    let mut args: Vec<&str> = vec![&tenant, &rtype];
                    args.extend(chunk.iter().map(String::as_str));
                    let last = chunk.last().map_or("", String::as_str);
                    args.resize(width + 2, last);
                    let mut stmt = conn.prepare_cached(&sql)?;
                    let rows = stmt.query_map(rusqlite::params_from_iter(args), version_from_row)?;
                    for row in rows {
                        out.push(row?);
                    }
                }
                Ok(out)
            })
            .await
    }

    async fn current_by_rid(&self, tenant: &str, rtype: &str, rids: &[i64]) -> Result<Vec<StoredVersion>, StoreError> {
        let (tenant, rtype, rids) = (tenant.to_owned(), rtype.to_owned(), rids.to_vec());
        self.pool
            .read(move |conn| {
                let mut out = Vec::with_capacity(rids.len());
                for chunk in rids.chunks(MANY_CHUNK) {
                    // Padded to a power of two, as in `current_many`.
                    let width = chunk.len().next_power_of_two();
                    let marks = vec!["?"; width].join(", ");
                    let sql = format!(
                        "SELECT {VERSION_COLUMNS} FROM resources r JOIN resource_versions v ON v.seq = r.seq
                         WHERE r.rid IN ({marks}) AND r.tenant = ? AND r.rtype = ?"
                    );
                    let mut args: Vec<rusqlite::types::Value> =
                        chunk.iter().map(|r| rusqlite::types::Value::Integer(*r)).collect();
                    let last = chunk.last().copied().unwrap_or_default();
                    args.resize(width, rusqlite::types::Value::Integer(last));
                    args.push(rusqlite::types::Value::Text(tenant.clone()));
                    args.push(rusqlite::types::Value::Text(rtype.clone()));
                    let mut stmt = conn.prepare_cached(&sql)?;
                    let rows = stmt.query_map(rusqlite::params_from_iter(args), version_from_row)?;
                    for row in rows {
                        out.push(row?);
                    }
                }
                Ok(out)
            })
            .await
    }

    async fn version(&self, key: &ResourceKey, version: u64) -> Result<Option<StoredVersion>, StoreError> {
        let key = key.clone();
        self.pool
            .read(move |conn| {
                let sql = format!(
                    "SELECT {VERSION_COLUMNS} FROM resources r JOIN resource_versions v ON v.rid = r.rid
                     WHERE r.tenant = ?1 AND r.rtype = ?2 AND r.id = ?3 AND v.version = ?4"
                );
                Ok(conn
                    .prepare_cached(&sql)?
                    .query_row(params![key.tenant, key.rtype, key.id, version as i64], version_from_row)
                    .optional()?)
            })
            .await
    }

    async fn history(&self, query: &HistoryQuery) -> Result<Vec<StoredVersion>, StoreError> {
        let q = query.clone();
        self.pool
            .read(move |conn| {
                let (mut where_sql, mut args) = history_where(&q);
                if let Some(before) = q.before_seq {
                    where_sql.push_str(" AND v.seq < ?");
                    args.push(rusqlite::types::Value::Integer(before));
                }
                let sql = format!(
                    "SELECT {VERSION_COLUMNS} FROM resource_versions v{where_sql} ORDER BY v.seq DESC LIMIT {}",
                    q.limit
                );
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(rusqlite::params_from_iter(args), version_from_row)?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    async fn history_count(&self, query: &HistoryQuery) -> Result<u64, StoreError> {
        let q = query.clone();
        self.pool
            .read(move |conn| {
                let (where_sql, args) = history_where(&q);
                let sql = format!("SELECT count(*) FROM resource_versions v{where_sql}");
                let n: i64 = conn
                    .prepare_cached(&sql)?
                    .query_row(rusqlite::params_from_iter(args), |r| r.get(0))?;
                Ok(n as u64)
            })
            .await
    }

    async fn find_by_identifier(&self, tenant: &str, rtype: &str, tag: &[u8]) -> Result<Vec<String>, StoreError> {
        let (tenant, rtype, tag) = (tenant.to_owned(), rtype.to_owned(), tag.to_vec());
        self.pool
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT i.id FROM identifier_index i JOIN resources r
                       ON r.tenant = i.tenant AND r.rtype = i.rtype AND r.id = i.id
                     WHERE i.tenant = ?1 AND i.rtype = ?2 AND i.tag = ?3 AND r.deleted = 0 ORDER BY i.id",
                )?;
                let rows = stmt.query_map(params![tenant, rtype, tag], |r| r.get(0))?;
                Ok(rows.collect::<Result<Vec<String>, _>>()?)
            })
            .await
    }
    async fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, StoreError> {
        self.search_impl(query).await
    }

    async fn search_count(&self, query: &SearchQuery) -> Result<u64, StoreError> {
        self.search_count_impl(query).await
    }

    async fn referenced_types(
        &self,
        tenant: &str,
        patient: &str,
        compartment_types: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let mut sql = Sql::new(Dialect::Sqlite);
        sql.referenced_types(tenant, patient, compartment_types);
        self.pool
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(&sql.text)?;
                let rows = stmt.query_map(rusqlite::params_from_iter(sql.args.iter().map(to_value)), |r| r.get(0))?;
                Ok(rows.collect::<Result<Vec<String>, _>>()?)
            })
            .await
    }

    async fn purge_claims(&self, before: i64) -> Result<u64, StoreError> {
        self.pool.write(move |conn| claims::purge(conn, before)).await
    }

    async fn tallies_complete(&self) -> Result<(), StoreError> {
        self.pool
            .write(|conn| {
                conn.execute_batch(
                    "INSERT INTO tally_state (complete) SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM tally_state)",
                )?;
                Ok(())
            })
            .await
    }
}

/// The count `ask` reads from the tallies, when they are complete and can answer it exactly.
fn tally_count(conn: &Connection, ask: &crate::tally::Ask) -> Result<Option<u64>, StoreError> {
    let complete: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM tally_state)")?
        .query_row([], |r| r.get(0))?;
    if !complete {
        return Ok(None);
    }
    let sql = ask.sql(Dialect::Sqlite, "tally_counts");
    let mut stmt = conn.prepare_cached(&sql.text)?;
    let groups = stmt
        .query_map(rusqlite::params_from_iter(sql.args.iter().map(to_value)), |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<Result<Vec<(String, i64, i64, i64)>, _>>()?;
    Ok(ask.answer(&groups))
}

fn key_from_row(r: &Row<'_>) -> rusqlite::Result<StoredKey> {
    Ok(StoredKey {
        key_id: r.get(0)?,
        tenant: r.get(1)?,
        scope: r.get(2)?,
        kek_version: r.get::<_, i64>(3)? as u32,
        wrapped: r.get(4)?,
    })
}

impl SqliteStore {
    async fn search_impl(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, StoreError> {
        let q = query.clone();
        self.pool.read(move |conn| run_search(conn, &q)).await
    }

    async fn search_count_impl(&self, query: &SearchQuery) -> Result<u64, StoreError> {
        let q = query.clone();
        self.pool
            .read(move |conn| {
                if let Some(ask) = crate::tally::Ask::of(&q)
                    && let Some(n) = tally_count(conn, &ask)?
                {
                    return Ok(n);
                }
                let mut sql = Sql::new(Dialect::Sqlite);
                sql.count(&q, Sql::driver(&q).map_or(Driver::Walk, Driver::List));
                let n: i64 = conn
                    .prepare_cached(&sql.text)?
                    .query_row(rusqlite::params_from_iter(sql.args.iter().map(to_value)), |r| r.get(0))?;
                Ok(n as u64)
            })
            .await
    }
}

impl KeyStore for SqliteStore {
    async fn data_key(&self, tenant: &str, scope: &str) -> Result<Option<StoredKey>, StoreError> {
        let (tenant, scope) = (tenant.to_owned(), scope.to_owned());
        self.pool
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT key_id, tenant, scope, kek_version, wrapped FROM data_keys WHERE tenant = ?1 AND scope = ?2",
                    )?
                    .query_row(params![tenant, scope], key_from_row)
                    .optional()?)
            })
            .await
    }

    async fn data_key_by_id(&self, key_id: i64) -> Result<Option<StoredKey>, StoreError> {
        self.pool
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT key_id, tenant, scope, kek_version, wrapped FROM data_keys WHERE key_id = ?1",
                    )?
                    .query_row(params![key_id], key_from_row)
                    .optional()?)
            })
            .await
    }

    async fn insert_data_key(&self, key: NewKey) -> Result<StoredKey, StoreError> {
        self.pool
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO data_keys (tenant, scope, kek_version, wrapped, created) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (tenant, scope) DO NOTHING",
                )?
                .execute(params![key.tenant, key.scope, i64::from(key.kek_version), key.wrapped, key.created])?;
                Ok(conn
                    .prepare_cached(
                        "SELECT key_id, tenant, scope, kek_version, wrapped FROM data_keys WHERE tenant = ?1 AND scope = ?2",
                    )?
                    .query_row(params![key.tenant, key.scope], key_from_row)?)
            })
            .await
    }
}

impl TokenStore for SqliteStore {
    async fn insert_token(&self, hash: &[u8], label: &str, created: i64) -> Result<(), StoreError> {
        let (hash, label) = (hash.to_vec(), label.to_owned());
        self.pool
            .write(move |conn| {
                conn.execute(
                    "INSERT INTO api_tokens (hash, label, created) VALUES (?1, ?2, ?3)",
                    params![hash, label, created],
                )?;
                Ok(())
            })
            .await
    }

    async fn active_tokens(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.pool
            .read(move |conn| {
                let mut stmt = conn.prepare_cached("SELECT hash FROM api_tokens WHERE revoked = 0")?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                Ok(rows.collect::<Result<Vec<Vec<u8>>, _>>()?)
            })
            .await
    }

    async fn replace_tokens(
        &self,
        hash: &[u8],
        label: &str,
        created: i64,
        audit: Option<crate::AuditMaker>,
    ) -> Result<u64, StoreError> {
        let (hash, label) = (hash.to_vec(), label.to_owned());
        self.pool
            .write(move |conn| {
                conn.execute(
                    "INSERT INTO api_tokens (hash, label, created) VALUES (?1, ?2, ?3)",
                    params![hash, label, created],
                )?;
                let n = conn.execute(
                    "UPDATE api_tokens SET revoked = 1 WHERE revoked = 0 AND hash <> ?1",
                    params![hash],
                )?;
                audit::append_if(conn, true, &audit)?;
                Ok(n as u64)
            })
            .await
    }
}
