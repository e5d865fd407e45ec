//! Settings, layered: defaults < `DIR/carevault.toml` < `CAREVAULT_*` environment (with
//! `*_FILE` for secrets) < command-line flags. Validated once into `Settings`.

use crate::CliError;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub const CONFIG_FILE: &str = "carevault.toml";
pub const KEY_FILE: &str = "carevault.key";
pub const DB_FILE: &str = "carevault.db";
pub const CERT_FILE: &str = "tls-cert.pem";
pub const TLS_KEY_FILE: &str = "tls-key.pem";
pub const TOKEN_FILE: &str = "admin-token";

/// What `carevault.toml` may say. Every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub key_file: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub max_body_bytes: Option<usize>,
    pub public_base: Option<String>,
    pub export_ttl_secs: Option<u64>,
    /// Roles that must give a TOTP code at sign-in (default: every staff role).
    pub mfa_roles: Option<Vec<String>>,
    pub access_token_secs: Option<i64>,
    pub idle_timeout_secs: Option<i64>,
    pub session_lifetime_secs: Option<i64>,
    /// Failed sign-ins before an account locks (then the lock doubles with each failure).
    pub lockout_after: Option<i64>,
    /// Attempts per minute per address and per account at the sign-in and token endpoints.
    pub auth_attempts_per_minute: Option<u32>,
    /// Browser origins allowed to call the API (CORS).
    pub cors_origins: Option<Vec<String>>,
    /// Whether staff reach the patients admitted to their ward / department.
    pub ward_relationships: Option<bool>,
    pub department_relationships: Option<bool>,
    /// Days after an encounter ends that its participants keep their relationship.
    pub encounter_days: Option<i64>,
    /// The witness file of signed audit heads (outside the database).
    pub audit_witness: Option<PathBuf>,
    /// The audit journal (a server over SQLite: where entries not committed with a write
    /// become durable before they are copied into the log).
    pub audit_journal: Option<PathBuf>,
    /// Milliseconds between copies of the audit journal into the log under load (default 25).
    pub audit_copy_millis: Option<u64>,
    /// Seconds between signed audit heads.
    pub audit_head_secs: Option<u64>,
    /// Days an audit entry is kept before retention empties it (default 2,192: six years).
    pub audit_retention_days: Option<u64>,
    /// The operator listener's address, or "off".
    pub operator_listen: Option<String>,
    /// Client addresses the operator listener answers.
    pub operator_allow: Option<Vec<String>>,
}

/// Flags that may override the lower layers.
#[derive(Debug, Default, Clone)]
pub struct FlagSettings {
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub insecure_http: bool,
}

/// Six years (HIPAA's period for security documentation), leap days included.
pub const DEFAULT_AUDIT_RETENTION_DAYS: u64 = 6 * 365 + 2;

/// The validated settings of a running server or tool.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// `postgres://…`, or the SQLite file path.
    pub database: String,
    pub key_file: PathBuf,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub insecure_http: bool,
    pub max_body_bytes: usize,
    pub public_base: Option<String>,
    /// How long a bulk export's status and files stay available.
    pub export_ttl_secs: u64,
    pub signin: carevault_core::signin::SignInPolicy,
    /// Care-relationship settings (the rest of `AccessPolicy` keeps its defaults).
    pub ward_relationships: bool,
    pub department_relationships: bool,
    pub encounter_days: i64,
    pub auth_attempts_per_minute: u32,
    pub cors_origins: Vec<String>,
    pub audit_witness: PathBuf,
    pub audit_journal: PathBuf,
    pub audit_copy_millis: u64,
    pub audit_head_secs: u64,
    pub audit_retention_days: u64,
    /// Where the operator endpoints listen (`None`: not at all).
    pub operator_listen: Option<SocketAddr>,
    pub operator_allow: Vec<std::net::IpAddr>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(format!("CAREVAULT_{name}"))
        .ok()
        .filter(|v| !v.is_empty())
}

/// An environment setting, or the contents of the file its `_FILE` variant names.
fn env_secret(name: &str) -> Result<Option<String>, CliError> {
    if let Some(v) = env(name) {
        return Ok(Some(v));
    }
    match env(&format!("{name}_FILE")) {
        Some(path) => std::fs::read_to_string(&path)
            .map(|s| Some(s.trim().to_owned()))
            .map_err(|e| CliError::new(format!("cannot read CAREVAULT_{name}_FILE ({path}): {e}"))),
        None => Ok(None),
    }
}

pub fn read_file_settings(dir: &Path) -> Result<FileSettings, CliError> {
    let path = dir.join(CONFIG_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map_err(|e| CliError::new(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileSettings::default()),
        Err(e) => Err(CliError::new(format!("cannot read {}: {e}", path.display()))),
    }
}

impl Settings {
    pub fn load(data_dir: &Path, flags: FlagSettings) -> Result<Self, CliError> {
        let file = read_file_settings(data_dir)?;
        let signin = signin_policy(&file)?;
        let operator_listen = match env("OPERATOR_LISTEN").or_else(|| file.operator_listen.clone()) {
            Some(v) if v == "off" => None,
            Some(v) => Some(
                v.parse::<SocketAddr>()
                    .map_err(|_| CliError::new(format!("operator_listen `{v}` is not host:port or \"off\"")))?,
            ),
            None => Some(SocketAddr::from(([127, 0, 0, 1], 8444))),
        };
        let operator_allow = match &file.operator_allow {
            Some(list) => list
                .iter()
                .map(|a| {
                    a.parse()
                        .map_err(|_| CliError::new(format!("operator_allow: `{a}` is not an IP address")))
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => vec![
                std::net::IpAddr::from([127, 0, 0, 1]),
                std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            ],
        };
        let listen = flags
            .listen
            .or_else(|| env("LISTEN"))
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:8443".into());
        let listen: SocketAddr = listen
            .parse()
            .map_err(|_| CliError::new(format!("listen address `{listen}` is not host:port")))?;
        let database = flags
            .database_url
            .or(env_secret("DATABASE_URL")?)
            .or(file.database_url)
            .unwrap_or_else(|| data_dir.join(DB_FILE).to_string_lossy().into_owned());
        let key_file = env("KEY_FILE")
            .map(PathBuf::from)
            .or(file.key_file)
            .unwrap_or_else(|| data_dir.join(KEY_FILE));
        let tls_cert = flags
            .tls_cert
            .or_else(|| env("TLS_CERT").map(PathBuf::from))
            .or(file.tls_cert)
            .unwrap_or_else(|| data_dir.join(CERT_FILE));
        let tls_key = flags
            .tls_key
            .or_else(|| env("TLS_KEY").map(PathBuf::from))
            .or(file.tls_key)
            .unwrap_or_else(|| data_dir.join(TLS_KEY_FILE));
        let max_body_bytes = match env("MAX_BODY_BYTES") {
            Some(v) => v
                .parse()
                .map_err(|_| CliError::new("CAREVAULT_MAX_BODY_BYTES must be a number of bytes"))?,
            None => file.max_body_bytes.unwrap_or(16 * 1024 * 1024),
        };
        let public_base = env("PUBLIC_BASE").or(file.public_base);
        let export_ttl_secs = match env("EXPORT_TTL_SECS") {
            Some(v) => v
                .parse()
                .map_err(|_| CliError::new("CAREVAULT_EXPORT_TTL_SECS must be a number of seconds"))?,
            None => file.export_ttl_secs.unwrap_or(24 * 60 * 60),
        };
        if flags.insecure_http && !listen.ip().is_loopback() {
            return Err(CliError::new(
                "--insecure-http is only allowed on a loopback address (127.0.0.1 or ::1); use TLS elsewhere",
            ));
        }
        Ok(Settings {
            listen,
            database,
            key_file,
            tls_cert,
            tls_key,
            insecure_http: flags.insecure_http,
            max_body_bytes,
            public_base,
            export_ttl_secs,
            signin,
            ward_relationships: file.ward_relationships.unwrap_or(true),
            department_relationships: file.department_relationships.unwrap_or(false),
            encounter_days: file.encounter_days.unwrap_or(14).max(0),
            auth_attempts_per_minute: file.auth_attempts_per_minute.unwrap_or(30).max(1),
            cors_origins: file.cors_origins.clone().unwrap_or_default(),
            operator_listen,
            operator_allow,
            audit_witness: env("AUDIT_WITNESS")
                .map(PathBuf::from)
                .or_else(|| file.audit_witness.clone())
                .unwrap_or_else(|| data_dir.join("audit-witness.jsonl")),
            audit_journal: env("AUDIT_JOURNAL")
                .map(PathBuf::from)
                .or_else(|| file.audit_journal.clone())
                .unwrap_or_else(|| data_dir.join("audit-journal")),
            audit_copy_millis: match env("AUDIT_COPY_MILLIS") {
                Some(v) => v
                    .parse()
                    .map_err(|_| CliError::new("CAREVAULT_AUDIT_COPY_MILLIS must be a number of milliseconds"))?,
                None => file.audit_copy_millis.unwrap_or(25),
            }
            .clamp(1, 3_600_000),
            audit_head_secs: match env("AUDIT_HEAD_SECS") {
                Some(v) => v
                    .parse()
                    .map_err(|_| CliError::new("CAREVAULT_AUDIT_HEAD_SECS must be a number of seconds"))?,
                None => file.audit_head_secs.unwrap_or(60),
            }
            .max(1),
            audit_retention_days: match env("AUDIT_RETENTION_DAYS") {
                Some(v) => v
                    .parse()
                    .map_err(|_| CliError::new("CAREVAULT_AUDIT_RETENTION_DAYS must be a number of days"))?,
                None => file.audit_retention_days.unwrap_or(DEFAULT_AUDIT_RETENTION_DAYS),
            }
            .max(1),
        })
    }
}

/// The sign-in policy: defaults, with what `carevault.toml` says.
fn signin_policy(file: &FileSettings) -> Result<carevault_core::signin::SignInPolicy, CliError> {
    let mut p = carevault_core::signin::SignInPolicy::default();
    if let Some(roles) = &file.mfa_roles {
        p.mfa_roles = roles
            .iter()
            .map(|r| {
                carevault_core::access::Role::parse(r)
                    .ok_or_else(|| CliError::new(format!("mfa_roles: unknown role {r:?}")))
            })
            .collect::<Result<_, _>>()?;
    }
    for (value, field, name) in [
        (file.access_token_secs, &mut p.access_token_secs, "access_token_secs"),
        (file.idle_timeout_secs, &mut p.idle_timeout_secs, "idle_timeout_secs"),
        (
            file.session_lifetime_secs,
            &mut p.session_lifetime_secs,
            "session_lifetime_secs",
        ),
        (file.lockout_after, &mut p.lockout_after, "lockout_after"),
    ] {
        if let Some(v) = value {
            if v < 1 {
                return Err(CliError::new(format!("{name} must be at least 1")));
            }
            *field = v;
        }
    }
    Ok(p)
}

/// Logs go to stderr; `CAREVAULT_LOG` sets the filter (e.g. `info`, `carevault_core=debug`).
pub fn init_logging() {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    let filter: Targets = env("LOG")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false),
        )
        .with(filter)
        .try_init();
}
