//! `/graphql` following the GraphQL-over-HTTP specification: JSON in, JSON out, queries over GET,
//! mutations only over POST, and request errors answered with a 4xx status.

use async_graphql::{
    BatchRequest, BatchResponse, Request, Response as GqlResponse, Value,
    http::{GraphiQLSource, parse_query_string},
    parser::types::OperationType,
};
use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header},
    response::{Html, IntoResponse, Response},
};

use super::{HttpState, REQUEST_ID};
use crate::graphql::RequestId;

/// Most operations one batched request may carry.
pub const MAX_BATCH: usize = 10;
const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";

/// `GET /graphql`: GraphiQL for a browser, otherwise a query from the URL's parameters.
pub(super) async fn get(State(http): State<HttpState>, headers: HeaderMap, uri: Uri) -> Response {
    let raw = uri.query().unwrap_or_default();
    if !raw.split('&').any(|pair| pair.starts_with("query=")) && accepts(&headers, "text/html") {
        return Html(
            GraphiQLSource::build()
                .endpoint("/graphql")
                .title("admit GraphiQL")
                .finish(),
        )
        .into_response();
    }
    let mut request = match parse_query_string(raw) {
        Ok(request) => request,
        Err(err) => return error_response(StatusCode::BAD_REQUEST, &err.to_string(), None),
    };
    if selects_mutation(&mut request) {
        let mut response = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "Mutations must be sent with POST.",
            None,
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    execute(&http, &headers, BatchRequest::Single(request)).await
}

/// `POST /graphql`: a JSON request or a batch of them.
pub(super) async fn post(
    State(http): State<HttpState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !is_json(&headers) {
        return error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Send the request as JSON (Content-Type: application/json).",
            None,
        );
    }
    let batch: BatchRequest = match serde_json::from_slice(&body) {
        Ok(batch) => batch,
        Err(err) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("The body is not a GraphQL request in JSON: {err}"),
                None,
            );
        }
    };
    let count = batch.iter().count();
    if count == 0 || count > MAX_BATCH {
        return error_response(
            StatusCode::BAD_REQUEST,
            &format!("A batch must hold between 1 and {MAX_BATCH} operations."),
            None,
        );
    }
    execute(&http, &headers, batch).await
}

async fn execute(http: &HttpState, headers: &HeaderMap, batch: BatchRequest) -> Response {
    if batch.iter().any(|request| request.query.trim().is_empty()) {
        return error_response(StatusCode::BAD_REQUEST, "The request has no query.", None);
    }
    let request_id = headers
        .get(REQUEST_ID)
        .and_then(|id| id.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let batch = batch.data(RequestId(request_id));
    let response = http.schema.execute_batch(batch).await;
    // A request error (unparsable or invalid document) leaves no data and no path: that is the
    // client's fault and gets 400; anything that executed gets 200 with its errors inside.
    let status = match &response {
        BatchResponse::Single(single) if is_request_error(single) => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    };
    json_response(status, &response, response_type(headers))
}

fn is_request_error(response: &GqlResponse) -> bool {
    response.data == Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|error| error.path.is_empty())
}

/// Whether the operation a GET would run is a mutation (or subscription): those change state
/// and must not be reachable by a link or a prefetch.
fn selects_mutation(request: &mut Request) -> bool {
    let name = request.operation_name.clone();
    // Parsed once: the request keeps the document, and execution reuses it.
    let Ok(document) = request.parsed_query() else {
        return false;
    };
    let operation = match &name {
        Some(name) => document
            .operations
            .iter()
            .find(|(op_name, _)| op_name.is_some_and(|op_name| op_name.as_str() == name)),
        None => {
            let mut operations = document.operations.iter();
            match (operations.next(), operations.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            }
        }
    };
    operation.is_some_and(|(_, op)| op.node.ty != OperationType::Query)
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

fn accepts(headers: &HeaderMap, mime: &str) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| {
            item.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case(mime))
        })
}

/// The spec's media type when the client asks for it, classic JSON otherwise.
fn response_type(headers: &HeaderMap) -> &'static str {
    if accepts(headers, GRAPHQL_RESPONSE_JSON) {
        GRAPHQL_RESPONSE_JSON
    } else {
        "application/json"
    }
}

fn json_response(
    status: StatusCode,
    body: &impl serde::Serialize,
    content_type: &'static str,
) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, content_type)], bytes).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "cannot serialize a GraphQL response");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// A GraphQL-shaped error body (`{"errors":[{"message":...}]}`) with `status`.
pub(super) fn error_response(status: StatusCode, message: &str, code: Option<&str>) -> Response {
    let mut error = serde_json::json!({ "message": message });
    if let Some(code) = code {
        error["extensions"] = serde_json::json!({ "code": code });
    }
    json_response(
        status,
        &serde_json::json!({ "errors": [error] }),
        "application/json",
    )
}
