//! Ciphertexts changed in the database fail closed: 500, a sanitized OperationOutcome, a log
//! line with opaque ids, and never wrong data.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::json;

/// Runs one SQL statement against the test's database, outside the server.
pub(crate) async fn exec(app: &TestApp, sql: &str) {
    match &app.data.backend {
        Backend::Sqlite => {
            let conn = rusqlite::Connection::open(app.data.path().join("carevault.db")).unwrap();
            conn.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
            // flip(blob): the same blob with one bit of byte 20 inverted.
            conn.create_scalar_function(
                "flip",
                1,
                rusqlite::functions::FunctionFlags::SQLITE_DETERMINISTIC,
                |ctx| {
                    let mut b: Vec<u8> = ctx.get(0)?;
                    b[20] ^= 1;
                    Ok(b)
                },
            )
            .unwrap();
            conn.execute_batch(sql).unwrap();
        }
        Backend::Postgres { url, .. } => {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            client.batch_execute(sql).await.unwrap();
        }
    }
}

fn assert_fails_closed(r: &Resp, what: &str) {
    assert_eq!(
        r.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{what}: {}",
        String::from_utf8_lossy(&r.body)
    );
    let text = r.outcome();
    assert!(text.contains("integrity"), "{what}: {text}");
    assert!(
        !String::from_utf8_lossy(&r.body).contains("Tamperton"),
        "{what}: no data leaks"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_ciphertexts_fail_closed() {
    for backend in backends("tampered_ciphertexts_fail_closed").await {
        let app = spawn_app(&backend).await;
        let a = app
            .create(&json!({"resourceType": "Patient", "name": [{"family": "Tamperton"}]}))
            .await;
        let b = app
            .create(&json!({"resourceType": "Patient", "name": [{"family": "Tamperton-B"}]}))
            .await;
        let o1 = app.create(&json!({"resourceType": "Observation", "status": "final", "code": {"text": "1"}, "subject": {"reference": format!("Patient/{a}")}})).await;
        let o2 = app.create(&json!({"resourceType": "Observation", "status": "final", "code": {"text": "2"}, "subject": {"reference": format!("Patient/{a}")}})).await;
        let r = app
            .put(
                &format!("Patient/{a}"),
                &json!({"resourceType": "Patient", "id": a, "name": [{"family": "Tamperton"}], "active": true}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);

        // 1. a bit flip in the middle of a ciphertext
        let (swap_versions, swap_rows, swap_patients) = match backend {
            Backend::Sqlite => (
                format!(
                    "UPDATE resource_versions SET body = (SELECT body FROM resource_versions WHERE id = '{a}' AND version = 1) WHERE id = '{a}' AND version = 2"
                ),
                format!(
                    "UPDATE resource_versions SET body = (SELECT body FROM resource_versions WHERE id = '{o1}') WHERE id = '{o2}'"
                ),
                format!(
                    "UPDATE resource_versions SET body = (SELECT body FROM resource_versions WHERE id = '{a}' AND version = 1), key_id = (SELECT key_id FROM resource_versions WHERE id = '{a}' AND version = 1), patient = (SELECT patient FROM resource_versions WHERE id = '{a}' AND version = 1) WHERE id = '{b}'"
                ),
            ),
            Backend::Postgres { .. } => (
                format!(
                    "UPDATE resource_versions SET body = (SELECT body FROM resource_versions WHERE id = '{a}' AND version = 1) WHERE id = '{a}' AND version = 2"
                ),
                format!(
                    "UPDATE resource_versions SET body = (SELECT body FROM resource_versions WHERE id = '{o1}') WHERE id = '{o2}'"
                ),
                format!(
                    "UPDATE resource_versions SET body = v.body, key_id = v.key_id, patient = v.patient FROM (SELECT body, key_id, patient FROM resource_versions WHERE id = '{a}' AND version = 1) v WHERE resource_versions.id = '{b}'"
                ),
            ),
        };
        let flip = match backend {
            Backend::Sqlite => {
                format!("UPDATE resource_versions SET body = flip(body) WHERE id = '{o1}'")
            }
            Backend::Postgres { .. } => {
                format!(
                    "UPDATE resource_versions SET body = set_byte(body, 20, get_byte(body, 20) # 1) WHERE id = '{o1}'"
                )
            }
        };
        exec(&app, &flip).await;
        assert_fails_closed(&app.get(&format!("Observation/{o1}")).await, "bit flip");

        // 2. an old version's ciphertext copied over the current one (same key, other version)
        exec(&app, &swap_versions).await;
        assert_fails_closed(&app.get(&format!("Patient/{a}")).await, "version swap");
        assert_eq!(
            app.get(&format!("Patient/{a}/_history/1")).await.status,
            StatusCode::OK,
            "untouched row still reads"
        );

        // 3. a sibling's ciphertext (same patient key, other id)
        exec(&app, &swap_rows).await;
        assert_fails_closed(&app.get(&format!("Observation/{o2}")).await, "row swap");

        // 4. another patient's ciphertext with its key id and patient column too
        exec(&app, &swap_patients).await;
        assert_fails_closed(&app.get(&format!("Patient/{b}")).await, "patient swap");

        // history fails closed as well, rather than skipping or serving wrong data
        assert_fails_closed(&app.get(&format!("Patient/{a}/_history")).await, "history");

        let log = app.log_text();
        assert!(log.contains("integrity check"), "the failure is logged");
        assert!(!log.contains("Tamperton"), "the log has opaque ids only");
    }
}
