//! Sign-in end to end on a real SQLite file with an injected clock: the authorization-code
//! flow with PKCE, refresh rotation and reuse detection, idle timeout and absolute lifetime,
//! lockout with back-off, the second factor, backend client credentials, revocation and
//! introspection.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::access::{Access, Role, ScopeSet};
use crate::{NewAccount, Username, Vault};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use carevault_crypto::{Password, hash_token};
use carevault_domain::{FixedClock, Resource, ResourceId, Timestamp};
use carevault_storage::AnyStore;
use serde_json::json;

const BASE: &str = "https://ehr.test/fhir";
const TOKEN_URL: &str = "https://ehr.test/oauth/token";
const REDIRECT: &str = "http://127.0.0.1:9999/callback";
const SECOND: i64 = 1000;
const VERIFIER: &str = "a-pkce-verifier-that-is-long-enough-0123456789abcdef";

async fn vault(dir: &std::path::Path, clock: FixedClock) -> Vault<AnyStore> {
    crate::test_vault::sqlite_vault(&dir.join("t.db"), clock).await
}

fn password() -> Password {
    Password::new("a long enough password".into())
}

struct World {
    _dir: tempfile::TempDir,
    clock: FixedClock,
    v: Vault<AnyStore>,
    client: String,
    patient: ResourceId,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let clock = FixedClock::new(Timestamp::parse("2026-06-01T10:00:00Z").unwrap());
    let v = vault(dir.path(), clock.clone()).await;
    let system = Access::unchecked_system();
    let body = serde_json::to_vec(&json!({"resourceType": "Patient"})).unwrap();
    let patient = v
        .session(&system)
        .create(Resource::parse(&body).unwrap())
        .await
        .unwrap()
        .resource
        .id;
    v.add_user(NewAccount {
        username: Username::parse("ada").unwrap(),
        role: Role::Patient,
        patient: Some(patient.clone()),
        practitioner: None,
        password: password(),
    })
    .await
    .unwrap();
    let client = v
        .add_client(NewClient {
            name: "My Health App".into(),
            redirect_uris: vec![REDIRECT.into()],
            scopes: ScopeSet::parse("launch/patient patient/*.rs offline_access openid fhirUser").unwrap(),
            jwks: None,
        })
        .await
        .unwrap();
    World {
        _dir: dir,
        clock,
        v,
        client,
        patient,
    }
}

fn authorize(client: &str, scope: &str) -> AuthorizeRequest {
    AuthorizeRequest {
        response_type: "code".into(),
        client_id: client.into(),
        redirect_uri: REDIRECT.into(),
        scope: scope.into(),
        state: Some("st-1".into()),
        code_challenge: URL_SAFE_NO_PAD.encode(hash_token(VERIFIER).0),
        code_challenge_method: "S256".into(),
        aud: Some(BASE.into()),
    }
}

fn code_of(redirect: &str) -> String {
    let q = redirect.split_once('?').unwrap().1;
    let code = q.split('&').find_map(|kv| kv.strip_prefix("code=")).unwrap();
    assert!(q.contains("state=st-1"), "state comes back: {redirect}");
    code.to_owned()
}

/// Login + consent: the redirect the browser is sent to.
async fn sign_in_and_approve(w: &World, req: &AuthorizeRequest) -> String {
    let ok = w.v.check_authorize(req, BASE).await.unwrap();
    let who = w.v.sign_in("ada", &password(), None).await.unwrap().unwrap();
    let ticket = w.v.login_ticket(&who, req, &ok.scopes).unwrap();
    w.v.consent(&ticket, true, None, BASE).await.unwrap()
}

fn exchange(client: &str, code: &str) -> TokenRequest {
    TokenRequest {
        grant_type: "authorization_code".into(),
        code: Some(code.into()),
        redirect_uri: Some(REDIRECT.into()),
        code_verifier: Some(VERIFIER.into()),
        client_id: Some(client.into()),
        ..TokenRequest::default()
    }
}

fn refresh(client: &str, token: &str) -> TokenRequest {
    TokenRequest {
        grant_type: "refresh_token".into(),
        refresh_token: Some(token.into()),
        client_id: Some(client.into()),
        ..TokenRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_code_with_pkce_then_rotating_refresh() {
    let w = world().await;
    let req = authorize(&w.client, "launch/patient patient/*.rs offline_access user/*.cruds");
    let ok = w.v.check_authorize(&req, BASE).await.unwrap();
    assert_eq!(
        ok.scopes.to_string(),
        "launch/patient patient/*.rs offline_access",
        "narrowed to the client's scopes, never widened"
    );
    let code = code_of(&sign_in_and_approve(&w, &req).await);

    // A wrong verifier, a wrong redirect URI, another client: refused.
    let mut wrong = exchange(&w.client, &code);
    wrong.code_verifier = Some("b".repeat(50));
    assert!(matches!(
        w.v.token(&wrong, TOKEN_URL).await,
        Err(OAuthError::InvalidGrant(_))
    ));
    let mut wrong = exchange(&w.client, &code);
    wrong.redirect_uri = Some("http://127.0.0.1:9999/other".into());
    assert!(matches!(
        w.v.token(&wrong, TOKEN_URL).await,
        Err(OAuthError::InvalidGrant(_))
    ));

    let t = w.v.token(&exchange(&w.client, &code), TOKEN_URL).await.unwrap();
    assert_eq!(t.patient.as_deref(), Some(w.patient.as_str()));
    assert_eq!(t.expires_in, 15 * 60);
    let access = w.v.authenticate(&t.access_token).await.unwrap().unwrap();
    assert_eq!(access.own_patient(), Some(&w.patient));
    let r1 = t.refresh_token.clone().unwrap();

    // The refresh token rotates; the old one replayed ends the whole session.
    w.clock.advance_millis(60 * SECOND);
    let t2 = w.v.token(&refresh(&w.client, &r1), TOKEN_URL).await.unwrap();
    let r2 = t2.refresh_token.clone().unwrap();
    assert_ne!(r1, r2);
    assert!(w.v.authenticate(&t2.access_token).await.unwrap().is_ok());
    assert!(matches!(
        w.v.token(&refresh(&w.client, &r1), TOKEN_URL).await,
        Err(OAuthError::InvalidGrant(_))
    ));
    assert!(matches!(
        w.v.token(&refresh(&w.client, &r2), TOKEN_URL).await,
        Err(OAuthError::InvalidGrant(_))
    ));
    assert_eq!(
        w.v.authenticate(&t2.access_token).await.unwrap().unwrap_err(),
        crate::TokenRejection::Revoked,
        "reuse of a rotated refresh token revokes the session's access tokens too"
    );

    // A code is good once: the second exchange fails and ends what the first one made.
    let code = code_of(&sign_in_and_approve(&w, &req).await);
    let t = w.v.token(&exchange(&w.client, &code), TOKEN_URL).await.unwrap();
    assert!(w.v.token(&exchange(&w.client, &code), TOKEN_URL).await.is_err());
    assert!(w.v.authenticate(&t.access_token).await.unwrap().is_err());
    // And an unused code expires.
    let code = code_of(&sign_in_and_approve(&w, &req).await);
    w.clock.advance_millis(61 * SECOND);
    assert!(w.v.token(&exchange(&w.client, &code), TOKEN_URL).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_authorization_requests_are_refused_before_sign_in() {
    let w = world().await;
    let good = authorize(&w.client, "patient/*.rs");
    let v = &w.v;
    let page = |r: AuthorizeRequest| async move {
        matches!(v.check_authorize(&r, BASE).await, Err(AuthorizeFailure::Page(_)))
    };
    let redirect = |r: AuthorizeRequest| async move {
        match v.check_authorize(&r, BASE).await {
            Err(AuthorizeFailure::Redirect(u)) => u.starts_with(REDIRECT) && u.contains("error="),
            _ => false,
        }
    };
    assert!(
        page(AuthorizeRequest {
            client_id: "nope".into(),
            ..good.clone()
        })
        .await
    );
    assert!(
        page(AuthorizeRequest {
            redirect_uri: "https://evil.test/cb".into(),
            ..good.clone()
        })
        .await,
        "an unregistered redirect URI is never redirected to"
    );
    assert!(
        redirect(AuthorizeRequest {
            code_challenge_method: "plain".into(),
            ..good.clone()
        })
        .await
    );
    assert!(
        redirect(AuthorizeRequest {
            code_challenge: String::new(),
            ..good.clone()
        })
        .await
    );
    assert!(
        redirect(AuthorizeRequest {
            response_type: "token".into(),
            ..good.clone()
        })
        .await
    );
    assert!(
        redirect(AuthorizeRequest {
            aud: Some("https://other.test/fhir".into()),
            ..good.clone()
        })
        .await
    );
    assert!(
        redirect(AuthorizeRequest {
            scope: "patient/Nope.rs".into(),
            ..good.clone()
        })
        .await
    );
    assert!(
        redirect(AuthorizeRequest {
            scope: "system/*.cruds".into(),
            ..good.clone()
        })
        .await
    );
    // Declined on the consent screen: access_denied goes back to the app.
    let who = w.v.sign_in("ada", &password(), None).await.unwrap().unwrap();
    let ticket =
        w.v.login_ticket(&who, &good, &ScopeSet::parse("patient/*.rs").unwrap())
            .unwrap();
    let back = w.v.consent(&ticket, false, None, BASE).await.unwrap();
    assert!(back.contains("error=access_denied") && back.contains("state=st-1"));
    // A ticket is not an access token, and it expires.
    assert!(w.v.authenticate(&ticket).await.unwrap().is_err());
    w.clock.advance_millis(301 * SECOND);
    assert!(matches!(
        w.v.consent(&ticket, true, None, BASE).await,
        Err(AuthorizeFailure::Page(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_when_idle_at_their_lifetime_and_on_revocation() {
    let w = world().await;
    let req = authorize(&w.client, "launch/patient patient/*.rs offline_access");
    let code = code_of(&sign_in_and_approve(&w, &req).await);
    let t = w.v.token(&exchange(&w.client, &code), TOKEN_URL).await.unwrap();
    // Access tokens expire on their own.
    w.clock.advance_millis(15 * 60 * SECOND);
    assert_eq!(
        w.v.authenticate(&t.access_token).await.unwrap().unwrap_err(),
        crate::TokenRejection::Expired
    );
    // Refreshing within the idle timeout keeps the session going...
    let mut r = t.refresh_token.unwrap();
    r =
        w.v.token(&refresh(&w.client, &r), TOKEN_URL)
            .await
            .unwrap()
            .refresh_token
            .unwrap();
    for _ in 0..3 {
        w.clock.advance_millis(29 * 60 * SECOND);
        r =
            w.v.token(&refresh(&w.client, &r), TOKEN_URL)
                .await
                .unwrap()
                .refresh_token
                .unwrap();
    }
    // ...but 30 idle minutes end it.
    w.clock.advance_millis(30 * 60 * SECOND);
    assert!(w.v.token(&refresh(&w.client, &r), TOKEN_URL).await.is_err());
    assert_eq!(w.v.introspect(&r).await.unwrap()["active"], false);

    // The absolute lifetime (12 hours) ends even an active session.
    let code = code_of(&sign_in_and_approve(&w, &req).await);
    let mut r =
        w.v.token(&exchange(&w.client, &code), TOKEN_URL)
            .await
            .unwrap()
            .refresh_token
            .unwrap();
    let mut ended = false;
    for _ in 0..26 {
        w.clock.advance_millis(29 * 60 * SECOND);
        match w.v.token(&refresh(&w.client, &r), TOKEN_URL).await {
            Ok(t) => r = t.refresh_token.unwrap(),
            Err(_) => {
                ended = true;
                break;
            }
        }
    }
    assert!(ended, "no session outlives 12 hours");

    // Revoking an access token (logout) ends its session at once; introspection agrees.
    let code = code_of(&sign_in_and_approve(&w, &req).await);
    let t = w.v.token(&exchange(&w.client, &code), TOKEN_URL).await.unwrap();
    assert_eq!(w.v.introspect(&t.access_token).await.unwrap()["active"], true);
    assert_eq!(
        w.v.introspect(t.refresh_token.as_deref().unwrap()).await.unwrap()["active"],
        true
    );
    w.v.revoke_token(&t.access_token, None).await.unwrap();
    assert_eq!(
        w.v.authenticate(&t.access_token).await.unwrap().unwrap_err(),
        crate::TokenRejection::Revoked
    );
    assert_eq!(w.v.introspect(&t.access_token).await.unwrap()["active"], false);
    assert!(
        w.v.token(&refresh(&w.client, t.refresh_token.as_deref().unwrap()), TOKEN_URL)
            .await
            .is_err()
    );
    // A refresh token is revoked only by its own client.
    let code = code_of(&sign_in_and_approve(&w, &req).await);
    let t = w.v.token(&exchange(&w.client, &code), TOKEN_URL).await.unwrap();
    let r = t.refresh_token.unwrap();
    w.v.revoke_token(&r, Some("another-client")).await.unwrap();
    assert_eq!(w.v.introspect(&r).await.unwrap()["active"], true);
    w.v.revoke_token(&r, Some(&w.client)).await.unwrap();
    assert_eq!(w.v.introspect(&r).await.unwrap()["active"], false);
    // Disabling the account ends the sessions it has.
    let code = code_of(&sign_in_and_approve(&w, &req).await);
    let t = w.v.token(&exchange(&w.client, &code), TOKEN_URL).await.unwrap();
    w.v.set_user_disabled(&Username::parse("ada").unwrap(), true)
        .await
        .unwrap();
    assert!(w.v.authenticate(&t.access_token).await.unwrap().is_err());

    // Ended sessions are deleted by the janitor; their tokens stay refused.
    // The first two sessions have ended, but disabling the account just now revoked them
    // together with the last one: rows with the newest revocation stay (the access epoch
    // reads it).
    assert_eq!(w.v.purge_ended_sessions().await.unwrap(), 0);
    w.clock.advance_millis(13 * 60 * 60 * SECOND);
    assert_eq!(
        w.v.purge_ended_sessions().await.unwrap(),
        2,
        "the logout's and the refresh revocation's sessions"
    );
    assert_eq!(w.v.purge_ended_sessions().await.unwrap(), 0);
    // The purge that deleted is on record once, the server named as the actor.
    let log =
        w.v.session(&Access::unchecked_system())
            .audit_entries(&carevault_storage::AuditFilter {
                subtype: Some("sessions-ended".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
    assert_eq!(log.len(), 1);
    let entry: serde_json::Value = serde_json::from_slice(&log[0]).unwrap();
    assert_eq!(entry["action"], "D");
    assert_eq!(entry["agent"][0]["who"]["identifier"]["value"], "system");
    assert!(w.v.authenticate(&t.access_token).await.unwrap().is_err());
    assert_eq!(w.v.introspect(&r).await.unwrap()["active"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sign_ins_lock_with_back_off_and_staff_need_a_second_factor() {
    let w = world().await;
    let wrong = Password::new("not the password at all".into());
    for _ in 0..4 {
        assert_eq!(
            w.v.sign_in("ada", &wrong, None).await.unwrap().unwrap_err(),
            LoginError::Refused
        );
    }
    assert!(
        w.v.sign_in("ada", &password(), None).await.unwrap().is_ok(),
        "four failures: no lock yet"
    );
    for _ in 0..5 {
        assert_eq!(
            w.v.sign_in("ada", &wrong, None).await.unwrap().unwrap_err(),
            LoginError::Refused
        );
    }
    // Locked for a minute: even the right password is refused.
    assert!(matches!(
        w.v.sign_in("ada", &password(), None).await.unwrap(),
        Err(LoginError::Locked { .. })
    ));
    w.clock.advance_millis(61 * SECOND);
    // One more failure doubles the lock.
    assert_eq!(
        w.v.sign_in("ada", &wrong, None).await.unwrap().unwrap_err(),
        LoginError::Refused
    );
    w.clock.advance_millis(61 * SECOND);
    assert!(matches!(
        w.v.sign_in("ada", &password(), None).await.unwrap(),
        Err(LoginError::Locked { .. })
    ));
    w.clock.advance_millis(60 * SECOND);
    assert!(w.v.sign_in("ada", &password(), None).await.unwrap().is_ok());
    assert_eq!(
        w.v.sign_in("nobody", &password(), None).await.unwrap().unwrap_err(),
        LoginError::Refused,
        "an unknown account reads like a wrong password"
    );

    // A physician needs a TOTP code: none enrolled → told so; enrolled → the current code,
    // once.
    let system = Access::unchecked_system();
    let body = serde_json::to_vec(&json!({"resourceType": "Practitioner"})).unwrap();
    let dr =
        w.v.session(&system)
            .create(Resource::parse(&body).unwrap())
            .await
            .unwrap()
            .resource
            .id;
    let name = Username::parse("osler").unwrap();
    w.v.add_user(NewAccount {
        username: name.clone(),
        role: Role::Physician,
        patient: None,
        practitioner: Some(dr),
        password: password(),
    })
    .await
    .unwrap();
    assert_eq!(
        w.v.sign_in("osler", &password(), None).await.unwrap().unwrap_err(),
        LoginError::SecondFactorMissing
    );
    let secret = w.v.enroll_totp(&name).await.unwrap();
    assert!(w.v.has_totp(&name).await.unwrap());
    assert_eq!(
        w.v.sign_in("osler", &password(), None).await.unwrap().unwrap_err(),
        LoginError::Refused
    );
    let now = carevault_domain::Clock::now(&w.clock).unix_seconds();
    let code = format!("{:06}", secret.code_at(now / 30));
    assert!(w.v.sign_in("osler", &password(), Some(&code)).await.unwrap().is_ok());
    assert_eq!(
        w.v.sign_in("osler", &password(), Some(&code))
            .await
            .unwrap()
            .unwrap_err(),
        LoginError::Refused,
        "a code is good once"
    );
    let next_code = format!("{:06}", secret.code_at(now / 30 + 1));
    let wrong_pw = w.v.sign_in("osler", &wrong, Some(&next_code)).await.unwrap();
    assert_eq!(wrong_pw.unwrap_err(), LoginError::Refused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_services_authenticate_with_a_signed_assertion_once() {
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let w = world().await;
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let public = pair.public_key().as_ref();
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-384", "kid": "b1",
        "x": URL_SAFE_NO_PAD.encode(&public[1..49]), "y": URL_SAFE_NO_PAD.encode(&public[49..])}]});
    let id =
        w.v.add_client(NewClient {
            name: "Lab interface".into(),
            redirect_uris: Vec::new(),
            scopes: ScopeSet::parse("system/Observation.rs system/Patient.r").unwrap(),
            jwks: Some(jwks),
        })
        .await
        .unwrap();
    let now = carevault_domain::Clock::now(&w.clock).unix_seconds();
    let sign = |claims: serde_json::Value| {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"ES384","kid":"b1","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = pair.sign(&rng, input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    };
    let request = |assertion: String, scope: &str| TokenRequest {
        grant_type: "client_credentials".into(),
        scope: Some(scope.into()),
        client_assertion_type: Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into()),
        client_assertion: Some(assertion),
        ..TokenRequest::default()
    };
    let claims = json!({"iss": id, "sub": id, "aud": TOKEN_URL, "exp": now + 240, "jti": "j-1"});
    let t =
        w.v.token(
            &request(sign(claims.clone()), "system/Observation.rs system/*.cruds"),
            TOKEN_URL,
        )
        .await
        .unwrap();
    assert_eq!(
        t.scope, "system/Observation.rs",
        "narrowed to the client's registration"
    );
    assert!(t.refresh_token.is_none());
    let access = w.v.authenticate(&t.access_token).await.unwrap().unwrap();
    assert!(access.allows(carevault_domain::ResourceType::Observation, crate::access::Perms::READ));
    assert!(!access.allows(carevault_domain::ResourceType::Condition, crate::access::Perms::READ));
    // The same assertion again: a replay.
    assert!(matches!(
        w.v.token(&request(sign(claims), "system/Observation.rs"), TOKEN_URL)
            .await,
        Err(OAuthError::InvalidClient(_))
    ));
    // Wrong audience, far expiry, another issuer, a user scope: refused.
    for bad in [
        json!({"iss": id, "sub": id, "aud": "https://elsewhere/token", "exp": now + 60, "jti": "j-2"}),
        json!({"iss": id, "sub": id, "aud": TOKEN_URL, "exp": now + 3600, "jti": "j-3"}),
        json!({"iss": id, "sub": "someone", "aud": TOKEN_URL, "exp": now + 60, "jti": "j-4"}),
    ] {
        assert!(
            w.v.token(&request(sign(bad), "system/Observation.rs"), TOKEN_URL)
                .await
                .is_err()
        );
    }
    let user_scope = json!({"iss": id, "sub": id, "aud": TOKEN_URL, "exp": now + 60, "jti": "j-5"});
    assert!(matches!(
        w.v.token(&request(sign(user_scope), "user/Observation.rs"), TOKEN_URL)
            .await,
        Err(OAuthError::InvalidScope(_))
    ));
    // A public client cannot use client credentials; a backend cannot skip its assertion.
    let public = TokenRequest {
        grant_type: "client_credentials".into(),
        client_id: Some(w.client.clone()),
        scope: Some("system/*.rs".into()),
        ..TokenRequest::default()
    };
    assert!(w.v.token(&public, TOKEN_URL).await.is_err());
    let skip = TokenRequest {
        client_id: Some(id),
        ..public
    };
    assert!(matches!(
        w.v.token(&skip, TOKEN_URL).await,
        Err(OAuthError::InvalidClient(_))
    ));
}
