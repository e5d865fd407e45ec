//! The audit journal: where an entry that is not committed with a write (a read's, a search's,
//! a refusal's) becomes durable before its response, on a server over SQLite.
//!
//! A durable commit of the log's table costs a WAL commit of a dozen pages or more per group
//! (the table and its three search indexes); the journal costs one `pwrite` and one
//! `fdatasync` per group. One thread writes every entry waiting at that moment as a record
//! — payload length, generation, sequence number, the entry not yet numbered
//! (`Unnumbered`), and an HMAC of all of it under a key of the journal's own — syncs, and
//! only then answers the requests. The server's copier moves the durable records into the
//! log in batches (at once after a quiet spell, then at most as often as configured, and at
//! once whenever the log is read), numbering them in the store's transaction and moving the
//! journal's mark (generation, offset, next sequence number) in the same transaction, so a
//! record is copied exactly once.
//!
//! At start-up the records past the mark are read back and copied before the server
//! serves: a crash loses no entry whose request was answered. A record is taken only if its
//! generation and sequence number are the ones expected and its MAC holds; the first one
//! that is not ends the run (a write cut short by a crash, or an edit — said in the log).
//! Once the file has passed `WRAP_AT` bytes and the copier has copied at least the first
//! half of it, the writer starts again from the file's start under the next generation,
//! without waiting for the copier: it only never writes over the part of the generation
//! before that is not copied yet (it waits for the copier if it would, which with the
//! copier milliseconds behind and 8 MiB to spare it does not in practice). Read back, a generation's records are followed by the next one's from the
//! file's start; older records left further on fail the generation check. The file is
//! locked while a server has it open: one journal, one server.

use super::unnumbered::Unnumbered;
use crate::CoreError;
use carevault_crypto::{IndexKey, KeyFile};
use carevault_storage::{AuditMaker, JournalMark, Store, StoreError};
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};
use std::time::Duration;
use tokio::sync::oneshot;

/// Payload length (u32), generation (u32) and sequence number (u64), little-endian.
const HEADER: usize = 16;
/// HMAC-SHA256 of the header and the payload.
const MAC: usize = 32;
/// The longest payload a record may claim (an entry is about a kilobyte).
const MAX_PAYLOAD: u32 = 1 << 20;
/// Past this many bytes the writer starts the file again (in the tests after a few
/// records, so that they wrap).
#[cfg(not(test))]
const WRAP_AT: u64 = 16 << 20;
#[cfg(test)]
const WRAP_AT: u64 = 4096;
/// How long the writer waits for the copier when a group would overwrite records not yet
/// copied (the group fails if the wait runs out).
#[cfg(not(test))]
const CATCH_UP_WAIT: Duration = Duration::from_secs(2);
#[cfg(test)]
const CATCH_UP_WAIT: Duration = Duration::from_millis(20);
/// Most entries waiting to be copied (about 1.2 KB each in memory) before appends fail.
const MAX_BACKLOG: usize = 200_000;
/// Most entries in one group write.
const GROUP: usize = 512;
/// Most records copied into the log in one transaction.
const INGEST_BATCH: usize = 4096;

/// The journal's MAC key, apart from the log's.
pub(crate) fn journal_key(keys: &KeyFile) -> IndexKey {
    IndexKey::derive(keys, "*", "audit-journal")
}

/// A record on disk, not yet in the log.
struct Durable {
    generation: u32,
    seq: u64,
    /// The offset just past the record.
    end: u64,
    entry: Unnumbered,
}

struct Shared {
    durable: Mutex<Vec<Durable>>,
    /// How far the log has copied: the mark of the last copy.
    copied: Mutex<Copied>,
    caught_up: Condvar,
    wake: tokio::sync::Notify,
}

/// The journal's mark as the writer needs it.
#[derive(Debug, Clone, Copy)]
struct Copied {
    generation: u32,
    /// Just past the last record copied.
    offset: u64,
    next_seq: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; a poisoned one still holds consistent data.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

type Job = (Unnumbered, oneshot::Sender<bool>);

/// The journal of one server.
pub(crate) struct Journal {
    jobs: mpsc::Sender<Job>,
    shared: Arc<Shared>,
    ingesting: tokio::sync::Mutex<()>,
}

fn failed(what: &str) -> CoreError {
    CoreError::Store(StoreError::backend("audit journal", what))
}

impl Journal {
    /// Opens (or creates) the journal at `path`, copies every record past the store's mark
    /// into the log — and, if a record failed its check and stopped the copy, the entry
    /// `record_damage` makes of it — and starts the writer; how many records were copied.
    pub(crate) async fn open<S: Store>(
        path: &Path,
        store: &S,
        key: IndexKey,
        log_key: &IndexKey,
        record_damage: impl FnOnce(JournalDamage, usize) -> AuditMaker,
    ) -> Result<(Journal, usize), CoreError> {
        let mark = store.journal_mark().await?;
        let existed = path.exists();
        let mut missing = false;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| failed(&format!("cannot open {}: {e}", path.display())))?;
        // A server that has just stopped may take a moment to let go of it.
        let mut tries = 0;
        while let Err(e) = file.try_lock() {
            tries += 1;
            if tries > 200 {
                return Err(failed(&format!("{} is in use by another server: {e}", path.display())));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if !existed {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| failed(&e.to_string()))?;
            }
            if mark.is_some() {
                missing = true;
            }
        }
        let Past {
            records: found,
            last_generation,
            copied,
            damage,
        } = past_mark(&file, &key, mark)?;
        let damage = damage.or(missing.then_some(JournalDamage {
            offset: 0,
            kind: DamageKind::Truncated,
        }));
        let replayed = found.len();
        let next_seq = copied.next_seq + replayed as u64;
        let shared = Arc::new(Shared {
            durable: Mutex::new(found),
            copied: Mutex::new(copied),
            caught_up: Condvar::new(),
            wake: tokio::sync::Notify::new(),
        });
        let writer = Writer {
            file,
            key,
            generation: last_generation + 1,
            at: 0,
            next_seq,
            first_seq: next_seq,
            failed: false,
        };
        let (jobs, rx) = mpsc::channel();
        let journal = Journal {
            jobs,
            shared: Arc::clone(&shared),
            ingesting: tokio::sync::Mutex::new(()),
        };
        journal.ingest(store, log_key).await?;
        if let Some(d) = damage {
            // The damage goes on record, and the mark moves to the writer's fresh generation
            // in the same transaction, so that it is not found again at the next start.
            let fresh = Copied {
                generation: writer.generation,
                offset: 0,
                next_seq: writer.next_seq,
            };
            let mark = JournalMark {
                generation: i64::from(fresh.generation),
                offset: 0,
                next_seq: i64::try_from(fresh.next_seq).map_err(|_| CoreError::Integrity)?,
            };
            store.ingest_audit(vec![record_damage(d, replayed)], mark).await?;
            *lock(&shared.copied) = fresh;
        }
        std::thread::Builder::new()
            .name("audit-journal".into())
            .spawn(move || writer.run(rx, &shared))
            .map_err(|e| failed(&e.to_string()))?;
        Ok((journal, replayed))
    }

    /// Waits until `entry` is durable in the journal.
    pub(crate) async fn append(&self, entry: Unnumbered) -> Result<(), CoreError> {
        let (done, wait) = oneshot::channel();
        self.jobs
            .send((entry, done))
            .map_err(|_| CoreError::Store(StoreError::WorkerGone))?;
        match wait.await {
            Ok(true) => Ok(()),
            Ok(false) => Err(failed("the audit journal could not be written")),
            Err(_) => Err(CoreError::Store(StoreError::WorkerGone)),
        }
    }

    /// Starts the copier: at once when records are waiting after a quiet spell, then at
    /// most every `every`. It holds the journal only while it copies, so that dropping the
    /// vault closes the journal (the writer ends, the file's lock goes).
    pub(crate) fn spawn_copier<S: Store>(self: &Arc<Self>, store: S, log_key: IndexKey, every: Duration) {
        let (journal, shared) = (Arc::downgrade(self), Arc::clone(&self.shared));
        tokio::spawn(async move {
            loop {
                shared.wake.notified().await;
                let Some(j) = journal.upgrade() else { break };
                if let Err(e) = j.ingest(&store, &log_key).await {
                    tracing::error!(error = %e, "the audit journal could not be copied into the log; trying again");
                }
                drop(j);
                tokio::time::sleep(every).await;
            }
        });
    }

    /// Copies every durable record into the log (numbered by the store, the mark moved in
    /// the same transaction). A failed copy leaves the records to be copied again.
    pub(crate) async fn ingest<S: Store>(&self, store: &S, log_key: &IndexKey) -> Result<(), CoreError> {
        let _one = self.ingesting.lock().await;
        let mut waiting = std::mem::take(&mut *lock(&self.shared.durable));
        while !waiting.is_empty() {
            let rest = waiting.split_off(waiting.len().min(INGEST_BATCH));
            let Some(last) = waiting.last() else { break };
            let mark = JournalMark {
                generation: i64::from(last.generation),
                offset: i64::try_from(last.end).map_err(|_| CoreError::Integrity)?,
                next_seq: i64::try_from(last.seq + 1).map_err(|_| CoreError::Integrity)?,
            };
            let copied = Copied {
                generation: last.generation,
                offset: last.end,
                next_seq: last.seq + 1,
            };
            let makers = waiting.iter().map(|d| d.entry.clone().maker(log_key.clone())).collect();
            if let Err(e) = store.ingest_audit(makers, mark).await {
                // Back in front of whatever arrived meanwhile, in order.
                let mut durable = lock(&self.shared.durable);
                waiting.extend(rest);
                waiting.append(&mut durable);
                *durable = waiting;
                return Err(e.into());
            }
            *lock(&self.shared.copied) = copied;
            self.shared.caught_up.notify_all();
            waiting = rest;
        }
        Ok(())
    }
}

/// What a journal holds past the store's mark.
struct Past {
    records: Vec<Durable>,
    /// The generation the last record is of (the mark's, if none).
    last_generation: u32,
    /// The mark as it stands.
    copied: Copied,
    damage: Option<JournalDamage>,
}

/// The records past `mark` (every record when there is none yet): the rest of the mark's
/// generation, then the next generation's from the file's start.
fn past_mark(file: &File, key: &IndexKey, mark: Option<JournalMark>) -> Result<Past, CoreError> {
    let start = mark.unwrap_or(JournalMark {
        generation: 1,
        offset: 0,
        next_seq: 0,
    });
    let copied = Copied {
        generation: u32::try_from(start.generation).map_err(|_| CoreError::Integrity)?,
        offset: u64::try_from(start.offset).map_err(|_| CoreError::Integrity)?,
        next_seq: u64::try_from(start.next_seq).map_err(|_| CoreError::Integrity)?,
    };
    let len = file.metadata().map_err(|e| failed(&e.to_string()))?.len();
    if len < copied.offset {
        let damage = JournalDamage {
            offset: len,
            kind: DamageKind::Truncated,
        };
        return Ok(Past {
            records: Vec::new(),
            last_generation: copied.generation,
            copied,
            damage: Some(damage),
        });
    }
    let (mut records, damage) = read_run(file, key, copied.offset, copied.generation, copied.next_seq);
    let after = copied.next_seq + records.len() as u64;
    let (next, next_damage) = read_run(file, key, 0, copied.generation + 1, after);
    let last_generation = copied.generation + u32::from(!next.is_empty());
    records.extend(next);
    Ok(Past {
        records,
        last_generation,
        copied,
        damage: damage.or(next_damage),
    })
}

/// What the journal holds that is not yet in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalBacklog {
    /// Entries durable in the journal, copied when a server next opens it.
    pub entries: usize,
    /// The record after them that fails its check, if one does.
    pub damage: Option<JournalDamage>,
}

/// What the journal at `path` holds that is not yet in the log; read only, nothing changed.
/// Nothing when there is no journal.
pub async fn journal_backlog<S: Store>(store: &S, keys: &KeyFile, path: &Path) -> Result<JournalBacklog, CoreError> {
    let mark = store.journal_mark().await?;
    let Ok(file) = File::open(path) else {
        // Gone: harmless before anything was ever copied from it.
        let damage = mark.map(|_| JournalDamage {
            offset: 0,
            kind: DamageKind::Truncated,
        });
        return Ok(JournalBacklog { entries: 0, damage });
    };
    let past = past_mark(&file, &journal_key(keys), mark)?;
    Ok(JournalBacklog {
        entries: past.records.len(),
        damage: past.damage,
    })
}

/// The writer thread's state.
struct Writer {
    file: File,
    key: IndexKey,
    generation: u32,
    at: u64,
    next_seq: u64,
    /// The sequence number of the generation's first record.
    first_seq: u64,
    /// Once a write fails, every later append fails: no entry, no response.
    failed: bool,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Job>, shared: &Shared) {
        let mut buf = Vec::new();
        while let Ok(first) = rx.recv() {
            let (entries, replies): (Vec<Unnumbered>, Vec<oneshot::Sender<bool>>) =
                std::iter::once(first).chain(rx.try_iter().take(GROUP - 1)).unzip();
            let copied = *lock(&shared.copied);
            if self.at >= WRAP_AT && copied.generation == self.generation && copied.offset >= WRAP_AT / 2 {
                // Every older generation and the first half of this one are in the log: start
                // again from the file's start (else go on growing the file for now).
                self.generation += 1;
                self.at = 0;
                self.first_seq = self.next_seq;
            }
            buf.clear();
            let mut ends = Vec::with_capacity(entries.len());
            for (i, entry) in entries.iter().enumerate() {
                frame(&mut buf, &self.key, self.generation, self.next_seq + i as u64, entry);
                ends.push(self.at + buf.len() as u64);
            }
            let written = if self.failed {
                Err(std::io::Error::other("an earlier write failed"))
            } else if lock(&shared.durable).len() + replies.len() > MAX_BACKLOG {
                // The log has not taken entries for a while (its database is failing): stop
                // taking more rather than hold them all in memory.
                tracing::error!("the audit journal's copier is too far behind: entries fail until it catches up");
                shared.wake.notify_one();
                Err(std::io::Error::other("the copier is behind"))
            } else if !self.room_for(buf.len() as u64, shared) {
                Err(std::io::Error::other("the copier is behind"))
            } else {
                self.file
                    .write_all_at(&buf, self.at)
                    .and_then(|()| self.file.sync_data())
                    .inspect_err(|e| {
                        tracing::error!(error = %e, "the audit journal could not be written; requests fail from now on");
                        self.failed = true;
                    })
            };
            if written.is_err() {
                for reply in replies {
                    let _ = reply.send(false);
                }
                continue;
            }
            {
                let mut durable = lock(&shared.durable);
                for (i, (entry, end)) in entries.into_iter().zip(ends).enumerate() {
                    durable.push(Durable {
                        generation: self.generation,
                        seq: self.next_seq + i as u64,
                        end,
                        entry,
                    });
                }
            }
            self.next_seq += replies.len() as u64;
            self.at += buf.len() as u64;
            shared.wake.notify_one();
            for reply in replies {
                let _ = reply.send(true);
            }
        }
    }

    /// Whether `len` bytes can be written at `at` without overwriting records of the
    /// generation before that are not copied yet; waits a while for the copier if not.
    fn room_for(&self, len: u64, shared: &Shared) -> bool {
        let (at, first) = (self.at, self.first_seq);
        let fits = |c: &Copied| c.next_seq >= first || at + len <= c.offset;
        let copied = lock(&shared.copied);
        if fits(&copied) {
            return true;
        }
        shared.wake.notify_one();
        let waited = shared.caught_up.wait_timeout_while(copied, CATCH_UP_WAIT, |c| !fits(c));
        let room = waited.is_ok_and(|(c, _)| fits(&c));
        if !room {
            tracing::error!("the audit journal's copier is too far behind: entries fail until it catches up");
        }
        room
    }
}

/// Appends one record to `buf`.
fn frame(buf: &mut Vec<u8>, key: &IndexKey, generation: u32, seq: u64, entry: &Unnumbered) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&generation.to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    entry.encode(buf);
    let len = (buf.len() - start - HEADER) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    let mac = key.mac(&buf[start..]);
    buf.extend_from_slice(&mac);
}

/// What is wrong with a journal, found when it is read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalDamage {
    /// Where in the file (the record's start; the file's length when it is too short).
    pub offset: u64,
    pub kind: DamageKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamageKind {
    /// A record whose header is the one expected fails its MAC or is cut short, and the
    /// record after it is intact: an edit.
    Edited,
    /// The same with nothing intact after it: the group a crash interrupted (its requests
    /// were never answered).
    CutShort,
    /// The file is gone or shorter than what the log has copied from it: cut or replaced.
    Truncated,
}

impl DamageKind {
    pub fn code(self) -> &'static str {
        match self {
            DamageKind::Edited => "edited",
            DamageKind::CutShort => "cut-short",
            DamageKind::Truncated => "truncated",
        }
    }

    /// Whether someone, not a crash, did it.
    pub fn tampering(self) -> bool {
        !matches!(self, DamageKind::CutShort)
    }
}

/// One record read at a position.
enum Read {
    Record(Durable),
    /// No record of this generation and sequence number starts here: the run's end.
    End,
    /// One does, but it is cut short or fails its check; its claimed end.
    Bad(u64),
}

fn read_record(file: &File, key: &IndexKey, at: u64, generation: u32, seq: u64) -> Read {
    let mut header = [0u8; HEADER];
    if file.read_exact_at(&mut header, at).is_err() {
        return Read::End;
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let g = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let s = u64::from_le_bytes(header[8..16].try_into().unwrap_or([0; 8]));
    if g != generation || s != seq || len == 0 || len > MAX_PAYLOAD {
        return Read::End;
    }
    let mut record = header.to_vec();
    record.resize(HEADER + len as usize + MAC, 0);
    let end = at + record.len() as u64;
    if file.read_exact_at(&mut record[HEADER..], at + HEADER as u64).is_err() {
        return Read::Bad(end);
    }
    let (signed, mac) = record.split_at(HEADER + len as usize);
    match key.verify(signed, mac).then(|| Unnumbered::decode(&signed[HEADER..])) {
        Some(Some(entry)) => Read::Record(Durable {
            generation,
            seq,
            end,
            entry,
        }),
        _ => Read::Bad(end),
    }
}

/// The records of `generation` from `at` on, numbered on from `seq`, up to the first that is
/// not one (the end of what was written, a write cut short, or an edit: the damage).
fn read_run(
    file: &File,
    key: &IndexKey,
    mut at: u64,
    generation: u32,
    mut seq: u64,
) -> (Vec<Durable>, Option<JournalDamage>) {
    let mut out = Vec::new();
    loop {
        match read_record(file, key, at, generation, seq) {
            Read::Record(d) => {
                at = d.end;
                out.push(d);
                seq += 1;
            }
            Read::End => return (out, None),
            Read::Bad(end) => {
                let kind = match read_record(file, key, end, generation, seq + 1) {
                    Read::Record(_) => DamageKind::Edited,
                    _ => DamageKind::CutShort,
                };
                return (out, Some(JournalDamage { offset: at, kind }));
            }
        }
    }
}
