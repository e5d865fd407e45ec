//! Patient consent (FHIR R4 `Consent`, scope `patient-privacy`), turned into query
//! conditions for one caller.
//!
//! What is read from a Consent: `status` (only `active` counts), `patient`, and the provision
//! tree — each provision's `type` (permit or deny), `period`, `actor` (a reference to the
//! caller's Practitioner, or a role whose code is the caller's role name), `purpose` (the
//! caller's purpose of use), `class` (resource types) and `securityLabel`. Nested provisions
//! are exceptions to their parent: for a resource, the last applicable provision in document
//! order decides; when none applies, ordinary data is shown and data carrying a sensitive
//! label (below) is not (fail closed).
//!
//! Consents are loaded once and reloaded whenever any Consent changes (a cheap check of the
//! newest Consent version on every decision), so a revocation holds for the very next request.

use crate::access::{Role, SENSITIVE_LABELS};
use crate::{CoreError, Vault};
use carevault_domain::{ResourceId, ResourceType, Timestamp};
use carevault_storage::{Cond, SearchQuery, Store};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

const SECURITY: &str = "_security";

/// A security label: `(system, code)`.
type Label = (String, String);

/// One applicable rule: permit or deny, for the whole record (`None`) or for these labels.
type Rule = (Kind, Option<Vec<Label>>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Permit,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Provision {
    kind: Kind,
    period: Option<(i64, i64)>,
    actor_refs: Vec<String>,
    actor_roles: Vec<String>,
    purposes: Vec<String>,
    classes: Vec<String>,
    labels: Vec<(String, String)>,
    nested: Vec<Provision>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PatientConsent {
    patient: ResourceId,
    root: Provision,
}

/// The caller as consent rules see it.
pub(crate) struct ConsentActor<'a> {
    pub role: Role,
    pub practitioner: Option<&'a ResourceId>,
    /// The organizations of the practitioner's active roles.
    pub organizations: &'a [ResourceId],
    /// v3-ActReason purpose of use (TREAT for care).
    pub purpose: &'a str,
    pub now: i64,
}

/// The active privacy consents of a tenant, and which belong to each patient.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ConsentSet {
    list: Vec<PatientConsent>,
    by_patient: std::collections::HashMap<String, Vec<usize>>,
}

impl ConsentSet {
    fn new(list: Vec<PatientConsent>) -> Self {
        let mut by_patient: std::collections::HashMap<String, Vec<usize>> = Default::default();
        for (i, c) in list.iter().enumerate() {
            by_patient.entry(c.patient.as_str().to_owned()).or_default().push(i);
        }
        Self { list, by_patient }
    }

    fn of(&self, patient: &str) -> impl Iterator<Item = &PatientConsent> {
        self.by_patient
            .get(patient)
            .into_iter()
            .flatten()
            .filter_map(|i| self.list.get(*i))
    }
}

/// All active privacy consents of the tenant, as of the newest Consent version `epoch`.
#[derive(Default)]
pub(crate) struct ConsentBook(Mutex<Option<(i64, Arc<ConsentSet>)>>);

fn codings(v: &Value) -> impl Iterator<Item = (&str, &str)> {
    v["coding"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| Some((c["system"].as_str().unwrap_or(""), c["code"].as_str()?)))
}

fn parse_provision(v: &Value, inherited: Kind) -> Provision {
    let kind = match v["type"].as_str() {
        Some("deny") => Kind::Deny,
        Some("permit") => Kind::Permit,
        _ => inherited,
    };
    let period = v.get("period").map(|p| {
        let lo = p["start"]
            .as_str()
            .and_then(Timestamp::parse)
            .map_or(i64::MIN, Timestamp::millis);
        let hi = p["end"]
            .as_str()
            .and_then(Timestamp::parse)
            .map_or(i64::MAX, Timestamp::millis);
        (lo, hi)
    });
    let mut actor_refs = Vec::new();
    let mut actor_roles = Vec::new();
    for a in v["actor"].as_array().into_iter().flatten() {
        if let Some(r) = a["reference"]["reference"].as_str() {
            actor_refs.push(r.to_owned());
        }
        actor_roles.extend(codings(&a["role"]).map(|(_, c)| c.to_owned()));
    }
    let purposes = v["purpose"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["code"].as_str().map(str::to_owned))
        .collect();
    let classes = v["class"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["code"].as_str().map(str::to_owned))
        .collect();
    let labels = v["securityLabel"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            Some((
                c["system"].as_str().unwrap_or("").to_owned(),
                c["code"].as_str()?.to_owned(),
            ))
        })
        .collect();
    let nested = v["provision"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| parse_provision(n, if kind == Kind::Deny { Kind::Permit } else { Kind::Deny }))
        .collect();
    Provision {
        kind,
        period,
        actor_refs,
        actor_roles,
        purposes,
        classes,
        labels,
        nested,
    }
}

fn parse_consent(body: &Value) -> Option<PatientConsent> {
    if body["status"] != "active" {
        return None;
    }
    let privacy = codings(&body["scope"]).any(|(_, c)| c == "patient-privacy");
    if !privacy {
        return None;
    }
    let patient = body["patient"]["reference"].as_str()?.strip_prefix("Patient/")?;
    let patient = ResourceId::parse(patient).ok()?;
    // A Consent without a provision states no rule: nothing changes.
    let root = body.get("provision")?;
    Some(PatientConsent {
        patient,
        root: parse_provision(root, Kind::Deny),
    })
}

impl Provision {
    /// Whether the provision speaks to this caller now (actor, purpose, period).
    fn applies_to(&self, who: &ConsentActor<'_>) -> bool {
        let actor_ok = (self.actor_refs.is_empty() && self.actor_roles.is_empty())
            || who
                .practitioner
                .is_some_and(|p| self.actor_refs.iter().any(|r| *r == format!("Practitioner/{p}")))
            || who
                .organizations
                .iter()
                .any(|o| self.actor_refs.iter().any(|r| *r == format!("Organization/{o}")))
            || self.actor_roles.iter().any(|r| r == who.role.as_str());
        let purpose_ok = self.purposes.is_empty() || self.purposes.iter().any(|p| p == who.purpose);
        let period_ok = self.period.is_none_or(|(lo, hi)| lo <= who.now && who.now < hi);
        actor_ok && purpose_ok && period_ok
    }

    /// The rules that apply to the caller for `rtype`, in document order: `None` labels = any.
    fn rules(&self, who: &ConsentActor<'_>, rtype: ResourceType, out: &mut Vec<Rule>) {
        if !self.applies_to(who) {
            return;
        }
        let class_ok = self.classes.is_empty() || self.classes.iter().any(|c| c == rtype.as_str());
        if class_ok {
            let labels = (!self.labels.is_empty()).then(|| self.labels.clone());
            out.push((self.kind, labels));
        }
        for n in &self.nested {
            n.rules(who, rtype, out);
        }
    }
}

fn truth() -> Cond {
    Cond::All(Vec::new())
}

fn falsity() -> Cond {
    Cond::Any(Vec::new())
}

fn has_label(labels: Vec<(String, String)>) -> Cond {
    Cond::TokenAny {
        param: SECURITY.to_owned(),
        codes: labels,
    }
}

/// Shown when no consent rule applies: anything without a sensitive label.
pub(crate) fn default_rule() -> Cond {
    Cond::Not(Box::new(has_label(
        SENSITIVE_LABELS
            .iter()
            .map(|(s, c)| ((*s).to_owned(), (*c).to_owned()))
            .collect(),
    )))
}

fn in_compartment(patients: Vec<String>) -> Cond {
    Cond::ReferenceIn {
        param: crate::COMPARTMENT.to_owned(),
        target_type: Some("Patient".to_owned()),
        target_ids: patients,
    }
}

/// What one patient's rules show of `rtype`. Rules without labels decide the whole record
/// (the last applicable one wins; a deny hides everything). Rules with labels decide those
/// labels (the last rule naming a label wins). A record is shown when the whole-record
/// decision is permit and it carries no label left hidden: the sensitive labels are hidden
/// unless a permit names them, so a blanket permit never opens sensitive data.
fn visible(rules: &[Rule]) -> Cond {
    let (show, hidden) = decision(rules);
    if !show {
        return falsity();
    }
    if hidden.is_empty() {
        truth()
    } else {
        Cond::Not(Box::new(has_label(hidden)))
    }
}

/// The whole-record decision and the labels left hidden, by the rules of [`visible`].
fn decision(rules: &[Rule]) -> (bool, Vec<Label>) {
    let mut show = true;
    let mut labels: BTreeMap<(String, String), bool> = SENSITIVE_LABELS
        .iter()
        .map(|(s, c)| (((*s).to_owned(), (*c).to_owned()), false))
        .collect();
    for (kind, named) in rules {
        match named {
            None => show = *kind == Kind::Permit,
            Some(list) => {
                for l in list {
                    labels.insert(l.clone(), *kind == Kind::Permit);
                }
            }
        }
    }
    let hidden = labels.into_iter().filter(|(_, ok)| !ok).map(|(l, _)| l).collect();
    (show, hidden)
}

/// What [`conditions`] decides, for one resource known by its compartment patients and its
/// labels, without the index: each applicable consent of each reached patient must allow
/// it, and a resource of no such patient must carry no sensitive label.
pub(crate) fn allows(
    consents: &ConsentSet,
    who: &ConsentActor<'_>,
    rtype: ResourceType,
    reach: Option<&[ResourceId]>,
    emergency: &[ResourceId],
    patients: &[String],
    labels: &[Label],
) -> bool {
    let mut governed = false;
    for p in patients {
        if reach.is_some_and(|r| !r.iter().any(|x| x.as_str() == p)) {
            continue;
        }
        if emergency.iter().any(|e| e.as_str() == p) {
            governed = true;
            continue;
        }
        for c in consents.of(p) {
            let mut rules = Vec::new();
            c.root.rules(who, rtype, &mut rules);
            if rules.is_empty() {
                continue;
            }
            governed = true;
            let (show, hidden) = decision(&rules);
            if !show || labels.iter().any(|l| hidden.contains(l)) {
                return false;
            }
        }
    }
    governed
        || !labels
            .iter()
            .any(|(s, c)| SENSITIVE_LABELS.iter().any(|(ss, cc)| s == ss && c == cc))
}

/// The conditions the consents put on a query of `rtype` by `who`, for resources of the
/// patients `reach` names (`None` = every patient). Patients whose rules are the same share
/// one condition.
pub(crate) fn conditions(
    consents: &ConsentSet,
    who: &ConsentActor<'_>,
    rtype: ResourceType,
    reach: Option<&[ResourceId]>,
    emergency: &[ResourceId],
) -> Vec<Cond> {
    let mut groups: BTreeMap<String, (Cond, Vec<String>)> = BTreeMap::new();
    // Patients under break-the-glass: no consent rule and no label limits this caller.
    let mut with_rules: Vec<String> = emergency.iter().map(|p| p.as_str().to_owned()).collect();
    for c in &consents.list {
        if reach.is_some_and(|r| !r.contains(&c.patient)) || emergency.contains(&c.patient) {
            continue;
        }
        let mut rules = Vec::new();
        c.root.rules(who, rtype, &mut rules);
        if rules.is_empty() {
            continue;
        }
        let cond = visible(&rules);
        let entry = groups.entry(format!("{cond:?}")).or_insert_with(|| (cond, Vec::new()));
        entry.1.push(c.patient.as_str().to_owned());
        with_rules.push(c.patient.as_str().to_owned());
    }
    let mut out = Vec::new();
    // Every patient whose compartment holds the resource must allow it.
    for (_, (cond, patients)) in groups {
        out.push(Cond::Any(vec![Cond::Not(Box::new(in_compartment(patients))), cond]));
    }
    if with_rules.is_empty() {
        out.push(default_rule());
    } else {
        out.push(Cond::Any(vec![in_compartment(with_rules), default_rule()]));
    }
    out
}

const PAGE: u32 = 1000;

impl<S: Store> Vault<S> {
    /// Every active privacy consent as of the Consent version `newest` (the access epoch),
    /// reloaded when a Consent has changed since the last load.
    pub(crate) async fn consents_at(&self, newest: i64) -> Result<Arc<ConsentSet>, CoreError> {
        if let Ok(book) = self.consent_book.0.lock()
            && let Some((epoch, list)) = book.as_ref()
            && *epoch == newest
        {
            return Ok(Arc::clone(list));
        }
        let mut list = Vec::new();
        let mut q = SearchQuery {
            tenant: self.tenant.as_str().to_owned(),
            rtype: "Consent".to_owned(),
            conds: vec![Cond::Token {
                param: "status".to_owned(),
                system: None,
                code: Some("active".to_owned()),
            }],
            sort: Vec::new(),
            after: None,
            backwards: false,
            limit: PAGE,
        };
        loop {
            let hits = self.store.search(&q).await?;
            let Some(last) = hits.last() else { break };
            q.after = Some((Vec::new(), last.rid));
            let done = hits.len() < PAGE as usize;
            let ids: Vec<String> = hits.into_iter().map(|h| h.id).collect();
            let access = crate::access::Access::unchecked_system();
            for r in self.session(&access).read_visible(ResourceType::Consent, &ids).await? {
                if let Ok(body) = serde_json::from_slice::<Value>(&r.body)
                    && let Some(c) = parse_consent(&body)
                {
                    list.push(c);
                }
            }
            if done {
                break;
            }
        }
        let list = Arc::new(ConsentSet::new(list));
        if let Ok(mut book) = self.consent_book.0.lock() {
            *book = Some((newest, Arc::clone(&list)));
        }
        Ok(list)
    }
}
