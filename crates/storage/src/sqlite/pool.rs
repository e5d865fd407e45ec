//! One writer thread with group commit, a checkpoint thread, and a small pool of reader
//! connections.
//!
//! Writes are closures queued to the writer thread. It takes every job waiting, runs them in
//! one transaction, commits once (one fsync for the group), and only then answers each job.
//!
//! A job that fails must leave nothing behind, and a savepoint per job (roll back to it on
//! failure) is not free: every page the job changes is first copied into the statement
//! journal, which cost a bulk import a quarter of the writer's time. So a job runs bare when
//! nothing before it in the transaction could be lost (the first), or when it promises to
//! fail only before it changes anything (`write_checked`: resource change sets, which check
//! every version first, and audit appends). Whether a bare job that failed changed anything
//! is read from the connection's change counter: if it did (a backend error broke the
//! promise), the whole transaction is rolled back, the jobs already in it are answered with
//! an error, and the rest of the group begins again. Every other job runs in a savepoint of
//! its own.

use crate::StoreError;
use rusqlite::Connection;
use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

type Finish = Box<dyn FnOnce(Option<String>) + Send>;
type Run = Box<dyn FnOnce(Option<&Connection>) -> (bool, Finish) + Send>;

/// A queued write: what it runs, and whether it fails only before it changes anything.
struct Job {
    run: Run,
    checked: bool,
}

const MAX_GROUP: usize = 256;

/// The checkpointer is woken once the writer has changed this many rows since it last woke
/// it, and otherwise looks every `CHECKPOINT_AFTER` whether anything was committed: not
/// after every commit. A stream of small commits (one audit entry per read) would otherwise
/// have every hot page copied and the database file synced again after each one; a bulk
/// import changes this many rows every few commits.
const CHECKPOINT_ROWS: u64 = 4_096;
const CHECKPOINT_AFTER: std::time::Duration = std::time::Duration::from_millis(250);

/// WAL pages (1 GiB) after which the writer checkpoints by itself (SQLite's default is
/// 1,000): only reached when the checkpoint thread cannot keep up. Under a sustained bulk
/// import the WAL is never fully copied between commits, so it is not restarted and grows to
/// this; readers, which search the WAL index for each page, pay for that until writes pause.
/// At 65,536 pages the writer spent a tenth of a 10,000-patient import checkpointing. The
/// file goes when the last connection closes.
const WRITER_CHECKPOINT_PAGES: u32 = 262_144;

/// The writer's page cache, in KiB (2 GiB; filled only as pages are read, so a small
/// database never uses it). It touches index pages all over the file: at 10,000 patients
/// (9.5 GB) a 512 MiB cache left a sixth of its time in page lookups and reads.
const WRITER_CACHE_KIB: u32 = 2 * 1024 * 1024;

pub(crate) struct Pool {
    writer: mpsc::UnboundedSender<Job>,
    readers: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

pub(crate) fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA busy_timeout = 10000;
         PRAGMA foreign_keys = ON;
         PRAGMA cache_size = -65536;
         PRAGMA temp_store = MEMORY;",
    )?;
    Ok(conn)
}

impl Pool {
    pub(crate) fn open(path: &Path, readers: usize) -> Result<Arc<Self>, StoreError> {
        let mut writer_conn = open_connection(path)?;
        // The writer touches index pages all over the file: a larger page cache saves it
        // reads. Checkpoints run on a thread of their own (see `checkpoint_loop`), so the
        // writer does not wait for the copy into the database file; it checkpoints itself only
        // if that thread falls far behind.
        writer_conn.execute_batch(&format!(
            "PRAGMA cache_size = -{WRITER_CACHE_KIB}; PRAGMA wal_autocheckpoint = {WRITER_CHECKPOINT_PAGES};"
        ))?;
        super::schema::migrate(&mut writer_conn)?;
        let checkpointer = open_connection(path)?;
        let (committed, commits) = std::sync::mpsc::sync_channel::<()>(1);
        let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seen = Arc::clone(&count);
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer, commits, &seen))
            .map_err(|e| StoreError::backend("spawn checkpointer", e))?;
        let mut pool = Vec::with_capacity(readers);
        for _ in 0..readers.max(1) {
            pool.push(Mutex::new(open_connection(path)?));
        }
        let (tx, rx) = mpsc::unbounded_channel::<Job>();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(writer_conn, rx, committed, &count))
            .map_err(|e| StoreError::backend("spawn writer", e))?;
        Ok(Arc::new(Self {
            writer: tx,
            readers: pool,
            next: AtomicUsize::new(0),
        }))
    }

    /// Runs `f` on the writer inside the next group transaction; resolves after commit.
    pub(crate) async fn write<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        self.submit(false, f).await
    }

    /// Like `write`, for a job whose own failures all come before its first change (a backend
    /// error aside): it runs without a savepoint.
    pub(crate) async fn write_checked<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        self.submit(true, f).await
    }

    async fn submit<R, F>(&self, checked: bool, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (job, rx) = job(checked, f);
        self.writer.send(job).map_err(|_| StoreError::WorkerGone)?;
        rx.await.map_err(|_| StoreError::WorkerGone)?
    }

    /// Runs `f` on a reader connection on the blocking pool.
    pub(crate) async fn read<R, F>(self: &Arc<Self>, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let n = pool.readers.len();
            let start = pool.next.fetch_add(1, Ordering::Relaxed);
            for i in 0..n {
                if let Ok(conn) = pool.readers[(start + i) % n].try_lock() {
                    return f(&conn);
                }
            }
            let conn = pool.readers[start % n].lock().map_err(|_| StoreError::WorkerGone)?;
            f(&conn)
        })
        .await
        .map_err(|_| StoreError::WorkerGone)?
    }
}

/// Copies committed WAL pages into the database file when the writer has changed enough
/// rows, and at most `CHECKPOINT_AFTER` after any other commit, while the writer goes on with
/// the next group (a bulk import at scale is bound by these writes). Passive: it never
/// blocks the writer or a reader.
fn checkpoint_loop(conn: Connection, commits: std::sync::mpsc::Receiver<()>, count: &std::sync::atomic::AtomicU64) {
    use std::sync::mpsc::RecvTimeoutError;
    let mut done = 0;
    loop {
        match commits.recv_timeout(CHECKPOINT_AFTER) {
            Ok(()) => {}
            Err(RecvTimeoutError::Timeout) if count.load(Ordering::Relaxed) != done => {}
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        }
        done = count.load(Ordering::Relaxed);
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "sqlite checkpoint failed; the writer will checkpoint instead");
        }
    }
}

/// A job for the writer, and where its answer will arrive.
fn job<R, F>(checked: bool, f: F) -> (Job, oneshot::Receiver<Result<R, StoreError>>)
where
    R: Send + 'static,
    F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
{
    let (tx, rx) = oneshot::channel::<Result<R, StoreError>>();
    let run: Run = Box::new(move |conn| {
        let Some(conn) = conn else {
            let finish: Finish = Box::new(move |_| {
                let _ = tx.send(Err(StoreError::backend("begin", "could not start a transaction")));
            });
            return (false, finish);
        };
        let result = f(conn);
        let ok = result.is_ok();
        let finish: Finish = Box::new(move |commit_error: Option<String>| {
            let out = match (result, commit_error) {
                (Err(e), _) => Err(e),
                (Ok(_), Some(e)) => Err(StoreError::backend("commit", e)),
                (Ok(r), None) => Ok(r),
            };
            let _ = tx.send(out);
        });
        (ok, finish)
    });
    (Job { run, checked }, rx)
}

fn writer_loop(
    conn: Connection,
    mut rx: mpsc::UnboundedReceiver<Job>,
    committed: std::sync::mpsc::SyncSender<()>,
    count: &std::sync::atomic::AtomicU64,
) {
    let mut woke_at = conn.total_changes();
    while let Some(first) = rx.blocking_recv() {
        let mut batch = VecDeque::from([first]);
        while batch.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => batch.push_back(job),
                Err(_) => break,
            }
        }
        while !batch.is_empty() {
            if run_transaction(&conn, &mut batch) {
                count.fetch_add(1, Ordering::Relaxed);
                if conn.total_changes().saturating_sub(woke_at) >= CHECKPOINT_ROWS {
                    // Wakes the checkpointer; if it is busy a wake-up is already pending.
                    let _ = committed.try_send(());
                    woke_at = conn.total_changes();
                }
            }
        }
    }
}

/// Runs jobs from the front of `batch` in one transaction and answers them after it ends;
/// true when it committed. Stops early, leaving the rest of `batch`, when a bare job failed
/// after changing something and the transaction had to be rolled back.
fn run_transaction(conn: &Connection, batch: &mut VecDeque<Job>) -> bool {
    if conn.execute_batch("BEGIN IMMEDIATE").is_err() {
        for job in batch.drain(..) {
            let (_, finish) = (job.run)(None);
            finish(Some("begin failed".into()));
        }
        return false;
    }
    let mut finishes = Vec::with_capacity(batch.len());
    while let Some(job) = batch.pop_front() {
        if finishes.is_empty() || job.checked {
            let changes = conn.total_changes();
            let (ok, finish) = (job.run)(Some(conn));
            if ok || conn.total_changes() == changes {
                // A job that failed before changing anything is answered after the commit
                // too: its answer (a conflict, say) then describes committed state, which the
                // caller may go and read.
                finishes.push(finish);
            } else {
                // A bare job failed half-way: only undoing the transaction undoes it.
                let _ = conn.execute_batch("ROLLBACK");
                finish(None);
                for earlier in finishes {
                    earlier(Some("rolled back with a write that failed in the same group".into()));
                }
                return false;
            }
            continue;
        }
        if let Err(e) = conn.execute_batch("SAVEPOINT job") {
            let (_, finish) = (job.run)(None);
            finish(Some(e.to_string()));
            continue;
        }
        let (ok, finish) = (job.run)(Some(conn));
        let end = if ok {
            "RELEASE job"
        } else {
            "ROLLBACK TO job; RELEASE job"
        };
        if let Err(e) = conn.execute_batch(end) {
            tracing::error!(error = %e, "sqlite savepoint could not be closed");
        }
        finishes.push(finish);
    }
    let commit_error = conn.execute_batch("COMMIT").err().map(|e| e.to_string());
    if commit_error.is_some() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    for finish in finishes {
        finish(commit_error.clone());
    }
    commit_error.is_none()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    type Answer = oneshot::Receiver<Result<(), StoreError>>;

    /// A job that inserts `x`, then fails if `fail` says so (after the insert when `late`).
    fn insert(checked: bool, x: i64, fail: bool, late: bool) -> (Job, Answer) {
        job(checked, move |conn: &Connection| {
            if fail && !late {
                return Err(StoreError::Conflict);
            }
            conn.execute("INSERT INTO t (x) VALUES (?1)", [x])?;
            if fail { Err(StoreError::Conflict) } else { Ok(()) }
        })
    }

    fn rows(conn: &Connection) -> Vec<i64> {
        let mut stmt = conn.prepare("SELECT x FROM t ORDER BY x").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    }

    /// Runs one group as the writer does: transactions until the group is done.
    fn group(conn: &Connection, jobs: Vec<(Job, Answer)>) -> Vec<bool> {
        let (jobs, mut answers): (VecDeque<Job>, Vec<Answer>) = jobs.into_iter().unzip();
        let mut batch = jobs;
        while !batch.is_empty() {
            run_transaction(conn, &mut batch);
        }
        answers
            .iter_mut()
            .map(|a| a.try_recv().expect("answered").is_ok())
            .collect()
    }

    fn db() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_connection(&dir.path().join("t.db")).unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER PRIMARY KEY)").unwrap();
        (dir, conn)
    }

    #[test]
    fn a_failed_job_leaves_nothing_and_the_others_commit() {
        let (_dir, conn) = db();
        // unchecked jobs after the first run in savepoints; a checked one that fails before
        // writing needs none.
        let answers = group(
            &conn,
            vec![
                insert(false, 1, false, false),
                insert(false, 2, true, true),
                insert(true, 3, true, false),
                insert(true, 4, false, false),
                insert(false, 5, false, false),
            ],
        );
        assert_eq!(answers, [true, false, false, true, true]);
        assert_eq!(rows(&conn), [1, 4, 5]);
        // the first job of a transaction runs bare even unchecked: its failure rolls back
        // the transaction, which holds nothing else yet.
        let answers = group(
            &conn,
            vec![insert(false, 6, true, true), insert(false, 7, false, false)],
        );
        assert_eq!(answers, [false, true]);
        assert_eq!(rows(&conn), [1, 4, 5, 7]);
    }

    #[test]
    fn a_checked_job_that_fails_after_writing_undoes_its_group_and_the_rest_runs_again() {
        let (_dir, conn) = db();
        let answers = group(
            &conn,
            vec![
                insert(true, 1, false, false),
                insert(false, 2, false, false),
                insert(true, 3, true, true),
                insert(true, 4, false, false),
            ],
        );
        // 1 and 2 shared the transaction the broken promise rolled back: they are told so.
        assert_eq!(answers, [false, false, false, true]);
        assert_eq!(rows(&conn), [4]);
    }
}
