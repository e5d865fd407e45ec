//! Opening the pieces every subcommand needs: the key file, the store and the vault.

use crate::CliError;
use crate::config::Settings;
use carevault_core::Vault;
use carevault_crypto::{KeyFile, SystemRandomSource};
use carevault_domain::{SystemClock, TenantId};
use carevault_storage::{AnyStore, TokenStore};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

/// Reads the key file, refusing a missing one or one that others can read.
pub fn load_keys(path: &Path) -> Result<KeyFile, CliError> {
    let meta = std::fs::metadata(path).map_err(|_| {
        CliError::new(format!(
            "no key file at {}: run `carevault init --data-dir DIR` first, or point CAREVAULT_KEY_FILE at it",
            path.display()
        ))
    })?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(CliError::new(format!(
            "the key file {} is readable by other users; run `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| CliError::new(format!("cannot read {}: {e}", path.display())))?,
    );
    KeyFile::parse(&text).map_err(|e| CliError::new(format!("{}: {e}", path.display())))
}

pub async fn open_store(database: &str) -> Result<AnyStore, CliError> {
    AnyStore::open(database)
        .await
        .map_err(|e| CliError::new(format!("cannot open the database: {e}")))
}

pub async fn open_vault(settings: &Settings) -> Result<Arc<Vault<AnyStore>>, CliError> {
    let keys = load_keys(&settings.key_file)?;
    let store = open_store(&settings.database).await?;
    let vault = Vault::new(
        store,
        Arc::new(keys),
        Arc::new(SystemRandomSource::new()),
        Arc::new(SystemClock),
        TenantId::default_tenant(),
    )
    .map_err(|e| CliError::new(format!("cannot derive the search keys: {e}")))?
    .with_policy(carevault_core::AccessPolicy {
        signin: settings.signin.clone(),
        ward_relationships: settings.ward_relationships,
        department_relationships: settings.department_relationships,
        encounter_days: settings.encounter_days,
        ..carevault_core::AccessPolicy::default()
    });
    Ok(Arc::new(vault))
}

pub async fn active_tokens(vault: &Vault<AnyStore>) -> Result<Vec<Vec<u8>>, CliError> {
    vault
        .unchecked_store()
        .active_tokens()
        .await
        .map_err(|e| CliError::new(format!("cannot read API tokens: {e}")))
}

/// Records an operator command in the audit log (agent `operator`, the command as the
/// interaction). A command whose entry cannot be written fails.
pub async fn record_operator(dir: &Path, command: &str, ok: bool) -> Result<(), CliError> {
    let settings = crate::config::Settings::load(dir, crate::config::FlagSettings::default())?;
    let vault = open_vault(&settings).await?;
    vault
        .audit(operator_entry(vault.clock().now().millis(), command, ok))
        .await
        .map(|_| ())
        .map_err(|e| CliError::new(format!("the audit log could not be written: {e}")))
}

/// The audit entry of an operator command, recorded at `recorded` (milliseconds); a command
/// that changes state commits it with its change (see `main`).
pub fn operator_entry(recorded: i64, command: &str, ok: bool) -> carevault_core::audit::AuditDraft {
    use carevault_core::audit::{AuditAgent, AuditDraft, Outcome};
    AuditDraft {
        recorded,
        subtype: format!("cli:{command}"),
        action: if command.ends_with("-list") { 'R' } else { 'E' },
        outcome: if ok { Outcome::Success } else { Outcome::MinorFailure },
        agent: AuditAgent {
            who: "operator".into(),
            role: None,
            client: None,
            address: None,
        },
        entity: None,
        patient: None,
        query_tag: None,
        purpose: Some("HOPERAT".into()),
        detail: Vec::new(),
    }
}

/// A spinner counting resources and their rate, for long operator commands.
pub fn resource_spinner() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {pos} resources  {per_sec}  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}
