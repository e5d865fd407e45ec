//! Bulk Data export (`$export` at system, `Patient` and `Group/[id]` level), as the FHIR Bulk
//! Data Access IG describes it: a kick-off records a job, a background worker walks the
//! selected resources and writes NDJSON files of one type each, sealed under the tenant's
//! data key (bound to the job and file number), and a status call answers "still running",
//! the manifest, or the failure. Jobs expire; expired jobs and their files are deleted.
//!
//! The job's stored request is rebuilt from the parsed parameters (`kick_off.rs`: types, a
//! date, random ids, element names), so no caller text reaches the database in the clear, a
//! log or the status of a running job. `_typeFilter` queries are caller text that may hold identifying values (a
//! name prefix): the worker runs them from memory, and the job keeps them only sealed under
//! the tenant's data key, opened to show them in the finished job's manifest.

use crate::access::Perms;
use crate::keys::Row;
use crate::search::TypeFilter;
use crate::{CoreError, ReadOutcome, Session};
use carevault_domain::{ResourceId, ResourceType, Timestamp};
use carevault_storage::{
    Cond, ExportFile, ExportFileInfo, ExportJob, ExportState, Prefix, SealedText, SearchQuery, Store, Table,
};
use kick_off::{KickOffParams, allowed_types};
use serde_json::Value;

mod kick_off;

/// Resources per output file before a new file starts.
const MAX_PER_FILE: usize = 5_000;
/// Bytes per output file (before sealing) before a new file starts.
const MAX_FILE_BYTES: usize = 32 * 1024 * 1024;
/// Search page size of the worker's walk.
const PAGE: u32 = 5_000;
/// A running job whose worker wrote nothing for this long is reported as failed (its server
/// stopped, say).
const STALE_MS: i64 = 10 * 60 * 1000;

/// Which resources an export covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportLevel {
    /// Every resource of the tenant.
    System,
    /// Every patient and everything in any patient's compartment.
    Patient,
    /// The members of a Group and their compartments.
    Group(ResourceId),
}

/// A kick-off: the level, its parameters (decoded, from the query string or a `Parameters`
/// body) and whether it came by POST.
#[derive(Debug, Clone)]
pub struct ExportKickOff {
    pub level: ExportLevel,
    pub params: Vec<(String, String)>,
    pub by_post: bool,
}

/// A job's id: random, URL-safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportJobId(String);

impl ExportJobId {
    /// Accepts only what the server itself could have issued.
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What the worker needs to run a job.
#[derive(Debug, Clone)]
pub struct ExportPlan {
    types: Vec<ResourceType>,
    /// `None`: every resource of each type; `Some`: only these patients' compartments.
    patients: Option<Vec<String>>,
    /// Patient level: everything in some patient's compartment.
    any_patient: bool,
    since: Option<Timestamp>,
    transaction_time: Timestamp,
    /// `_typeFilter`: a type with filters exports what matches any of its filters.
    filters: Vec<TypeFilter>,
    /// `_elements`: top-level elements every type keeps (`name`), and those of one type
    /// (`Patient.name`); a type none of them names is written whole.
    elements: Vec<(Option<ResourceType>, String)>,
}

impl ExportPlan {
    /// The elements resources of `t` are cut down to, if any.
    fn elements_of(&self, t: ResourceType) -> Option<Vec<String>> {
        let list: Vec<String> = self
            .elements
            .iter()
            .filter(|(only, _)| only.is_none_or(|o| o == t))
            .map(|(_, e)| e.clone())
            .collect();
        (!list.is_empty()).then_some(list)
    }
}

/// Where a job stands, as the status endpoint reports it.
#[derive(Debug, Clone)]
pub enum ExportStatus {
    Running {
        written: i64,
    },
    Done {
        transaction_time: Timestamp,
        /// The kick-off request, relative to the FHIR base (`$export?_type=…`).
        request: String,
        files: Vec<ExportFileInfo>,
        expires: Timestamp,
    },
    Failed {
        reason: String,
    },
}

fn bad(msg: &str) -> CoreError {
    CoreError::Invalid(msg.to_owned())
}

impl<S: Store> Session<'_, S> {
    /// Validates a kick-off and records the job. The caller runs [`Session::run_export`] with
    /// the plan in the background. `strict` (the Bulk Data default; `Prefer: handling=lenient`
    /// turns it off): a `_typeFilter` parameter the server does not know is an error rather
    /// than ignored.
    pub async fn start_export(
        &self,
        kick_off: ExportKickOff,
        ttl_ms: i64,
        strict: bool,
    ) -> Result<(ExportJobId, ExportPlan), CoreError> {
        let ExportKickOff {
            level,
            params: pairs,
            by_post,
        } = kick_off;
        let allowed = allowed_types(&level);
        let p = KickOffParams::read(&level, &pairs)?;
        let mut filters = Vec::with_capacity(p.filter_texts.len());
        for text in &p.filter_texts {
            let f = self.type_filter(text, &allowed, strict).await?;
            if !p.types.contains(&f.rtype) {
                return Err(bad("a _typeFilter names a type that _type leaves out"));
            }
            filters.push(f);
        }
        // `patient` narrows a Patient level export to those patients, and a Group's to those
        // of its members (a patient the caller cannot see exports nothing, as if absent).
        let patients = match (&level, p.listed.clone()) {
            (ExportLevel::Group(id), listed) => {
                let members = self.group_members(id).await?;
                Some(match listed {
                    Some(l) => members.into_iter().filter(|m| l.contains(m)).collect(),
                    None => members,
                })
            }
            (_, listed) => listed,
        };
        let now = self.clock.now();
        let mut raw = [0u8; 16];
        self.rng.fill(&mut raw)?;
        let id = ExportJobId(raw.iter().map(|b| format!("{b:02x}")).collect());
        let request = p.request(&level, by_post);
        // Kept only for the manifest's request, which a POST kick-off's does not repeat.
        let sealed_filters = if filters.is_empty() || by_post {
            None
        } else {
            let (key_id, key) = self.key_for_scope("").await?;
            let text = serde_json::to_vec(&p.filter_texts).map_err(|_| CoreError::Integrity)?;
            let body = self.seal_with(&key, &Self::export_row("$export-filters", &id.0, key_id), &text)?;
            Some(SealedText { key_id, body })
        };
        let entry = self.change_entry(|d| self.fill_caller(d));
        self.store
            .insert_export(
                ExportJob {
                    tenant: self.tenant.as_str().to_owned(),
                    id: id.0.clone(),
                    state: ExportState::Running,
                    created: now.millis(),
                    updated: now.millis(),
                    expires: now.millis().saturating_add(ttl_ms),
                    transaction_time: now.millis(),
                    request,
                    error: None,
                    written: 0,
                    owner: self.access().actor_key(),
                    filters: sealed_filters,
                },
                crate::audit::ChangeEntry::maker(&entry),
            )
            .await?;
        crate::audit::ChangeEntry::done_if(entry, true);
        let plan = ExportPlan {
            types: p.types,
            any_patient: level == ExportLevel::Patient,
            patients,
            since: p.since,
            transaction_time: now,
            filters,
            elements: p.elements,
        };
        Ok((id, plan))
    }

    /// The patients a Group lists (active members that reference a Patient).
    async fn group_members(&self, id: &ResourceId) -> Result<Vec<String>, CoreError> {
        let ReadOutcome::Found(group) = self.read(ResourceType::Group, id).await? else {
            return Err(CoreError::NotFound);
        };
        let body: Value = serde_json::from_slice(&group.body).map_err(|_| CoreError::Integrity)?;
        let mut out = Vec::new();
        for m in body["member"].as_array().into_iter().flatten() {
            if m["inactive"].as_bool() == Some(true) {
                continue;
            }
            if let Some(id) = m["entity"]["reference"]
                .as_str()
                .and_then(|r| r.strip_prefix("Patient/"))
                && ResourceId::parse(id).is_ok()
                && !out.iter().any(|o: &String| o == id)
            {
                out.push(id.to_owned());
            }
        }
        Ok(out)
    }

    /// Runs a job to the end (or until it is cancelled). Failures are recorded on the job
    /// with a fixed reason and logged with the job id only.
    pub async fn run_export(&self, job: &ExportJobId, plan: ExportPlan) {
        let outcome = self.write_export(job, &plan).await;
        let now = self.clock.now().millis();
        let tenant = self.tenant.as_str();
        let finished = match outcome {
            Ok(true) => {
                self.store
                    .finish_export(tenant, job.as_str(), ExportState::Done, None, now)
                    .await
            }
            Ok(false) => return, // cancelled
            Err(e) => {
                tracing::error!(job = job.as_str(), error = %e, "export failed");
                let reason = Some("the export failed on the server; start a new one".to_owned());
                self.store
                    .finish_export(tenant, job.as_str(), ExportState::Failed, reason, now)
                    .await
            }
        };
        if let Err(e) = finished {
            tracing::error!(job = job.as_str(), error = %e, "export state could not be recorded");
        }
    }

    /// Walks every selected type; `Ok(false)` when the job was cancelled meanwhile.
    async fn write_export(&self, job: &ExportJobId, plan: &ExportPlan) -> Result<bool, CoreError> {
        let mut n = 0i64;
        for &t in &plan.types {
            let mut conds = vec![Cond::LastUpdated {
                prefix: Prefix::Le,
                lo: plan.transaction_time.millis(),
                hi: plan.transaction_time.millis() + 1,
            }];
            if let Some(s) = plan.since {
                conds.push(Cond::LastUpdated {
                    prefix: Prefix::Ge,
                    lo: s.millis(),
                    hi: s.millis() + 1,
                });
            }
            match (&plan.patients, t == ResourceType::Patient) {
                (Some(ids), true) => conds.push(Cond::Id(ids.clone())),
                (Some(ids), false) => conds.push(Cond::ReferenceIn {
                    param: crate::COMPARTMENT.to_owned(),
                    target_type: Some("Patient".to_owned()),
                    target_ids: ids.clone(),
                }),
                (None, false) if plan.any_patient => conds.push(Cond::Present {
                    table: Table::Reference,
                    param: crate::COMPARTMENT.to_owned(),
                }),
                (None, _) => {}
            }
            // The export runs with the decision of the caller who started it: types it may
            // not read are left out, the rest limited to the patients it reaches.
            let Ok(guard) = self.guard_conds(t, Perms::READ) else {
                continue;
            };
            conds.extend(guard);
            // One walk without filters, or one per filter of the type; a resource that
            // matches several filters is written once.
            let filters: Vec<&TypeFilter> = plan.filters.iter().filter(|f| f.rtype == t).collect();
            let walks: Vec<Option<&TypeFilter>> = if filters.is_empty() {
                vec![None]
            } else {
                filters.into_iter().map(Some).collect()
            };
            let mut written = (walks.len() > 1).then(std::collections::HashSet::new);
            let elements = plan.elements_of(t);
            let mut lines: Vec<u8> = Vec::new();
            let mut count = 0usize;
            for filter in walks {
                let mut query = SearchQuery {
                    tenant: self.tenant.as_str().to_owned(),
                    rtype: t.as_str().to_owned(),
                    conds: conds
                        .iter()
                        .chain(filter.iter().flat_map(|f| f.conds.iter()))
                        .cloned()
                        .collect(),
                    sort: Vec::new(),
                    after: None,
                    backwards: false,
                    limit: PAGE,
                };
                loop {
                    let hits = self.store.search(&query).await?;
                    let Some(last) = hits.last() else { break };
                    query.after = Some((Vec::new(), last.rid));
                    let last_page = hits.len() < PAGE as usize;
                    let ids: Vec<String> = hits.iter().map(|h| h.id.clone()).collect();
                    for r in self.read_many(t, &ids).await? {
                        if filter.is_some_and(|f| !f.admits(&r.body))
                            || written.as_mut().is_some_and(|w| !w.insert(r.id.clone()))
                        {
                            continue;
                        }
                        let r = self.masked(r);
                        if let Some(el) = &elements {
                            let v: Value = serde_json::from_slice(&r.body).map_err(|_| CoreError::Integrity)?;
                            let v = carevault_domain::subset::subset(v, el);
                            lines.extend(serde_json::to_vec(&v).map_err(|_| CoreError::Integrity)?);
                        } else if r.body.contains(&b'\n') {
                            let v: Value = serde_json::from_slice(&r.body).map_err(|_| CoreError::Integrity)?;
                            lines.extend(serde_json::to_vec(&v).map_err(|_| CoreError::Integrity)?);
                        } else {
                            lines.extend_from_slice(&r.body);
                        }
                        lines.push(b'\n');
                        count += 1;
                        if count == MAX_PER_FILE || lines.len() >= MAX_FILE_BYTES {
                            if !self.flush_export_file(job, n, t, count, &lines).await? {
                                return Ok(false);
                            }
                            n += 1;
                            lines.clear();
                            count = 0;
                        }
                    }
                    if last_page {
                        break;
                    }
                }
            }
            if count > 0 {
                if !self.flush_export_file(job, n, t, count, &lines).await? {
                    return Ok(false);
                }
                n += 1;
            }
        }
        Ok(true)
    }

    fn export_row<'a>(rtype: &'a str, file_id: &'a str, key_id: i64) -> Row<'a> {
        Row {
            rtype,
            id: file_id,
            version: 0,
            patient: "",
            key_id,
        }
    }

    async fn flush_export_file(
        &self,
        job: &ExportJobId,
        n: i64,
        t: ResourceType,
        count: usize,
        lines: &[u8],
    ) -> Result<bool, CoreError> {
        let (key_id, key) = self.key_for_scope("").await?;
        let file_id = format!("{}/{n}", job.as_str());
        let body = self.seal_with(&key, &Self::export_row("$export", &file_id, key_id), lines)?;
        let file = ExportFile {
            n,
            rtype: t.as_str().to_owned(),
            count: count as i64,
            key_id,
            body,
        };
        let now = self.clock.now().millis();
        Ok(self
            .store
            .add_export_file(self.tenant.as_str(), job.as_str(), file, now)
            .await?)
    }

    /// The job, unless it is missing or expired (an expired job is deleted on sight).
    async fn live_job(&self, job: &ExportJobId) -> Result<ExportJob, CoreError> {
        let tenant = self.tenant.as_str();
        let j = self
            .store
            .export(tenant, job.as_str())
            .await?
            .ok_or(CoreError::NotFound)?;
        if j.expires < self.clock.now().millis() {
            self.expire_export(tenant, job.as_str()).await?;
            return Err(CoreError::NotFound);
        }
        // Another caller's job does not exist for this one (the system credential sees all).
        if !self.access().is_unrestricted() && j.owner != self.access().actor_key() {
            return Err(CoreError::NotFound);
        }
        Ok(j)
    }

    pub async fn export_status(&self, job: &ExportJobId) -> Result<ExportStatus, CoreError> {
        let j = self.live_job(job).await?;
        let now = self.clock.now().millis();
        Ok(match j.state {
            ExportState::Running if now - j.updated > STALE_MS => ExportStatus::Failed {
                reason: "the export stopped before it finished; start a new one".into(),
            },
            ExportState::Running => ExportStatus::Running { written: j.written },
            ExportState::Failed => ExportStatus::Failed {
                reason: j.error.unwrap_or_else(|| "the export failed".into()),
            },
            ExportState::Done => ExportStatus::Done {
                transaction_time: Timestamp::from_millis(j.transaction_time),
                request: self.request_with_filters(&j).await?,
                files: self.store.export_files(self.tenant.as_str(), job.as_str()).await?,
                expires: Timestamp::from_millis(j.expires),
            },
        })
    }

    /// The kick-off request as the manifest shows it: the stored canonical text, with the
    /// sealed `_typeFilter` queries opened and appended.
    async fn request_with_filters(&self, j: &ExportJob) -> Result<String, CoreError> {
        let Some(sealed) = &j.filters else {
            return Ok(j.request.clone());
        };
        let text = self
            .open(&Self::export_row("$export-filters", &j.id, sealed.key_id), &sealed.body)
            .await?;
        let filters: Vec<String> = serde_json::from_slice(&text).map_err(|_| CoreError::Integrity)?;
        let mut request = j.request.clone();
        for f in filters {
            request.push(if request.contains('?') { '&' } else { '?' });
            request.push_str("_typeFilter=");
            request.push_str(&carevault_domain::query::percent_encode(&f));
        }
        Ok(request)
    }

    /// One output file of a finished job, opened: NDJSON.
    pub async fn export_file(&self, job: &ExportJobId, n: i64) -> Result<Vec<u8>, CoreError> {
        let j = self.live_job(job).await?;
        if j.state != ExportState::Done {
            return Err(CoreError::NotFound);
        }
        let f = self
            .store
            .export_file(self.tenant.as_str(), job.as_str(), n)
            .await?
            .ok_or(CoreError::NotFound)?;
        let file_id = format!("{}/{n}", job.as_str());
        self.open(&Self::export_row("$export", &file_id, f.key_id), &f.body)
            .await
    }

    /// Cancels a job (running or not) and deletes its files.
    pub async fn cancel_export(&self, job: &ExportJobId) -> Result<(), CoreError> {
        self.live_job(job).await?;
        let entry = self.change_entry(|d| self.fill_caller(d));
        let deleted = self
            .store
            .delete_export(
                self.tenant.as_str(),
                job.as_str(),
                crate::audit::ChangeEntry::maker(&entry),
            )
            .await?;
        crate::audit::ChangeEntry::done_if(entry, deleted);
        if deleted { Ok(()) } else { Err(CoreError::NotFound) }
    }
}

impl<S: Store> crate::Vault<S> {
    /// Deletes every expired job (of any tenant) with its files; returns how many.
    pub async fn purge_expired_exports(&self) -> Result<u64, CoreError> {
        let mut n = 0;
        for (tenant, job) in self.store.expired_exports(self.clock.now().millis()).await? {
            n += u64::from(self.expire_export(&tenant, &job).await?);
        }
        Ok(n)
    }

    /// Deletes an expired job and its files; the deletion commits with an entry of its own
    /// naming the server as the actor and the job by its (random) id.
    async fn expire_export(&self, tenant: &str, job: &str) -> Result<bool, CoreError> {
        let entry = self.housekeeping_entry("export-expired", vec![("export-job".into(), job.to_owned())]);
        Ok(self.store.delete_export(tenant, job, entry).await?)
    }
}
