//! Transaction and batch bundles.
//!
//! A transaction is planned in full before anything is written: targets are resolved
//! (ids assigned, `ifNoneExist` and conditional URLs looked up), every reference is rewritten
//! (`urn:uuid:` full URLs and conditional references), every body is sealed, and then one
//! change set is applied, so a failing transaction writes nothing. A batch runs each entry as
//! its own one-entry transaction and reports each outcome.

use crate::access::Perms;
use crate::crud::{Pending, ReadOutcome, StoredResource};
use crate::identifiers::IdentifierQuery;
use crate::{CoreError, Session};
use carevault_domain::patch::PatchDocument;
use carevault_domain::{Reference, Resource, ResourceError, ResourceId, ResourceType, Timestamp, VersionId};
use carevault_storage::{ChangeSet, Claim, Store, StoreError};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};

/// What kind of bundle was processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleKind {
    Transaction,
    Batch,
}

/// The outcome of one entry, as a `Bundle.entry.response` will say it.
#[derive(Debug)]
pub struct EntryResult {
    pub status: u16,
    pub location: Option<String>,
    pub version: Option<u64>,
    pub last_modified: Option<Timestamp>,
    /// The resource, for writes and reads that produced one.
    pub resource: Option<Vec<u8>>,
    /// Why the entry failed (batch only; a transaction fails whole).
    pub error: Option<CoreError>,
    /// A GET entry: its resource (or searchset) is returned whatever `Prefer` says.
    pub read: bool,
    /// A search entry's page of results: the searched type and the page.
    pub search: Option<(ResourceType, crate::SearchPage)>,
}

/// The outcome of a whole bundle.
#[derive(Debug)]
pub struct BundleOutcome {
    pub kind: BundleKind,
    pub entries: Vec<EntryResult>,
    /// Resources created or changed, by type.
    pub written: BTreeMap<ResourceType, usize>,
}

/// How often a transaction that conflicted with concurrent writes is planned again.
const TRANSACTION_ATTEMPTS: usize = 16;
/// How many of a batch's plain creates run at once.
const BATCH_CREATES_AT_ONCE: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

#[derive(Debug, Clone)]
struct Entry {
    method: Method,
    url: String,
    full_url: Option<String>,
    resource: Option<Resource>,
    if_none_exist: Option<String>,
    if_match: Option<VersionId>,
}

/// Where an entry's URL points.
enum Target {
    Type(ResourceType),
    Instance(ResourceType, ResourceId, Option<VersionId>),
    Conditional(ResourceType, String),
}

fn invalid(i: usize, msg: impl std::fmt::Display) -> CoreError {
    CoreError::Invalid(format!("entry {i}: {msg}"))
}

fn with_entry(i: usize, e: CoreError) -> CoreError {
    match e {
        CoreError::Invalid(m) => CoreError::Invalid(format!("entry {i}: {m}")),
        CoreError::Unprocessable(m) => CoreError::Unprocessable(format!("entry {i}: {m}")),
        CoreError::PreconditionFailed(m) => CoreError::PreconditionFailed(format!("entry {i}: {m}")),
        CoreError::Conflict(m) => CoreError::Conflict(format!("entry {i}: {m}")),
        other => other,
    }
}

fn parse_target(i: usize, url: &str) -> Result<Target, CoreError> {
    let url = url.trim_start_matches('/');
    if let Some((t, q)) = url.split_once('?') {
        let rtype = t
            .parse::<ResourceType>()
            .map_err(|_| invalid(i, "unknown resource type in request.url"))?;
        return Ok(Target::Conditional(rtype, q.to_owned()));
    }
    let parts: Vec<&str> = url.split('/').collect();
    let rtype = |t: &str| {
        t.parse::<ResourceType>()
            .map_err(|_| invalid(i, "unknown resource type in request.url"))
    };
    let id = |s: &str| ResourceId::parse(s).map_err(|e| invalid(i, e));
    match parts.as_slice() {
        [t] => Ok(Target::Type(rtype(t)?)),
        [t, rid] => Ok(Target::Instance(rtype(t)?, id(rid)?, None)),
        [t, rid, "_history", v] => {
            let v = VersionId::parse(v).map_err(|e| invalid(i, e))?;
            Ok(Target::Instance(rtype(t)?, id(rid)?, Some(v)))
        }
        _ => Err(invalid(
            i,
            "request.url is not a relative FHIR URL this server understands",
        )),
    }
}

fn parse_entries(bundle: &Value) -> Result<(BundleKind, Vec<Entry>), CoreError> {
    let obj = bundle
        .as_object()
        .ok_or_else(|| CoreError::Invalid("the body must be a Bundle".into()))?;
    if obj.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(CoreError::Invalid("the body must be a Bundle".into()));
    }
    let kind = match obj.get("type").and_then(Value::as_str) {
        Some("transaction") => BundleKind::Transaction,
        Some("batch") => BundleKind::Batch,
        _ => {
            return Err(CoreError::Invalid(
                "Bundle.type must be `transaction` or `batch`".into(),
            ));
        }
    };
    let raw = match obj.get("entry") {
        None => return Ok((kind, Vec::new())),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(CoreError::Invalid("Bundle.entry must be an array".into())),
    };
    let mut entries = Vec::with_capacity(raw.len());
    for (i, e) in raw.iter().enumerate() {
        let request = e.get("request").ok_or_else(|| invalid(i, "missing request"))?;
        let method = match request.get("method").and_then(Value::as_str) {
            Some("GET") | Some("HEAD") => Method::Get,
            Some("POST") => Method::Post,
            Some("PUT") => Method::Put,
            Some("DELETE") => Method::Delete,
            Some("PATCH") => Method::Patch,
            _ => {
                return Err(invalid(i, "request.method must be GET, POST, PUT, PATCH or DELETE"));
            }
        };
        let url = request
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(i, "missing request.url"))?;
        let resource = match e.get("resource") {
            Some(r) => Some(Resource::from_value(r.clone()).map_err(|err| match err {
                ResourceError::Unprocessable(m) => CoreError::Unprocessable(format!("entry {i}: {m}")),
                other => invalid(i, other),
            })?),
            None => None,
        };
        let if_match = match request.get("ifMatch").and_then(Value::as_str) {
            Some(s) => Some(parse_etag(s).ok_or_else(|| invalid(i, "ifMatch is not an ETag like W/\"3\""))?),
            None => None,
        };
        entries.push(Entry {
            method,
            url: url.to_owned(),
            full_url: e.get("fullUrl").and_then(Value::as_str).map(str::to_owned),
            resource,
            if_none_exist: request.get("ifNoneExist").and_then(Value::as_str).map(str::to_owned),
            if_match,
        });
    }
    Ok((kind, entries))
}

/// Parses `W/"3"` or `"3"` or `3` into a version.
pub fn parse_etag(s: &str) -> Option<VersionId> {
    let s = s.trim();
    let s = s.strip_prefix("W/").unwrap_or(s);
    let s = s.trim_matches('"');
    VersionId::parse(s).ok()
}

/// What the transaction will do with one entry.
enum Plan {
    /// `claim`: an `ifNoneExist` create's claim on its condition (see `Session::claim_tag`).
    Create {
        rtype: ResourceType,
        id: ResourceId,
        resource: Resource,
        claim: Option<Vec<u8>>,
    },
    Matched {
        rtype: ResourceType,
        id: ResourceId,
    },
    /// `claim`: a conditional update that matched nothing claims its condition.
    Put {
        rtype: ResourceType,
        id: ResourceId,
        resource: Resource,
        if_match: Option<VersionId>,
        claim: Option<Vec<u8>>,
    },
    Delete {
        rtype: ResourceType,
        id: ResourceId,
        if_match: Option<VersionId>,
    },
    DeleteNothing,
    Get {
        target: String,
    },
    Search {
        rtype: ResourceType,
        query: String,
    },
}

impl<S: Store> Session<'_, S> {
    /// Processes a transaction or batch bundle.
    pub async fn process_bundle(&self, bundle: &Value) -> Result<BundleOutcome, CoreError> {
        let (kind, entries) = parse_entries(bundle)?;
        match kind {
            BundleKind::Transaction => self.transaction(entries).await,
            BundleKind::Batch => Ok(self.batch(entries).await),
        }
    }

    /// A batch: each entry on its own, in order, as if sent alone. A run of plain creates
    /// (`POST` without `ifNoneExist`: new ids, nothing to read or to race for) runs
    /// `BATCH_CREATES_AT_ONCE` at a time, so that they share the store's commits — once the
    /// request's audit entry has committed with a write, which the first write carries.
    async fn batch(&self, entries: Vec<Entry>) -> BundleOutcome {
        use futures_util::StreamExt as _;
        let mut results = Vec::with_capacity(entries.len());
        let mut written = BTreeMap::new();
        let mut record = |outcome: Result<BundleOutcome, CoreError>| match outcome {
            Ok(mut out) => {
                for (t, n) in out.written {
                    *written.entry(t).or_insert(0) += n;
                }
                results.extend(out.entries.pop());
            }
            Err(e) => results.push(EntryResult {
                error: Some(e),
                ..empty_result(0)
            }),
        };
        let plain_create = |e: &Entry| e.method == Method::Post && e.if_none_exist.is_none();
        let mut entries = entries.into_iter().peekable();
        while let Some(entry) = entries.next() {
            if !plain_create(&entry) || crate::audit::pending().is_some() {
                record(self.transaction(vec![entry]).await);
                continue;
            }
            let mut run = vec![entry];
            while let Some(next) = entries.next_if(|e| plain_create(e)) {
                run.push(next);
            }
            let outcomes: Vec<_> = futures_util::stream::iter(run.into_iter().map(|e| self.transaction(vec![e])))
                .buffered(BATCH_CREATES_AT_ONCE)
                .collect()
                .await;
            outcomes.into_iter().for_each(&mut record);
        }
        BundleOutcome {
            kind: BundleKind::Batch,
            entries: results,
            written,
        }
    }

    async fn transaction(&self, entries: Vec<Entry>) -> Result<BundleOutcome, CoreError> {
        let mut claims = true;
        for attempt in 0..TRANSACTION_ATTEMPTS {
            match self.try_transaction(&entries, claims).await {
                // A conditional create lost its claim: plan again, and if the condition still
                // matches nothing the caller can see, create unclaimed (see `Claimed`).
                Ok(Err(crate::conditional::Claimed)) => claims = false,
                Ok(Ok(outcome)) => return Ok(outcome),
                Err(CoreError::Conflict(m)) if entries.iter().all(|e| e.if_match.is_none()) => {
                    tracing::debug!(reason = %m, "transaction conflicted; planning again");
                    // Writers racing for one resource take turns rather than collide again:
                    // a random pause of up to a millisecond per attempt so far.
                    let mut r = [0u8; 2];
                    self.rng.fill(&mut r)?;
                    let micros = u64::from(u16::from_le_bytes(r)) % (1000 * (attempt as u64 + 1));
                    tokio::time::sleep(std::time::Duration::from_micros(micros)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(CoreError::Conflict(
            "the transaction kept conflicting with concurrent writes".into(),
        ))
    }

    /// One attempt at a transaction; `claims`: whether conditional creates claim their
    /// conditions.
    async fn try_transaction(
        &self,
        entries: &[Entry],
        claims: bool,
    ) -> Result<Result<BundleOutcome, crate::conditional::Claimed>, CoreError> {
        let mut plans: Vec<Option<Plan>> = (0..entries.len()).map(|_| None).collect();
        let mut urls: HashMap<String, String> = HashMap::new();
        // Order of processing per the spec: DELETE, POST, PUT and PATCH, GET.
        for methods in [
            &[Method::Delete][..],
            &[Method::Post],
            &[Method::Put, Method::Patch],
            &[Method::Get],
        ] {
            for (i, e) in entries.iter().enumerate().filter(|(_, e)| methods.contains(&e.method)) {
                let plan = self
                    .plan_entry(i, e, &plans, claims)
                    .await
                    .map_err(|err| with_entry(i, err))?;
                if let (Some(full), Some((rtype, id))) = (&e.full_url, plan_target(&plan)) {
                    urls.insert(full.clone(), format!("{rtype}/{id}"));
                }
                plans[i] = Some(plan);
            }
        }
        // One resource may be the target of one entry only.
        let mut seen = HashSet::new();
        for (i, p) in plans.iter().enumerate() {
            if let Some(Some((t, id))) = p.as_ref().map(plan_target)
                && !matches!(p, Some(Plan::Matched { .. }))
                && !seen.insert((t, id.clone()))
            {
                return Err(invalid(i, "the same resource is the target of two entries"));
            }
        }
        // Rewrite references: bundle full URLs, then conditional references.
        for i in 0..plans.len() {
            let mut resource = match plans[i].as_mut() {
                Some(Plan::Create { resource, .. }) | Some(Plan::Put { resource, .. }) => std::mem::replace(
                    resource,
                    Resource::from_value(serde_json::json!({"resourceType": "Basic"}))
                        .map_err(|_| CoreError::Integrity)?,
                ),
                _ => continue,
            };
            self.rewrite(i, &mut resource, &urls, &plans)
                .await
                .map_err(|err| with_entry(i, err))?;
            if let Some(Plan::Create { resource: r, .. }) | Some(Plan::Put { resource: r, .. }) = plans[i].as_mut() {
                *r = resource;
            }
        }
        // Seal every write, then apply them together.
        let mut pendings: Vec<Option<Pending>> = (0..plans.len()).map(|_| None).collect();
        let mut results: Vec<Option<EntryResult>> = (0..plans.len()).map(|_| None).collect();
        let mut changes = ChangeSet::default();
        for (i, plan) in plans.iter().enumerate() {
            let Some(plan) = plan else { continue };
            match plan {
                Plan::Create {
                    rtype, id, resource, ..
                } => {
                    self.require(*rtype, Perms::CREATE).map_err(|e| with_entry(i, e))?;
                    self.check_write_target(*rtype, id, resource.json())
                        .map_err(|e| with_entry(i, e))?;
                    match self
                        .prepare(*rtype, id, resource.clone(), None)
                        .await
                        .map_err(|e| with_entry(i, e))?
                    {
                        Ok(p) => pendings[i] = Some(p),
                        Err(_) => {
                            return Err(CoreError::Conflict(format!("entry {i}: id collision")));
                        }
                    }
                }
                Plan::Put {
                    rtype,
                    id,
                    resource,
                    if_match,
                    ..
                } => {
                    let current = self
                        .checked_put(*rtype, id, resource)
                        .await
                        .map_err(|e| with_entry(i, e))?;
                    check_if_match(i, *if_match, current.as_ref()).map_err(|e| match e {
                        // A patch entry is bound to the version it was applied to; when the
                        // client named none, a write in between means planning again.
                        CoreError::PreconditionFailed(_) if entries[i].if_match.is_none() => {
                            CoreError::Conflict(format!("entry {i}: the patched resource changed"))
                        }
                        other => other,
                    })?;
                    match self
                        .prepare(*rtype, id, resource.clone(), current.as_ref())
                        .await
                        .map_err(|e| with_entry(i, e))?
                    {
                        Ok(p) => pendings[i] = Some(p),
                        Err(unchanged) => results[i] = Some(written_result(&unchanged, 200)),
                    }
                }
                Plan::Delete { rtype, id, if_match } => {
                    self.require(*rtype, Perms::DELETE).map_err(|e| with_entry(i, e))?;
                    let key = self.resource_key(*rtype, id);
                    let current = match self.writable_current(*rtype, id, &key, Perms::DELETE).await {
                        Err(CoreError::NotFound) => None,
                        other => other?,
                    };
                    check_if_match(i, *if_match, current.as_ref())?;
                    match current.filter(|c| !c.is_deleted()) {
                        Some(cur) => {
                            let v = self.deletion(*rtype, id, &cur);
                            results[i] = Some(EntryResult {
                                version: Some(v.version),
                                last_modified: Some(Timestamp::from_millis(v.last_updated)),
                                ..empty_result(204)
                            });
                            changes.versions.push(v);
                        }
                        None => results[i] = Some(empty_result(204)),
                    }
                }
                Plan::DeleteNothing => results[i] = Some(empty_result(204)),
                Plan::Matched { .. } | Plan::Get { .. } | Plan::Search { .. } => {}
            }
        }
        let mut written = BTreeMap::new();
        for (p, plan) in pendings.iter().zip(&plans) {
            let Some(p) = p else { continue };
            if let Some(Plan::Create { claim: Some(tag), .. } | Plan::Put { claim: Some(tag), .. }) = plan {
                changes.claims.push(Claim {
                    tag: tag.clone(),
                    version: changes.versions.len(),
                });
            }
            changes.versions.push(p.version.clone());
            let t: ResourceType = p.written.resource.rtype;
            *written.entry(t).or_insert(0) += 1;
        }
        if !changes.versions.is_empty() {
            match self.apply(changes).await {
                Ok(()) => {}
                Err(StoreError::Claimed) => return Ok(Err(crate::conditional::Claimed)),
                Err(StoreError::Conflict) if entries.iter().any(|e| e.if_match.is_some()) => {
                    return Err(CoreError::PreconditionFailed(
                        "a concurrent write made an ifMatch stale".into(),
                    ));
                }
                Err(e) => return Err(e.into()),
            }
        }
        // After the writes: results of creates and updates, matches and reads.
        for (i, plan) in plans.iter().enumerate() {
            if let Some(p) = &pendings[i] {
                let status = if p.written.created { 201 } else { 200 };
                results[i] = Some(written_result(&p.written.resource, status));
                continue;
            }
            match plan {
                Some(Plan::Matched { rtype, id }) => {
                    results[i] = Some(match self.read(*rtype, id).await? {
                        ReadOutcome::Found(r) => written_result(&r, 200),
                        _ => empty_result(200),
                    });
                }
                Some(Plan::Get { target }) => results[i] = Some(self.get_entry(i, target).await),
                Some(Plan::Search { rtype, query }) => {
                    results[i] = Some(
                        match self.search(*rtype, query, crate::SearchOptions::default()).await {
                            Ok(page) => EntryResult {
                                search: Some((*rtype, page)),
                                read: true,
                                ..empty_result(200)
                            },
                            Err(e) => EntryResult {
                                error: Some(with_entry(i, e)),
                                ..empty_result(0)
                            },
                        },
                    )
                }
                _ => {}
            }
        }
        let entries = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| empty_result(200)))
            .collect();
        Ok(Ok(BundleOutcome {
            kind: BundleKind::Transaction,
            entries,
            written,
        }))
    }

    async fn plan_entry(&self, i: usize, e: &Entry, plans: &[Option<Plan>], claims: bool) -> Result<Plan, CoreError> {
        let target = parse_target(i, &e.url)?;
        let body_type = e.resource.as_ref().map(Resource::rtype);
        match (e.method, target) {
            (Method::Post, Target::Type(rtype)) => {
                let resource = e.resource.clone().ok_or_else(|| invalid(i, "POST needs a resource"))?;
                if body_type != Some(rtype) {
                    return Err(invalid(i, "the resource type does not match request.url"));
                }
                let mut claim = None;
                if let Some(cond) = &e.if_none_exist {
                    let matches = self.resolve(rtype, condition_query(cond), plans).await?;
                    match matches.as_slice() {
                        [] if claims => claim = Some(self.claim_tag(rtype, condition_query(cond))?),
                        [] => {}
                        [one] => {
                            return Ok(Plan::Matched { rtype, id: one.clone() });
                        }
                        _ => {
                            return Err(CoreError::PreconditionFailed(
                                "ifNoneExist matches more than one resource".into(),
                            ));
                        }
                    }
                }
                Ok(Plan::Create {
                    rtype,
                    id: self.new_id()?,
                    resource,
                    claim,
                })
            }
            (Method::Put, Target::Instance(rtype, id, None)) => {
                let resource = e.resource.clone().ok_or_else(|| invalid(i, "PUT needs a resource"))?;
                if body_type != Some(rtype) {
                    return Err(invalid(i, "the resource type does not match request.url"));
                }
                if resource.id().is_some_and(|b| b != id) {
                    return Err(invalid(i, "the resource id does not match request.url"));
                }
                Ok(Plan::Put {
                    rtype,
                    id,
                    resource,
                    if_match: e.if_match,
                    claim: None,
                })
            }
            (Method::Put, Target::Conditional(rtype, q)) => {
                let resource = e.resource.clone().ok_or_else(|| invalid(i, "PUT needs a resource"))?;
                if body_type != Some(rtype) {
                    return Err(invalid(i, "the resource type does not match request.url"));
                }
                let found = self.resolve(rtype, &q, plans).await?;
                let (id, claim) = match found.as_slice() {
                    [] => {
                        let tag = if claims { Some(self.claim_tag(rtype, &q)?) } else { None };
                        match resource.id() {
                            Some(id) => (id, tag),
                            // No match and no id: a create, under the create's rules.
                            None => {
                                return Ok(Plan::Create {
                                    rtype,
                                    id: self.new_id()?,
                                    resource,
                                    claim: tag,
                                });
                            }
                        }
                    }
                    [one] => (one.clone(), None),
                    _ => {
                        return Err(CoreError::PreconditionFailed(
                            "the conditional update matches more than one resource".into(),
                        ));
                    }
                };
                Ok(Plan::Put {
                    rtype,
                    id,
                    resource,
                    if_match: e.if_match,
                    claim,
                })
            }
            (Method::Delete, Target::Instance(rtype, id, None)) => Ok(Plan::Delete {
                rtype,
                id,
                if_match: e.if_match,
            }),
            (Method::Delete, Target::Conditional(rtype, q)) => {
                let found = self.resolve(rtype, &q, &[]).await?;
                match found.as_slice() {
                    [] => Ok(Plan::DeleteNothing),
                    [one] => Ok(Plan::Delete {
                        rtype,
                        id: one.clone(),
                        if_match: e.if_match,
                    }),
                    _ => Err(CoreError::PreconditionFailed(
                        "the conditional delete matches more than one resource".into(),
                    )),
                }
            }
            (Method::Get, Target::Instance(..)) => Ok(Plan::Get { target: e.url.clone() }),
            (Method::Get, Target::Type(rtype)) => Ok(Plan::Search {
                rtype,
                query: String::new(),
            }),
            (Method::Get, Target::Conditional(rtype, query)) => Ok(Plan::Search { rtype, query }),
            (Method::Patch, Target::Instance(rtype, id, None)) => self.plan_patch(i, e, rtype, id).await,
            (Method::Patch, Target::Conditional(rtype, q)) => {
                let matches = self.resolve(rtype, &q, plans).await?;
                match matches.as_slice() {
                    [one] => self.plan_patch(i, e, rtype, one.clone()).await,
                    [] => Err(CoreError::NotFound),
                    _ => Err(CoreError::PreconditionFailed(
                        "the conditional patch matches more than one resource".into(),
                    )),
                }
            }
            _ => Err(invalid(i, "this method and request.url do not go together")),
        }
    }

    /// A PATCH entry: its resource is a Binary holding a JSON Patch
    /// (`application/json-patch+json`, base64 in `data`) or a Parameters holding a FHIRPath
    /// Patch, applied to the current version now and written as an update bound to that
    /// version.
    async fn plan_patch(&self, i: usize, e: &Entry, rtype: ResourceType, id: ResourceId) -> Result<Plan, CoreError> {
        use base64::Engine as _;
        let carried = e
            .resource
            .as_ref()
            .filter(|r| matches!(r.rtype(), ResourceType::Binary | ResourceType::Parameters))
            .ok_or_else(|| {
                invalid(
                    i,
                    "a PATCH entry carries a Binary with a JSON Patch or a Parameters with a FHIRPath Patch",
                )
            })?;
        let body = carried.json();
        let patch = if carried.rtype() == ResourceType::Parameters {
            PatchDocument::FhirPath(body.clone())
        } else {
            if body["contentType"].as_str() != Some("application/json-patch+json") {
                return Err(invalid(
                    i,
                    "the Binary's contentType must be application/json-patch+json",
                ));
            }
            let data = body["data"]
                .as_str()
                .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
                .ok_or_else(|| invalid(i, "the Binary's data must be base64"))?;
            PatchDocument::Json(
                serde_json::from_slice(&data)
                    .map_err(|_| invalid(i, "the Binary's data is not a JSON Patch document"))?,
            )
        };
        let current = self.patch_base(rtype, &id, e.if_match).await?;
        let resource = self.patched(rtype, &id, &current, &patch)?;
        Ok(Plan::Put {
            rtype,
            id,
            resource,
            if_match: Some(VersionId::new(current.version).map_err(|_| CoreError::Integrity)?),
            claim: None,
        })
    }

    /// Resources matching a condition: with only `_id`/`identifier`, the ones this bundle
    /// creates or updates and then the stored ones; any other search, the stored ones.
    async fn resolve(
        &self,
        rtype: ResourceType,
        query: &str,
        plans: &[Option<Plan>],
    ) -> Result<Vec<ResourceId>, CoreError> {
        let Ok(q) = IdentifierQuery::parse(query) else {
            return self.matching_ids(rtype, query).await;
        };
        let mut out = Vec::new();
        for plan in plans.iter().flatten() {
            if let Plan::Create {
                rtype: t, id, resource, ..
            }
            | Plan::Put {
                rtype: t, id, resource, ..
            } = plan
                && *t == rtype
                && q.matches(resource, id)
                && !out.contains(id)
            {
                out.push(id.clone());
            }
        }
        for id in self.find(rtype, &q).await? {
            if !out.contains(&id) {
                out.push(id);
            }
        }
        Ok(out)
    }

    async fn rewrite(
        &self,
        i: usize,
        resource: &mut Resource,
        urls: &HashMap<String, String>,
        plans: &[Option<Plan>],
    ) -> Result<(), CoreError> {
        // A Bundle stored as a resource (a document, a collection) keeps its own references.
        if resource.rtype() == ResourceType::Bundle {
            return Ok(());
        }
        let mut conditional = Vec::new();
        let mut unresolved_urn = false;
        resource.rewrite_references(&mut |r| {
            if let Some(to) = urls.get(r) {
                return Some(to.clone());
            }
            match Reference::parse(r) {
                Reference::Conditional { rtype, query } => conditional.push((r.to_owned(), rtype, query)),
                Reference::Urn(_) => unresolved_urn = true,
                _ => {}
            }
            None
        });
        if unresolved_urn {
            return Err(invalid(i, "a urn: reference names no entry of this bundle"));
        }
        let mut resolved = HashMap::new();
        for (text, rtype, query) in conditional {
            if resolved.contains_key(&text) {
                continue;
            }
            let found = self.resolve(rtype, &query, plans).await?;
            match found.as_slice() {
                [one] => {
                    resolved.insert(text, format!("{rtype}/{one}"));
                }
                [] => {
                    return Err(CoreError::PreconditionFailed(
                        "a conditional reference matches no resource".into(),
                    ));
                }
                _ => {
                    return Err(CoreError::PreconditionFailed(
                        "a conditional reference matches more than one resource".into(),
                    ));
                }
            }
        }
        if !resolved.is_empty() {
            resource.rewrite_references(&mut |r| resolved.get(r).cloned());
        }
        Ok(())
    }

    async fn get_entry(&self, i: usize, url: &str) -> EntryResult {
        let outcome = match parse_target(i, url) {
            Ok(Target::Instance(rtype, id, None)) => self.read(rtype, &id).await,
            Ok(Target::Instance(rtype, id, Some(v))) => self.vread(rtype, &id, v).await,
            Ok(_) => Err(invalid(i, "request.url is not a read")),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(ReadOutcome::Found(r)) => EntryResult {
                read: true,
                ..written_result(&r, 200)
            },
            Ok(ReadOutcome::Deleted { .. }) => EntryResult {
                error: Some(CoreError::Gone {
                    version: 0,
                    last_updated: 0,
                }),
                ..empty_result(410)
            },
            Ok(ReadOutcome::NotFound) => EntryResult {
                error: Some(CoreError::NotFound),
                ..empty_result(404)
            },
            Err(e) => EntryResult {
                error: Some(e),
                ..empty_result(0)
            },
        }
    }
}

fn plan_target(plan: &Plan) -> Option<(ResourceType, ResourceId)> {
    match plan {
        Plan::Create { rtype, id, .. }
        | Plan::Matched { rtype, id }
        | Plan::Put { rtype, id, .. }
        | Plan::Delete { rtype, id, .. } => Some((*rtype, id.clone())),
        _ => None,
    }
}

fn check_if_match(
    i: usize,
    if_match: Option<VersionId>,
    current: Option<&carevault_storage::StoredVersion>,
) -> Result<(), CoreError> {
    if let Some(want) = if_match {
        let live = current.filter(|c| !c.is_deleted()).map(|c| c.version);
        if live != Some(want.get()) {
            return Err(CoreError::PreconditionFailed(format!(
                "entry {i}: ifMatch does not name the current version"
            )));
        }
    }
    Ok(())
}

fn written_result(r: &StoredResource, status: u16) -> EntryResult {
    EntryResult {
        status,
        location: Some(format!("{}/{}/_history/{}", r.rtype, r.id, r.version)),
        version: Some(r.version),
        last_modified: Some(r.last_updated),
        resource: Some(r.body.clone()),
        error: None,
        read: false,
        search: None,
    }
}

fn empty_result(status: u16) -> EntryResult {
    EntryResult {
        status,
        location: None,
        version: None,
        last_modified: None,
        resource: None,
        error: None,
        read: false,
        search: None,
    }
}

/// The query part of a condition: `identifier=…`, `?identifier=…` or `Patient?identifier=…`.
pub fn condition_query(cond: &str) -> &str {
    cond.split_once('?').map_or(cond, |(_, q)| q)
}
