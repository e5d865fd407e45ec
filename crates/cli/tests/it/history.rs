//! Instance, type and system history with `_count`, `_since` and paging.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn link(bundle: &Value, rel: &str) -> Option<String> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == rel)
        .and_then(|l| l["url"].as_str())
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_and_filters() {
    for backend in backends("history_pages_and_filters").await {
        let app = spawn_app(&backend).await;
        let id = app
            .create(&json!({"resourceType": "Patient", "name": [{"family": "Historia"}]}))
            .await;
        for n in 0..4 {
            let r = app
                .put(
                    &format!("Patient/{id}"),
                    &json!({"resourceType": "Patient", "id": id, "birthDate": format!("199{n}-01-01")}),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK);
        }
        assert_eq!(
            app.delete(&format!("Patient/{id}")).await.status,
            StatusCode::NO_CONTENT
        );
        app.create(&json!({"resourceType": "Observation", "status": "final", "code": {"text": "t"}}))
            .await;

        // instance history: newest first, deletion included, request methods right
        let h = app.get(&format!("Patient/{id}/_history")).await.json();
        assert_eq!(h["type"], "history");
        assert_eq!(h["total"], 6);
        let entries = h["entry"].as_array().unwrap();
        let methods: Vec<&str> = entries
            .iter()
            .map(|e| e["request"]["method"].as_str().unwrap())
            .collect();
        assert_eq!(methods, ["DELETE", "PUT", "PUT", "PUT", "PUT", "POST"]);
        assert!(entries[0].get("resource").is_none());
        assert_eq!(entries[1]["resource"]["meta"]["versionId"], "5");
        assert_eq!(entries[1]["response"]["etag"], "W/\"5\"");

        // paging: every entry once, in order, links carry no content
        let mut url = app.url(&format!("Patient/{id}/_history?_count=2"));
        let mut versions = Vec::new();
        let mut pages = 0;
        loop {
            let page = app
                .client
                .get(&url)
                .bearer_auth(&app.data.token)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap();
            pages += 1;
            for e in page["entry"].as_array().unwrap() {
                versions.push(e["response"]["etag"].as_str().unwrap().to_owned());
            }
            match link(&page, "next") {
                Some(next) => {
                    // The cursor is opaque (random base64 may hold any short digit run, so
                    // look for the whole values).
                    assert!(!next.contains("Historia") && !next.contains("-01-01"), "{next}");
                    url = next;
                }
                None => break,
            }
        }
        assert_eq!(pages, 3);
        assert_eq!(
            versions,
            ["W/\"6\"", "W/\"5\"", "W/\"4\"", "W/\"3\"", "W/\"2\"", "W/\"1\""]
        );

        // a forged cursor is refused
        let forged = app
            .get(&format!("Patient/{id}/_history?_cursor={}", "0".repeat(48)))
            .await;
        assert_eq!(forged.status, StatusCode::BAD_REQUEST);

        // type and system history
        assert_eq!(app.get("Patient/_history").await.json()["total"], 6);
        assert_eq!(app.get("Observation/_history").await.json()["total"], 1);
        assert_eq!(app.get("_history").await.json()["total"], 7);
        // _since in the future selects nothing; in the past everything
        assert_eq!(app.get("_history?_since=2999-01-01T00:00:00Z").await.json()["total"], 0);
        assert_eq!(app.get("_history?_since=2000-01-01").await.json()["total"], 7);
        // history of something that never existed
        assert_eq!(app.get("Patient/never/_history").await.status, StatusCode::NOT_FOUND);
    }
}
