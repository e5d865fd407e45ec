//! A kick-off's parameters, checked, and the canonical request text the job keeps: types, a
//! date, patients by their random ids and element names — never a `_typeFilter` query, which
//! is caller text (see the module above).

use super::{ExportLevel, bad};
use crate::CoreError;
use carevault_domain::query::percent_encode;
use carevault_domain::{ResourceId, ResourceType, Timestamp, compartment};

/// The most `_typeFilter` queries one export may run (each is a search, its chains resolved
/// at kick-off), and the most patients `patient` may name.
const MAX_FILTERS: usize = 32;
const MAX_PATIENTS: usize = 1_000;
const OUTPUT_FORMATS: [&str; 3] = ["application/fhir+ndjson", "application/ndjson", "ndjson"];

/// The types an export at `level` may cover: every type, or those of the patient compartment
/// and Patient itself.
pub(super) fn allowed_types(level: &ExportLevel) -> Vec<ResourceType> {
    match level {
        ExportLevel::System => ResourceType::ALL.to_vec(),
        _ => ResourceType::ALL
            .iter()
            .copied()
            .filter(|t| *t == ResourceType::Patient || !compartment::params(*t).is_empty())
            .collect(),
    }
}

/// What a kick-off asked for.
pub(super) struct KickOffParams {
    /// Sorted by name; every allowed type when `_type` was not given.
    pub types: Vec<ResourceType>,
    pub since: Option<Timestamp>,
    /// `_typeFilter` queries as written (decoded once), each `[type]?[search]`.
    pub filter_texts: Vec<String>,
    pub elements: Vec<(Option<ResourceType>, String)>,
    /// `patient`: the ids named, in order, once each.
    pub listed: Option<Vec<String>>,
}

impl KickOffParams {
    pub(super) fn read(level: &ExportLevel, pairs: &[(String, String)]) -> Result<Self, CoreError> {
        let allowed = allowed_types(level);
        let mut types: Option<Vec<ResourceType>> = None;
        let mut p = KickOffParams {
            types: Vec::new(),
            since: None,
            filter_texts: Vec::new(),
            elements: Vec::new(),
            listed: None,
        };
        for (k, v) in pairs {
            match k.as_str() {
                "_outputFormat" => {
                    if !OUTPUT_FORMATS.contains(&v.as_str()) {
                        return Err(bad("_outputFormat must be application/fhir+ndjson"));
                    }
                }
                "_since" => {
                    p.since = Some(Timestamp::parse(v).ok_or_else(|| bad("_since must be an instant"))?);
                }
                "_type" => {
                    let list = types.get_or_insert_with(Vec::new);
                    for t in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                        let t: ResourceType = t.parse().map_err(|_| bad("_type names an unknown resource type"))?;
                        if !allowed.contains(&t) {
                            return Err(bad("_type names a type outside the patient compartment"));
                        }
                        if !list.contains(&t) {
                            list.push(t);
                        }
                    }
                }
                "_typeFilter" => p
                    .filter_texts
                    .extend(crate::search::split_type_filter(v).into_iter().map(str::to_owned)),
                "_elements" => p.elements.extend(parse_elements(v, &allowed)?),
                "patient" => {
                    if *level == ExportLevel::System {
                        return Err(bad("patient applies to Patient and Group level exports"));
                    }
                    let list = p.listed.get_or_insert_with(Vec::new);
                    for r in v.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                        let id = r
                            .strip_prefix("Patient/")
                            .and_then(|id| ResourceId::parse(id).ok())
                            .ok_or_else(|| bad("patient takes references to Patients (Patient/[id])"))?;
                        if !list.contains(&id.to_string()) {
                            list.push(id.to_string());
                        }
                    }
                }
                "includeAssociatedData" => {
                    return Err(bad("this server does not support that $export parameter"));
                }
                _ => {
                    return Err(bad(
                        "$export takes _outputFormat, _since, _type, _typeFilter, _elements and patient",
                    ));
                }
            }
        }
        if p.filter_texts.len() > MAX_FILTERS {
            return Err(bad(&format!(
                "an export may have at most {MAX_FILTERS} _typeFilter queries"
            )));
        }
        if p.listed.as_ref().is_some_and(|l| l.len() > MAX_PATIENTS) {
            return Err(bad(&format!("patient may name at most {MAX_PATIENTS} patients")));
        }
        p.types = types.unwrap_or(allowed);
        p.types.sort_by_key(|t| t.as_str());
        Ok(p)
    }

    /// The request the job keeps and its manifest shows, relative to the base. A POST
    /// kick-off's is its URL alone (the Bulk Data IG): its parameters came in the body.
    pub(super) fn request(&self, level: &ExportLevel, by_post: bool) -> String {
        let path = match level {
            ExportLevel::System => "$export".to_owned(),
            ExportLevel::Patient => "Patient/$export".to_owned(),
            ExportLevel::Group(g) => format!("Group/{g}/$export"),
        };
        let mut params = Vec::new();
        if self.types.len() != ResourceType::ALL.len() {
            let names: Vec<&str> = self.types.iter().map(|t| t.as_str()).collect();
            params.push(format!("_type={}", names.join(",")));
        }
        if let Some(s) = self.since {
            params.push(format!("_since={}", percent_encode(&s.to_fhir())));
        }
        if let Some(ids) = &self.listed {
            let refs: Vec<String> = ids.iter().map(|id| format!("Patient/{id}")).collect();
            params.push(format!("patient={}", percent_encode(&refs.join(","))));
        }
        if !self.elements.is_empty() {
            let names: Vec<String> = self
                .elements
                .iter()
                .map(|(t, e)| t.map_or_else(|| e.clone(), |t| format!("{}.{e}", t.as_str())))
                .collect();
            params.push(format!("_elements={}", names.join(",")));
        }
        if params.is_empty() || by_post {
            path
        } else {
            format!("{path}?{}", params.join("&"))
        }
    }
}

/// `_elements=Patient.name,id`: each item a top-level element name, of one type or of all.
fn parse_elements(value: &str, allowed: &[ResourceType]) -> Result<Vec<(Option<ResourceType>, String)>, CoreError> {
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (t, name) = match item.split_once('.') {
            Some((t, name)) => {
                let t: ResourceType = t.parse().map_err(|_| bad("_elements names an unknown resource type"))?;
                if !allowed.contains(&t) {
                    return Err(bad("_elements names a type this export does not cover"));
                }
                (Some(t), name)
            }
            None => (None, item),
        };
        let plain = name.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !plain {
            return Err(bad("_elements takes top-level element names: name or Type.name"));
        }
        out.push((t, name.to_owned()));
    }
    Ok(out)
}
