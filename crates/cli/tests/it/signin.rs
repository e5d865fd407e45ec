//! Signing in over real HTTPS: SMART discovery, the login and consent pages, the
//! authorization-code flow with PKCE, refresh rotation, revocation and introspection, the
//! staff second factor, lockout, attempt limits, backend services with a signed assertion,
//! CORS and the security headers.

use crate::helpers::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::{Method, StatusCode, redirect};
use serde_json::{Value, json};

const REDIRECT: &str = "http://127.0.0.1:9/callback";
const VERIFIER: &str = "integration-test-pkce-verifier-0123456789-abcdefghijklmnop";

fn challenge() -> String {
    URL_SAFE_NO_PAD.encode(carevault_crypto::hash_token(VERIFIER).0)
}

/// The server root (the FHIR base without `/fhir`).
fn root(app: &TestApp) -> String {
    app.base.strip_suffix("/fhir").unwrap().to_owned()
}

/// A browser: no automatic redirects (the test reads them), the server's certificate trusted.
fn browser(app: &TestApp) -> reqwest::Client {
    let pem = std::fs::read(app.data.path().join("tls-cert.pem")).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .redirect(redirect::Policy::none())
        .build()
        .unwrap()
}

fn write_config(data: &DataDir, extra: &str) {
    let path = data.path().join("carevault.toml");
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    text.push('\n');
    text.push_str(extra);
    std::fs::write(&path, text).unwrap();
}

fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no {name} in {html}")) + marker.len();
    let end = start + html[start..].find('"').unwrap();
    html[start..end]
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn authorize_query(app: &TestApp, client: &str, scope: &str) -> Vec<(String, String)> {
    [
        ("response_type", "code"),
        ("client_id", client),
        ("redirect_uri", REDIRECT),
        ("scope", scope),
        ("state", "xyz-state"),
        ("code_challenge", &challenge()),
        ("code_challenge_method", "S256"),
        ("aud", &app.base),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

struct Page {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    text: String,
}

async fn send(b: &reqwest::Client, rb: reqwest::RequestBuilder) -> Page {
    let _ = b;
    let r = rb.send().await.unwrap();
    Page {
        status: r.status(),
        headers: r.headers().clone(),
        text: r.text().await.unwrap(),
    }
}

/// Logs in on the page and returns the consent page.
async fn login(app: &TestApp, b: &reqwest::Client, q: &[(String, String)], user: &str, pw: &str, totp: &str) -> Page {
    let mut form = q.to_vec();
    form.push(("username".into(), user.into()));
    form.push(("password".into(), pw.into()));
    form.push(("totp".into(), totp.into()));
    send(b, b.post(format!("{}/oauth/authorize", root(app))).form(&form)).await
}

/// Approves on the consent page; the code from the redirect.
async fn approve(app: &TestApp, b: &reqwest::Client, consent_page: &str) -> String {
    let ticket = hidden(consent_page, "ticket");
    let r = send(
        b,
        b.post(format!("{}/oauth/consent", root(app)))
            .form(&[("ticket", ticket.as_str()), ("decision", "approve")]),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let loc = r.headers["location"].to_str().unwrap().to_owned();
    assert!(loc.starts_with(REDIRECT), "{loc}");
    assert!(loc.contains("state=xyz-state"), "{loc}");
    let code = loc.split(['?', '&']).find_map(|kv| kv.strip_prefix("code=")).unwrap();
    code.to_owned()
}

async fn token_request(app: &TestApp, b: &reqwest::Client, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let r = b
        .post(format!("{}/oauth/token", root(app)))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = r.status();
    assert_eq!(r.headers()["cache-control"], "no-store");
    (status, r.json().await.unwrap_or(Value::Null))
}

fn add_patient_user(app: &TestApp, name: &str, patient: &str) {
    let pw = app.data.path().join(format!("{name}.pw"));
    std::fs::write(&pw, "a long enough password\n").unwrap();
    app.cli(&[
        "user",
        "add",
        "--username",
        name,
        "--role",
        "patient",
        "--patient",
        &format!("Patient/{patient}"),
        "--password-file",
        pw.to_str().unwrap(),
    ])
    .unwrap();
}

/// Adds a physician account with a TOTP second factor (its URI written to an owner-only
/// file); the secret, as the authenticator app would hold it.
fn physician_with_totp(app: &TestApp, name: &str, practitioner: &str) -> carevault_crypto::TotpSecret {
    let pw = app.data.path().join(format!("{name}.pw"));
    std::fs::write(&pw, "a long enough password\n").unwrap();
    let uri_file = app.data.path().join(format!("{name}.otpauth"));
    app.cli(&[
        "user",
        "add",
        "--username",
        name,
        "--role",
        "physician",
        "--practitioner",
        &format!("Practitioner/{practitioner}"),
        "--password-file",
        pw.to_str().unwrap(),
        "--totp-uri-file",
        uri_file.to_str().unwrap(),
    ])
    .unwrap();
    let uri = std::fs::read_to_string(&uri_file).unwrap();
    assert!(
        uri.starts_with(&format!("otpauth://totp/carevault:{name}?secret=")),
        "{uri}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&uri_file).unwrap().permissions().mode() & 0o077, 0);
    let secret = uri.split("secret=").nth(1).unwrap().split('&').next().unwrap();
    carevault_crypto::TotpSecret::from_bytes(carevault_crypto::base32_decode(secret).unwrap())
}

fn add_app(app: &TestApp, scopes: &str) -> String {
    app.cli(&[
        "client",
        "add",
        "--name",
        "Patient <Portal>",
        "--redirect-uri",
        REDIRECT,
        "--scopes",
        scopes,
    ])
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smart_app_signs_a_patient_in_with_pkce_and_reads_only_their_record() {
    for backend in backends("a_smart_app_signs_a_patient_in_with_pkce_and_reads_only_their_record").await {
        let app = start(init(&backend), &[]);
        let b = browser(&app);
        // Discovery, public.
        let conf = send(&b, b.get(app.url(".well-known/smart-configuration"))).await;
        assert_eq!(conf.status, StatusCode::OK);
        let conf: Value = serde_json::from_str(&conf.text).unwrap();
        assert_eq!(
            conf["authorization_endpoint"],
            format!("{}/oauth/authorize", root(&app))
        );
        assert_eq!(conf["code_challenge_methods_supported"], json!(["S256"]));
        let meta = app.get("metadata").await.json();
        let ext = &meta["rest"][0]["security"]["extension"][0];
        assert_eq!(ext["extension"][1]["valueUri"], conf["token_endpoint"]);
        let jwks: Value = b
            .get(format!("{}/oauth/jwks", root(&app)))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(jwks["keys"][0]["kty"], "OKP");

        let mine = app
            .create(&json!({"resourceType": "Patient", "name": [{"family": "Lovelace"}]}))
            .await;
        let other = app
            .create(&json!({"resourceType": "Patient", "name": [{"family": "Babbage"}]}))
            .await;
        add_patient_user(&app, "ada", &mine);
        let client = add_app(&app, "launch/patient patient/*.rs offline_access openid fhirUser");
        let q = authorize_query(
            &app,
            &client,
            "launch/patient patient/*.read offline_access user/*.cruds",
        );

        // The login page: HTML under a strict CSP, the app's name escaped.
        let page = send(&b, b.get(format!("{}/oauth/authorize", root(&app))).query(&q)).await;
        assert_eq!(page.status, StatusCode::OK);
        let csp = page.headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert!(page.text.contains("Patient &lt;Portal&gt;"), "escaped: {}", page.text);
        assert_eq!(page.headers["x-frame-options"], "DENY");

        // A wrong password: the page again, 401, nothing about which part was wrong.
        let wrong = login(&app, &b, &q, "ada", "not the password", "").await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
        assert!(wrong.text.contains("Sign-in failed"));
        // The right one: the consent screen lists what the app asked for and may have.
        let consent = login(&app, &b, &q, "ada", "a long enough password", "").await;
        assert_eq!(consent.status, StatusCode::OK, "{}", consent.text);
        assert!(consent.text.contains("patient/*.rs") && !consent.text.contains("user/*.cruds"));
        let csp = consent.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("form-action 'self' http://127.0.0.1:9"), "{csp}");
        let code = approve(&app, &b, &consent.text).await;

        // The code for tokens: PKCE checked.
        let (status, body) = token_request(
            &app,
            &b,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("client_id", &client),
                ("code_verifier", "the-wrong-verifier-the-wrong-verifier-the-wrong"),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"], "invalid_grant");
        let (status, t) = token_request(
            &app,
            &b,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("client_id", &client),
                ("code_verifier", VERIFIER),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{t}");
        assert_eq!(t["patient"], mine.as_str());
        assert_eq!(t["token_type"], "Bearer");
        let access = t["access_token"].as_str().unwrap().to_owned();
        let refresh = t["refresh_token"].as_str().unwrap().to_owned();

        // The patient in context, and nobody else.
        let r = app
            .request_as(&access, Method::GET, &format!("Patient/{mine}"), None)
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let r = app
            .request_as(&access, Method::GET, &format!("Patient/{other}"), None)
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        let r = app
            .request_as(
                &access,
                Method::POST,
                "Patient",
                Some(&json!({"resourceType": "Patient"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "patient/*.rs writes nothing");

        // Introspection needs a bearer token of its own.
        let unauth = b
            .post(format!("{}/oauth/introspect", root(&app)))
            .form(&[("token", access.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(unauth.status(), StatusCode::UNAUTHORIZED);
        let by_patient = b
            .post(format!("{}/oauth/introspect", root(&app)))
            .bearer_auth(&access)
            .form(&[("token", access.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(
            by_patient.status(),
            StatusCode::FORBIDDEN,
            "introspection is for resource servers"
        );
        let info: Value = b
            .post(format!("{}/oauth/introspect", root(&app)))
            .bearer_auth(&app.data.token)
            .form(&[("token", access.as_str())])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(info["active"], true);
        assert_eq!(info["client_id"], client.as_str());

        // Refresh rotates; the old refresh token is then refused.
        let (status, t2) = token_request(
            &app,
            &b,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("client_id", &client),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{t2}");
        let access2 = t2["access_token"].as_str().unwrap().to_owned();
        assert_ne!(t2["refresh_token"], refresh.as_str());

        // Logout: revoking the token ends the session on the very next request.
        let r = b
            .post(format!("{}/oauth/revoke", root(&app)))
            .form(&[("token", access2.as_str()), ("client_id", client.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let r = app
            .request_as(&access2, Method::GET, &format!("Patient/{mine}"), None)
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        let r = app
            .request_as(&access, Method::GET, &format!("Patient/{mine}"), None)
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "every token of the session ends");

        // Each step is on record once, its entry committed with the change it made (the
        // refused sign-in's with its failure count), naming the account tried and the app.
        let entries = |subtype: &'static str| {
            let app = &app;
            async move {
                let bundle = app.get(&format!("$audit?subtype={subtype}")).await.json();
                let mut out: Vec<(String, String, String)> = bundle["entry"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| {
                        let r = &e["resource"];
                        let who = r["agent"][0]["who"]["identifier"]["value"]
                            .as_str()
                            .unwrap_or("")
                            .to_owned();
                        let client = r["agent"][1]["who"]["identifier"]["value"]
                            .as_str()
                            .unwrap_or("")
                            .to_owned();
                        (r["outcome"].as_str().unwrap().to_owned(), who, client)
                    })
                    .collect();
                out.reverse();
                out
            }
        };
        let logins = entries("login").await;
        assert_eq!(logins.len(), 2, "{}: {logins:?}", backend.name());
        let ada = logins[1].1.clone();
        assert!(ada.starts_with("user:"), "{}: {logins:?}", backend.name());
        assert_eq!(
            logins.iter().map(|l| (l.0.as_str(), l.1.as_str())).collect::<Vec<_>>(),
            vec![("4", ada.as_str()), ("0", ada.as_str())],
            "{}: the refused and the accepted sign-in, both naming the account",
            backend.name()
        );
        let consents = entries("consent").await;
        assert_eq!(consents.len(), 1, "{}: {consents:?}", backend.name());
        assert_eq!((consents[0].0.as_str(), consents[0].1.as_str()), ("0", ada.as_str()));
        let tokens = entries("token").await;
        assert_eq!(
            tokens.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(),
            vec!["4", "0", "0"],
            "{}: the wrong verifier, the exchange, the refresh: {tokens:?}",
            backend.name()
        );
        assert!(
            tokens[1..].iter().all(|t| t.1 == ada && t.2 == client),
            "{}: {tokens:?}",
            backend.name()
        );
        assert_eq!(entries("revoke").await.len(), 1, "{}", backend.name());
        // A code presented twice ends the session it made; the refused request's entry commits
        // with that revocation and says it failed.
        let consent = login(&app, &b, &q, "ada", "a long enough password", "").await;
        let code = approve(&app, &b, &consent.text).await;
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("client_id", client.as_str()),
            ("code_verifier", VERIFIER),
        ];
        assert_eq!(token_request(&app, &b, &form).await.0, StatusCode::OK);
        assert_eq!(token_request(&app, &b, &form).await.0, StatusCode::BAD_REQUEST);
        let tokens = entries("token").await;
        assert_eq!(tokens.len(), 5, "{}: {tokens:?}", backend.name());
        assert_eq!(
            tokens[4],
            ("4".to_owned(), ada.clone(), client.clone()),
            "{}: the replay, named, refused",
            backend.name()
        );

        // Refused requests never redirect to an unregistered URI.
        let mut bad = q.clone();
        bad[2].1 = "https://evil.example/cb".into();
        let page = send(&b, b.get(format!("{}/oauth/authorize", root(&app))).query(&bad)).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST);
        assert!(page.headers.get("location").is_none());
        let mut plain = q.clone();
        plain[6].1 = "plain".into();
        let page = send(&b, b.get(format!("{}/oauth/authorize", root(&app))).query(&plain)).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER);
        assert!(
            page.headers["location"]
                .to_str()
                .unwrap()
                .contains("error=invalid_request")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_need_a_second_factor_and_failed_sign_ins_lock_the_account() {
    let data = init(&Backend::Sqlite);
    let app = start(data, &[]);
    let b = browser(&app);
    let dr = app.create(&json!({"resourceType": "Practitioner"})).await;
    let secret = physician_with_totp(&app, "osler", &dr);
    let client = add_app(&app, "user/*.rs openid fhirUser");
    let q = authorize_query(&app, &client, "user/*.rs");

    // Without the code: refused. With it: the consent screen.
    let r = login(&app, &b, &q, "osler", "a long enough password", "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let code = format!("{:06}", secret.code_at(now / 30));
    let r = login(&app, &b, &q, "osler", "a long enough password", &code).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let auth_code = approve(&app, &b, &r.text).await;
    let (status, t) = token_request(
        &app,
        &b,
        &[
            ("grant_type", "authorization_code"),
            ("code", &auth_code),
            ("redirect_uri", REDIRECT),
            ("client_id", &client),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert!(
        t.get("refresh_token").is_none(),
        "no offline_access asked, no refresh token"
    );
    // The same code again (replay) is refused.
    let r = login(&app, &b, &q, "osler", "a long enough password", &code).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "a TOTP code is good once");

    // Five failures lock the account: the right password and a fresh code are refused too.
    for _ in 0..5 {
        let r = login(&app, &b, &q, "osler", "wrong password here", "000000").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let next = format!("{:06}", secret.code_at(now / 30 + 1));
    let r = login(&app, &b, &q, "osler", "a long enough password", &next).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.text.contains("locked"), "{}", r.text);
    // The operator lifts it.
    app.cli(&["user", "unlock", "--username", "osler"]).unwrap();
    let r = login(&app, &b, &q, "osler", "a long enough password", &next).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Nothing of the sign-in reaches the log: no password, no code, no username.
    let log = app.log_text();
    for canary in ["a long enough password", "wrong password here", &next, "osler"] {
        assert!(!log.contains(canary), "{canary} leaked into the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempt_limits_cors_and_security_headers() {
    let data = init(&Backend::Sqlite);
    write_config(
        &data,
        "auth_attempts_per_minute = 3\ncors_origins = [\"https://app.example\"]\n",
    );
    let app = start(data, &[]);
    let b = browser(&app);
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = b
            .post(format!("{}/oauth/token", root(&app)))
            .form(&[("grant_type", "client_credentials"), ("client_id", "nobody")])
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(r.headers().contains_key("retry-after"));
        }
        statuses.push(r.status());
    }
    // The window may straddle a minute boundary: at least the fourth or fifth is refused.
    assert_eq!(&statuses[..3], &[StatusCode::UNAUTHORIZED; 3], "{statuses:?}");
    assert!(statuses[3..].contains(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");

    // CORS: the allowed origin gets its headers; another origin's preflight is refused.
    let pre = |origin: &'static str| {
        b.request(Method::OPTIONS, app.url("Patient"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let ok = pre("https://app.example").await.unwrap();
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
    assert_eq!(ok.headers()["access-control-allow-origin"], "https://app.example");
    assert!(
        ok.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    let no = pre("https://evil.example").await.unwrap();
    assert_eq!(no.status(), StatusCode::FORBIDDEN);
    assert!(no.headers().get("access-control-allow-origin").is_none());
    let r = b
        .get(app.url("Patient"))
        .bearer_auth(&app.data.token)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let meta = app.get("metadata").await.json();
    assert_eq!(meta["rest"][0]["security"]["cors"], true);

    // Every FHIR answer: no caching, no sniffing, HSTS, no framing, no referrer, CSP.
    let r = app.get("Patient").await;
    for (h, v) in [
        ("cache-control", "no-store"),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
    ] {
        assert_eq!(r.header(h).as_deref(), Some(v), "{h}");
    }
    assert!(r.header("strict-transport-security").unwrap().contains("max-age="));
    assert!(
        r.header("content-security-policy")
            .unwrap()
            .contains("default-src 'none'")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_service_gets_a_system_token_with_a_signed_assertion() {
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    for backend in backends("a_backend_service_gets_a_system_token_with_a_signed_assertion").await {
        let app = start(init(&backend), &[]);
        let b = browser(&app);
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let public = pair.public_key().as_ref();
        let jwks = json!({"keys": [{"kty": "EC", "crv": "P-384", "kid": "lab-1", "alg": "ES384",
            "x": URL_SAFE_NO_PAD.encode(&public[1..49]), "y": URL_SAFE_NO_PAD.encode(&public[49..])}]});
        let jwks_file = app.data.path().join("lab.jwks");
        std::fs::write(&jwks_file, jwks.to_string()).unwrap();
        let id = app
            .cli(&[
                "client",
                "add",
                "--name",
                "Lab interface",
                "--scopes",
                "system/Observation.cruds system/Patient.rs",
                "--jwks-file",
                jwks_file.to_str().unwrap(),
            ])
            .unwrap();
        assert!(app.cli(&["client", "list"]).unwrap().contains("confidential"));
        let token_url = format!("{}/oauth/token", root(&app));
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = json!({"iss": id, "sub": id, "aud": token_url, "exp": now + 240, "jti": "assertion-1"});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"ES384","kid":"lab-1","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = pair.sign(&rng, input.as_bytes()).unwrap();
        let assertion = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()));
        let form = [
            ("grant_type", "client_credentials"),
            ("scope", "system/Observation.cruds"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion.as_str()),
        ];
        let (status, t) = token_request(&app, &b, &form).await;
        assert_eq!(status, StatusCode::OK, "{t}");
        let access = t["access_token"].as_str().unwrap();
        let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "K"}});
        let r = app.request_as(access, Method::POST, "Observation", Some(&obs)).await;
        assert_eq!(r.status, StatusCode::CREATED);
        let r = app.request_as(access, Method::GET, "Condition", None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "only what the token holds");
        // The same assertion again is a replay.
        let (status, body) = token_request(&app, &b, &form).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"], "invalid_client");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_endpoints_listen_apart_and_only_for_operators() {
    let app = start(init(&Backend::Sqlite), &[]);
    assert!(app.operator.starts_with("https://127.0.0.1:"), "{}", app.operator);
    let b = browser(&app);
    let op = |path: &str| format!("{}/{path}", app.operator);
    // Not on the public listener at all.
    let r = b
        .get(format!("{}/operator/health", root(&app)))
        .bearer_auth(&app.data.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // A token is needed, and not any token: the integration token or an admin account's.
    assert_eq!(
        b.get(op("health")).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let r = b.get(op("health")).bearer_auth(&app.data.token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let dr = app.create(&json!({"resourceType": "Practitioner"})).await;
    let physician = app.account_token(
        "house",
        "physician",
        &["--practitioner", &format!("Practitioner/{dr}")],
        "user/*.rs",
        "5m",
    );
    let r = b.get(op("users")).bearer_auth(&physician).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let admin = app.account_token("root.admin", "admin", &[], "user/*.rs", "5m");
    let users: Value = b
        .get(op("users"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(users.as_array().unwrap().iter().any(|u| u["username"] == "house"));
    // Managing accounts and clients.
    let r = b
        .post(op("users/house/disable"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = app.request_as(&physician, Method::GET, "Patient", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "disabled on the next request");
    let r = b
        .post(op("clients"))
        .bearer_auth(&admin)
        .json(&json!({"name": "Ward board", "redirect_uris": ["https://board.example/cb"], "scopes": "user/*.rs"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let clients: Value = b
        .get(op("clients"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(clients[0]["name"], "Ward board");
    // Each change is on record once, committed with it, naming the admin who made it; a
    // refused one (no such account) is recorded as a failure.
    let r = b
        .post(op("users/nobody-here/unlock"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let log = app.get("$audit?_count=1000").await.json();
    let made: Vec<(String, String, String)> = log["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .filter(|r| {
            r["subtype"][0]["code"]
                .as_str()
                .is_some_and(|s| s == "operator:users" || s == "operator:clients")
                && r["action"] == "U"
        })
        .map(|r| {
            (
                r["subtype"][0]["code"].as_str().unwrap().to_owned(),
                r["outcome"].as_str().unwrap().to_owned(),
                r["agent"][0]["role"][0]["text"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let row = |s: &str, o: &str| (s.to_owned(), o.to_owned(), "admin".to_owned());
    assert_eq!(
        made,
        vec![
            row("operator:users", "4"),
            row("operator:clients", "0"),
            row("operator:users", "0")
        ],
        "newest first"
    );
    // Metrics: counters with fixed labels only.
    let _ = app.get("Patient?name=Zebedee").await;
    let text = b
        .get(op("metrics"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("carevault_http_responses_total{class=\"2xx\"}"), "{text}");
    assert!(!text.contains("Zebedee") && !text.contains("house"), "{text}");

    // An address outside the allow-list is refused before its token is looked at.
    let data = init(&Backend::Sqlite);
    write_config(&data, "operator_allow = [\"192.0.2.7\"]\n");
    let fenced = start(data, &[]);
    let r = browser(&fenced)
        .get(format!("{}/health", fenced.operator))
        .bearer_auth(&fenced.data.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_integration_token_rotates_and_the_old_one_stops_working() {
    for backend in backends("the_integration_token_rotates_and_the_old_one_stops_working").await {
        let app = start(init(&backend), &[]);
        let old = app.data.token.clone();
        assert_eq!(
            app.request_as(&old, Method::GET, "Patient", None).await.status,
            StatusCode::OK
        );
        let new = app.cli(&["integration-token", "rotate"]).unwrap();
        assert_ne!(new, old);
        let file = std::fs::read_to_string(app.data.path().join("admin-token")).unwrap();
        assert_eq!(file.trim(), new);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let b = backend.name();
        assert_eq!(
            app.request_as(&old, Method::GET, "Patient", None).await.status,
            StatusCode::UNAUTHORIZED,
            "{b}"
        );
        assert_eq!(
            app.request_as(&new, Method::GET, "Patient", None).await.status,
            StatusCode::OK,
            "{b}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clinician_opens_an_app_on_one_of_their_patients() {
    let app = start(init(&Backend::Sqlite), &[]);
    let b = browser(&app);
    let dr = app.create(&json!({"resourceType": "Practitioner"})).await;
    let mine = app
        .create(&json!({"resourceType": "Patient", "name": [{"family": "Curie", "given": ["Marie"]}], "birthDate": "1967-11-07"}))
        .await;
    let also_mine = app
        .create(&json!({"resourceType": "Patient", "name": [{"family": "Pasteur"}]}))
        .await;
    let stranger = app
        .create(&json!({"resourceType": "Patient", "name": [{"family": "Stranger"}]}))
        .await;
    let start_at = (time::OffsetDateTime::now_utc() - time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    for p in [&mine, &also_mine] {
        app.create(
            &json!({"resourceType": "Encounter", "status": "in-progress", "class": {"code": "AMB"},
            "subject": {"reference": format!("Patient/{p}")},
            "participant": [{"individual": {"reference": format!("Practitioner/{dr}")}}],
            "period": {"start": start_at}}),
        )
        .await;
    }
    let secret = physician_with_totp(&app, "lister", &dr);
    let client = add_app(&app, "launch/patient patient/*.rs");
    let q = authorize_query(&app, &client, "launch/patient patient/*.rs");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();

    let mut issued = Vec::new();
    for (step, choice) in [(-1, mine.as_str()), (0, stranger.as_str())] {
        let code = format!("{:06}", secret.code_at(now / 30 + step));
        let consent = login(&app, &b, &q, "lister", "a long enough password", &code).await;
        assert_eq!(consent.status, StatusCode::OK, "{}", consent.text);
        // The picker lists the clinician's patients by name, and nobody else.
        assert!(
            consent.text.contains("Marie Curie, born 1967-11-07"),
            "{}",
            consent.text
        );
        assert!(consent.text.contains("Pasteur") && !consent.text.contains("Stranger"));
        let ticket = hidden(&consent.text, "ticket");
        let r = send(
            &b,
            b.post(format!("{}/oauth/consent", root(&app))).form(&[
                ("ticket", ticket.as_str()),
                ("decision", "approve"),
                ("patient", choice),
            ]),
        )
        .await;
        let loc = r.headers["location"].to_str().unwrap().to_owned();
        let auth_code = loc
            .split(['?', '&'])
            .find_map(|kv| kv.strip_prefix("code="))
            .unwrap()
            .to_owned();
        let (status, t) = token_request(
            &app,
            &b,
            &[
                ("grant_type", "authorization_code"),
                ("code", &auth_code),
                ("redirect_uri", REDIRECT),
                ("client_id", &client),
                ("code_verifier", VERIFIER),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{t}");
        issued.push(t);
    }
    // The chosen patient is in context, and the patient/ scopes reach only them.
    assert_eq!(issued[0]["patient"], mine.as_str());
    let access = issued[0]["access_token"].as_str().unwrap();
    assert_eq!(
        app.request_as(access, Method::GET, &format!("Patient/{mine}"), None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.request_as(access, Method::GET, &format!("Patient/{also_mine}"), None)
            .await
            .status,
        StatusCode::NOT_FOUND,
        "another of the clinician's patients is outside this launch"
    );
    // A patient the clinician does not reach cannot be slipped into the form.
    assert!(issued[1].get("patient").is_none(), "{}", issued[1]);
    let access = issued[1]["access_token"].as_str().unwrap();
    // (patient/ scopes without a patient in context grant nothing at all: 403 for the type)
    assert_eq!(
        app.request_as(access, Method::GET, &format!("Patient/{stranger}"), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
}
