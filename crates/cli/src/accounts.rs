//! `carevault user add|list|disable|enable` and `carevault token`: accounts and access tokens
//! for operators and scripts. Keep the flags stable: scripts depend on them.

use crate::CliError;
use crate::app::open_vault;
use crate::config::{FlagSettings, Settings};
use carevault_core::access::{Role, ScopeSet};
use carevault_core::{MAX_TOKEN_TTL_SECS, NewAccount, Username};
use carevault_crypto::Password;
use carevault_domain::ResourceId;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct UserArgs {
    #[command(subcommand)]
    pub command: UserCommand,
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add an account.
    Add(AddArgs),
    /// List accounts (id, username, role, link, state).
    List(DirArgs),
    /// Disable an account: its tokens stop working on their next request.
    Disable(NameArgs),
    /// Enable a disabled account again.
    Enable(NameArgs),
    /// Give an account a new TOTP second factor; the otpauth:// URI goes to --uri-file.
    Totp(TotpArgs),
    /// Lift a lock left by failed sign-ins.
    Unlock(NameArgs),
}

#[derive(Args)]
pub struct TotpArgs {
    #[arg(long)]
    pub data_dir: PathBuf,
    #[arg(long)]
    pub username: String,
    /// Where to write the otpauth:// URI (created readable by its owner only) for the
    /// account holder's authenticator app.
    #[arg(long)]
    pub uri_file: PathBuf,
}

#[derive(Args)]
pub struct DirArgs {
    /// The data directory made by `carevault init`.
    #[arg(long)]
    pub data_dir: PathBuf,
}

#[derive(Args)]
pub struct NameArgs {
    #[arg(long)]
    pub data_dir: PathBuf,
    #[arg(long)]
    pub username: String,
}

#[derive(Args)]
pub struct AddArgs {
    #[arg(long)]
    pub data_dir: PathBuf,
    #[arg(long)]
    pub username: String,
    /// patient, physician, nurse, receptionist, lab-technician, pharmacist, analyst, auditor
    /// or admin.
    #[arg(long)]
    pub role: String,
    /// The Patient a patient account is (`Patient/ID`).
    #[arg(long, conflicts_with = "practitioner")]
    pub patient: Option<String>,
    /// The Practitioner a staff account is (`Practitioner/ID`); clinical roles need one.
    #[arg(long)]
    pub practitioner: Option<String>,
    /// A file holding the password (its first line); never pass a password on the command line.
    #[arg(long)]
    pub password_file: PathBuf,
    /// Also enroll a TOTP second factor and write its otpauth:// URI to this file (staff
    /// roles need one to sign in through /oauth/authorize).
    #[arg(long)]
    pub totp_uri_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct ClientArgs {
    #[command(subcommand)]
    pub command: ClientCommand,
}

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Register an application; prints its client id.
    Add(ClientAddArgs),
    /// List registered applications.
    List(DirArgs),
}

#[derive(Args)]
pub struct ClientAddArgs {
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The name users see on the consent screen.
    #[arg(long)]
    pub name: String,
    /// A redirect URI (https://…, or http:// on the loopback address); repeatable.
    #[arg(long)]
    pub redirect_uri: Vec<String>,
    /// The most this application may ask for, space-separated SMART scopes.
    #[arg(long)]
    pub scopes: String,
    /// The public keys (a JWK Set file) of a confidential client or backend service, which
    /// authenticates with a signed assertion (private_key_jwt).
    #[arg(long)]
    pub jwks_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct EmergencyArgs {
    #[command(subcommand)]
    pub command: EmergencyCommand,
}

#[derive(Subcommand)]
pub enum EmergencyCommand {
    /// List break-the-glass grants, newest first.
    List(EmergencyListArgs),
    /// Record the privacy officer's verdict on a grant.
    Review(EmergencyReviewArgs),
}

#[derive(Args)]
pub struct EmergencyListArgs {
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Only grants nobody has reviewed yet.
    #[arg(long)]
    pub unreviewed: bool,
}

#[derive(Args)]
pub struct EmergencyReviewArgs {
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The grant id (from `emergency list`).
    #[arg(long)]
    pub id: String,
    /// appropriate or inappropriate.
    #[arg(long)]
    pub verdict: String,
    /// The auditor account recording the verdict.
    #[arg(long)]
    pub reviewer: String,
}

#[derive(Args)]
pub struct TokenArgs {
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The account the token acts as.
    #[arg(long)]
    pub user: String,
    /// SMART scopes, space-separated (e.g. "user/*.rs" or "patient/Observation.rs").
    #[arg(long)]
    pub scope: String,
    /// How long the token lives: seconds, or a number with s, m or h (at most 24h).
    #[arg(long, default_value = "15m")]
    pub ttl: String,
}

fn reference(s: &str, rtype: &str) -> Result<ResourceId, CliError> {
    let id = s.strip_prefix(&format!("{rtype}/")).unwrap_or(s);
    ResourceId::parse(id).map_err(|_| CliError::new(format!("{s:?} is not a {rtype} reference ({rtype}/ID)")))
}

fn ttl_secs(s: &str) -> Result<i64, CliError> {
    let bad = || CliError::new(format!("--ttl {s:?}: give seconds, or a number with s, m or h"));
    let (num, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c),
        _ => (s, 's'),
    };
    let n: i64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        's' => n,
        'm' => n.saturating_mul(60),
        'h' => n.saturating_mul(3600),
        _ => return Err(bad()),
    };
    if !(1..=MAX_TOKEN_TTL_SECS).contains(&secs) {
        return Err(CliError::new(format!(
            "--ttl must be between 1s and {}h",
            MAX_TOKEN_TTL_SECS / 3600
        )));
    }
    Ok(secs)
}

fn core_err(e: carevault_core::CoreError) -> CliError {
    CliError::new(e.to_string())
}

pub async fn user(args: UserArgs) -> Result<ExitCode, CliError> {
    match args.command {
        UserCommand::Add(a) => {
            let settings = Settings::load(&a.data_dir, FlagSettings::default())?;
            let role = Role::parse(&a.role).ok_or_else(|| {
                CliError::new(format!(
                    "--role {:?}: one of {}",
                    a.role,
                    Role::ALL.map(Role::as_str).join(", ")
                ))
            })?;
            let text = std::fs::read_to_string(&a.password_file)
                .map_err(|e| CliError::new(format!("cannot read {}: {e}", a.password_file.display())))?;
            let password = Password::new(text.lines().next().unwrap_or("").to_owned());
            let account = NewAccount {
                username: Username::parse(&a.username).map_err(core_err)?,
                role,
                patient: a.patient.as_deref().map(|p| reference(p, "Patient")).transpose()?,
                practitioner: a
                    .practitioner
                    .as_deref()
                    .map(|p| reference(p, "Practitioner"))
                    .transpose()?,
                password,
            };
            let username = account.username.clone();
            let vault = open_vault(&settings).await?;
            // The account and the command's entry commit together (main's `with_pending`).
            let id = vault.add_user(account).await.map_err(core_err)?;
            if let Some(path) = &a.totp_uri_file {
                enroll(&vault, &username, path).await?;
            }
            println!("{id}");
        }
        UserCommand::List(a) => {
            let settings = Settings::load(&a.data_dir, FlagSettings::default())?;
            let vault = open_vault(&settings).await?;
            println!("id\tusername\trole\tlink\tstate");
            for u in vault.users().await.map_err(core_err)? {
                let link = match (&u.patient, &u.practitioner) {
                    (Some(p), _) => format!("Patient/{p}"),
                    (_, Some(p)) => format!("Practitioner/{p}"),
                    _ => "-".into(),
                };
                let state = if u.disabled { "disabled" } else { "active" };
                println!("{}\t{}\t{}\t{link}\t{state}", u.id, u.username, u.role);
            }
        }
        UserCommand::Totp(a) => {
            let settings = Settings::load(&a.data_dir, FlagSettings::default())?;
            let vault = open_vault(&settings).await?;
            let name = Username::parse(&a.username).map_err(core_err)?;
            enroll(&vault, &name, &a.uri_file).await?;
        }
        UserCommand::Unlock(a) => {
            let settings = Settings::load(&a.data_dir, FlagSettings::default())?;
            let vault = open_vault(&settings).await?;
            let name = Username::parse(&a.username).map_err(core_err)?;
            vault.unlock_user(&name).await.map_err(|e| match e {
                carevault_core::CoreError::NotFound => CliError::new("no such account"),
                other => core_err(other),
            })?;
        }
        UserCommand::Disable(a) => set_disabled(a, true).await?,
        UserCommand::Enable(a) => set_disabled(a, false).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Enrolls a TOTP secret and writes its otpauth:// URI to a new owner-only file.
async fn enroll(
    vault: &carevault_core::Vault<carevault_storage::AnyStore>,
    name: &Username,
    path: &std::path::Path,
) -> Result<(), CliError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let secret = vault.enroll_totp(name).await.map_err(|e| match e {
        carevault_core::CoreError::NotFound => CliError::new("no such account"),
        other => core_err(other),
    })?;
    let uri = zeroize::Zeroizing::new(secret.otpauth_uri("carevault", name.as_str()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| CliError::new(format!("cannot create {}: {e}", path.display())))?;
    f.write_all(format!("{}\n", uri.as_str()).as_bytes())
        .map_err(|e| CliError::new(format!("cannot write {}: {e}", path.display())))
}

pub async fn client(args: ClientArgs) -> Result<ExitCode, CliError> {
    match args.command {
        ClientCommand::Add(a) => {
            let settings = Settings::load(&a.data_dir, FlagSettings::default())?;
            let scopes = ScopeSet::parse(&a.scopes).map_err(|e| CliError::new(format!("--scopes: {e}")))?;
            let jwks = match &a.jwks_file {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| CliError::new(format!("cannot read {}: {e}", path.display())))?;
                    Some(
                        serde_json::from_str(&text)
                            .map_err(|e| CliError::new(format!("{} is not JSON: {e}", path.display())))?,
                    )
                }
                None => None,
            };
            let vault = open_vault(&settings).await?;
            let id = vault
                .add_client(carevault_core::signin::NewClient {
                    name: a.name,
                    redirect_uris: a.redirect_uri,
                    scopes,
                    jwks,
                })
                .await
                .map_err(core_err)?;
            println!("{id}");
        }
        ClientCommand::List(a) => {
            let settings = Settings::load(&a.data_dir, FlagSettings::default())?;
            let vault = open_vault(&settings).await?;
            println!("id\tname\tkind\tscopes\tredirect_uris");
            for c in vault.clients().await.map_err(core_err)? {
                let kind = if c.confidential() { "confidential" } else { "public" };
                println!(
                    "{}\t{}\t{kind}\t{}\t{}",
                    c.id,
                    c.name,
                    c.scopes,
                    c.redirect_uris.join(" ")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn set_disabled(a: NameArgs, disabled: bool) -> Result<(), CliError> {
    let settings = Settings::load(&a.data_dir, FlagSettings::default())?;
    let vault = open_vault(&settings).await?;
    let name = Username::parse(&a.username).map_err(core_err)?;
    vault.set_user_disabled(&name, disabled).await.map_err(|e| match e {
        carevault_core::CoreError::NotFound => CliError::new("no such account"),
        other => core_err(other),
    })
}

pub async fn token(a: TokenArgs) -> Result<ExitCode, CliError> {
    let settings = Settings::load(&a.data_dir, FlagSettings::default())?;
    let scopes = ScopeSet::parse(&a.scope).map_err(|e| CliError::new(format!("--scope: {e}")))?;
    let ttl = ttl_secs(&a.ttl)?;
    let name = Username::parse(&a.user).map_err(core_err)?;
    let vault = open_vault(&settings).await?;
    let token = vault.mint_token(&name, &scopes, ttl).await.map_err(|e| match e {
        carevault_core::CoreError::NotFound => CliError::new("no such account"),
        other => core_err(other),
    })?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

pub async fn emergency(args: EmergencyArgs) -> Result<ExitCode, CliError> {
    match args.command {
        EmergencyCommand::List(a) => {
            let settings = Settings::load(&a.data_dir, FlagSettings::default())?;
            let vault = open_vault(&settings).await?;
            // The operator's own machine: the list is read as the system.
            let system = carevault_core::access::Access::unchecked_system();
            let grants = vault
                .session(&system)
                .emergency_grants(None, a.unreviewed)
                .await
                .map_err(core_err)?;
            println!("id\tuser\tpatient\tstart\tend\treview\treason");
            for g in grants {
                let review = g
                    .review
                    .map_or("unreviewed".to_owned(), |(who, v, _)| format!("{v} by {who}"));
                println!(
                    "{}\t{}\tPatient/{}\t{}\t{}\t{review}\t{}",
                    g.id,
                    g.user_id,
                    g.patient,
                    g.started.to_fhir(),
                    g.expires.to_fhir(),
                    g.reason.replace(['\t', '\n'], " ")
                );
            }
        }
        EmergencyCommand::Review(a) => {
            let settings = Settings::load(&a.data_dir, FlagSettings::default())?;
            let vault = open_vault(&settings).await?;
            // The reviewer acts through a one-minute token of their own, so the verdict is
            // recorded under their account and their role is checked like any request's.
            let name = Username::parse(&a.reviewer).map_err(core_err)?;
            let scopes = ScopeSet::parse("user/AuditEvent.rs").map_err(|e| CliError::new(e.to_string()))?;
            // (That token is a means, not the change: the command's entry commits with the
            // review.)
            let token = carevault_core::audit::apart(vault.mint_token(&name, &scopes, 60))
                .await
                .map_err(|e| match e {
                    carevault_core::CoreError::NotFound => CliError::new("no such reviewer account"),
                    other => core_err(other),
                })?;
            let access = vault
                .authenticate(&token)
                .await
                .map_err(core_err)?
                .map_err(|_| CliError::new("the reviewer account cannot act"))?;
            vault
                .session(&access)
                .review_emergency(&a.id, &a.verdict)
                .await
                .map_err(|e| match e {
                    carevault_core::CoreError::NotFound => CliError::new("no such grant awaiting review"),
                    other => core_err(other),
                })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::ttl_secs;

    #[test]
    fn ttls() {
        assert_eq!(ttl_secs("15m").unwrap(), 900);
        assert_eq!(ttl_secs("90").unwrap(), 90);
        assert_eq!(ttl_secs("2h").unwrap(), 7200);
        assert!(ttl_secs("25h").is_err());
        assert!(ttl_secs("0").is_err());
        assert!(ttl_secs("5d").is_err());
        assert!(ttl_secs("m").is_err());
    }
}

#[derive(Args)]
pub struct IntegrationTokenArgs {
    #[command(subcommand)]
    pub command: IntegrationTokenCommand,
}

#[derive(Subcommand)]
pub enum IntegrationTokenCommand {
    /// Issue a new integration token, revoke every other one, and write it to DIR/admin-token
    /// (a running server refuses the old one within a quarter of a second).
    Rotate(DirArgs),
}

pub async fn integration_token(args: IntegrationTokenArgs) -> Result<ExitCode, CliError> {
    match args.command {
        IntegrationTokenCommand::Rotate(a) => {
            let settings = Settings::load(&a.data_dir, FlagSettings::default())?;
            let vault = open_vault(&settings).await?;
            let rng = carevault_crypto::SystemRandomSource::new();
            let token = carevault_crypto::new_token(&rng).map_err(|e| CliError::new(e.to_string()))?;
            let hash = carevault_crypto::hash_token(&token).0;
            // The new token, the revocation of every other and the command's entry commit
            // together.
            let revoked = vault
                .replace_integration_tokens(&hash)
                .await
                .map_err(|e| CliError::new(format!("cannot replace the integration tokens: {e}")))?;
            let path = a.data_dir.join(crate::config::TOKEN_FILE);
            let _ = std::fs::remove_file(&path);
            crate::init::write_private(&path, format!("{token}\n").as_bytes())?;
            eprintln!(
                "{revoked} earlier integration token(s) revoked; the new one is in {}",
                path.display()
            );
            println!("{token}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
