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
    for f in [
        "carevault.key",
        "admin-token",
        "tls-key.pem",
        "carevault.toml",
    ] {
        let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    assert!(dir.join("tls-cert.pem").exists());
    let key_before = std::fs::read(dir.join("carevault.key")).unwrap();
    let (ok, _, err) = run(&["init", "--data-dir", dir.to_str().unwrap()], &[]);
    assert!(!ok);
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert_eq!(
        std::fs::read(dir.join("carevault.key")).unwrap(),
        key_before
    );
}

#[test]
fn serve_refuses_without_its_key_or_with_an_unsafe_setup() {
    let data = init(&Backend::Sqlite);
    let dir = data.path().to_str().unwrap().to_owned();
    // insecure HTTP on a non-loopback address
    let (ok, _, err) = run(
        &[
            "serve",
            "--data-dir",
            &dir,
            "--insecure-http",
            "--listen",
            "0.0.0.0:0",
        ],
        &[],
    );
    assert!(!ok);
    assert!(err.contains("loopback"), "{err}");
    // a key file others can read
    let key = data.path().join("carevault.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, _, err) = run(
        &["serve", "--data-dir", &dir, "--listen", "127.0.0.1:0"],
        &[],
    );
    assert!(!ok);
    assert!(err.contains("readable by other users"), "{err}");
    // no key at all
    std::fs::remove_file(&key).unwrap();
    let (ok, _, err) = run(
        &["serve", "--data-dir", &dir, "--listen", "127.0.0.1:0"],
        &[],
    );
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
    let r = reqwest::Client::new()
        .get(format!("{plain}/metadata"))
        .send()
        .await;
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
            ids.push(app.create(&json!({"resourceType": "Observation", "status": "final", "code": {"text": format!("n{n}")}})).await);
        }
        app.child.kill().unwrap(); // SIGKILL
        app.child.wait().unwrap();
        let dir = std::mem::replace(&mut app.data.dir, tempfile::tempdir().unwrap());
        let data = DataDir {
            dir,
            token: app.data.token.clone(),
            backend: backend.clone(),
        };
        let mut app = start(data, &[]);
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
        let total = app.get("Basic/_history").await.json()["total"]
            .as_u64()
            .unwrap();
        match answered {
            Ok(StatusCode::OK) => assert_eq!(total, 1500, "acknowledged transaction kept"),
            other => panic!("the in-flight request was not completed: {other:?}"),
        }
    }
}
