//! `/graphql` following the GraphQL-over-HTTP specification: JSON in, JSON out, queries over GET,
//! mutations only over POST, request errors answered as the response media type asks.
//!
//! Hand-written rather than async-graphql-axum's extractor: every document must pass
//! [`limits::check_request`] before async-graphql parses or validates it, and the GET, media
//! type and status rules below differ from the extractor's.

use std::collections::BTreeMap;

use async_graphql::{
    BatchRequest, BatchResponse, Request, Response as GqlResponse, ServerError, Value, Variables,
    parser::types::OperationType,
};
use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{HttpState, REQUEST_ID, client::Client};
use crate::graphql::{
    CostlyBudget, RequestId, RequestSession,
    limits::{self, DocumentCache},
};

/// Most operations one batched request may carry.
pub const MAX_BATCH: usize = 10;
/// Most errors in one answer; the rest are counted, not listed, so that a document full of
/// mistakes cannot make the answer many times its own size.
const MAX_ERRORS: usize = 50;
const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";
const SERVICE_UNAVAILABLE: &str = "SERVICE_UNAVAILABLE";

/// The media type of the answer, as the client's `Accept` asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Media {
    /// `application/json`: every well-formed request gets 200, errors inside.
    Json,
    /// `application/graphql-response+json`: request errors get 4xx and no `data`.
    GraphqlResponse,
}

/// A request refused before execution: the status and the GraphQL-shaped error to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status.
    pub status: StatusCode,
    /// What the client is told.
    pub message: String,
    /// The `extensions.code`, where there is one.
    pub code: Option<&'static str>,
}

impl Refusal {
    fn bad_request(message: String) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message,
            code: None,
        }
    }
}

impl From<limits::LimitError> for Refusal {
    fn from(limit: limits::LimitError) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: limit.to_string(),
            code: Some(limit.code()),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error_response(self.status, &self.message, self.code)
    }
}

/// `GET /graphql`: GraphiQL for a browser, otherwise a query from the URL's parameters.
pub(super) async fn get(
    State(http): State<HttpState>,
    Client(client): Client,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let raw = uri.query().unwrap_or_default();
    let is_ide = GetParams::parse(raw).is_ok_and(|params| params.query.is_none());
    if http.ide && is_ide && accepts(&headers, "text/html") {
        return super::pages::graphiql();
    }
    let mut request = match decode_get(raw, Some(&http.documents)) {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(),
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
    execute(
        &http,
        client,
        &headers,
        false,
        BatchRequest::Single(request),
    )
    .await
}

/// `POST /graphql`: a JSON request or a batch of them.
pub(super) async fn post(
    State(http): State<HttpState>,
    Client(client): Client,
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
    match decode_post(&body, Some(&http.documents)) {
        Ok(batch) => execute(&http, client, &headers, true, batch).await,
        Err(refusal) => refusal.into_response(),
    }
}

/// The request a GET's query string carries, within every limit and parsed (from `documents`
/// when it holds the document); what the endpoint does before execution, with no database
/// involved (the fuzz target drives it).
pub fn decode_get(
    query_string: &str,
    documents: Option<&DocumentCache>,
) -> Result<Request, Refusal> {
    let mut request = GetParams::parse(query_string)
        .and_then(GetParams::into_request)
        .map_err(Refusal::bad_request)?;
    limits::check_request_with(&mut request, documents)?;
    Ok(request)
}

/// The request or batch a POST's JSON body carries, within every limit and parsed (from
/// `documents` when it holds the document).
pub fn decode_post(
    body: &[u8],
    documents: Option<&DocumentCache>,
) -> Result<BatchRequest, Refusal> {
    let mut batch: BatchRequest = serde_json::from_slice(body).map_err(|err| {
        Refusal::bad_request(format!("The body is not a GraphQL request in JSON: {err}"))
    })?;
    let count = batch.iter().count();
    if count == 0 || count > MAX_BATCH {
        return Err(Refusal::bad_request(format!(
            "A batch must hold between 1 and {MAX_BATCH} operations."
        )));
    }
    for request in batch.iter_mut() {
        limits::check_request_with(request, documents)?;
    }
    Ok(batch)
}

/// The parameters of a GET request, as the GraphQL-over-HTTP specification names them.
#[derive(Default)]
struct GetParams {
    query: Option<String>,
    operation_name: Option<String>,
    variables: Option<String>,
    extensions: Option<String>,
}

impl GetParams {
    fn parse(raw: &str) -> Result<Self, String> {
        let mut params = Self::default();
        for (name, value) in url::form_urlencoded::parse(raw.as_bytes()) {
            let slot = match name.as_ref() {
                "query" => &mut params.query,
                "operationName" => &mut params.operation_name,
                "variables" => &mut params.variables,
                "extensions" => &mut params.extensions,
                _ => continue,
            };
            if slot.replace(value.into_owned()).is_some() {
                return Err(format!("The parameter {name:?} is given more than once."));
            }
        }
        Ok(params)
    }

    fn into_request(self) -> Result<Request, String> {
        let mut request = Request::new(self.query.unwrap_or_default());
        if let Some(name) = self.operation_name.filter(|name| !name.is_empty()) {
            request = request.operation_name(name);
        }
        if let Some(raw) = self.variables.filter(|raw| !raw.is_empty()) {
            let variables: Variables = serde_json::from_str(&raw)
                .map_err(|err| format!("The variables parameter is not a JSON object: {err}"))?;
            request = request.variables(variables);
        }
        if let Some(raw) = self.extensions.filter(|raw| !raw.is_empty()) {
            request.extensions = serde_json::from_str(&raw)
                .map_err(|err| format!("The extensions parameter is not a JSON object: {err}"))?;
        }
        Ok(request)
    }
}

/// Runs `batch`; `json_post` says whether it came as a JSON POST, the only kind of request in
/// which the session cookie counts.
async fn execute(
    http: &HttpState,
    client: crate::domain::ClientNetwork,
    headers: &HeaderMap,
    json_post: bool,
    batch: BatchRequest,
) -> Response {
    if batch.iter().any(|request| request.query.trim().is_empty()) {
        return error_response(StatusCode::BAD_REQUEST, "The request has no query.", None);
    }
    let is_batch = matches!(batch, BatchRequest::Batch(_));
    let request_id = headers
        .get(REQUEST_ID)
        .and_then(|id| id.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    // Labelled by the shared operations' names only: a client's own names would let anyone
    // create metrics without end.
    let known = crate::graphql::operation_names();
    let operations: Vec<&'static str> = batch
        .iter()
        .map(|request| {
            known
                .iter()
                .copied()
                .find(|name| request.operation_name.as_deref() == Some(*name))
                .unwrap_or("other")
        })
        .collect();
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let session = RequestSession::new(http.cookies.credential(headers, json_post), user_agent);
    let batch = batch
        .data(RequestId(request_id))
        .data(client)
        .data(CostlyBudget::per_request())
        .data(session.clone());
    let media = response_type(headers);
    let started = std::time::Instant::now();
    // Boxed: async-graphql's execution future is kilobytes, and every layer above this one
    // (the handler, axum's and tower's futures) would otherwise move it whole as it starts.
    let responses = match Box::pin(http.schema.execute_batch(batch)).await {
        BatchResponse::Single(response) => vec![response],
        BatchResponse::Batch(responses) => responses,
    };
    let elapsed = started.elapsed().as_secs_f64();
    let mut shaped: Vec<(StatusCode, Vec<u8>, Option<u64>)> = responses
        .into_iter()
        .zip(operations)
        .map(|(response, operation)| {
            let request_error = is_request_error(&response);
            let outcome = outcome(&response, request_error);
            let shaped = shape(response, request_error, media);
            metrics::counter!(crate::metrics::GRAPHQL_REQUESTS, "operation" => operation, "outcome" => outcome)
                .increment(1);
            metrics::histogram!(crate::metrics::GRAPHQL_DURATION, "operation" => operation)
                .record(elapsed);
            shaped
        })
        .collect();
    let mut response = if shaped.len() == 1 && !is_batch {
        let (status, body, retry_after) = shaped.remove(0);
        let mut response = body_response(status, body, media);
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    } else {
        // Each body is one JSON value already: the batch is their array.
        let mut bodies = vec![b'['];
        for (index, (_, body, _)) in shaped.into_iter().enumerate() {
            if index > 0 {
                bodies.push(b',');
            }
            bodies.extend_from_slice(&body);
        }
        bodies.push(b']');
        body_response(StatusCode::OK, bodies, media)
    };
    if let Some(cookie) = session
        .cookie_change()
        .and_then(|change| http.cookies.set_cookie(change))
    {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// How one operation ended, for the metrics: `ok`, `request_error` (did not parse or
/// validate), `unavailable` or `error`.
fn outcome(response: &GqlResponse, request_error: bool) -> &'static str {
    if response.errors.is_empty() {
        "ok"
    } else if request_error {
        "request_error"
    } else if response.errors.iter().any(is_unavailable) {
        "unavailable"
    } else {
        "error"
    }
}

/// Whether `error` says the service was busy or could not reach its database.
fn is_unavailable(error: &async_graphql::ServerError) -> bool {
    error
        .extensions
        .as_ref()
        .and_then(|extensions| extensions.get("code"))
        .is_some_and(|code| *code == Value::from(SERVICE_UNAVAILABLE))
}

/// The longest `retryAfterSeconds` among a response's errors (those of `SERVICE_UNAVAILABLE`),
/// for a 503's `Retry-After`.
fn retry_after(response: &GqlResponse) -> Option<u64> {
    response
        .errors
        .iter()
        .filter_map(|error| error.extensions.as_ref()?.get("retryAfterSeconds"))
        .filter_map(|seconds| match seconds {
            Value::Number(number) => number.as_u64(),
            _ => None,
        })
        .max()
}

/// The status and JSON body of one GraphQL response, and for a 503 the seconds for
/// `Retry-After`. A request error (a document that does not parse or validate: no data, no
/// path) is the client's: 400 for clients that read the GraphQL response media type, which then
/// carries no `data`, and 200 for plain JSON clients, as the specification asks. A response
/// that failed only because the service is overloaded or cannot reach its database gets 503.
///
/// The response is serialized as it is, in the order of the selections (the specification
/// asks that order be kept), without a `serde_json::Value` in between.
fn shape(
    mut response: GqlResponse,
    request_error: bool,
    media: Media,
) -> (StatusCode, Vec<u8>, Option<u64>) {
    let unavailable = response.data == Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(is_unavailable);
    let retry_after = if unavailable {
        retry_after(&response)
    } else {
        None
    };
    if response.errors.len() > MAX_ERRORS {
        let left_out = response.errors.len() - MAX_ERRORS;
        response.errors.truncate(MAX_ERRORS);
        let mut error = ServerError::new(format!("{left_out} more errors were left out."), None);
        error
            .extensions
            .get_or_insert_with(Default::default)
            .set("code", "TOO_MANY_ERRORS");
        response.errors.push(error);
    }
    let without_data = request_error && media == Media::GraphqlResponse;
    let body = if without_data {
        serde_json::to_vec(&WithoutData {
            errors: &response.errors,
            extensions: &response.extensions,
        })
    } else {
        serde_json::to_vec(&response)
    };
    let body = body.unwrap_or_else(|err| {
        tracing::error!(error = %err, "cannot serialize a GraphQL response");
        br#"{"errors":[{"message":"Internal server error"}]}"#.to_vec()
    });
    let status = if request_error {
        if without_data {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        }
    } else if unavailable {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, body, retry_after)
}

/// A response to a request error in the GraphQL response media type: no `data` member.
#[derive(serde::Serialize)]
struct WithoutData<'a> {
    errors: &'a [ServerError],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    extensions: &'a BTreeMap<String, Value>,
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
fn response_type(headers: &HeaderMap) -> Media {
    if accepts(headers, GRAPHQL_RESPONSE_JSON) {
        Media::GraphqlResponse
    } else {
        Media::Json
    }
}

fn json_response(status: StatusCode, body: &impl serde::Serialize, media: Media) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => body_response(status, bytes, media),
        Err(err) => {
            tracing::error!(error = %err, "cannot serialize a GraphQL response");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// An answer of `status` whose body is the JSON `body`, in `media`.
fn body_response(status: StatusCode, body: Vec<u8>, media: Media) -> Response {
    let content_type = match media {
        Media::Json => "application/json",
        Media::GraphqlResponse => GRAPHQL_RESPONSE_JSON,
    };
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// A GraphQL-shaped error body (`{"errors":[{"message":...}]}`) with `status`.
pub(super) fn error_response(status: StatusCode, message: &str, code: Option<&str>) -> Response {
    let mut error = json!({ "message": message });
    if let Some(code) = code {
        error["extensions"] = json!({ "code": code });
    }
    json_response(status, &json!({ "errors": [error] }), Media::Json)
}
