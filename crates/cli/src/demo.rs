//! `carevault demo [--data-dir DIR]`: a throwaway hospital with synthetic patients, served.

use crate::app::open_vault;
use crate::config::{CERT_FILE, FlagSettings, KEY_FILE, Settings, TOKEN_FILE};
use crate::init::{InitArgs, initialise};
use crate::{CliError, demo_data};
use carevault_core::access::Access;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Use (and keep) this directory instead of a throwaway one.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: String,
    /// How many synthetic patients to create.
    #[arg(long, default_value_t = 60)]
    pub patients: u64,
    /// Seed of the synthetic data.
    #[arg(long, default_value_t = 20_261_128)]
    pub seed: u64,
}

fn throwaway_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!("carevault-demo-{}-{nanos}", std::process::id()))
}

pub async fn run(args: DemoArgs) -> Result<ExitCode, CliError> {
    let dir = args.data_dir.clone().unwrap_or_else(throwaway_dir);
    let fresh = !dir.join(KEY_FILE).exists();
    let token = if fresh {
        initialise(&InitArgs {
            data_dir: dir.clone(),
            database_url: None,
            tls_cert: None,
            tls_key: None,
        })
        .await?
    } else {
        std::fs::read_to_string(dir.join(TOKEN_FILE))
            .map(|t| t.trim().to_owned())
            .unwrap_or_else(|_| "(see admin-token)".into())
    };
    let flags = FlagSettings {
        listen: Some(args.listen.clone()),
        ..FlagSettings::default()
    };
    let settings = Settings::load(&dir, flags)?;
    let vault = open_vault(&settings).await?;
    if fresh {
        eprintln!(
            "Creating a demo hospital with {} synthetic patients in {} ...",
            args.patients,
            dir.display()
        );
        let started = std::time::Instant::now();
        // The demo loads its data as an operator command: as the system.
        let access = Access::unchecked_system();
        vault
            .session(&access)
            .process_bundle(&demo_data::reference_bundle(args.seed))
            .await
            .map_err(|e| CliError::new(format!("demo reference data: {e}")))?;
        let mut set = tokio::task::JoinSet::new();
        let mut written = 0usize;
        for n in 0..args.patients {
            let vault = Arc::clone(&vault);
            let seed = args.seed;
            set.spawn(async move {
                let access = Access::unchecked_system();
                vault
                    .session(&access)
                    .process_bundle(&demo_data::patient_bundle(seed, n))
                    .await
            });
            if set.len() >= 4
                && let Some(r) = set.join_next().await
            {
                written += count(r)?;
            }
        }
        while let Some(r) = set.join_next().await {
            written += count(r)?;
        }
        eprintln!(
            "Created {written} resources in {:.1} s.",
            started.elapsed().as_secs_f64()
        );
    } else {
        eprintln!("Using the existing demo in {}", dir.display());
    }
    let cert = dir.join(CERT_FILE);
    crate::serve::serve_vault(settings, vault, |base| {
        println!("carevault demo listening on {base}");
        println!("Data directory: {}", dir.display());
        println!("Token: {token}");
        println!("Try:");
        let auth = format!("-H \"Authorization: Bearer {token}\"");
        let ca = format!("--cacert {}", cert.display());
        println!("  curl {ca} {base}/metadata");
        println!(
            "  curl {ca} {auth} \"{base}/Patient?identifier={}|MRN1000001\"",
            demo_data::MRN
        );
        println!("  curl {ca} {auth} \"{base}/Observation/_history?_count=5\"");
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

fn count(
    r: Result<Result<carevault_core::BundleOutcome, carevault_core::CoreError>, tokio::task::JoinError>,
) -> Result<usize, CliError> {
    match r {
        Ok(Ok(outcome)) => Ok(outcome.written.values().sum()),
        Ok(Err(e)) => Err(CliError::new(format!("demo data: {e}"))),
        Err(_) => Err(CliError::new("demo data: a loader task stopped")),
    }
}
