//! The use cases of carevault's record store: create, read, update, delete, history and
//! bundles, each one sealing and opening bodies with the right data key and keeping the blind
//! identifier index in step. HTTP and the CLI both go through here; neither touches the
//! store or the keys directly.

pub mod access;
mod accounts;
pub mod audit;
mod bundle;
mod conditional;
mod consent;
mod crud;
mod emergency;
mod error;
mod export;
mod history;
mod identifiers;
mod keys;
mod patch;
mod reindex;
mod relationships;
mod search;
mod session;
pub mod signin;
#[cfg(test)]
mod test_vault;
mod vault;

pub use accounts::{AccountSummary, MAX_TOKEN_TTL_SECS, MIN_PASSWORD_CHARS, NewAccount, TokenRejection, Username};
pub use bundle::{BundleKind, BundleOutcome, EntryResult, condition_query, parse_etag};
pub use crud::{ReadOutcome, StoredResource, Written};
pub use emergency::{DEFAULT_EMERGENCY_MINUTES, EmergencyGrant, StaffMember, VERDICTS};
pub use error::CoreError;
pub use export::{ExportJobId, ExportKickOff, ExportLevel, ExportPlan, ExportStatus};
pub use history::{HistoryEntry, HistoryPage, HistoryScope, MAX_PAGE};
pub use identifiers::IdentifierQuery;
pub use relationships::AccessPolicy;
pub use search::{COMPARTMENT, EverythingPage, Include, SearchOptions, SearchPage, SearchRequest};
pub use session::Session;
pub use vault::Vault;
