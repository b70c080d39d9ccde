//! The HTTP surface: the GraphQL endpoint, the IDEs, the confirmation page, liveness and
//! readiness, and the accept loop that serves them.

mod client;
mod graphql;
mod pages;
mod server;
mod session;

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request},
    http::{HeaderName, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use ipnet::IpNet;
use tower::{ServiceBuilder, util::BoxCloneSyncService};
use tower_http::{
    catch_panic::CatchPanicLayer,
    cors::{AllowOrigin, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    set_header::SetResponseHeaderLayer,
    timeout::{RequestBodyDeadlineLayer, TimeoutLayer},
    trace::TraceLayer,
};

pub use client::client_address;
pub use graphql::{Refusal, decode_get, decode_post};
pub use server::{ConnectionPolicy, connection_cap, serve};

use crate::{
    graphql::{AdmitSchema, build_schema},
    state::AppState,
};

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Header carrying the id that ties a request to its log lines.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest `X-Request-Id` taken from a client; longer ones are replaced.
const MAX_REQUEST_ID: usize = 64;

/// What the handlers share: one allocation, so that the state each request extracts is one
/// reference count, not a copy of every handle in it.
#[derive(Clone)]
struct HttpState(Arc<Shared>);

impl std::ops::Deref for HttpState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The contents of [`HttpState`].
struct Shared {
    schema: AdmitSchema,
    app: AppState,
    trusted_proxies: Arc<[IpNet]>,
    readiness: Readiness,
    ide: bool,
    cookies: Arc<session::CookiePolicy>,
    /// Parsed documents, shared by every request.
    documents: crate::graphql::limits::DocumentCache,
}

/// Whether the process should be sent new work: false once shutdown has begun, so that a
/// load balancer polling `/readyz` stops routing to it while it drains.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the process as draining.
    pub fn drain(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn draining(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The complete HTTP application: every route, behind one stack of middleware.
///
/// The stack wraps the router from outside rather than through `Router::layer`: axum applies
/// such layers to each route separately, each in a box of its own, and clones the whole boxed
/// chain for every request. Wrapped once, a request clones plain structs and one box.
pub type App = BoxCloneSyncService<Request, Response, Infallible>;

/// The complete HTTP application for `state`.
pub fn router(state: AppState, readiness: Readiness) -> App {
    let body_timeout = state.http.body_timeout;
    let routes = routes(state, readiness);
    // The first layer is the outermost.
    let middleware = ServiceBuilder::new()
        .map_response(IntoResponse::into_response)
        .map_request(drop_unsafe_request_id)
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        // Only the path is logged: a query string could carry anything a client put there.
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let request_id = request
                .headers()
                .get(REQUEST_ID)
                .and_then(|id| id.to_str().ok())
                .unwrap_or_default();
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id)
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        // Every answer is about one person's account or one moment's health: nothing a shared
        // cache should keep.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(CatchPanicLayer::custom(|_| panicked()))
        .layer(RequestBodyDeadlineLayer::new(body_timeout))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    BoxCloneSyncService::new(middleware.service(routes))
}

/// The routes and their handlers, without the middleware every answer passes through.
fn routes(state: AppState, readiness: Readiness) -> Router {
    let schema = build_schema(Some(state.clone()), state.http.introspection);
    let mut graphql = get(graphql::get).post(graphql::post);
    if !state.http.cors_origins.is_empty() {
        graphql = graphql.layer(cors(state.http.cors_origins.clone()));
    }
    let mut router = Router::new();
    if state.http.demo_pages {
        router = router
            .route("/", get(pages::signup))
            .route("/signin", get(pages::signin))
            .route("/account", get(pages::account));
    }
    let ide = state.http.ide;
    let mut cookie_origins = state.http.cors_origins.clone();
    cookie_origins.extend(HeaderValue::from_str(&state.public_origin).ok());
    let cookies = Arc::new(session::CookiePolicy::new(
        state.secure_cookies,
        cookie_origins,
    ));
    let http = HttpState(Arc::new(Shared {
        documents: crate::graphql::limits::DocumentCache::for_schema(&schema),
        ide,
        cookies,
        trusted_proxies: state.http.trusted_proxies.clone().into(),
        schema,
        app: state,
        readiness,
    }));
    if ide {
        router = router.route("/playground", get(pages::playground));
    }
    router
        .route("/graphql", graphql)
        .route("/confirm", get(pages::confirm))
        .route("/reset", get(pages::reset))
        .route("/email-change", get(pages::email_change))
        .route("/email-revert", get(pages::email_revert))
        .route("/healthz", get(pages::healthz))
        .route("/readyz", get(pages::readyz))
        .with_state(http)
}

/// Keeps a client's `X-Request-Id` only when it is short and made of safe characters, so that
/// what is echoed and logged cannot be a megabyte or forge log lines; otherwise a fresh one is
/// made.
fn drop_unsafe_request_id(mut request: Request) -> Request {
    let safe = request.headers().get(REQUEST_ID).is_none_or(|id| {
        let bytes = id.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= MAX_REQUEST_ID
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    });
    if !safe {
        request.headers_mut().remove(REQUEST_ID);
    }
    request
}

/// Lets pages on `origins` call the API from a browser, cookies included; other origins get no
/// CORS headers, so browsers keep their pages from reading the answers.
fn cors(origins: Vec<HeaderValue>) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::CONTENT_TYPE, header::ACCEPT, header::AUTHORIZATION])
        .allow_credentials(true)
        .max_age(Duration::from_secs(600))
}

fn panicked() -> Response {
    tracing::error!("a request handler panicked");
    graphql::error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Internal server error",
        Some("INTERNAL_SERVER_ERROR"),
    )
}
