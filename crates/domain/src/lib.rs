//! Domain types and rules of carevault: FHIR resource types, identifiers, the patient
//! compartment, and the shape checks a resource body must pass. No IO happens here and
//! nothing here can fail except by returning an error value.

pub mod clock;
pub mod compartment;
#[cfg(test)]
mod definitions_check;
pub mod elements;
pub mod ids;
pub mod patch;
pub mod query;
pub mod reference;
pub mod resource;
pub mod resource_type;
pub mod search;
#[cfg(test)]
mod searchability_doc;
pub mod subset;
pub mod validate;

pub use clock::{Clock, FixedClock, SystemClock, Timestamp};
pub use ids::{IdError, ResourceId, TenantId, VersionId};
pub use reference::Reference;
pub use resource::{Resource, ResourceError};
pub use resource_type::ResourceType;
