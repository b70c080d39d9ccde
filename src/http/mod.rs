//! The HTTP surface: the GraphQL endpoint, the IDEs, the confirmation page and health.

mod graphql;
mod pages;

use std::time::Duration;

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request},
    http::{HeaderName, HeaderValue, Method, StatusCode, header},
    response::Response,
    routing::get,
};
use tower_http::{
    catch_panic::CatchPanicLayer,
    cors::{AllowOrigin, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    set_header::SetResponseHeaderLayer,
    timeout::TimeoutLayer,
    trace::TraceLayer,
};

use crate::{
    graphql::{AdmitSchema, build_schema},
    state::AppState,
};

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Header carrying the id that ties a request to its log lines.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the handlers share.
#[derive(Clone)]
struct HttpState {
    schema: AdmitSchema,
    app: AppState,
}

/// The complete HTTP application for `state`.
pub fn router(state: AppState) -> Router {
    let schema = build_schema(Some(state.clone()), state.settings.introspection);
    let mut graphql = get(graphql::get).post(graphql::post);
    if !state.settings.cors_origins.is_empty() {
        graphql = graphql.layer(cors(state.settings.cors_origins.clone()));
    }
    let mut router = Router::new();
    if state.settings.demo_pages {
        router = router.route("/", get(pages::signup));
    }
    let http = HttpState { schema, app: state };
    router
        .route("/graphql", graphql)
        .route("/playground", get(pages::playground))
        .route("/confirm", get(pages::confirm))
        .route("/healthz", get(pages::healthz))
        .with_state(http)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(CatchPanicLayer::custom(|_| panicked()))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        // Only the path is logged: a query string could carry anything a client put there.
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let request_id = request
                .headers()
                .get(REQUEST_ID)
                .and_then(|id| id.to_str().ok())
                .unwrap_or_default();
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// Lets pages on `origins` call the API from a browser, cookies included; other origins get no
/// CORS headers, so browsers keep their pages from reading the answers.
fn cors(origins: Vec<HeaderValue>) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::CONTENT_TYPE, header::ACCEPT])
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
