//! Benchmark-only (called only under `bench-audit-fsync-floor`): what any durable audit append must at least
//! pay. Each entry is rendered, MACed and hashed as usual, then handed to one thread that
//! writes every entry waiting at that moment to a preallocated file in one `pwrite` and
//! makes it durable with one `fdatasync` — no database, no index, no tree — before the
//! request goes on. `bench/audit.sh` with `FLOOR=1` compares it with the real log and the
//! no-op build: the gap between it and the no-op build is the price of the durable wait
//! alone. Never for a real server: nothing here can be read back.

use std::os::unix::fs::FileExt;
use std::sync::{OnceLock, mpsc};
use tokio::sync::oneshot;

type Job = (Vec<u8>, oneshot::Sender<()>);

static QUEUE: OnceLock<mpsc::Sender<Job>> = OnceLock::new();

/// The file is this long, zero-filled up front (so a write never extends it) and reused
/// from the start when full.
const FILE_LEN: u64 = 256 << 20;

fn writer(rx: mpsc::Receiver<Job>) -> std::io::Result<()> {
    let file = open_file()?;
    let (mut at, mut group) = (0u64, Vec::new());
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        jobs.extend(rx.try_iter().take(511));
        group.clear();
        for (record, _) in &jobs {
            group.extend_from_slice(&(record.len() as u32).to_le_bytes());
            group.extend_from_slice(record);
        }
        if at + group.len() as u64 > FILE_LEN {
            at = 0;
        }
        if mode() != Mode::Handoff {
            file.write_all_at(&group, at)?;
        }
        at += group.len() as u64;
        if mode() == Mode::Sync {
            file.sync_data()?;
        }
        for (_, done) in jobs {
            let _ = done.send(());
        }
    }
    Ok(())
}

/// What the probe does past rendering, from `CAREVAULT_FLOOR_MODE`, to take the floor apart:
/// `sync` (the default) writes and syncs, `write` only writes, `handoff` only passes the
/// entry to the thread and back, `inline` returns as soon as the entry is made; `leader`
/// writes and syncs without a writer thread (see `append_led`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Sync,
    Write,
    Handoff,
    Inline,
    Leader,
}

fn mode() -> Mode {
    static MODE: OnceLock<Mode> = OnceLock::new();
    *MODE.get_or_init(|| match std::env::var("CAREVAULT_FLOOR_MODE").as_deref() {
        Ok("write") => Mode::Write,
        Ok("handoff") => Mode::Handoff,
        Ok("inline") => Mode::Inline,
        Ok("leader") => Mode::Leader,
        _ => Mode::Sync,
    })
}

/// `leader`: no writer thread. The request that finds no sync under way writes every
/// waiting entry and `fdatasync`s on its own worker thread; the others wait for the synced
/// mark to pass theirs, and one of them leads the next group.
struct Leader {
    file: std::fs::File,
    state: std::sync::Mutex<LeaderState>,
    synced: tokio::sync::watch::Sender<u64>,
}

struct LeaderState {
    buf: Vec<u8>,
    appended: u64,
    leading: bool,
    at: u64,
}

/// The probe's file, zero-filled and synced.
fn open_file() -> std::io::Result<std::fs::File> {
    let path = std::env::temp_dir().join(format!("carevault-fsync-floor-{}.bin", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    // Unlinked at once: the space goes back when the process ends, however it ends.
    std::fs::remove_file(&path)?;
    let chunk = vec![0u8; 1 << 20];
    for i in 0..(FILE_LEN >> 20) {
        file.write_all_at(&chunk, i << 20)?;
    }
    file.sync_all()?;
    Ok(file)
}

async fn append_led(record: Vec<u8>) -> Result<(), crate::CoreError> {
    static LEADER: OnceLock<Option<Leader>> = OnceLock::new();
    let gone = || crate::CoreError::Store(carevault_storage::StoreError::WorkerGone);
    let leader = LEADER
        .get_or_init(|| {
            open_file().ok().map(|file| Leader {
                file,
                state: std::sync::Mutex::new(LeaderState {
                    buf: Vec::new(),
                    appended: 0,
                    leading: false,
                    at: 0,
                }),
                synced: tokio::sync::watch::channel(0).0,
            })
        })
        .as_ref()
        .ok_or_else(gone)?;
    let mut synced = leader.synced.subscribe();
    let mine = {
        let mut s = leader.state.lock().map_err(|_| gone())?;
        s.buf.extend_from_slice(&(record.len() as u32).to_le_bytes());
        s.buf.extend_from_slice(&record);
        s.appended += 1;
        s.appended
    };
    loop {
        if *synced.borrow_and_update() >= mine {
            return Ok(());
        }
        let round = {
            let mut s = leader.state.lock().map_err(|_| gone())?;
            if s.leading || s.buf.is_empty() {
                None
            } else {
                s.leading = true;
                let group = std::mem::take(&mut s.buf);
                if s.at + group.len() as u64 > FILE_LEN {
                    s.at = 0;
                }
                let at = s.at;
                s.at += group.len() as u64;
                Some((group, at, s.appended))
            }
        };
        if let Some((group, at, upto)) = round {
            let written = leader
                .file
                .write_all_at(&group, at)
                .and_then(|()| leader.file.sync_data());
            if let Ok(mut s) = leader.state.lock() {
                s.leading = false;
            }
            written.map_err(|_| gone())?;
            leader.synced.send_modify(|v| *v = (*v).max(upto));
            continue;
        }
        synced.changed().await.map_err(|_| gone())?;
    }
}

/// Waits until `record` is durable in the file.
pub(crate) async fn append(record: Vec<u8>) -> Result<(), crate::CoreError> {
    if mode() == Mode::Inline {
        std::hint::black_box(record);
        return Ok(());
    }
    if mode() == Mode::Leader {
        return append_led(record).await;
    }
    let queue = QUEUE.get_or_init(|| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            if let Err(e) = writer(rx) {
                tracing::error!(error = %e, "fsync floor probe failed");
            }
        });
        tx
    });
    let gone = || crate::CoreError::Store(carevault_storage::StoreError::WorkerGone);
    let (done, wait) = oneshot::channel();
    queue.send((record, done)).map_err(|_| gone())?;
    wait.await.map_err(|_| gone())
}
