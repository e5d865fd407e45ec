//! The command-line contract: init, serve's refusals, TLS, shutdown and durability.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn run(args: &[&str], envs: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn init_creates_private_files_and_never_overwrites_a_key() {
    let data = init(&Backend::Sqlite);
    let dir = data.path();
    for f in ["carevault.key", "admin-token", "tls-key.pem", "carevault.toml"] {
        let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    assert!(dir.join("tls-cert.pem").exists());
    let key_before = std::fs::read(dir.join("carevault.key")).unwrap();
    let (ok, _, err) = run(&["init", "--data-dir", dir.to_str().unwrap()], &[]);
    assert!(!ok);
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert_eq!(std::fs::read(dir.join("carevault.key")).unwrap(), key_before);
}

#[test]
fn serve_refuses_without_its_key_or_with_an_unsafe_setup() {
    let data = init(&Backend::Sqlite);
    let dir = data.path().to_str().unwrap().to_owned();
    // insecure HTTP on a non-loopback address
    let (ok, _, err) = run(
        &["serve", "--data-dir", &dir, "--insecure-http", "--listen", "0.0.0.0:0"],
        &[],
    );
    assert!(!ok);
    assert!(err.contains("loopback"), "{err}");
    // a key file others can read
    let key = data.path().join("carevault.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, _, err) = run(&["serve", "--data-dir", &dir, "--listen", "127.0.0.1:0"], &[]);
    assert!(!ok);
    assert!(err.contains("readable by other users"), "{err}");
    // no key at all
    std::fs::remove_file(&key).unwrap();
    let (ok, _, err) = run(&["serve", "--data-dir", &dir, "--listen", "127.0.0.1:0"], &[]);
    assert!(!ok);
    assert!(err.contains("no key file"), "{err}");
    // the environment layer points elsewhere, and is named in the message
    let (ok, _, err) = run(
        &["serve", "--data-dir", &dir, "--listen", "127.0.0.1:0"],
        &[("CAREVAULT_KEY_FILE", "/nonexistent/cv.key")],
    );
    assert!(!ok);
    assert!(err.contains("/nonexistent/cv.key"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_only_when_asked_and_tls_otherwise() {
    let app = start(init(&Backend::Sqlite), &[]);
    assert!(app.base.starts_with("https://"));
    // Plain HTTP to the TLS port gets no FHIR answer.
    let plain = app.base.replace("https://", "http://");
    let r = reqwest::Client::new().get(format!("{plain}/metadata")).send().await;
    assert!(r.map(|r| !r.status().is_success()).unwrap_or(true));
    drop(app);
    let app = start(init(&Backend::Sqlite), &["--insecure-http"]);
    assert!(app.base.starts_with("http://127.0.0.1:"));
    let r = reqwest::Client::new()
        .get(format!("{}/metadata", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_and_sigterm_drains() {
    for backend in backends("acknowledged_writes_survive_kill_9_and_sigterm_drains").await {
        let mut app = spawn_app(&backend).await;
        let mut ids = Vec::new();
        for n in 0..30 {
            ids.push(
                app.create(
                    &json!({"resourceType": "Observation", "status": "final", "code": {"text": format!("n{n}")}}),
                )
                .await,
            );
        }
        app.kill_9();
        let mut app = app.restart();
        for id in &ids {
            assert_eq!(
                app.get(&format!("Observation/{id}")).await.status,
                StatusCode::OK,
                "{} lost {id}",
                backend.name()
            );
        }
        // SIGTERM while a large transaction is in flight: it completes and is kept.
        let entries: Vec<_> = (0..1500)
            .map(|n| json!({"resource": {"resourceType": "Basic", "code": {"text": format!("b{n}")}}, "request": {"method": "POST", "url": "Basic"}}))
            .collect();
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
        let client = app.client.clone();
        let url = app.url("");
        let token = app.data.token.clone();
        let inflight = tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .header("content-type", "application/fhir+json")
                .body(serde_json::to_vec(&bundle).unwrap())
                .send()
                .await
                .map(|r| r.status())
        });
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        let status = app.terminate();
        assert!(status.success(), "graceful exit: {status:?}");
        let answered = inflight.await.unwrap();
        let dir = std::mem::replace(&mut app.data.dir, tempfile::tempdir().unwrap());
        let data = DataDir {
            dir,
            token: app.data.token.clone(),
            backend: backend.clone(),
        };
        let app = start(data, &[]);
        let total = app.get("Basic/_history").await.json()["total"].as_u64().unwrap();
        match answered {
            Ok(StatusCode::OK) => assert_eq!(total, 1500, "acknowledged transaction kept"),
            other => panic!("the in-flight request was not completed: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_creates_a_synthetic_hospital_and_serves_it() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["demo", "--listen", "127.0.0.1:0", "--patients", "50", "--data-dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    for _ in 0..7 {
        printed.push(lines.next().unwrap().unwrap());
    }
    std::thread::spawn(move || for _ in lines.by_ref() {});
    let base = printed[0].rsplit(' ').next().unwrap().to_owned();
    assert!(base.starts_with("https://127.0.0.1:"), "{printed:?}");
    let token = std::fs::read_to_string(dir.path().join("admin-token"))
        .unwrap()
        .trim()
        .to_owned();
    assert!(printed.iter().any(|l| l.contains(&token)), "the token is printed");
    assert_eq!(
        printed.iter().filter(|l| l.trim_start().starts_with("curl ")).count(),
        3,
        "{printed:?}"
    );
    let client = https_client(dir.path());
    let total = |t: &'static str| {
        let client = client.clone();
        let url = format!("{base}/{t}/_history?_count=1");
        let token = token.clone();
        async move {
            let v: serde_json::Value = client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["total"].as_u64().unwrap()
        }
    };
    assert_eq!(total("Patient").await, 50);
    for t in [
        "Encounter",
        "Observation",
        "Condition",
        "MedicationRequest",
        "AllergyIntolerance",
        "DiagnosticReport",
    ] {
        assert!(total(t).await > 0, "{t}");
    }
    assert!(
        total("Observation").await > 50 * 10,
        "vital signs and labs for every encounter"
    );
    assert_eq!(total("Organization").await, 3);
    assert_eq!(total("Location").await, 4);
    assert_eq!(total("Practitioner").await, 8);
    // The MRN curl line works as printed.
    let mrn_line = printed.iter().find(|l| l.contains("identifier=")).unwrap();
    let url = mrn_line.split('"').nth(3).unwrap();
    let v: serde_json::Value = client
        .get(url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["total"], 1, "{mrn_line}");
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_layer_file_then_environment_then_flags() {
    let data = init(&Backend::Sqlite);
    // The file asks for a body limit of 100 bytes...
    let toml = data.path().join("carevault.toml");
    let mut text = std::fs::read_to_string(&toml).unwrap();
    text.push_str("max_body_bytes = 100\n");
    std::fs::write(&toml, text).unwrap();
    let body = serde_json::json!({"resourceType": "Basic", "code": {"text": "x".repeat(200)}});
    let mut app = start(data, &[]);
    assert_eq!(
        app.post("Basic", &body).await.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "the file layer applies"
    );
    app.terminate();
    let dir = std::mem::replace(&mut app.data.dir, tempfile::tempdir().unwrap());
    let data = DataDir {
        dir,
        token: app.data.token.clone(),
        backend: Backend::Sqlite,
    };
    // ...the environment raises it...
    let app = start_with_env(data, &[], &[("CAREVAULT_MAX_BODY_BYTES", "4096")]);
    assert_eq!(
        app.post("Basic", &body).await.status,
        StatusCode::CREATED,
        "the environment overrides the file"
    );
    // ...and a flag overrides the environment: --listen (port 0) wins over CAREVAULT_LISTEN.
    let app = start_with_env(init(&Backend::Sqlite), &[], &[("CAREVAULT_LISTEN", "127.0.0.1:1")]);
    assert!(!app.base.contains(":1/"), "{}", app.base);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_with_given_certificate_and_refusing_a_foreign_database() {
    // A certificate made elsewhere is used as given.
    let first = init(&Backend::Sqlite);
    let certdir = tempfile::tempdir().unwrap();
    let cert = certdir.path().join("c.pem");
    let key = certdir.path().join("k.pem");
    std::fs::copy(first.path().join("tls-cert.pem"), &cert).unwrap();
    std::fs::copy(first.path().join("tls-key.pem"), &key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("d");
    let (ok, _, err) = run(
        &[
            "init",
            "--data-dir",
            target.to_str().unwrap(),
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{err}");
    assert!(
        !target.join("tls-cert.pem").exists(),
        "no self-signed certificate when one is given"
    );
    let token = std::fs::read_to_string(target.join("admin-token"))
        .unwrap()
        .trim()
        .to_owned();
    let data = DataDir {
        dir: tempfile::TempDir::new_in(dir.path()).unwrap(),
        token,
        backend: Backend::Sqlite,
    };
    for f in std::fs::read_dir(&target).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), data.path().join(f.file_name())).unwrap();
    }
    std::fs::copy(&cert, data.path().join("tls-cert.pem")).unwrap();
    let app = start(data, &[]);
    assert_eq!(app.get("_history").await.status, StatusCode::OK);
    // A PostgreSQL database that already belongs to a data directory is not initialised twice.
    if let Some(base) = pg_base_url() {
        let backend = fresh_pg(&base).await;
        let _owner = init(&backend);
        let Backend::Postgres { url, .. } = &backend else {
            unreachable!()
        };
        let other = tempfile::tempdir().unwrap();
        let (ok, _, err) = run(
            &[
                "init",
                "--data-dir",
                other.path().join("x").to_str().unwrap(),
                "--database-url",
                url,
            ],
            &[],
        );
        assert!(!ok);
        assert!(err.contains("already belongs"), "{err}");
        assert!(
            !other.path().join("x").join("carevault.key").exists(),
            "nothing written"
        );
    } else {
        eprintln!("NOT RUN on PostgreSQL: init_with_given_certificate_and_refusing_a_foreign_database");
    }
}
