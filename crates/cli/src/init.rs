//! `carevault init --data-dir DIR [--database-url postgres://…] [--tls-cert F --tls-key F]`

use crate::CliError;
use crate::app::{load_keys, open_store};
use crate::config::{CERT_FILE, CONFIG_FILE, DB_FILE, KEY_FILE, TLS_KEY_FILE, TOKEN_FILE};
use carevault_crypto::{KeyFile, RandomSource, SystemRandomSource, hash_token, new_token};
use carevault_domain::{Clock, SystemClock};
use carevault_storage::TokenStore;
use clap::Args;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args, Debug, Clone)]
pub struct InitArgs {
    /// The data directory to create (or complete).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Use PostgreSQL at this URL instead of the SQLite file in the data directory.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Use this TLS certificate (PEM) instead of generating a self-signed one.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// Writes a new file readable by its owner only; refuses to overwrite.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), CliError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                CliError::new(format!("{} already exists; refusing to overwrite it", path.display()))
            }
            _ => CliError::new(format!("cannot create {}: {e}", path.display())),
        })?;
    f.write_all(contents)
        .and_then(|()| f.sync_all())
        .map_err(|e| CliError::new(format!("cannot write {}: {e}", path.display())))
}

fn self_signed(dir: &Path) -> Result<(), CliError> {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    let cert = rcgen::generate_simple_self_signed(names).map_err(|e| CliError::new(format!("certificate: {e}")))?;
    write_private(&dir.join(TLS_KEY_FILE), cert.key_pair.serialize_pem().as_bytes())?;
    std::fs::write(dir.join(CERT_FILE), cert.cert.pem())
        .map_err(|e| CliError::new(format!("cannot write the certificate: {e}")))?;
    Ok(())
}

fn toml_string(s: &str) -> String {
    let escaped: String = s
        .chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            c => vec![c],
        })
        .collect();
    format!("\"{escaped}\"")
}

/// Creates everything; returns the bootstrap token (also written to `DIR/admin-token`).
pub async fn initialise(args: &InitArgs) -> Result<String, CliError> {
    let dir = &args.data_dir;
    std::fs::create_dir_all(dir).map_err(|e| CliError::new(format!("cannot create {}: {e}", dir.display())))?;
    let key_path = dir.join(KEY_FILE);
    if key_path.exists() {
        return Err(CliError::new(format!(
            "{} already exists; refusing to overwrite a key file",
            key_path.display()
        )));
    }
    // The database first: one that already belongs to another key file is refused before
    // anything is written here.
    let database = match &args.database_url {
        Some(url) => url.clone(),
        None => dir.join(DB_FILE).to_string_lossy().into_owned(),
    };
    let store = open_store(&database).await?;
    if args.database_url.is_none() {
        std::fs::set_permissions(&database, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| CliError::new(format!("cannot restrict {database}: {e}")))?;
    }
    let existing = store
        .active_tokens()
        .await
        .map_err(|e| CliError::new(format!("cannot read the database: {e}")))?;
    if !existing.is_empty() {
        return Err(CliError::new(
            "the database already belongs to another carevault data directory; refusing to initialise it again",
        ));
    }

    let rng = SystemRandomSource::new();
    let key_text = KeyFile::generate(&rng).map_err(|e| CliError::new(e.to_string()))?;
    write_private(&key_path, key_text.as_bytes())?;
    load_keys(&key_path)?;

    let mut config = String::from("# carevault settings (see docs/CONFIGURATION.md)\nlisten = \"127.0.0.1:8443\"\n");
    match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => {
            config.push_str(&format!(
                "tls_cert = {}\ntls_key = {}\n",
                toml_string(&c.to_string_lossy()),
                toml_string(&k.to_string_lossy())
            ));
        }
        _ => self_signed(dir)?,
    }
    if let Some(url) = &args.database_url {
        config.push_str(&format!("database_url = {}\n", toml_string(url)));
    }
    write_private(&dir.join(CONFIG_FILE), config.as_bytes())?;

    let token = new_token(&rng as &dyn RandomSource).map_err(|e| CliError::new(e.to_string()))?;
    store
        .insert_token(&hash_token(&token).0, "bootstrap", SystemClock.now().millis())
        .await
        .map_err(|e| CliError::new(format!("cannot store the token: {e}")))?;
    write_private(&dir.join(TOKEN_FILE), format!("{token}\n").as_bytes())?;
    Ok(token)
}

pub async fn run(args: InitArgs) -> Result<ExitCode, CliError> {
    let token = initialise(&args).await?;
    println!("Initialised {}", args.data_dir.display());
    println!(
        "Bootstrap admin token (shown once; also in {}):",
        args.data_dir.join(TOKEN_FILE).display()
    );
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}
