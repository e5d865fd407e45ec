//! Every request leaves one audit entry, durable before the response is sent; if the entry
//! cannot be written, the response is replaced by a 500 (no audit, no data). The entry names
//! the caller by opaque id, the interaction by its FHIR code, the resource and patient by id,
//! and the search by a keyed hash of its terms.

use crate::auth::Caller;
use crate::oauth::Peer;
use crate::{ApiError, AppState};
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use carevault_core::audit::{AuditAgent, AuditDraft, Outcome};
use carevault_domain::ResourceType;

/// The interaction, its action code, the entity and the patient, from the method and path.
fn classify(method: &Method, path: &str) -> (String, char, Option<String>, Option<String>) {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let is_type = |s: &str| s.parse::<ResourceType>().is_ok();
    let op = |name: &str| format!("operation:{}", name.trim_start_matches('$'));
    match segs.as_slice() {
        ["oauth", what, ..] => {
            let sub = match (*what, method) {
                ("authorize", &Method::POST) => "login".to_owned(),
                ("authorize", _) => "login-page".to_owned(),
                (other, _) => (*other).to_owned(),
            };
            (sub, 'E', None, None)
        }
        ["operator", rest @ ..] => {
            let action = if method == Method::GET { 'R' } else { 'U' };
            (
                format!("operator:{}", rest.first().copied().unwrap_or("")),
                action,
                None,
                None,
            )
        }
        ["fhir"] | ["fhir", ""] if *method == Method::GET => ("search-system".into(), 'R', None, None),
        ["fhir"] | ["fhir", ""] => ("transaction".into(), 'E', None, None),
        ["fhir", "_search"] => ("search-system".into(), 'R', None, None),
        ["fhir", "metadata"] => ("capabilities".into(), 'R', None, None),
        ["fhir", ".well-known", ..] => ("capabilities".into(), 'R', None, None),
        ["fhir", "_history"] => ("history-system".into(), 'R', None, None),
        ["fhir", o] if o.starts_with('$') => (op(o), 'E', None, None),
        ["fhir", o, ..] if o.starts_with('$') => (op(o), 'E', None, None),
        ["fhir", t] if is_type(t) => {
            let (sub, action) = match *method {
                Method::POST => ("create", 'C'),
                Method::PUT => ("update", 'U'),
                Method::PATCH => ("patch", 'U'),
                Method::DELETE => ("delete", 'D'),
                _ => ("search-type", 'R'),
            };
            (sub.into(), action, Some((*t).to_owned()), None)
        }
        ["fhir", t, "_history"] if is_type(t) => ("history-type".into(), 'R', Some((*t).to_owned()), None),
        ["fhir", t, "_search"] if is_type(t) => ("search-type".into(), 'R', Some((*t).to_owned()), None),
        ["fhir", t, o] if is_type(t) && o.starts_with('$') => (op(o), 'E', Some((*t).to_owned()), None),
        ["fhir", t, id, rest @ ..] if is_type(t) => {
            let entity = Some(format!("{t}/{id}"));
            let patient = (*t == "Patient").then(|| (*id).to_owned());
            let (sub, action) = match (method, rest) {
                (&Method::GET, []) => ("read".to_owned(), 'R'),
                (&Method::PUT, []) => ("update".to_owned(), 'U'),
                (&Method::PATCH, []) => ("patch".to_owned(), 'U'),
                (&Method::DELETE, []) => ("delete".to_owned(), 'D'),
                (_, ["_history"]) => ("history-instance".to_owned(), 'R'),
                (_, ["_history", _]) => ("vread".to_owned(), 'R'),
                (_, [o, ..]) if o.starts_with('$') => (op(o), 'E'),
                (_, [_compartment_type]) => ("search-type".to_owned(), 'R'),
                _ => ("other".to_owned(), 'E'),
            };
            (sub, action, entity, patient)
        }
        _ => ("other".into(), 'E', None, None),
    }
}

/// The patient a response's resources belong to, noted by the handler for the entry.
#[derive(Debug, Clone)]
pub(crate) struct AuditPatient(pub String);

/// Notes the patient of the resources a response carries, when they all belong to one.
pub(crate) fn note_patients<'a>(
    response: &mut Response,
    resources: impl Iterator<Item = &'a carevault_core::StoredResource>,
) {
    let mut one: Option<&str> = None;
    for r in resources {
        match (one, r.patient.as_deref()) {
            (_, None) => {}
            (None, Some(p)) => one = Some(p),
            (Some(a), Some(p)) if a == p => {}
            (Some(_), Some(_)) => return,
        }
    }
    if let Some(p) = one {
        response.extensions_mut().insert(AuditPatient(p.to_owned()));
    }
}

pub(crate) async fn record(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().filter(|q| !q.is_empty()).map(str::to_owned);
    let address = req.extensions().get::<Peer>().map(|p| p.0.ip().to_string());
    let (subtype, action, entity, path_patient) = classify(&method, &path);
    // Forms carry credentials: only FHIR search terms are hashed into the entry.
    let query_tag = match (&query, path.starts_with("/fhir")) {
        (Some(q), true) => Some(state.vault.audit_query_tag(q)),
        _ => None,
    };
    // A request that may change state commits its entry in the change's transaction: the
    // core completes it (the caller, the resource, a sign-in's account and outcome) and the
    // store writes it with the change. FHIR writes; sign-in, consent, token and revocation
    // posts; export kick-offs (a GET that starts a job); the operator's account and client
    // changes.
    let writes = (path.starts_with("/fhir")
        && (matches!(method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE)
            || path.ends_with("/$export")))
        || (method == Method::POST && (path.starts_with("/oauth/") || path.starts_with("/operator/")));
    let response = if writes {
        let draft = AuditDraft {
            recorded: state.vault.clock().now().millis(),
            subtype: subtype.clone(),
            action,
            outcome: Outcome::Success,
            agent: AuditAgent {
                who: carevault_core::audit::ANONYMOUS.into(),
                role: None,
                client: None,
                address: address.clone(),
            },
            entity: entity.clone(),
            patient: path_patient.clone(),
            query_tag: query_tag.clone(),
            purpose: None,
            detail: Vec::new(),
        };
        match carevault_core::audit::with_pending(draft, next.run(req)).await {
            // Its entry went in with the write.
            (response, Some(_)) => return response,
            (response, None) => response,
        }
    } else {
        next.run(req).await
    };
    let mut patient = response
        .extensions()
        .get::<AuditPatient>()
        .map(|p| p.0.clone())
        .or(path_patient);
    // A request about one resource that did not return it (refused, absent, deleted) still
    // names the patient whose record it touched, from the index (never shown to the caller).
    if patient.is_none()
        && let Some((t, id)) = entity.as_deref().and_then(|e| e.split_once('/'))
        && let Ok(t) = t.parse::<ResourceType>()
    {
        patient = state.vault.audit_patient_of(t, id).await;
    }
    let caller = response.extensions().get::<Caller>().cloned();
    let agent = match &caller {
        Some(c) => AuditAgent {
            who: c.actor_key(),
            role: c.role().map(|r| r.as_str().to_owned()),
            client: match c.actor() {
                carevault_core::access::Actor::Client { client_id } => Some(client_id.clone()),
                _ => None,
            },
            address,
        },
        None => AuditAgent {
            who: "anonymous".into(),
            role: None,
            client: None,
            address,
        },
    };
    let draft = AuditDraft {
        recorded: state.vault.clock().now().millis(),
        subtype,
        action,
        outcome: Outcome::from_status(response.status().as_u16()),
        agent,
        entity,
        patient,
        query_tag,
        purpose: caller.as_ref().map(|c| c.purpose().to_owned()),
        detail: Vec::new(),
    };
    match state.vault.audit(draft).await {
        Ok(_) => response,
        Err(e) => ApiError::Internal(format!("audit: {e}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interactions_are_named_from_the_route() {
        let c = |m: Method, p: &str| {
            let (s, a, e, pt) = classify(&m, p);
            (s, a, e, pt)
        };
        assert_eq!(
            c(Method::GET, "/fhir/Patient/abc"),
            ("read".into(), 'R', Some("Patient/abc".into()), Some("abc".into()))
        );
        assert_eq!(c(Method::GET, "/fhir/Observation/x/_history/2").0, "vread");
        assert_eq!(c(Method::GET, "/fhir/Observation/_history").0, "history-type");
        assert_eq!(
            c(Method::POST, "/fhir/Observation"),
            ("create".into(), 'C', Some("Observation".into()), None)
        );
        assert_eq!(c(Method::GET, "/fhir/Observation").0, "search-type");
        assert_eq!(c(Method::GET, "/fhir/Patient/p1/Observation").3, Some("p1".into()));
        assert_eq!(c(Method::GET, "/fhir/Patient/p1/$everything").0, "operation:everything");
        assert_eq!(c(Method::POST, "/fhir").0, "transaction");
        assert_eq!(c(Method::GET, "/fhir").0, "search-system");
        assert_eq!(c(Method::POST, "/fhir/_search").0, "search-system");
        assert_eq!(c(Method::POST, "/oauth/authorize").0, "login");
        assert_eq!(c(Method::DELETE, "/fhir/Patient/p1").1, 'D');
        assert_eq!(c(Method::PATCH, "/fhir/Patient/p1").0, "patch");
        assert_eq!(c(Method::PATCH, "/fhir/Patient").1, 'U');
    }
}
