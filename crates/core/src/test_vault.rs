//! A vault on a real SQLite file with an injected clock, for the core's clock-driven tests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::Vault;
use carevault_crypto::{KeyFile, SystemRandomSource};
use carevault_domain::{FixedClock, TenantId};
use carevault_storage::AnyStore;
use carevault_storage::sqlite::SqliteStore;
use std::sync::Arc;

/// A fresh vault (new key file) over the SQLite database at `db`.
pub(crate) async fn sqlite_vault(db: &std::path::Path, clock: FixedClock) -> Vault<AnyStore> {
    let store = AnyStore::Sqlite(SqliteStore::open(db).unwrap());
    let rng = SystemRandomSource::new();
    let keys = KeyFile::parse(&KeyFile::generate(&rng).unwrap()).unwrap();
    Vault::new(
        store,
        Arc::new(keys),
        Arc::new(rng),
        Arc::new(clock),
        TenantId::default_tenant(),
    )
    .unwrap()
}
