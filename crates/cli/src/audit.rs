//! `carevault audit verify|head`: check the audit log offline, and sign a tree head now.
//! Heads are also appended to the witness file (`audit_witness`, outside the database).

use crate::CliError;
use crate::app::open_vault;
use crate::config::{FlagSettings, Settings};
use carevault_core::audit::{DamageKind, SignedHead, WitnessHead, journal_backlog, verify_log};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Verify the whole log: every entry, every signed head, the witness file's heads.
    Verify(VerifyArgs),
    /// Sign a tree head over the log as it stands (also appended to the witness file).
    Head(HeadArgs),
}

#[derive(Args)]
pub struct VerifyArgs {
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The witness file (default: the `audit_witness` setting).
    #[arg(long)]
    pub witness: Option<PathBuf>,
}

#[derive(Args)]
pub struct HeadArgs {
    #[arg(long)]
    pub data_dir: PathBuf,
}

/// Reads the witness file's heads; a missing file holds none.
pub fn read_witness(path: &Path) -> Result<Vec<WitnessHead>, CliError> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                WitnessHead::parse_line(l)
                    .ok_or_else(|| CliError::new(format!("{}: line {} is not a tree head", path.display(), i + 1)))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(CliError::new(format!("cannot read {}: {e}", path.display()))),
    }
}

/// Appends a head to the witness file and syncs it.
pub fn witness(path: &Path, head: &SignedHead) -> Result<(), CliError> {
    carevault_http::witness::append(path, head)
        .map_err(|e| CliError::new(format!("cannot write the witness file {}: {e}", path.display())))
}

pub async fn run(args: AuditArgs) -> Result<ExitCode, CliError> {
    match args.command {
        AuditCommand::Verify(a) => {
            let settings = Settings::load(&a.data_dir, FlagSettings::default())?;
            let path = a.witness.unwrap_or_else(|| settings.audit_witness.clone());
            let heads = read_witness(&path)?;
            let vault = open_vault(&settings).await?;
            let report = verify_log(vault.unchecked_store(), vault.keys(), &heads)
                .await
                .map_err(|e| CliError::new(format!("cannot read the audit log: {e}")))?;
            println!(
                "{} entries ({} emptied by retention), {} signed heads, {} witness heads checked",
                report.entries, report.pruned, report.heads_checked, report.witness_checked
            );
            let mut journal_tampered = false;
            if matches!(vault.unchecked_store(), carevault_storage::AnyStore::Sqlite(_)) {
                let backlog = journal_backlog(vault.unchecked_store(), vault.keys(), &settings.audit_journal)
                    .await
                    .map_err(|e| CliError::new(format!("cannot read the audit journal: {e}")))?;
                if backlog.entries > 0 {
                    println!(
                        "{} entries in the audit journal ({}) are not in the log yet: the server copies them when it starts",
                        backlog.entries,
                        settings.audit_journal.display()
                    );
                }
                if let Some(d) = backlog.damage {
                    journal_tampered = d.kind.tampering();
                    println!(
                        "{}",
                        match d.kind {
                            DamageKind::Edited => format!(
                                "the audit journal's record at byte {} was edited: it and the records after it will not be copied",
                                d.offset
                            ),
                            DamageKind::Truncated => {
                                "the audit journal is gone or shorter than what the log has copied from it: it was cut or replaced".into()
                            }
                            DamageKind::CutShort => format!(
                                "the audit journal ends with a record cut short at byte {} (a write a crash interrupted; its request was never answered)",
                                d.offset
                            ),
                        }
                    );
                }
            }
            if report.ok() && !journal_tampered {
                println!("the audit log is intact");
                Ok(ExitCode::SUCCESS)
            } else {
                if let Some(first) = report.first_bad {
                    println!("first bad entry: {first}");
                }
                for p in &report.problems {
                    println!("- {p}");
                }
                Ok(ExitCode::FAILURE)
            }
        }
        AuditCommand::Head(a) => {
            let settings = Settings::load(&a.data_dir, FlagSettings::default())?;
            let vault = open_vault(&settings).await?;
            let head = vault
                .sign_head()
                .await
                .map_err(|e| CliError::new(format!("cannot sign a head: {e}")))?;
            witness(&settings.audit_witness, &head)?;
            println!(
                "size {} root {}",
                head.size,
                head.root.iter().map(|b| format!("{b:02x}")).collect::<String>()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
