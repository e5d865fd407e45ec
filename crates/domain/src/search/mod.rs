//! FHIR search, the domain half: our parameter table, the path language that reads element
//! values out of a resource, normalisation of strings, the values each parameter indexes,
//! and the searchability contract (which parameters are identifying).

pub mod contract;
pub mod extract;
pub mod normalize;
pub mod params;
pub mod path;
pub mod ranges;
pub mod tally;

pub use contract::{Class, class_of};
pub use extract::{IndexValue, index_values};
pub use params::{ParamKind, SearchParam};
