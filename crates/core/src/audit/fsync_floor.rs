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
/// entry to the thread and back, `inline` returns as soon as the entry is made.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Sync,
    Write,
    Handoff,
    Inline,
}

fn mode() -> Mode {
    static MODE: OnceLock<Mode> = OnceLock::new();
    *MODE.get_or_init(|| match std::env::var("CAREVAULT_FLOOR_MODE").as_deref() {
        Ok("write") => Mode::Write,
        Ok("handoff") => Mode::Handoff,
        Ok("inline") => Mode::Inline,
        _ => Mode::Sync,
    })
}

/// Waits until `record` is durable in the file.
pub(crate) async fn append(record: Vec<u8>) -> Result<(), crate::CoreError> {
    if mode() == Mode::Inline {
        std::hint::black_box(record);
        return Ok(());
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
