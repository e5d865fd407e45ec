//! The sign-in pages: plain HTML, no script, no style sheet, every value escaped, under a
//! strict Content-Security-Policy that allows nothing but submitting the form to this server
//! (and, on the consent screen, the redirect back to the application).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use carevault_core::access::{Scope, ScopeSet};
use carevault_core::signin::AuthorizeRequest;

/// Escapes text for HTML content and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The origin (`scheme://host[:port]`) of an absolute URL, for the CSP.
fn origin(url: &str) -> Option<&str> {
    let rest_at = url.find("://")? + 3;
    let end = url[rest_at..].find(['/', '?', '#']).map_or(url.len(), |i| rest_at + i);
    let o = &url[..end];
    o.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-.:[]/".contains(&b))
        .then_some(o)
}

fn page(status: StatusCode, title: &str, body: &str, form_target: Option<&str>) -> Response {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{} — carevault</title></head>\
         <body><main><h1>{}</h1>{body}</main></body></html>\n",
        esc(title),
        esc(title)
    );
    let extra = form_target
        .and_then(origin)
        .map(|o| format!(" {o}"))
        .unwrap_or_default();
    let csp = format!("default-src 'none'; form-action 'self'{extra}; frame-ancestors 'none'; base-uri 'none'");
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    r
}

pub(crate) fn error_page(status: StatusCode, message: &str) -> Response {
    page(status, "Sign-in stopped", &format!("<p>{}</p>", esc(message)), None)
}

fn hidden(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
        esc(name),
        esc(value)
    )
}

/// The request's parameters, carried through the login form unchanged.
fn request_fields(r: &AuthorizeRequest) -> String {
    let mut out = String::new();
    for (k, v) in [
        ("response_type", r.response_type.as_str()),
        ("client_id", &r.client_id),
        ("redirect_uri", &r.redirect_uri),
        ("scope", &r.scope),
        ("code_challenge", &r.code_challenge),
        ("code_challenge_method", &r.code_challenge_method),
    ] {
        out.push_str(&hidden(k, v));
    }
    if let Some(s) = &r.state {
        out.push_str(&hidden("state", s));
    }
    if let Some(a) = &r.aud {
        out.push_str(&hidden("aud", a));
    }
    out
}

pub(crate) fn login(status: StatusCode, client_name: &str, req: &AuthorizeRequest, notice: Option<&str>) -> Response {
    let notice = notice
        .map(|n| format!("<p role=\"alert\"><strong>{}</strong></p>", esc(n)))
        .unwrap_or_default();
    let body = format!(
        "<p>Sign in to continue to <strong>{}</strong>.</p>{notice}\
         <form method=\"post\" action=\"authorize\">{}\
         <p><label>Username <input name=\"username\" autocomplete=\"username\" required></label></p>\
         <p><label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label></p>\
         <p><label>One-time code (staff) <input name=\"totp\" inputmode=\"numeric\" autocomplete=\"one-time-code\" pattern=\"[0-9]{{6}}\"></label></p>\
         <p><button type=\"submit\">Sign in</button></p></form>",
        esc(client_name),
        request_fields(req)
    );
    page(status, "Sign in", &body, None)
}

/// What a scope lets the application do, in words.
fn describe(s: &Scope) -> String {
    match s {
        Scope::Clinical(c) => {
            let what = c
                .rtype
                .map_or("all kinds of records".to_owned(), |t| format!("{} records", t.as_str()));
            let whose = match c.level {
                carevault_core::access::Level::Patient => "of the patient in context",
                carevault_core::access::Level::User => "you can see",
                carevault_core::access::Level::System => "of every patient",
            };
            let mut verbs = Vec::new();
            for (p, v) in [
                (carevault_core::access::Perms::READ, "read"),
                (carevault_core::access::Perms::SEARCH, "search"),
                (carevault_core::access::Perms::CREATE, "create"),
                (carevault_core::access::Perms::UPDATE, "change"),
                (carevault_core::access::Perms::DELETE, "delete"),
            ] {
                if c.perms.contains(p) {
                    verbs.push(v);
                }
            }
            let only = if c.filter.is_empty() {
                ""
            } else {
                " (only some of them)"
            };
            format!("{} {what} {whose}{only}", verbs.join(", "))
        }
        Scope::OpenId | Scope::FhirUser | Scope::Profile => "know who you are".into(),
        Scope::Launch | Scope::LaunchPatient | Scope::LaunchEncounter => "open with a patient record selected".into(),
        Scope::OfflineAccess => "keep access after you close it, until you sign out or it expires".into(),
        Scope::OnlineAccess => "keep access while you are using it".into(),
    }
}

/// The consent screen; `patients` (id, display) for a clinician choosing the patient in
/// context.
pub(crate) fn consent(
    client_name: &str,
    redirect_uri: &str,
    ticket: &str,
    scopes: &ScopeSet,
    patients: &[(carevault_domain::ResourceId, String)],
) -> Response {
    let picker = if patients.is_empty() {
        String::new()
    } else {
        let options: String = patients
            .iter()
            .map(|(id, name)| format!("<option value=\"{}\">{}</option>", esc(id.as_str()), esc(name)))
            .collect();
        format!("<p><label>Open with patient <select name=\"patient\" required>{options}</select></label></p>")
    };
    let items: String = scopes
        .iter()
        .map(|s| format!("<li>{} <code>{}</code></li>", esc(&describe(s)), esc(&s.to_string())))
        .collect();
    let body = format!(
        "<p><strong>{}</strong> asks to:</p><ul>{items}</ul>\
         <p>What you may see is still limited by your role, your care relationships and the patients' consent.</p>\
         <form method=\"post\" action=\"consent\">{}{picker}\
         <p><button type=\"submit\" name=\"decision\" value=\"approve\">Allow</button> \
         <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></p></form>",
        esc(client_name),
        hidden("ticket", ticket)
    );
    page(StatusCode::OK, "Allow access?", &body, Some(redirect_uri))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_origins() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(origin("https://app.test:8443/cb?x=1"), Some("https://app.test:8443"));
        assert_eq!(origin("http://127.0.0.1:9/cb"), Some("http://127.0.0.1:9"));
        assert_eq!(origin("https://a.test'; script-src *"), None);
    }
}
