//! `carevault serve --data-dir DIR [--listen ADDR] [--insecure-http]`

use crate::app::{active_tokens, open_vault};
use crate::config::{FlagSettings, Settings};
use crate::{CliError, data_dir_or_default};
use carevault_http::{AppState, HttpConfig, TlsFiles, router, serve, tls_config};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// The data directory made by `carevault init`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8443; port 0 picks a free one).
    #[arg(long)]
    pub listen: Option<String>,
    /// Serve plain HTTP instead of HTTPS. Only allowed on a loopback address.
    #[arg(long)]
    pub insecure_http: bool,
    /// TLS certificate (PEM), overriding the data directory's.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received");
}

/// Serves until a shutdown signal; `ready` is called with the base URL once listening.
pub async fn serve_settings(settings: Settings, ready: impl FnOnce(&str)) -> Result<(), CliError> {
    let vault = open_vault(&settings).await?;
    serve_vault(settings, vault, ready).await
}

/// Deletes expired bulk exports (a status or file request for an expired job also deletes it
/// on sight) and ended sign-in sessions, at start and then every ten minutes; each deletion
/// commits with its audit entry (the core's), the counts go to the operator log. Old
/// conditional-create claims (keyed tags, no content) go too, unaudited.
fn spawn_janitor(vault: std::sync::Arc<carevault_core::Vault<carevault_storage::AnyStore>>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(600));
        loop {
            tick.tick().await;
            match vault.purge_expired_exports().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(jobs = n, "expired exports deleted"),
                Err(e) => tracing::warn!(error = %e, "expired exports could not be deleted"),
            }
            match vault.purge_ended_sessions().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(sessions = n, "ended sign-in sessions deleted"),
                Err(e) => tracing::warn!(error = %e, "ended sign-in sessions could not be deleted"),
            }
            match vault.purge_condition_claims().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(claims = n, "old conditional-create claims deleted"),
                Err(e) => tracing::warn!(error = %e, "old conditional-create claims could not be deleted"),
            }
        }
    });
}

/// Signs an audit tree head every `secs` seconds when the log has grown, and appends it to the
/// witness file.
fn spawn_head_signer(
    vault: std::sync::Arc<carevault_core::Vault<carevault_storage::AnyStore>>,
    witness: std::path::PathBuf,
    secs: u64,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(secs));
        let mut last = u64::MAX;
        loop {
            tick.tick().await;
            match vault.sign_head().await {
                Ok(h) if h.size == last => {}
                Ok(h) => {
                    last = h.size;
                    if let Err(e) = crate::audit::witness(&witness, &h) {
                        tracing::error!(error = %e, "the witness file could not be written");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "no audit head signed"),
            }
        }
    });
}

/// Empties audit entries past their retention period, at start and every hour.
fn spawn_audit_retention(vault: std::sync::Arc<carevault_core::Vault<carevault_storage::AnyStore>>, days: u64) {
    let keep_millis = i64::try_from(days.saturating_mul(86_400_000)).unwrap_or(i64::MAX);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            if let Err(e) = vault.prune_audit(keep_millis).await {
                tracing::warn!(error = %e, "audit retention did not run");
            }
        }
    });
}

/// Serves an already opened vault until a shutdown signal.
pub async fn serve_vault(
    settings: Settings,
    vault: std::sync::Arc<carevault_core::Vault<carevault_storage::AnyStore>>,
    ready: impl FnOnce(&str),
) -> Result<(), CliError> {
    let tokens = active_tokens(&vault).await?;
    let tls = if settings.insecure_http {
        None
    } else {
        let files = TlsFiles {
            cert: settings.tls_cert.clone(),
            key: settings.tls_key.clone(),
        };
        Some(tls_config(&files).map_err(CliError::new)?)
    };
    let config = HttpConfig {
        max_body_bytes: settings.max_body_bytes,
        public_base: settings.public_base.clone(),
        export_ttl_secs: settings.export_ttl_secs,
        auth_attempts_per_minute: settings.auth_attempts_per_minute,
        cors_origins: settings.cors_origins.clone(),
        audit_witness: Some(settings.audit_witness.clone()),
    };
    if matches!(vault.unchecked_store(), carevault_storage::AnyStore::Sqlite(_)) {
        let every = Duration::from_millis(settings.audit_copy_millis);
        let copied = vault
            .open_audit_journal(&settings.audit_journal, every)
            .await
            .map_err(|e| {
                CliError::new(format!(
                    "cannot open the audit journal {}: {e}",
                    settings.audit_journal.display()
                ))
            })?;
        if copied > 0 {
            tracing::info!(
                entries = copied,
                "audit entries left in the journal copied into the log"
            );
        }
    }
    spawn_janitor(std::sync::Arc::clone(&vault));
    spawn_head_signer(
        std::sync::Arc::clone(&vault),
        settings.audit_witness.clone(),
        settings.audit_head_secs,
    );
    spawn_audit_retention(std::sync::Arc::clone(&vault), settings.audit_retention_days);
    let state = AppState::new(std::sync::Arc::clone(&vault), config, tls.is_some(), tokens);
    let operator = match settings.operator_listen {
        Some(at) => {
            let l = tokio::net::TcpListener::bind(at)
                .await
                .map_err(|e| CliError::new(format!("cannot listen on {at} (operator_listen): {e}")))?;
            let app = carevault_http::operator_router(
                state.clone(),
                carevault_http::OperatorConfig {
                    allow: settings.operator_allow.clone(),
                },
            );
            Some((l, app))
        }
        None => None,
    };
    let app = router(state);
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| CliError::new(format!("cannot listen on {}: {e}", settings.listen)))?;
    let addr = listener.local_addr().map_err(|e| CliError::new(e.to_string()))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let host = if addr.ip().is_loopback() && addr.is_ipv4() {
        "127.0.0.1".to_owned()
    } else {
        addr.ip().to_string()
    };
    let base = format!("{scheme}://{host}:{}/fhir", addr.port());
    tracing::info!(%addr, tls = tls.is_some(), "listening");
    ready(&base);
    let main = serve(listener, tls.clone(), app, shutdown_signal(), Duration::from_secs(30));
    match operator {
        Some((l, op_app)) => {
            let at = l.local_addr().map_err(|e| CliError::new(e.to_string()))?;
            println!("carevault operator endpoints on {scheme}://{at}/operator");
            tracing::info!(%at, "operator listener");
            let op = serve(l, tls, op_app, shutdown_signal(), Duration::from_secs(5));
            tokio::join!(main, op);
        }
        None => main.await,
    }
    if let Err(e) = vault.flush_audit_journal().await {
        tracing::error!(error = %e, "the audit journal could not be copied into the log; it is copied at the next start");
    }
    Ok(())
}

pub async fn run(args: ServeArgs) -> Result<ExitCode, CliError> {
    let dir = data_dir_or_default(args.data_dir);
    let flags = FlagSettings {
        listen: args.listen,
        database_url: None,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        insecure_http: args.insecure_http,
    };
    let settings = Settings::load(&dir, flags)?;
    serve_settings(settings, |base| {
        println!("carevault listening on {base}");
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}
