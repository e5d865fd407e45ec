//! `carevault-load`: a small load driver for benchmarks over loopback. It measures creates/s
//! and reads by id (throughput, p50, p99) against a running carevault, with real TLS.
//! See docs/BENCHMARKS.md for the commands and the latest figures.

use clap::{Parser, Subcommand};
use reqwest::{Certificate, Client, StatusCode};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "carevault-load", about = "Load driver for carevault benchmarks")]
struct Cli {
    /// FHIR base URL, e.g. https://127.0.0.1:8443/fhir
    #[arg(long)]
    base: String,
    /// File holding the bearer token (e.g. DATA_DIR/admin-token).
    #[arg(long)]
    token_file: PathBuf,
    /// CA certificate to trust (e.g. DATA_DIR/tls-cert.pem); omit for plain HTTP.
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// Concurrent requests in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand, Clone)]
enum What {
    /// POST new Observations.
    Creates,
    /// GET Patients by id (creates `--patients` of them first).
    Reads {
        #[arg(long, default_value_t = 1000)]
        patients: usize,
    },
    /// GET searches (or any paths) repeatedly, e.g. `Observation?code=8302-2`, taking the
    /// given paths (and the lines of `--paths-file`) in turn.
    Query {
        #[arg(long)]
        path: Vec<String>,
        #[arg(long)]
        paths_file: Option<PathBuf>,
    },
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct LoadError(String);

fn patient(n: usize) -> Value {
    json!({"resourceType": "Patient", "active": true,
        "identifier": [{"system": "urn:load", "value": format!("L{n:08}")}],
        "name": [{"family": format!("Loadfamily{n}"), "given": ["Bench"]}],
        "gender": if n.is_multiple_of(2) { "female" } else { "male" }, "birthDate": "1980-04-05",
        "telecom": [{"system": "phone", "value": "+44 20 7946 0000"}],
        "address": [{"line": ["1 Load Street"], "city": "Benchford", "postalCode": "BE1 1NC"}]})
}

fn observation(n: usize, patient: &str) -> Value {
    json!({"resourceType": "Observation", "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
        "subject": {"reference": patient}, "effectiveDateTime": "2026-01-01T10:00:00Z",
        "valueQuantity": {"value": 60 + (n % 40), "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}})
}

struct Run {
    client: Client,
    base: String,
    token: String,
}

impl Run {
    async fn post(&self, rtype: &str, body: &Value) -> Result<String, LoadError> {
        let r = self
            .client
            .post(format!("{}/{rtype}", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/fhir+json")
            .body(serde_json::to_vec(body).map_err(|e| LoadError(e.to_string()))?)
            .send()
            .await
            .map_err(|e| LoadError(e.to_string()))?;
        if r.status() != StatusCode::CREATED {
            return Err(LoadError(format!("create answered {}", r.status())));
        }
        let v: Value = r.json().await.map_err(|e| LoadError(e.to_string()))?;
        Ok(v["id"].as_str().unwrap_or_default().to_owned())
    }

    async fn get(&self, path: &str) -> Result<(), LoadError> {
        let r = self
            .client
            .get(format!("{}/{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| LoadError(e.to_string()))?;
        if r.status() != StatusCode::OK {
            return Err(LoadError(format!("read answered {}", r.status())));
        }
        r.bytes().await.map_err(|e| LoadError(e.to_string()))?;
        Ok(())
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)] as f64 / 1000.0
}

async fn drive(cli: &Cli) -> Result<(), LoadError> {
    let token = std::fs::read_to_string(&cli.token_file).map_err(|e| LoadError(format!("token file: {e}")))?;
    let mut builder = Client::builder().pool_max_idle_per_host(cli.concurrency * 2);
    if let Some(ca) = &cli.cacert {
        let pem = std::fs::read(ca).map_err(|e| LoadError(format!("cacert: {e}")))?;
        builder = builder.add_root_certificate(Certificate::from_pem(&pem).map_err(|e| LoadError(e.to_string()))?);
    }
    let client = builder.build().map_err(|e| LoadError(e.to_string()))?;
    let run = Arc::new(Run {
        client,
        base: cli.base.trim_end_matches('/').to_owned(),
        token: token.trim().to_owned(),
    });

    let patient_ref = match cli.what {
        What::Query { .. } => String::new(),
        _ => format!("Patient/{}", run.post("Patient", &patient(0)).await?),
    };
    let ids: Arc<Vec<String>> = Arc::new(match &cli.what {
        What::Creates => Vec::new(),
        What::Query { path, paths_file } => {
            let mut paths = path.clone();
            if let Some(f) = paths_file {
                let text = std::fs::read_to_string(f).map_err(|e| LoadError(format!("paths file: {e}")))?;
                paths.extend(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned));
            }
            if paths.is_empty() {
                return Err(LoadError("query needs --path or --paths-file".into()));
            }
            paths
        }
        &What::Reads { patients } => {
            eprintln!("creating {patients} patients to read ...");
            let mut ids = Vec::with_capacity(patients);
            for n in 0..patients {
                ids.push(run.post("Patient", &patient(n + 1)).await?);
            }
            ids
        }
    });
    let deadline = Instant::now() + Duration::from_secs(cli.seconds);
    let counter = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..cli.concurrency {
        let run = Arc::clone(&run);
        let ids = Arc::clone(&ids);
        let counter = Arc::clone(&counter);
        let what = cli.what.clone();
        let patient_ref = patient_ref.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut n = worker;
            while Instant::now() < deadline {
                let t = Instant::now();
                match what {
                    What::Creates => {
                        run.post("Observation", &observation(n, &patient_ref)).await?;
                    }
                    What::Reads { .. } => {
                        let id = &ids[(n.wrapping_mul(2_654_435_761)) % ids.len()];
                        run.get(&format!("Patient/{id}")).await?;
                    }
                    What::Query { .. } => run.get(&ids[n % ids.len()]).await?,
                }
                lat.push(t.elapsed().as_micros() as u64);
                counter.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
            Ok::<_, LoadError>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.map_err(|e| LoadError(e.to_string()))??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let label = match &cli.what {
        What::Creates => "creates".to_owned(),
        What::Reads { .. } => "reads".to_owned(),
        What::Query { .. } => format!("GET {}", ids[0].split('?').next().unwrap_or("")),
    };
    println!(
        "{label}: concurrency {} requests {} in {elapsed:.1} s = {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
        cli.concurrency,
        all.len(),
        all.len() as f64 / elapsed,
        percentile(&all, 0.50),
        percentile(&all, 0.99)
    );
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match drive(&cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("carevault-load: {e}");
            ExitCode::FAILURE
        }
    }
}
