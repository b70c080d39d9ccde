//! HTML pages and the health check.

use std::{sync::LazyLock, time::Duration};

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
        // Each shared operation on its own (with its fragments), by name: what `callAdmit` sends.
        let operations: serde_json::Map<String, serde_json::Value> =
            crate::graphql::operation_names()
                .iter()
                .filter_map(|&name| {
                    crate::graphql::operation_document(name)
                        .map(|document| (name.to_owned(), document.into()))
                })
                .collect();
        let operations = serde_json::to_string(&operations).unwrap_or_else(|_| "{}".to_owned());
        let api = include_str!("pages/api.js").replace("/*OPERATIONS*/", &operations);
        let script = format!("{api}\n{page_script}");
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

/// What the GraphiQL page loads from the CDN: exact versions, each with its integrity hash
/// (computed from the npm packages, which the CDN serves byte for byte), so that a changed or
/// compromised file is refused by the browser. The page's policy allows these URLs and
/// nothing else from outside the origin.
const IDE_ASSETS: [Asset; 4] = [
    (
        "https://unpkg.com/graphiql@3.9.0/graphiql.min.css",
        "sha384-QMux00XgRtwRLSYIY3kw2rj1ovk5AuuliAchk+HSQbqdbGFnz9GYuqIlOqxhwCE2",
    ),
    (
        "https://unpkg.com/react@18.3.1/umd/react.production.min.js",
        "sha384-DGyLxAyjq0f9SPpVevD6IgztCFlnMF6oW/XQGmfe+IsZ8TqEiDrcHkMLKI6fiB/Z",
    ),
    (
        "https://unpkg.com/react-dom@18.3.1/umd/react-dom.production.min.js",
        "sha384-gTGxhz21lVGYNMcdJOyq01Edg0jhn/c22nsx0kyqP0TxaV5WVdsSH1fSDUf5YJj1",
    ),
    (
        "https://unpkg.com/graphiql@3.9.0/graphiql.min.js",
        "sha384-8NGfVj4CVlqHajlZj+bPJT4thxPMHMJYn7DWK2CvtopLd02E7qsPHazniBYvVjOO",
    ),
];
/// A file from the CDN: its URL and its integrity hash.
type Asset = (&'static str, &'static str);
const IDE_STYLE: &str = "body { margin: 0; } #graphiql { height: 100vh; }";

/// GraphiQL, served from the API's origin: pinned assets with integrity hashes, its own
/// start-up script allowed by hash, no framing.
static GRAPHIQL: LazyLock<Page> = LazyLock::new(|| {
    let script = include_str!("pages/graphiql.js");
    let (styles, scripts): (Vec<&Asset>, Vec<&Asset>) = IDE_ASSETS
        .iter()
        .partition(|(url, _)| url.ends_with(".css"));
    let tags: String = styles
        .iter()
        .map(|(url, integrity)| {
            format!(r#"<link rel="stylesheet" href="{url}" integrity="{integrity}" crossorigin="anonymous">"#)
        })
        .chain(scripts.iter().map(|(url, integrity)| {
            format!(r#"<script src="{url}" integrity="{integrity}" crossorigin="anonymous"></script>"#)
        }))
        .collect::<Vec<_>>()
        .join("\n");
    let urls = |assets: &[&Asset]| {
        assets
            .iter()
            .map(|(url, _)| *url)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let csp = format!(
        "default-src 'none'; script-src '{}' {}; style-src '{}' {}; font-src data:; \
         img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'",
        sha256_source(script),
        urls(&scripts),
        sha256_source(IDE_STYLE),
        urls(&styles),
    );
    Page {
        html: include_str!("pages/graphiql.html")
            .replace("/*STYLE*/", IDE_STYLE)
            .replace("<!--ASSETS-->", &tags)
            .replace("/*SCRIPT*/", script),
        csp: HeaderValue::try_from(csp)
            .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'")),
    }
});

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

static RESET: LazyLock<Page> = LazyLock::new(|| {
    Page::new(
        include_str!("pages/reset.html"),
        include_str!("pages/reset.js"),
    )
});

/// The landing page of one of the two address-change links.
fn email_link_page(kind: &str, title: &str, button: &str) -> Page {
    Page::new(
        &include_str!("pages/email-link.html")
            .replace("/*KIND*/", kind)
            .replace("/*TITLE*/", title)
            .replace("/*BUTTON*/", button),
        include_str!("pages/email-link.js"),
    )
}

static EMAIL_CHANGE: LazyLock<Page> = LazyLock::new(|| {
    email_link_page(
        "change",
        "Confirm your new email address",
        "Make this my address",
    )
});

static EMAIL_REVERT: LazyLock<Page> = LazyLock::new(|| {
    email_link_page(
        "revert",
        "Undo the email address change",
        "This was not me: undo it",
    )
});

static SIGNIN: LazyLock<Page> = LazyLock::new(|| {
    Page::new(
        include_str!("pages/signin.html"),
        include_str!("pages/signin.js"),
    )
});

static ACCOUNT: LazyLock<Page> = LazyLock::new(|| {
    Page::new(
        include_str!("pages/account.html"),
        include_str!("pages/account.js"),
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

/// `GET /reset`: where password reset links land: the new password twice, sent only when the
/// person submits it (mail scanners open links and may run their scripts).
pub(super) async fn reset() -> Response {
    RESET.respond()
}

/// `GET /email-change`: where the link to a new address lands; only a click changes it.
pub(super) async fn email_change() -> Response {
    EMAIL_CHANGE.respond()
}

/// `GET /email-revert`: where the link to the old address lands; only a click undoes.
pub(super) async fn email_revert() -> Response {
    EMAIL_REVERT.respond()
}

/// `GET /signin`: the demo sign-in form; the session becomes an `HttpOnly` cookie.
pub(super) async fn signin() -> Response {
    SIGNIN.respond()
}

/// `GET /account`: the demo account page: the viewer's address and sessions, sign-out.
pub(super) async fn account() -> Response {
    ACCOUNT.respond()
}

/// GraphiQL, for `GET /graphql` from a browser (unless `ADMIT_IDE=false`).
pub(super) fn graphiql() -> Response {
    GRAPHIQL.respond()
}

/// `GET /playground`: GraphQL Playground is retired upstream; its successor is GraphiQL, at
/// `/graphql`. Old bookmarks land there.
pub(super) async fn playground() -> Response {
    (
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, HeaderValue::from_static("/graphql"))],
    )
        .into_response()
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
    let deadline = READINESS_DEADLINE.min(http.app.db_timeout);
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
