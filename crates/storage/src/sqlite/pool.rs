//! One writer thread with group commit, a checkpoint thread, and a small pool of reader
//! connections.
//!
//! Writes are closures queued to the writer thread. It takes every job waiting, runs each in
//! its own savepoint inside one transaction, commits once (one fsync for the group), and only
//! then answers each job. A job that fails rolls back to its savepoint alone.

use crate::StoreError;
use rusqlite::Connection;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

type Finish = Box<dyn FnOnce(Option<String>) + Send>;
type Job = Box<dyn FnOnce(Option<&Connection>) -> (bool, Finish) + Send>;

const MAX_GROUP: usize = 256;

/// The checkpointer is woken once the writer has changed this many rows since it last woke
/// it, and otherwise looks every `CHECKPOINT_AFTER` whether anything was committed: not
/// after every commit. A stream of small commits (one audit entry per read) would otherwise
/// have every hot page copied and the database file synced again after each one; a bulk
/// import changes this many rows every few commits.
const CHECKPOINT_ROWS: u64 = 4_096;
const CHECKPOINT_AFTER: std::time::Duration = std::time::Duration::from_millis(250);

/// WAL pages after which the writer checkpoints by itself (SQLite's default is 1,000): only
/// reached when the checkpoint thread cannot keep up. Under a sustained bulk import the WAL
/// is never fully copied between commits, so it is not restarted and grows past this (560 MB
/// at 1.7 million resources); readers, which search the WAL index for each page, pay for that
/// until writes pause. The file goes when the last connection closes.
const WRITER_CHECKPOINT_PAGES: u32 = 65_536;

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
            "PRAGMA cache_size = -524288; PRAGMA wal_autocheckpoint = {WRITER_CHECKPOINT_PAGES};"
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
        let (tx, rx) = oneshot::channel::<Result<R, StoreError>>();
        let job: Job = Box::new(move |conn| {
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

fn writer_loop(
    conn: Connection,
    mut rx: mpsc::UnboundedReceiver<Job>,
    committed: std::sync::mpsc::SyncSender<()>,
    count: &std::sync::atomic::AtomicU64,
) {
    let mut woke_at = conn.total_changes();
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if conn.execute_batch("BEGIN IMMEDIATE").is_err() {
            for job in batch {
                let (_, finish) = job(None);
                finish(Some("begin failed".into()));
            }
            continue;
        }
        let mut finishes = Vec::with_capacity(batch.len());
        for job in batch {
            if let Err(e) = conn.execute_batch("SAVEPOINT job") {
                let (_, finish) = job(None);
                finish(Some(e.to_string()));
                continue;
            }
            let (ok, finish) = job(Some(&conn));
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
        } else {
            count.fetch_add(1, Ordering::Relaxed);
            if conn.total_changes().saturating_sub(woke_at) >= CHECKPOINT_ROWS {
                // Wakes the checkpointer; if it is busy a wake-up is already pending.
                let _ = committed.try_send(());
                woke_at = conn.total_changes();
            }
        }
        for finish in finishes {
            finish(commit_error.clone());
        }
    }
}
