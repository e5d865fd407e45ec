//! `carevault generate --out DIR --patients N`: writes a synthetic hospital as FHIR
//! transaction bundles (one file of reference data, then one file per patient of about 270
//! resources, Synthea's shape), for `carevault import` or any other FHIR server. Used by the
//! scale benchmark (`bench/scale.sh`). Every name and number is invented; deterministic per
//! seed.

use crate::CliError;
use crate::demo_data::{Shape, patient_bundle_shaped, reference_bundle};
use clap::Args;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args, Debug, Clone)]
pub struct GenerateArgs {
    /// Directory to write the bundles into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// How many patients.
    #[arg(long, default_value_t = 1_000)]
    pub patients: u64,
    /// Seed of the synthetic data.
    #[arg(long, default_value_t = 20_261_128)]
    pub seed: u64,
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), CliError> {
    let file = std::fs::File::create(path).map_err(|e| CliError::new(format!("{}: {e}", path.display())))?;
    let mut w = std::io::BufWriter::new(file);
    serde_json::to_writer(&mut w, value).map_err(|e| CliError::new(format!("{}: {e}", path.display())))?;
    w.flush().map_err(|e| CliError::new(format!("{}: {e}", path.display())))
}

pub fn run(args: GenerateArgs) -> Result<ExitCode, CliError> {
    std::fs::create_dir_all(&args.out).map_err(|e| CliError::new(format!("{}: {e}", args.out.display())))?;
    // The reference data sorts first, so an import resolves the patients' conditional
    // references to it without a retry.
    write_json(&args.out.join("0000-reference.json"), &reference_bundle(args.seed))?;
    let bar = indicatif::ProgressBar::new(args.patients);
    let mut resources = 0usize;
    for n in 0..args.patients {
        let bundle = patient_bundle_shaped(args.seed, n, Shape::SCALE);
        resources += bundle["entry"].as_array().map(Vec::len).unwrap_or(0);
        write_json(&args.out.join(format!("patient-{n:07}.json")), &bundle)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!(
        "Wrote {} patients ({resources} resources) to {}",
        args.patients,
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
