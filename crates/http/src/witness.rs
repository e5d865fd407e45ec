//! The witness file: every signed tree head appended as one JSON line, outside the database,
//! synced before the head is reported.

use carevault_core::audit::{SignedHead, WitnessHead};
use std::io::Write;
use std::path::Path;

pub fn append(path: &Path, head: &SignedHead) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let w = WitnessHead {
        size: head.size,
        root: head.root,
        at: head.at,
        signature: head.signature.clone(),
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(format!("{}\n", w.to_line(&head.public_key)).as_bytes())?;
    f.sync_all()
}
