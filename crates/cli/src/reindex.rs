//! `carevault reindex --data-dir DIR`: computes the search index of every live resource
//! again, for records written before an upgrade changed what is indexed. Safe beside a
//! running server; makes no new versions.

use crate::CliError;
use crate::app::open_vault;
use crate::config::{FlagSettings, Settings};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Args, Debug, Clone)]
pub struct ReindexArgs {
    /// The data directory made by `carevault init`.
    #[arg(long)]
    pub data_dir: PathBuf,
}

pub async fn run(args: ReindexArgs) -> Result<ExitCode, CliError> {
    let settings = Settings::load(&args.data_dir, FlagSettings::default())?;
    let vault = open_vault(&settings).await?;
    let bar = crate::app::resource_spinner();
    let started = Instant::now();
    let done = vault
        .reindex(|rtype, n| {
            bar.set_message(rtype.as_str());
            bar.inc(n);
        })
        .await
        .map_err(|e| CliError::new(format!("reindex failed: {e}")))?;
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "Reindexed {done} resources in {elapsed:.1} s ({:.0} resources/s)",
        done as f64 / elapsed.max(1e-9)
    );
    if let Err(e) = vault.unchecked_store().refresh_after_bulk_load().await {
        eprintln!("warning: could not refresh database statistics: {e}");
    }
    Ok(ExitCode::SUCCESS)
}
