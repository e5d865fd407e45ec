//! `carevault`: the one binary. Subcommands are a scripting contract — keep their names and
//! flags stable.

mod accounts;
mod app;
mod audit;
mod config;
mod demo;
mod demo_data;
mod generate;
mod import;
mod init;
mod reindex;
mod serve;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc instead of the C library's allocator: an import or a busy server frees large
/// JSON trees from many threads, where glibc's allocator spent about 40 % of the import's
/// CPU consolidating and unlinking chunks (a `perf` profile; docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "carevault",
    version,
    about = "An encrypted FHIR R4 data server for hospitals"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a data directory: key file, TLS certificate, database and bootstrap token.
    Init(init::InitArgs),
    /// Serve the FHIR API over HTTPS.
    Serve(serve::ServeArgs),
    /// Create a throwaway hospital with synthetic patients and serve it.
    Demo(demo::DemoArgs),
    /// Import FHIR bundles (JSON) and NDJSON files or folders of them.
    Import(import::ImportArgs),
    /// Compute the search index of every resource again (after an upgrade changed it).
    Reindex(reindex::ReindexArgs),
    /// Write synthetic patients (Synthea-sized records) as transaction bundles, for benchmarks.
    Generate(generate::GenerateArgs),
    /// Manage accounts: add, list, disable, enable, totp, unlock.
    User(accounts::UserArgs),
    /// The integration (bootstrap) token: rotate it.
    IntegrationToken(accounts::IntegrationTokenArgs),
    /// The audit log: verify it offline, sign a tree head.
    Audit(audit::AuditArgs),
    /// Register client applications (SMART apps, backend services): add, list.
    Client(accounts::ClientArgs),
    /// Mint a signed access token for an account (for automation; at most 24 hours).
    Token(accounts::TokenArgs),
    /// Break-the-glass grants: list them, record the privacy officer's review.
    Emergency(accounts::EmergencyArgs),
}

/// The data directory and name of an operator command (one that reads or changes accounts,
/// clients, tokens, grants or the log), for its audit entry, and whether it makes one change
/// that its entry commits with (`with_pending`): the core appends the entry in that
/// change's transaction, so a command that fails changes nothing and is recorded apart as a
/// failure.
fn operator_command(cmd: &Command) -> Option<(PathBuf, String, bool)> {
    use accounts::{ClientCommand, EmergencyCommand, IntegrationTokenCommand, UserCommand};
    let apart = |dir: &PathBuf, name: &str| (dir.clone(), name.to_owned(), false);
    let with_change = |dir: &PathBuf, name: &str| (dir.clone(), name.to_owned(), true);
    Some(match cmd {
        Command::User(a) => match &a.command {
            UserCommand::Add(x) => with_change(&x.data_dir, "user-add"),
            UserCommand::List(x) => apart(&x.data_dir, "user-list"),
            UserCommand::Disable(x) => with_change(&x.data_dir, "user-disable"),
            UserCommand::Enable(x) => with_change(&x.data_dir, "user-enable"),
            UserCommand::Totp(x) => with_change(&x.data_dir, "user-totp"),
            UserCommand::Unlock(x) => with_change(&x.data_dir, "user-unlock"),
        },
        Command::Token(a) => with_change(&a.data_dir, "token"),
        Command::Import(a) => apart(&a.data_dir, "import"),
        Command::Reindex(a) => apart(&a.data_dir, "reindex"),
        Command::Client(a) => match &a.command {
            ClientCommand::Add(x) => with_change(&x.data_dir, "client-add"),
            ClientCommand::List(x) => apart(&x.data_dir, "client-list"),
        },
        Command::IntegrationToken(a) => match &a.command {
            IntegrationTokenCommand::Rotate(x) => with_change(&x.data_dir, "integration-token-rotate"),
        },
        Command::Emergency(a) => match &a.command {
            EmergencyCommand::List(x) => apart(&x.data_dir, "emergency-list"),
            EmergencyCommand::Review(x) => with_change(&x.data_dir, "emergency-review"),
        },
        Command::Audit(a) => match &a.command {
            audit::AuditCommand::Head(x) => with_change(&x.data_dir, "audit-head"),
            // Verification only reads: it must not change the log (or a copy) it examines.
            audit::AuditCommand::Verify(_) => return None,
        },
        _ => return None,
    })
}

/// A failure the CLI reports in one line and exits non-zero on.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CliError(pub String);

impl CliError {
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

pub fn data_dir_or_default(dir: Option<PathBuf>) -> PathBuf {
    dir.unwrap_or_else(|| PathBuf::from("carevault-data"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    config::init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("carevault: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let operator = operator_command(&cli.command);
    let result = runtime.block_on(async move {
        let run = async move {
            match cli.command {
                Command::Init(a) => init::run(a).await,
                Command::Serve(a) => serve::run(a).await,
                Command::Demo(a) => demo::run(a).await,
                Command::Import(a) => import::run(a).await,
                Command::Reindex(a) => reindex::run(a).await,
                Command::Generate(a) => generate::run(a),
                Command::User(a) => accounts::user(a).await,
                Command::Token(a) => accounts::token(a).await,
                Command::Client(a) => accounts::client(a).await,
                Command::Audit(a) => audit::run(a).await,
                Command::IntegrationToken(a) => accounts::integration_token(a).await,
                Command::Emergency(a) => accounts::emergency(a).await,
            }
        };
        // Operator commands are recorded in the audit log like requests are: the ones that
        // make one change commit their entry with it.
        let (result, committed) = match &operator {
            Some((_, name, true)) => {
                let now = carevault_domain::Clock::now(&carevault_domain::SystemClock).millis();
                let (result, committed) =
                    carevault_core::audit::with_pending(app::operator_entry(now, name, true), run).await;
                (result, committed.is_some())
            }
            _ => (run.await, false),
        };
        match operator {
            _ if committed => result,
            Some((dir, name, _)) => match app::record_operator(&dir, &name, result.is_ok()).await {
                Ok(()) => result,
                Err(e) => result.and(Err(e)),
            },
            None => result,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("carevault: {e}");
            ExitCode::FAILURE
        }
    }
}
