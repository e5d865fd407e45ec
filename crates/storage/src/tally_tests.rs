//! Tallies against the walk they replace, on both backends: every count of a tallied shape
//! (each code with and without its system, each prefix, day-aligned bounds and one that is
//! not) must equal the same search counted from the index rows, through creates, updates,
//! deletions and a reindex; a tampered count shows the tally is what answered; an incomplete
//! tally is not used.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::*;
use carevault_domain::search::tally::DAY_MS;

/// 2005-01-01, as a day number.
const BASE: i64 = 12_784;

const CODES: [(&str, &str); 4] = [
    ("http://loinc.org", "8867-4"),
    ("http://loinc.org", "8480-6"),
    ("http://snomed.info/sct", "8480-6"),
    ("", "local-1"),
];

/// A small deterministic generator (xorshift), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn key(id: &str) -> ResourceKey {
    ResourceKey {
        tenant: "default".into(),
        rtype: "Observation".into(),
        id: id.into(),
    }
}

fn code_row(param: &str, (system, code): (&str, &str)) -> SearchRow {
    SearchRow::Token {
        param: param.into(),
        system: system.into(),
        code: code.into(),
    }
}

fn date_row(lo: i64, hi: i64) -> SearchRow {
    SearchRow::Date {
        param: "date".into(),
        lo,
        hi,
    }
}

/// An observation's index rows: one or two codes (sometimes the same one twice), a
/// category, and a date of one of several shapes (an instant, a whole day, a period over
/// days, a month) or none.
fn rows(rng: &mut Rng) -> Vec<SearchRow> {
    let mut out = vec![code_row("code", CODES[rng.below(4) as usize])];
    if rng.below(4) == 0 {
        out.push(code_row("code", CODES[rng.below(4) as usize]));
    }
    out.push(code_row(
        "category",
        (
            "http://hl7.org/cat",
            ["vital-signs", "laboratory"][rng.below(2) as usize],
        ),
    ));
    let day = (BASE - 20 + rng.below(60) as i64) * DAY_MS;
    match rng.below(6) {
        0 => {}
        1 => out.push(date_row(day, day + DAY_MS)),
        2 => {
            let lo = day + rng.below(86_400) as i64 * 1000;
            out.push(date_row(lo, lo + 1000));
        }
        3 => {
            let lo = day + rng.below(86_400) as i64 * 1000;
            out.push(date_row(lo, lo + (1 + rng.below(5) as i64) * DAY_MS));
        }
        4 => out.push(date_row(day, day + 30 * DAY_MS)),
        _ => out.push(date_row(day - 40 * DAY_MS, day + 3_600_000)),
    }
    out
}

fn version(id: &str, v: u64, op: Op, search_rows: Vec<SearchRow>) -> NewVersion {
    NewVersion {
        key: key(id),
        version: v,
        expect: if v == 1 { Expect::Absent } else { Expect::Version(v - 1) },
        last_updated: 1000 * v as i64,
        op,
        key_id: 1,
        patient: "p".into(),
        body: if op == Op::Delete { vec![] } else { b"sealed".to_vec() },
        identifier_tags: vec![],
        search_rows,
    }
}

fn query(conds: Vec<Cond>) -> SearchQuery {
    SearchQuery {
        tenant: "default".into(),
        rtype: "Observation".into(),
        conds,
        sort: vec![],
        after: None,
        backwards: false,
        limit: 10,
    }
}

/// Every count to check: the query and the same search in a form no tally answers (the
/// code as a one-item OR-list), which is counted from the index rows.
fn asks() -> Vec<(SearchQuery, SearchQuery)> {
    let prefixes = [
        Prefix::Eq,
        Prefix::Gt,
        Prefix::Lt,
        Prefix::Ge,
        Prefix::Le,
        Prefix::Sa,
        Prefix::Eb,
        Prefix::Ap,
    ];
    let mut bounds: Vec<(i64, i64)> = (-24..44)
        .step_by(4)
        .map(|d| ((BASE + d) * DAY_MS, (BASE + d + 1) * DAY_MS))
        .collect();
    bounds.push(((BASE - 10) * DAY_MS, (BASE + 20) * DAY_MS));
    // A bound with a time of day: no tally answers it (the walk does).
    bounds.push((BASE * DAY_MS + 3_600_000, BASE * DAY_MS + 3_601_000));
    let mut out = Vec::new();
    let mut tokens: Vec<(&str, Option<&str>, &str)> = CODES.iter().map(|(s, c)| ("code", Some(*s), *c)).collect();
    tokens.extend([
        ("code", None, "8867-4"),
        ("code", None, "8480-6"),
        ("code", None, "local-1"),
    ]);
    tokens.extend([
        ("category", None, "vital-signs"),
        ("category", Some("http://hl7.org/cat"), "laboratory"),
    ]);
    for (param, system, code) in tokens {
        let token = Cond::Token {
            param: param.into(),
            system: system.map(str::to_owned),
            code: Some(code.into()),
        };
        let slow = Cond::Any(vec![token.clone()]);
        out.push((query(vec![token.clone()]), query(vec![slow.clone()])));
        for prefix in prefixes {
            for &(lo, hi) in &bounds {
                let date = Cond::Date {
                    param: "date".into(),
                    prefix,
                    lo,
                    hi,
                };
                out.push((
                    query(vec![token.clone(), date.clone()]),
                    query(vec![date, slow.clone()]),
                ));
            }
        }
    }
    out
}

/// Raw access to the store's database, to tamper with a count.
enum Raw {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl Raw {
    async fn exec(&self, sql: &str) {
        match self {
            Raw::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
                conn.execute_batch(sql).unwrap();
            }
            Raw::Postgres(url) => {
                let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
                let task = tokio::spawn(conn);
                client.batch_execute(sql).await.unwrap();
                drop(client);
                task.await.unwrap().unwrap();
            }
        }
    }

    /// Adds `n` heart-rate observations dated `BASE` to the counts alone.
    async fn skew(&self, n: i64) {
        let pkey = param_key("default", "Observation", "code@date");
        let table = match self {
            Raw::Sqlite(_) => "tally_counts",
            Raw::Postgres(_) => "tally_deltas",
        };
        let conflict = match self {
            Raw::Sqlite(_) => " ON CONFLICT DO UPDATE SET n = n + excluded.n",
            Raw::Postgres(_) => "",
        };
        self.exec(&format!(
            "INSERT INTO {table} (pkey, code, system, kind, first_day, last_day, n)
             VALUES ({pkey}, '8867-4', 'http://loinc.org', 0, {BASE}, {BASE}, {n}){conflict}"
        ))
        .await;
    }
}

async fn check_all<S: Store>(s: &S, when: &str) -> usize {
    let mut answered = 0;
    for (fast, slow) in asks() {
        let want = s.search_count(&slow).await.unwrap();
        assert_eq!(s.search_count(&fast).await.unwrap(), want, "{when}: {:?}", fast.conds);
        answered += usize::from(crate::tally::Ask::of(&fast).is_some());
    }
    answered
}

/// The heart-rate count since `BASE`, and what the walk says it is.
async fn heart_rates<S: Store>(s: &S) -> (u64, u64) {
    let (fast, slow) = asks()
        .into_iter()
        .find(|(f, _)| {
            matches!(f.conds.as_slice(), [Cond::Token { system: Some(sys), code: Some(c), .. }, Cond::Date { prefix: Prefix::Ge, lo, .. }]
                if sys == "http://loinc.org" && c == "8867-4" && *lo == BASE * DAY_MS)
        })
        .unwrap();
    (
        s.search_count(&fast).await.unwrap(),
        s.search_count(&slow).await.unwrap(),
    )
}

async fn tally_suite<S: Store>(s: S, raw: Raw, compact: impl AsyncFn(&S)) {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let n = 120;
    for i in 0..n {
        let changes = ChangeSet {
            versions: vec![version(&format!("o{i}"), 1, Op::Create, rows(&mut rng))],
            ..ChangeSet::default()
        };
        s.apply(changes).await.unwrap();
    }
    // One observation with two dates: its code is counted by the walk from now on.
    let mut two = vec![code_row("code", CODES[3])];
    two.extend([
        date_row(BASE * DAY_MS, (BASE + 1) * DAY_MS),
        date_row((BASE + 5) * DAY_MS, (BASE + 6) * DAY_MS),
    ]);
    s.apply(ChangeSet {
        versions: vec![version("two-dates", 1, Op::Create, two)],
        ..ChangeSet::default()
    })
    .await
    .unwrap();
    let answered = check_all(&s, "created").await;
    assert!(answered > 500, "only {answered} asks had a tallied shape");

    // The tally is what answers: skewing its count moves the answer.
    raw.skew(1000).await;
    let (fast, slow) = heart_rates(&s).await;
    assert_eq!(fast, slow + 1000, "a tallied count reads the tally");
    // An incomplete tally (a store upgraded with resources in it) is not read until a
    // reindex completes it.
    raw.exec("DELETE FROM tally_state").await;
    let (fast, slow) = heart_rates(&s).await;
    assert_eq!(fast, slow, "an incomplete tally is not read");
    s.tallies_complete().await.unwrap();
    let (fast, slow) = heart_rates(&s).await;
    assert_eq!(fast, slow + 1000, "a completed tally is read again");
    raw.skew(-1000).await;

    // Updates (new codes and dates), deletions, and a reindex that changes the rows.
    for i in (0..n).step_by(3) {
        s.apply(ChangeSet {
            versions: vec![version(&format!("o{i}"), 2, Op::Update, rows(&mut rng))],
            ..ChangeSet::default()
        })
        .await
        .unwrap();
    }
    compact(&s).await;
    for i in (1..n).step_by(5) {
        s.apply(ChangeSet {
            versions: vec![version(
                &format!("o{i}"),
                if i % 3 == 0 { 3 } else { 2 },
                Op::Delete,
                vec![],
            )],
            ..ChangeSet::default()
        })
        .await
        .unwrap();
    }
    let reindex = (2..n)
        .step_by(7)
        .filter(|i| i % 5 != 1)
        .map(|i| Reindex {
            key: key(&format!("o{i}")),
            version: if i % 3 == 0 { 2 } else { 1 },
            identifier_tags: vec![],
            search_rows: rows(&mut rng),
        })
        .collect();
    s.apply(ChangeSet {
        reindex,
        ..ChangeSet::default()
    })
    .await
    .unwrap();
    check_all(&s, "after updates, deletions and a reindex").await;
    compact(&s).await;
    check_all(&s, "folded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_tallies_count_like_the_walk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let store = sqlite::SqliteStore::open(&path).unwrap();
    tally_suite(store, Raw::Sqlite(path), async |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tallies_count_like_the_walk() {
    let Ok(base) = std::env::var("CAREVAULT_TEST_POSTGRES_URL") else {
        eprintln!("NOT RUN: postgres_tallies_count_like_the_walk needs CAREVAULT_TEST_POSTGRES_URL (.ci/run sets it)");
        return;
    };
    let url = crate::conformance::fresh_pg_schema(&base).await;
    let store = postgres::PgStore::connect(&url, 8).await.unwrap();
    tally_suite(store, Raw::Postgres(url), async |s: &postgres::PgStore| {
        s.compact_tallies().await.unwrap();
    })
    .await;
}
