//! FHIR search over encrypted data: index rows written with every version (`index.rs`),
//! query strings parsed into storage conditions under the searchability contract
//! (`parse.rs`), and pages run, re-checked and linked with sealed cursors (`run.rs`); a search
//! across types (`system.rs`) merges the pages of several type searches; a bulk export's
//! `_typeFilter` queries (`type_filter.rs`) are parsed the same way.

mod everything;
mod filter;
mod index;
mod parse;
mod run;
mod summary;
mod system;
mod type_filter;

pub use parse::{Include, SearchRequest};
pub use run::{SearchOptions, SearchPage};

pub use everything::EverythingPage;
pub use index::COMPARTMENT;
pub(crate) use index::search_rows;
pub use type_filter::TypeFilter;
pub(crate) use type_filter::split as split_type_filter;

/// Longest prefix a blind string index holds; longer search strings match on this prefix
/// and are re-checked on the decrypted resource.
pub const MAX_BLIND_PREFIX: usize = 32;
/// Shortest prefix a blind string index holds (a one-letter tag would leak letter frequencies).
pub const MIN_BLIND_PREFIX: usize = 2;

/// The input of a blind tag: parameter, kind of tag and value, unambiguously joined.
pub(crate) fn blind_input(param: &str, kind: &str, value: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(param.len() + kind.len() + value.len() + 2);
    v.extend_from_slice(param.as_bytes());
    v.push(0);
    v.extend_from_slice(kind.as_bytes());
    v.push(0);
    v.extend_from_slice(value.as_bytes());
    v
}
