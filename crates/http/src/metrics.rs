//! Counters for the operator's `/metrics` (Prometheus text format). Labels are fixed words
//! (status classes, outcome names): never a path, an id, a name or a search term.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub(crate) struct Metrics {
    /// Responses by status class: 1xx … 5xx.
    responses: [AtomicU64; 5],
    pub(crate) sign_ins_ok: AtomicU64,
    pub(crate) sign_ins_refused: AtomicU64,
    pub(crate) tokens_issued: AtomicU64,
    pub(crate) token_requests_refused: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
}

impl Metrics {
    pub(crate) fn count_response(&self, status: u16) {
        if let Some(c) = self.responses.get(usize::from(status / 100).wrapping_sub(1)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP carevault_http_responses_total Responses by status class.");
        let _ = writeln!(out, "# TYPE carevault_http_responses_total counter");
        for (i, c) in self.responses.iter().enumerate() {
            let _ = writeln!(
                out,
                "carevault_http_responses_total{{class=\"{}xx\"}} {}",
                i + 1,
                c.load(Ordering::Relaxed)
            );
        }
        for (name, help, c) in [
            (
                "carevault_sign_ins_total{outcome=\"ok\"}",
                "Sign-ins on the login page.",
                &self.sign_ins_ok,
            ),
            (
                "carevault_sign_ins_total{outcome=\"refused\"}",
                "",
                &self.sign_ins_refused,
            ),
            (
                "carevault_tokens_issued_total",
                "Access tokens issued by /oauth/token.",
                &self.tokens_issued,
            ),
            (
                "carevault_token_requests_refused_total",
                "Refused /oauth/token requests.",
                &self.token_requests_refused,
            ),
            (
                "carevault_rate_limited_total",
                "Requests refused by attempt limits.",
                &self.rate_limited,
            ),
        ] {
            let family = name.split('{').next().unwrap_or(name);
            if !help.is_empty() {
                let _ = writeln!(out, "# HELP {family} {help}");
                let _ = writeln!(out, "# TYPE {family} counter");
            }
            let _ = writeln!(out, "{name} {}", c.load(Ordering::Relaxed));
        }
        out
    }
}

/// Counts every response of the public listener by status class.
pub(crate) async fn count(
    axum::extract::State(state): axum::extract::State<crate::AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let r = next.run(req).await;
    state.metrics.count_response(r.status().as_u16());
    r
}
