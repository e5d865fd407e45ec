//! `Patient/[id]/$everything`: the patient, every resource in their compartment, and the
//! resources those refer to that are in no patient's compartment (practitioners,
//! organizations, locations, medications…: "whatever resources are needed to support the
//! records", as the operation asks), type by type in name order, paged with a sealed cursor
//! (type and last row id); `_type`, `_since` and `_count` as the operation defines them, and
//! `start` / `end` (the care dates) through R4's shared `clinical-date` parameter: a resource
//! of a type that parameter covers is returned when its `date` overlaps the range; resources
//! of other types carry no care date and are not filtered.

use super::COMPARTMENT;
use crate::access::Perms;
use crate::crud::{ReadOutcome, StoredResource};
use crate::{CoreError, Session};
use carevault_domain::query::parse_query;
use carevault_domain::{ResourceId, ResourceType, Timestamp};
use carevault_storage::{Cond, Prefix, SearchQuery, Store};
use serde_json::{Value, json};

/// One page of `$everything`.
#[derive(Debug)]
pub struct EverythingPage {
    pub resources: Vec<StoredResource>,
    pub next: Option<String>,
}

const DEFAULT_COUNT: u32 = 100;

fn bad(msg: &str) -> CoreError {
    CoreError::Invalid(msg.to_owned())
}

impl<S: Store> Session<'_, S> {
    pub async fn everything(&self, patient: &ResourceId, query: &str) -> Result<EverythingPage, CoreError> {
        if !matches!(self.read(ResourceType::Patient, patient).await?, ReadOutcome::Found(_)) {
            return Err(CoreError::NotFound);
        }
        let context = format!("{}|$everything|{patient}", self.tenant);
        let mut pairs = parse_query(query).map_err(|e| CoreError::Invalid(e.to_string()))?;
        let mut at: Option<(String, i64)> = None;
        if let Some((_, c)) = pairs.iter().find(|(k, _)| k == "_cursor") {
            let bytes = self
                .cursor_key
                .open(&context, c)
                .map_err(|_| bad("the paging cursor is not valid"))?;
            let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad("the paging cursor is not valid"))?;
            let q = v["q"].as_str().unwrap_or("").to_owned();
            at = Some((
                v["t"].as_str().unwrap_or("").to_owned(),
                v["r"].as_i64().ok_or_else(|| bad("the paging cursor is not valid"))?,
            ));
            pairs = parse_query(&q).map_err(|e| CoreError::Invalid(e.to_string()))?;
        }
        let original: String = pairs
            .iter()
            .filter(|(k, _)| k != "_cursor")
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    carevault_domain::query::percent_encode(k),
                    carevault_domain::query::percent_encode(v)
                )
            })
            .collect::<Vec<_>>()
            .join("&");
        let mut count = DEFAULT_COUNT;
        let mut since = None;
        let mut care: Vec<(String, String)> = Vec::new();
        let in_compartment: Vec<ResourceType> = ResourceType::ALL
            .iter()
            .copied()
            .filter(|t| *t == ResourceType::Patient || !carevault_domain::compartment::params(*t).is_empty())
            .collect();
        let compartment_names: Vec<String> = in_compartment.iter().map(|t| t.as_str().to_owned()).collect();
        let mut types = in_compartment.clone();
        for name in self
            .store
            .referenced_types(self.tenant.as_str(), patient.as_str(), &compartment_names)
            .await?
        {
            if let Ok(t) = name.parse::<ResourceType>()
                && !types.contains(&t)
            {
                types.push(t);
            }
        }
        types.sort_by_key(|t| t.as_str());
        for (k, v) in &pairs {
            match k.as_str() {
                "_count" => {
                    count = v
                        .parse::<u32>()
                        .map_err(|_| bad("_count must be a whole number"))?
                        .clamp(1, 1000)
                }
                "_since" => since = Some(Timestamp::parse(v).ok_or_else(|| bad("_since must be an instant"))?),
                "_type" => {
                    let wanted: Vec<ResourceType> = v
                        .split(',')
                        .map(|t| {
                            t.trim()
                                .parse::<ResourceType>()
                                .map_err(|_| bad("_type names an unknown resource type"))
                        })
                        .collect::<Result<_, _>>()?;
                    types.retain(|t| wanted.contains(t));
                }
                // The care date range, as `date` conditions: `ge` and `le` keep whatever
                // overlaps it (FHIR's prefixes compare ranges).
                "start" => care.push(("date".to_owned(), format!("ge{v}"))),
                "end" => care.push(("date".to_owned(), format!("le{v}"))),
                "_cursor" | "_format" => {}
                _ => return Err(bad("$everything takes start, end, _since, _type and _count")),
            }
        }
        for (_, v) in &care {
            // `start` and `end` are dates (the operation's parameter type); a dateTime or a
            // prefix of its own is refused here rather than read some other way.
            if !carevault_domain::validate::is_date(&v[2..]) {
                return Err(bad("start and end are dates (YYYY, YYYY-MM or YYYY-MM-DD)"));
            }
        }
        let mut resources = Vec::new();
        let mut next = None;
        let mut last: Option<(ResourceType, i64)> = None;
        'types: for t in types {
            let after = match &at {
                Some((ct, _)) if t.as_str() < ct.as_str() => continue,
                Some((ct, rid)) if t.as_str() == ct.as_str() => Some((Vec::new(), *rid)),
                _ => None,
            };
            let mut conds = vec![if in_compartment.contains(&t) {
                Cond::Reference {
                    param: COMPARTMENT.to_owned(),
                    target_type: Some("Patient".to_owned()),
                    target_id: patient.to_string(),
                }
            } else {
                Cond::ReferencedFrom {
                    patient_id: patient.to_string(),
                    compartment_types: compartment_names.clone(),
                }
            }];
            // Types the caller may not read are left out; the rest are limited like a search.
            let Ok(guard) = self.guard_conds(t, Perms::READ) else {
                continue;
            };
            conds.extend(guard);
            if !care.is_empty() && carevault_domain::search::params::CLINICAL_DATE.contains(&t) {
                let parser = self.parser(t, true);
                conds.extend(parser.parse(&care)?.conds);
            }
            if let Some(s) = since {
                conds.push(Cond::LastUpdated {
                    prefix: Prefix::Ge,
                    lo: s.millis(),
                    hi: s.millis() + 1,
                });
            }
            let q = SearchQuery {
                tenant: self.tenant.as_str().to_owned(),
                rtype: t.as_str().to_owned(),
                conds,
                sort: Vec::new(),
                after,
                backwards: false,
                limit: count - resources.len() as u32 + 1,
            };
            let hits = self.store.search(&q).await?;
            let rids: std::collections::HashMap<String, i64> = hits.iter().map(|h| (h.id.clone(), h.rid)).collect();
            let ids: Vec<String> = hits.into_iter().map(|h| h.id).collect();
            for r in self.read_many(t, &ids).await?.into_iter().map(|r| self.masked(r)) {
                if resources.len() as u32 == count
                    && let Some((last_type, last_rid)) = last
                {
                    let state = json!({"q": original, "t": last_type.as_str(), "r": last_rid});
                    let bytes = serde_json::to_vec(&state).map_err(|_| CoreError::Integrity)?;
                    next = Some(self.cursor_key.seal(self.rng.as_ref(), &context, &bytes)?);
                    break 'types;
                }
                last = rids.get(r.id.as_str()).map(|rid| (t, *rid));
                resources.push(r);
            }
        }
        Ok(EverythingPage { resources, next })
    }
}
