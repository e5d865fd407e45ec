//! Bad input gets the right status and an OperationOutcome, and nothing is written.

use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

async fn raw(app: &TestApp, method: Method, path: &str, ctype: &str, body: Vec<u8>, token: Option<&str>) -> Resp {
    let mut rb = app
        .client
        .request(method, app.url(path))
        .header("content-type", ctype)
        .body(body);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    let r = rb.send().await.unwrap();
    Resp {
        status: r.status(),
        headers: r.headers().clone(),
        body: r.bytes().await.unwrap().to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_operation_outcomes_and_write_nothing() {
    for backend in backends("bad_requests_get_operation_outcomes_and_write_nothing").await {
        let app = spawn_app(&backend).await;
        let t = Some(app.data.token.as_str());
        let fj = "application/fhir+json";
        let cases: Vec<(Method, &str, &str, Vec<u8>, StatusCode)> = vec![
            (
                Method::POST,
                "Patient",
                fj,
                b"{\"resourceType\": \"Patient\",".to_vec(),
                StatusCode::BAD_REQUEST,
            ),
            (Method::POST, "Patient", fj, b"[1,2]".to_vec(), StatusCode::BAD_REQUEST),
            (
                Method::POST,
                "Patient",
                fj,
                b"{\"name\": []}".to_vec(),
                StatusCode::BAD_REQUEST,
            ),
            (
                Method::POST,
                "Patient",
                fj,
                b"{\"resourceType\": \"Nonsense\"}".to_vec(),
                StatusCode::BAD_REQUEST,
            ),
            (
                Method::POST,
                "Patient",
                fj,
                b"{\"resourceType\": \"Observation\"}".to_vec(),
                StatusCode::BAD_REQUEST,
            ),
            (
                Method::POST,
                "Patient",
                fj,
                b"{\"resourceType\": \"Patient\", \"id\": 7}".to_vec(),
                StatusCode::BAD_REQUEST,
            ),
            (
                Method::POST,
                "Patient",
                fj,
                b"{\"resourceType\": \"Patient\", \"meta\": []}".to_vec(),
                StatusCode::BAD_REQUEST,
            ),
            (
                Method::POST,
                "Patient",
                "text/plain",
                b"{\"resourceType\": \"Patient\"}".to_vec(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            (
                Method::POST,
                "Patient",
                "application/xml",
                b"<Patient/>".to_vec(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            (
                Method::POST,
                "Nonsense",
                fj,
                b"{\"resourceType\": \"Nonsense\"}".to_vec(),
                StatusCode::NOT_FOUND,
            ),
            (
                Method::PUT,
                "Patient/abc",
                fj,
                b"{\"resourceType\": \"Patient\", \"id\": \"xyz\"}".to_vec(),
                StatusCode::BAD_REQUEST,
            ),
            (
                Method::PUT,
                "Patient/abc",
                fj,
                b"{\"resourceType\": \"Patient\"}".to_vec(),
                StatusCode::BAD_REQUEST,
            ),
            (
                Method::PUT,
                "Patient/bad%20id",
                fj,
                b"{\"resourceType\": \"Patient\", \"id\": \"bad id\"}".to_vec(),
                StatusCode::BAD_REQUEST,
            ),
            (
                Method::PUT,
                "Patient/abc",
                fj,
                b"{\"resourceType\": \"Patient\", \"id\": \"abc\"}".to_vec(),
                StatusCode::OK,
            ),
            (
                Method::PATCH,
                "Patient/abc",
                fj,
                b"[]".to_vec(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            (
                Method::PATCH,
                "Patient",
                fj,
                b"[]".to_vec(),
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            (
                Method::POST,
                "Patient/abc",
                fj,
                b"{}".to_vec(),
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            (Method::GET, "Patient/does-not-exist", fj, vec![], StatusCode::NOT_FOUND),
            (Method::GET, "Nonsense/1", fj, vec![], StatusCode::NOT_FOUND),
            (Method::GET, "Patient/abc/_history/0", fj, vec![], StatusCode::NOT_FOUND),
            (
                Method::GET,
                "Patient/abc/_history?_count=abc",
                fj,
                vec![],
                StatusCode::BAD_REQUEST,
            ),
            (
                Method::GET,
                "Patient/abc/_history?_since=yesterday",
                fj,
                vec![],
                StatusCode::BAD_REQUEST,
            ),
            (
                Method::GET,
                "Patient/_history?_cursor=00112233",
                fj,
                vec![],
                StatusCode::BAD_REQUEST,
            ),
            (
                Method::GET,
                "nothing/here/at/all/really",
                fj,
                vec![],
                StatusCode::NOT_FOUND,
            ),
            (
                Method::POST,
                "",
                fj,
                b"{\"resourceType\": \"Bundle\", \"type\": \"collection\"}".to_vec(),
                StatusCode::BAD_REQUEST,
            ),
        ];
        for (method, path, ctype, body, want) in cases {
            let r = raw(&app, method.clone(), path, ctype, body, t).await;
            let status = if want == StatusCode::OK {
                StatusCode::CREATED
            } else {
                want
            };
            assert_eq!(
                r.status,
                status,
                "{} {method} {path}: {}",
                backend.name(),
                String::from_utf8_lossy(&r.body)
            );
            if !r.status.is_success() {
                r.outcome();
                assert!(r.header("content-type").unwrap().starts_with("application/fhir+json"));
            }
        }
        // Only the one good PUT was written.
        let h = app.get("_history").await.json();
        assert_eq!(h["total"], 1, "{}: {h}", backend.name());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_is_required_except_for_metadata() {
    let app = spawn_app(&Backend::Sqlite).await;
    let body = b"{\"resourceType\": \"Patient\"}".to_vec();
    for token in [None, Some("wrong"), Some("")] {
        let r = raw(
            &app,
            Method::POST,
            "Patient",
            "application/fhir+json",
            body.clone(),
            token,
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
        r.outcome();
        let r = raw(&app, Method::GET, "Patient/x", "application/fhir+json", vec![], token).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = app.client.get(app.url("metadata")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(app.get("_history").await.json()["total"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused_with_413() {
    // The limit is configurable (default 16 MiB); a small one keeps the test quick.
    let app = start_with_env(init(&Backend::Sqlite), &[], &[("CAREVAULT_MAX_BODY_BYTES", "4096")]);
    let big = "x".repeat(5000);
    let body = serde_json::to_vec(&json!({"resourceType": "Basic", "code": {"text": big}})).unwrap();
    let r = raw(
        &app,
        Method::POST,
        "Basic",
        "application/fhir+json",
        body.clone(),
        Some(&app.data.token),
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    r.outcome();
    // A body under the limit goes through, and only it was written.
    let r = app
        .post(
            "Basic",
            &json!({"resourceType": "Basic", "code": {"text": "y".repeat(3000)}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(app.get("_history").await.json()["total"], 1);
}

#[test]
fn chunked_bodies_over_the_limit_are_refused_too() {
    use std::io::{Read, Write};
    let app = start_with_env(
        init(&Backend::Sqlite),
        &["--insecure-http"],
        &[("CAREVAULT_MAX_BODY_BYTES", "4096")],
    );
    let addr = app
        .base
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST /fhir/Basic HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: application/fhir+json\r\nTransfer-Encoding: chunked\r\n\r\n",
        app.data.token
    );
    s.write_all(head.as_bytes()).unwrap();
    let chunk = "x".repeat(1000);
    for _ in 0..6 {
        if s.write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())
            .is_err()
        {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("OperationOutcome"));
}

/// A control character (a NUL above all: PostgreSQL's text cannot hold one) in a resource, a
/// search or a break-the-glass reason is bad input on every backend, answered with an
/// OperationOutcome that names the element and not the value; nothing is written. Tab and
/// line breaks are legal in FHIR strings and stay so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_are_refused_and_nothing_is_written() {
    for backend in backends("control_characters_are_refused_and_nothing_is_written").await {
        let app = spawn_app(&backend).await;
        let b = backend.name();
        let text = |r: &Resp| String::from_utf8_lossy(&r.body).into_owned();
        let obs = |code: &str| {
            json!({"resourceType": "Observation", "status": "final",
                   "code": {"coding": [{"system": "http://loinc.org", "code": code}]}})
        };
        let r = app
            .post(
                "Patient",
                &json!({"resourceType": "Patient", "name": [{"family": "Tab\there\r\nnext"}]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{b}: {}", text(&r));
        let written = app.get("_history").await.json()["total"].clone();
        for (code, what) in [("8867\u{0}4", "NUL"), ("8867\u{1}4", "SOH"), ("8867\u{7f}4", "DEL")] {
            let r = app.post("Observation", &obs(code)).await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{b} {what}: {}", text(&r));
            let said = r.outcome();
            assert!(said.contains("Observation.code.coding.code"), "{b} {what}: {said}");
            assert!(!said.contains("8867"), "{b} {what}: the value is not echoed: {said}");
            let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": obs("8867-4"), "request": {"method": "POST", "url": "Observation"}},
                {"resource": obs(code), "request": {"method": "POST", "url": "Observation"}}]});
            let r = app.post("", &bundle).await;
            assert!(r.status.is_client_error(), "{b} {what}: {} {}", r.status, text(&r));
            r.outcome();
        }
        for path in [
            "Observation?code=8867%004",
            "Observation?co%00de=8867-4",
            "Patient?name=Tab%01",
            "Observation/_history?_since=2020%00",
            "AuditEvent?agent=a%00",
        ] {
            let r = app.get(path).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{b} {path}: {}", text(&r));
            assert!(r.outcome().contains("control character"), "{b} {path}");
        }
        let form = raw(
            &app,
            Method::POST,
            "Observation/_search",
            "application/x-www-form-urlencoded",
            b"code=8867%004".to_vec(),
            Some(&app.data.token),
        )
        .await;
        assert_eq!(form.status, StatusCode::BAD_REQUEST, "{b}: {}", text(&form));
        let r = app
            .request(
                Method::POST,
                "Observation",
                Some(&obs("8867-4")),
                &[("if-none-exist", "code=8867%004")],
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{b}: {}", text(&r));
        assert_eq!(
            app.get("_history").await.json()["total"],
            written,
            "{b}: nothing written"
        );

        let dr = app
            .create(&json!({"resourceType": "Practitioner", "name": [{"family": "Cushing"}]}))
            .await;
        let patient = app.create(&json!({"resourceType": "Patient", "active": true})).await;
        let t = app.account_token(
            "cushing",
            "physician",
            &["--practitioner", &format!("Practitioner/{dr}")],
            "user/*.rs",
            "15m",
        );
        let ask = |reason: &str| json!({"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": reason}]});
        let path = format!("Patient/{patient}/$break-the-glass");
        let r = app
            .request_as(&t, Method::POST, &path, Some(&ask("arrest\u{0}now")))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{b}: {}", text(&r));
        assert!(r.outcome().contains("control character"), "{b}");
        let r = app
            .request_as(&t, Method::POST, &path, Some(&ask("arrest in bay 4")))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{b}: {}", text(&r));
    }
}

/// The server answers in JSON only: asking for XML, Turtle or another FHIR version (and
/// nothing it can answer with) is a 406 with an OperationOutcome; any JSON form, a wildcard
/// or a browser's usual `Accept` is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formats_the_server_cannot_answer_with_are_406() {
    let app = spawn_app(&Backend::Sqlite).await;
    for (path, accept) in [
        ("Patient", "application/fhir+xml"),
        ("Patient", "application/xml, text/turtle"),
        ("Patient", "application/fhir+json; fhirVersion=3.0"),
        ("Patient", "application/fhir+json;q=0"),
        ("Patient?_format=xml", "application/fhir+json"),
        ("Patient?_format=text/turtle", "*/*"),
        ("metadata?_format=xml", ""),
    ] {
        let headers: Vec<(&str, &str)> = if accept.is_empty() {
            vec![]
        } else {
            vec![("accept", accept)]
        };
        let r = app.request(Method::GET, path, None, &headers).await;
        assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE, "{path} / {accept}");
        assert!(r.outcome().contains("JSON"), "{path} / {accept}");
    }
    for (path, accept) in [
        ("Patient", "application/fhir+json"),
        ("Patient", "application/json"),
        ("Patient", "application/fhir+json; fhirVersion=4.0"),
        (
            "Patient",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("Patient", "application/fhir+xml;q=0.9, application/fhir+json"),
        ("Patient?_format=json", "application/fhir+json"),
        ("Patient?_format=application/fhir%2Bjson", ""),
        ("metadata", "application/fhir+json"),
    ] {
        let headers: Vec<(&str, &str)> = if accept.is_empty() {
            vec![]
        } else {
            vec![("accept", accept)]
        };
        let r = app.request(Method::GET, path, None, &headers).await;
        assert_eq!(r.status, StatusCode::OK, "{path} / {accept}");
    }
}

/// JSON nested past the parser's limit is a 400 that says so (not "invalid JSON at column
/// 9"), for a resource, a bundle and a patch alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_bodies_are_refused_saying_why() {
    let app = spawn_app(&Backend::Sqlite).await;
    let t = Some(app.data.token.as_str());
    let id = app.create(&json!({"resourceType": "Patient", "active": true})).await;
    let deep = |open: &str, close: &str| format!("{}{{}}{}", open.repeat(200), close.repeat(200));
    let resource = format!(r#"{{"resourceType":"Patient","extension":{}}}"#, deep("[", "]"));
    let bundle = format!(
        r#"{{"resourceType":"Bundle","type":"batch","entry":{}}}"#,
        deep("[", "]")
    );
    let patch = format!(r#"[{{"op":"add","path":"/extension","value":{}}}]"#, deep("[", "]"));
    for (method, path, ctype, body) in [
        (Method::POST, "Patient".to_owned(), "application/fhir+json", resource),
        (Method::POST, String::new(), "application/fhir+json", bundle),
        (
            Method::PATCH,
            format!("Patient/{id}"),
            "application/json-patch+json",
            patch,
        ),
    ] {
        let r = raw(&app, method.clone(), &path, ctype, body.into_bytes(), t).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{method} {path}");
        assert!(r.outcome().contains("128 deep"), "{method} {path}");
    }
}

/// History refuses `_at` and `_list` (which it does not serve) instead of ignoring them and
/// answering another question; an unknown parameter is ignored, or refused when strict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_refuses_parameters_it_would_otherwise_ignore() {
    let app = spawn_app(&Backend::Sqlite).await;
    app.create(&json!({"resourceType": "Patient", "active": true})).await;
    for path in ["_history?_at=2020", "Patient/_history?_list=x"] {
        let r = app.get(path).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}");
        r.outcome();
    }
    assert_eq!(app.get("Patient/_history?_whatever=1").await.status, StatusCode::OK);
    let strict = app
        .request(
            Method::GET,
            "Patient/_history?_whatever=1",
            None,
            &[("prefer", "handling=strict")],
        )
        .await;
    assert_eq!(strict.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        app.request(
            Method::GET,
            "Patient/_history?_count=1",
            None,
            &[("prefer", "handling=strict")]
        )
        .await
        .status,
        StatusCode::OK
    );
}
