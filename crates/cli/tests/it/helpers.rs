//! Spawning servers and talking to them.

use reqwest::{Client, Method, StatusCode};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_carevault");

/// Which database a test server uses.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    /// A PostgreSQL URL whose connections use a schema of this test's own.
    Postgres {
        url: String,
        schema: String,
    },
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres { .. } => "postgres",
        }
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique() -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}_{nanos}_{n}", std::process::id())
}

pub fn pg_base_url() -> Option<String> {
    std::env::var("CAREVAULT_TEST_POSTGRES_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

/// A fresh schema on the test PostgreSQL server.
pub async fn fresh_pg(base: &str) -> Backend {
    let (client, conn) = tokio_postgres::connect(base, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let schema = format!("cv_it_{}", unique());
    client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    Backend::Postgres {
        url: format!("{base}{sep}options=-csearch_path%3D{schema}"),
        schema,
    }
}

/// Another database of the same kind (a new schema for PostgreSQL).
pub async fn another(backend: &Backend) -> Backend {
    match backend {
        Backend::Sqlite => Backend::Sqlite,
        Backend::Postgres { .. } => fresh_pg(&pg_base_url().unwrap()).await,
    }
}

/// SQLite always; PostgreSQL when configured, else a loud note that it did not run.
pub async fn backends(test: &str) -> Vec<Backend> {
    let mut out = vec![Backend::Sqlite];
    match pg_base_url() {
        Some(base) => out.push(fresh_pg(&base).await),
        None => eprintln!("NOT RUN on PostgreSQL: {test} (set CAREVAULT_TEST_POSTGRES_URL; .ci/run does)"),
    }
    out
}

/// A data directory made by `carevault init`.
pub struct DataDir {
    pub dir: tempfile::TempDir,
    pub token: String,
    pub backend: Backend,
}

impl DataDir {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

pub fn init(backend: &Backend) -> DataDir {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["init", "--data-dir"]).arg(dir.path());
    if let Backend::Postgres { url, .. } = backend {
        cmd.args(["--database-url", url]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = std::fs::read_to_string(dir.path().join("admin-token"))
        .unwrap()
        .trim()
        .to_owned();
    DataDir {
        dir,
        token,
        backend: backend.clone(),
    }
}

/// A running server.
pub struct TestApp {
    pub data: DataDir,
    pub base: String,
    /// The operator listener's base (`https://127.0.0.1:PORT/operator`).
    pub operator: String,
    pub client: Client,
    pub child: Child,
    pub log: PathBuf,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn https_client(data: &Path) -> Client {
    let pem = std::fs::read(data.join("tls-cert.pem")).unwrap();
    Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// Starts `carevault serve` on a free port and waits until it listens.
pub fn start(data: DataDir, extra: &[&str]) -> TestApp {
    start_with_env(data, extra, &[])
}

/// Like `start`, with extra environment variables for the server.
pub fn start_with_env(data: DataDir, extra: &[&str], envs: &[(&str, &str)]) -> TestApp {
    let log = data.path().join("server.log");
    let logfile = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(data.path())
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .env("CAREVAULT_LOG", "debug")
        .env("CAREVAULT_OPERATOR_LISTEN", "127.0.0.1:0")
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(logfile)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    let mut reader = BufReader::new(stdout);
    reader.read_line(&mut line).unwrap();
    let mut op_line = String::new();
    reader.read_line(&mut op_line).unwrap();
    let operator = op_line.trim().rsplit(' ').next().unwrap_or_default().to_owned();
    // Keep draining stdout so the server never writes into a closed pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    let base = line
        .trim()
        .rsplit(' ')
        .next()
        .filter(|u| u.starts_with("http"))
        .unwrap_or_else(|| {
            panic!(
                "server did not start: {line} / {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })
        .to_owned();
    let client = https_client(data.path());
    TestApp {
        data,
        base,
        operator,
        client,
        child,
        log,
    }
}

pub async fn spawn_app(backend: &Backend) -> TestApp {
    start(init(backend), &[])
}

/// A response read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    }
    /// Asserts the body is an OperationOutcome and returns its first diagnostics text.
    pub fn outcome(&self) -> String {
        let v = self.json();
        assert_eq!(
            v["resourceType"], "OperationOutcome",
            "expected an OperationOutcome, got {v}"
        );
        v["issue"][0]["diagnostics"].as_str().unwrap_or("").to_owned()
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }

    pub async fn request(&self, method: Method, path: &str, body: Option<&Value>, headers: &[(&str, &str)]) -> Resp {
        let mut rb = self
            .client
            .request(method, self.url(path))
            .bearer_auth(&self.data.token);
        if let Some(b) = body {
            rb = rb
                .header("content-type", "application/fhir+json")
                .body(serde_json::to_vec(b).unwrap());
        }
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let r = rb.send().await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let body = r.bytes().await.unwrap().to_vec();
        Resp { status, headers, body }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.request(Method::GET, path, None, &[]).await
    }
    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.request(Method::POST, path, Some(body), &[]).await
    }
    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        self.request(Method::PUT, path, Some(body), &[]).await
    }
    pub async fn delete(&self, path: &str) -> Resp {
        self.request(Method::DELETE, path, None, &[]).await
    }

    /// Creates a resource and returns its server id.
    pub async fn create(&self, resource: &Value) -> String {
        let t = resource["resourceType"].as_str().unwrap();
        let r = self.post(t, resource).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&r.body));
        r.json()["id"].as_str().unwrap().to_owned()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the server with SIGKILL (no shutdown of any kind) and waits for it; its data
    /// directory stays for `restart`.
    pub fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Starts a server again on this one's data directory (after `kill_9` or `terminate`).
    pub fn restart(mut self) -> TestApp {
        let dir = std::mem::replace(&mut self.data.dir, tempfile::tempdir().unwrap());
        let data = DataDir {
            dir,
            token: self.data.token.clone(),
            backend: self.data.backend.clone(),
        };
        start(data, &[])
    }

    /// Stops the server with SIGTERM and waits for it.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }
}

/// Strips `meta` for comparisons of content.
pub fn without_meta(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("meta");
    }
    v
}

/// The shared test data folder, or a loud note that the test did not run.
pub fn testdata(test: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("NOT RUN: {test} needs ../shared/testdata beside the project");
        None
    }
}

/// Replaces every reference found in `map` (full URL or condition → `Type/id`).
pub fn rewrite(v: &mut Value, map: &std::collections::HashMap<String, String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                if k == "reference"
                    && let Some(to) = child.as_str().and_then(|s| map.get(s))
                {
                    *child = Value::String(to.clone());
                    continue;
                }
                rewrite(child, map);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| rewrite(x, map)),
        _ => {}
    }
}

impl TestApp {
    /// Kicks off a bulk export (`path` like `$export?_type=Patient`), polls its status until
    /// it finishes, and returns the status URL and the manifest.
    pub async fn export_and_wait(&self, path: &str) -> (String, Value) {
        let r = self
            .client
            .get(self.url(path))
            .bearer_auth(&self.data.token)
            .header("accept", "application/fhir+json")
            .header("prefer", "respond-async")
            .send()
            .await
            .unwrap();
        self.export_finished(r, path).await
    }

    /// Polls an accepted kick-off's status URL until its export finishes: the status URL and
    /// the manifest.
    pub async fn export_finished(&self, r: reqwest::Response, path: &str) -> (String, Value) {
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{path}");
        let status_url = r.headers()["content-location"].to_str().unwrap().to_owned();
        for _ in 0..600 {
            let s = self
                .client
                .get(&status_url)
                .bearer_auth(&self.data.token)
                .send()
                .await
                .unwrap();
            match s.status() {
                StatusCode::ACCEPTED => {
                    assert!(s.headers().contains_key("x-progress"));
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                StatusCode::OK => return (status_url, s.json().await.unwrap()),
                other => panic!("{path}: export status {other}: {}", s.text().await.unwrap_or_default()),
            }
        }
        panic!("{path}: the export did not finish in 30 s")
    }
}

impl TestApp {
    /// A request with another bearer token.
    pub async fn request_as(&self, token: &str, method: Method, path: &str, body: Option<&Value>) -> Resp {
        let mut rb = self.client.request(method, self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            rb = rb
                .header("content-type", "application/fhir+json")
                .body(serde_json::to_vec(b).unwrap());
        }
        let r = rb.send().await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let body = r.bytes().await.unwrap().to_vec();
        Resp { status, headers, body }
    }

    /// Runs a `carevault` subcommand against this server's data directory; its stdout.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new(BIN);
        cmd.arg(args[0])
            .args(&args[1..])
            .arg("--data-dir")
            .arg(self.data.path());
        let out = cmd.output().unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// Adds an account (password from a file) and mints a token for it.
    pub fn account_token(&self, username: &str, role: &str, link: &[&str], scope: &str, ttl: &str) -> String {
        let pw = self.data.path().join(format!("{username}.pw"));
        std::fs::write(&pw, "a long enough password\n").unwrap();
        let mut args = vec!["user", "add", "--username", username, "--role", role];
        args.extend_from_slice(link);
        let pw_s = pw.to_str().unwrap().to_owned();
        args.extend_from_slice(&["--password-file", &pw_s]);
        self.cli(&args).unwrap();
        self.cli(&["token", "--user", username, "--scope", scope, "--ttl", ttl])
            .unwrap()
    }
}
