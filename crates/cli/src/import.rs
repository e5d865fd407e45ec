//! `carevault import --data-dir DIR PATH...`
//!
//! A PATH is a file or a folder of them (not recursive): `.json` files holding a transaction
//! or batch Bundle (processed as such, each bundle atomic) or any other single resource
//! (stored under its id), and `.ndjson` files (one resource a line, stored under their ids,
//! 500 to a transaction). Files run a few at a time. A file whose conditional references
//! name resources that another file creates is retried after the others, so reference data
//! may come in any order. A bad file is reported with its name and the reason; the rest go on.

use crate::CliError;
use crate::app::open_vault;
use crate::config::{FlagSettings, Settings};
use carevault_core::access::Access;
use carevault_core::{CoreError, Vault};
use carevault_domain::ResourceType;
use carevault_storage::AnyStore;
use clap::Args;
use indicatif::ProgressBar;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

#[derive(Args, Debug, Clone)]
pub struct ImportArgs {
    /// The data directory made by `carevault init`.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Files or folders to import.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// How many files to work on at once. More files in flight make bigger group commits on
    /// SQLite (each index page written once for more rows), at some memory (about 16 MB a
    /// file of 270 resources).
    #[arg(long, default_value_t = 64)]
    pub jobs: usize,
}

const NDJSON_CHUNK: usize = 500;

/// The result of importing one file.
#[derive(Debug)]
pub enum FileOutcome {
    Done(BTreeMap<ResourceType, usize>),
    /// A conditional reference found nothing yet: try again after the other files.
    Deferred(String),
    Failed(String),
}

pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, CliError> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| CliError::new(format!("cannot list {}: {e}", p.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && matches!(f.extension().and_then(|x| x.to_str()), Some("json" | "ndjson")))
                .collect();
            inside.sort();
            files.extend(inside);
        } else if p.is_file() {
            files.push(p.clone());
        } else {
            return Err(CliError::new(format!("{} is neither a file nor a folder", p.display())));
        }
    }
    Ok(files)
}

fn describe(e: &CoreError) -> String {
    match e {
        CoreError::Store(_) | CoreError::Crypto(_) | CoreError::Integrity => {
            format!("server error: {e}")
        }
        other => other.to_string(),
    }
}

fn add(total: &mut BTreeMap<ResourceType, usize>, more: &BTreeMap<ResourceType, usize>) {
    for (t, n) in more {
        *total.entry(*t).or_insert(0) += n;
    }
}

async fn run_bundle(
    vault: &Vault<AnyStore>,
    bundle: &Value,
    bar: &ProgressBar,
) -> Result<BTreeMap<ResourceType, usize>, CoreError> {
    // `carevault import` is an operator command on the server's own machine: it writes as
    // the system, like the bootstrap integration token.
    let access = Access::unchecked_system();
    let outcome = vault.session(&access).process_bundle(bundle).await?;
    let failures: Vec<String> = outcome
        .entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.error.as_ref().map(|err| format!("entry {i}: {}", describe(err))))
        .collect();
    let n: usize = outcome.written.values().sum();
    bar.inc(n as u64);
    if failures.is_empty() {
        Ok(outcome.written)
    } else {
        Err(CoreError::Invalid(format!(
            "{} of {} batch entries failed; first: {}",
            failures.len(),
            outcome.entries.len(),
            failures[0]
        )))
    }
}

fn put_entry(resource: Value) -> Value {
    let rtype = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    match resource.get("id").and_then(Value::as_str).map(str::to_owned) {
        Some(id) => {
            json!({"resource": resource, "request": {"method": "PUT", "url": format!("{rtype}/{id}")}})
        }
        None => json!({"resource": resource, "request": {"method": "POST", "url": rtype}}),
    }
}

fn classify(result: Result<BTreeMap<ResourceType, usize>, CoreError>) -> FileOutcome {
    match result {
        Ok(w) => FileOutcome::Done(w),
        Err(CoreError::PreconditionFailed(m)) if m.contains("conditional reference matches no resource") => {
            FileOutcome::Deferred(m)
        }
        Err(e) => FileOutcome::Failed(describe(&e)),
    }
}

async fn import_ndjson(vault: &Vault<AnyStore>, text: &str, bar: &ProgressBar) -> FileOutcome {
    let mut total = BTreeMap::new();
    let mut chunk: Vec<Value> = Vec::new();
    let mut ids = std::collections::HashSet::new();
    let kept: Vec<(usize, &str)> = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).collect();
    let mut lines = kept.into_iter().peekable();
    while let Some((n, line)) = lines.next() {
        let resource: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => return FileOutcome::Failed(format!("line {}: not JSON ({e})", n + 1)),
        };
        let key = (resource.get("resourceType").cloned(), resource.get("id").cloned());
        let duplicate = key.1.is_some() && ids.contains(&key);
        if duplicate || chunk.len() >= NDJSON_CHUNK {
            let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": std::mem::take(&mut chunk)});
            match run_bundle(vault, &bundle, bar).await {
                Ok(w) => add(&mut total, &w),
                Err(e) => {
                    return FileOutcome::Failed(format!("before line {}: {}", n + 1, describe(&e)));
                }
            }
            ids.clear();
        }
        if key.1.is_some() {
            ids.insert(key);
        }
        chunk.push(put_entry(resource));
        if lines.peek().is_none() {
            let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": std::mem::take(&mut chunk)});
            match run_bundle(vault, &bundle, bar).await {
                Ok(w) => add(&mut total, &w),
                Err(e) => return FileOutcome::Failed(format!("at the end: {}", describe(&e))),
            }
        }
    }
    FileOutcome::Done(total)
}

/// Imports one file.
pub async fn import_file(vault: &Vault<AnyStore>, path: &Path, bar: &ProgressBar) -> FileOutcome {
    let text = match tokio::fs::read_to_string(path).await {
        Ok(t) => t,
        Err(e) => return FileOutcome::Failed(format!("cannot read: {e}")),
    };
    if path.extension().and_then(|x| x.to_str()) == Some("ndjson") {
        return import_ndjson(vault, &text, bar).await;
    }
    let value: Value = match tokio::task::spawn_blocking(move || serde_json::from_str::<Value>(&text)).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return FileOutcome::Failed(format!("not valid JSON ({e})")),
        Err(_) => return FileOutcome::Failed("parser stopped".into()),
    };
    let kind = value.get("type").and_then(Value::as_str);
    let is_bundle = value.get("resourceType").and_then(Value::as_str) == Some("Bundle");
    if is_bundle && matches!(kind, Some("transaction" | "batch")) {
        classify(run_bundle(vault, &value, bar).await)
    } else {
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [put_entry(value)]});
        classify(run_bundle(vault, &bundle, bar).await)
    }
}

pub async fn run(args: ImportArgs) -> Result<ExitCode, CliError> {
    let settings = Settings::load(&args.data_dir, FlagSettings::default())?;
    let vault = open_vault(&settings).await?;
    let files = collect_files(&args.paths)?;
    let bar = crate::app::resource_spinner();
    let started = Instant::now();
    let (totals, failed) = import_all(&vault, files, args.jobs.max(1), &bar).await;
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let count: usize = totals.values().sum();
    println!(
        "Imported {count} resources in {elapsed:.1} s ({:.0} resources/s)",
        count as f64 / elapsed.max(1e-9)
    );
    let refresh = Instant::now();
    match vault.unchecked_store().refresh_after_bulk_load().await {
        Ok(()) if vault.unchecked_store().backend_name() == "postgres" => {
            println!("Refreshed statistics in {:.1} s", refresh.elapsed().as_secs_f64());
        }
        Ok(()) => {}
        Err(e) => eprintln!("warning: could not refresh database statistics: {e}"),
    }
    for (t, n) in &totals {
        println!("  {t:<28} {n}");
    }
    for (path, why) in &failed {
        eprintln!("FAILED {}: {why}", path.display());
    }
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{} file(s) failed", failed.len());
        Ok(ExitCode::FAILURE)
    }
}

/// Imports every file, a few at a time, retrying deferred ones after the rest.
pub async fn import_all(
    vault: &Arc<Vault<AnyStore>>,
    files: Vec<PathBuf>,
    jobs: usize,
    bar: &ProgressBar,
) -> (BTreeMap<ResourceType, usize>, Vec<(PathBuf, String)>) {
    let mut totals = BTreeMap::new();
    let mut failed = Vec::new();
    let mut pending = files;
    loop {
        let mut deferred = Vec::new();
        let before = pending.len();
        let mut set = tokio::task::JoinSet::new();
        let mut queue = pending.into_iter();
        let spawn = |set: &mut tokio::task::JoinSet<_>, path: PathBuf| {
            let vault = Arc::clone(vault);
            let bar = bar.clone();
            set.spawn(async move {
                bar.set_message(
                    path.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                );
                let outcome = import_file(&vault, &path, &bar).await;
                (path, outcome)
            });
        };
        for path in queue.by_ref().take(jobs) {
            spawn(&mut set, path);
        }
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((_, FileOutcome::Done(w))) => add(&mut totals, &w),
                Ok((path, FileOutcome::Deferred(why))) => deferred.push((path, why)),
                Ok((path, FileOutcome::Failed(why))) => failed.push((path, why)),
                Err(_) => failed.push((PathBuf::from("?"), "an import task stopped unexpectedly".into())),
            }
            if let Some(path) = queue.next() {
                spawn(&mut set, path);
            }
        }
        if deferred.is_empty() {
            break;
        }
        if deferred.len() == before {
            // No progress: the references really are missing.
            failed.extend(deferred);
            break;
        }
        pending = deferred.into_iter().map(|(p, _)| p).collect();
    }
    failed.sort();
    (totals, failed)
}
