//! HTML pages and the health check.

use std::{sync::LazyLock, time::Duration};

use async_graphql::http::{GraphQLPlaygroundConfig, playground_source};
use axum::{
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use sha2::{Digest, Sha256};

use super::HttpState;

const STYLE: &str = include_str!("pages/style.css");

/// A self-contained page: its style and script inlined, and a policy that allows exactly those
/// two (by hash) and requests to this origin. No other script can run on a page that holds a
/// token or a password, and nothing is loaded from elsewhere.
struct Page {
    html: String,
    csp: HeaderValue,
}

impl Page {
    fn new(html: &str, page_script: &str) -> Self {
        let script = format!("{}\n{page_script}", include_str!("pages/api.js"));
        let script = script.as_str();
        let csp = format!(
            "default-src 'none'; script-src '{}'; style-src '{}'; connect-src 'self'; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            sha256_source(script),
            sha256_source(STYLE),
        );
        Self {
            html: html
                .replace("/*STYLE*/", STYLE)
                .replace("/*SCRIPT*/", script),
            csp: HeaderValue::try_from(csp)
                .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'")),
        }
    }

    fn respond(&self) -> Response {
        (
            [
                (header::CONTENT_SECURITY_POLICY, self.csp.clone()),
                (
                    header::REFERRER_POLICY,
                    HeaderValue::from_static("no-referrer"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            Html(self.html.clone()),
        )
            .into_response()
    }
}

static CONFIRM: LazyLock<Page> = LazyLock::new(|| {
    Page::new(
        include_str!("pages/confirm.html"),
        include_str!("pages/confirm.js"),
    )
});

static SIGNUP: LazyLock<Page> = LazyLock::new(|| {
    Page::new(
        include_str!("pages/signup.html"),
        include_str!("pages/signup.js"),
    )
});

fn sha256_source(content: &str) -> String {
    format!(
        "sha256-{}",
        STANDARD.encode(Sha256::digest(content.as_bytes()))
    )
}

/// `GET /confirm`: shows a button; only a click confirms the account. Loading the page changes
/// nothing, because mail scanners open links and may even run their scripts.
pub(super) async fn confirm() -> Response {
    CONFIRM.respond()
}

/// `GET /`: the demo sign-up form (unless `ADMIT_DEMO_PAGES=false`).
pub(super) async fn signup() -> Response {
    SIGNUP.respond()
}

/// `GET /playground`: GraphQL Playground pointed at `/graphql`.
pub(super) async fn playground() -> Html<String> {
    Html(playground_source(
        GraphQLPlaygroundConfig::new("/graphql").title("admit Playground"),
    ))
}

/// `GET /healthz`: liveness. 200 whenever the process serves HTTP; it does not look at the
/// database, so a database outage does not get the process restarted for nothing.
pub(super) async fn healthz() -> &'static str {
    "ok"
}

/// Longest a readiness probe waits for the database.
const READINESS_DEADLINE: Duration = Duration::from_secs(3);

/// `GET /readyz`: readiness. 200 when the database answers within a few seconds, 503 when it
/// does not or while the process drains for shutdown.
pub(super) async fn readyz(State(http): State<HttpState>) -> Response {
    if http.readiness.draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    let deadline = READINESS_DEADLINE.min(http.app.settings.db_timeout);
    match tokio::time::timeout(deadline, http.app.db.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready").into_response(),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "readiness: the database failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
        Err(_) => {
            tracing::warn!(after = ?deadline, "readiness: the database did not answer");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}
