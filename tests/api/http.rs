//! The HTTP contract of `/graphql` (GraphQL over HTTP) and the pages. These concern the HTTP
//! layer, not storage, so they run on SQLite; the masked-error test runs on both.

use entity::{outbox_messages, users};
use sea_orm::{ConnectionTrait, EntityTrait, PaginatorTrait};
use serde_json::{Value, json};

use crate::helpers::{Backend, GRAPHQL_RESPONSE, PASSWORD, TestApp, on_both_backends};

on_both_backends!(an_internal_failure_is_masked_logged_by_request_id_and_leaves_no_half_account);

/// The introspection query GraphiQL and graphql-codegen send (graphql-js, 9 levels of ofType).
const INTROSPECTION: &str = r"
query IntrospectionQuery {
  __schema {
    queryType { name } mutationType { name } subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) { name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } } }
}";

async fn post_raw(
    app: &TestApp,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, String) {
    let response = app
        .http
        .post(app.url("/graphql"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn bodies_that_are_not_json_are_refused_with_415() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ] {
        let (status, body) = post_raw(
            &app,
            content_type,
            r#"{"query":"{ passwordPolicy { minLength } }"}"#,
        )
        .await;
        assert_eq!(status, 415, "{content_type}");
        assert!(body.contains("application/json"), "{body}");
    }
}

#[tokio::test]
async fn documents_that_do_not_parse_or_validate_get_400_as_graphql_responses_and_200_as_json() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for document in ["{ passwordPolicy { ", "{ noSuchField }"] {
        let (status, body) = app
            .post_graphql_accepting(GRAPHQL_RESPONSE, document, json!({}))
            .await;
        assert_eq!(status, 400, "{document}: {body}");
        assert!(body.get("data").is_none(), "{body}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );

        let (status, body) = app.post_graphql(document, json!({})).await;
        assert_eq!(status, 200, "{document}: {body}");
        assert_eq!(body["data"], Value::Null, "{body}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
}

#[tokio::test]
async fn answers_keep_the_order_of_the_selections_and_aliases() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let document = r#"{ passwordPolicy { maxLength minLength } b: passwordPolicy { minLength } a: __typename }"#;
    let body = serde_json::to_vec(&json!({ "query": document })).unwrap();
    let (status, text) = post_raw(&app, "application/json", body).await;
    assert_eq!(status, 200, "{text}");
    let position = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("{needle} is not in {text}"))
    };
    // The specification asks that answers follow the document; a map sorted by name puts
    // `a` first and `minLength` before `maxLength`.
    assert!(position("\"passwordPolicy\"") < position("\"b\""), "{text}");
    assert!(position("\"b\"") < position("\"a\""), "{text}");
    assert!(
        position("\"maxLength\"") < position("\"minLength\""),
        "{text}"
    );
}

#[tokio::test]
async fn malformed_requests_get_a_graphql_error_with_status_400() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for body in ["not json", "{}", r#"{"query":""}"#, "[]", r#"{"query": 5}"#] {
        let (status, text) = post_raw(&app, "application/json", body).await;
        assert_eq!(status, 400, "{body}: {text}");
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert!(
            parsed["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{text}"
        );
    }
}

#[tokio::test]
async fn bodies_over_64_kib_are_refused_with_413() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let padding = " ".repeat(64 * 1024);
    let body = format!(r#"{{"query":"{{ passwordPolicy {{ minLength }} }}"{padding}}}"#);
    let (status, _) = post_raw(&app, "application/json", body).await;
    assert_eq!(status, 413);
}

#[tokio::test]
async fn queries_work_over_get_and_mutations_get_405() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let response = app
        .http
        .get(app.url("/graphql"))
        .query(&[("query", "{ passwordPolicy { minLength } }")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({ "data": { "passwordPolicy": { "minLength": 12 } } })
    );

    let mutation = format!(
        r#"mutation {{ register(input: {{ email: "get@example.com", password: "{PASSWORD}" }}) {{ accepted }} }}"#
    );
    let response = app
        .http
        .get(app.url("/graphql"))
        .query(&[("query", mutation.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    assert_eq!(users::Entity::find().count(&app.db).await.unwrap(), 0);

    let response = app.http.put(app.url("/graphql")).send().await.unwrap();
    assert_eq!(response.status(), 405);
}

#[tokio::test]
async fn the_graphql_response_media_type_is_used_when_the_client_accepts_it() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for (accept, expected) in [
        (
            "application/graphql-response+json, application/json;q=0.9",
            "application/graphql-response+json",
        ),
        ("application/json", "application/json"),
    ] {
        let response = app
            .http
            .post(app.url("/graphql"))
            .header("accept", accept)
            .json(&json!({ "query": "{ passwordPolicy { maxLength } }" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], expected);
    }
}

#[tokio::test]
async fn batches_are_answered_in_order_and_capped() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let one = json!({ "query": "{ passwordPolicy { minLength } }" });
    let response = app
        .http
        .post(app.url("/graphql"))
        .json(&json!([one, one]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body.as_array().unwrap().len(), 2);
    assert_eq!(body[1]["data"]["passwordPolicy"]["minLength"], 12);

    let eleven: Vec<Value> = (0..11).map(|_| one.clone()).collect();
    let response = app
        .http
        .post(app.url("/graphql"))
        .json(&eleven)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn a_document_cannot_alias_more_than_two_costly_mutations() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let aliased = |count: usize, prefix: &str| -> String {
        let fields: String = (0..count)
            .map(|i| {
                format!(r#"r{i}: register(input: {{ email: "{prefix}{i}@example.com", password: "{PASSWORD}" }}) {{ accepted }} "#)
            })
            .collect();
        format!("mutation {{ {fields} }}")
    };
    let (status, body) = app
        .post_graphql_accepting(GRAPHQL_RESPONSE, &aliased(3, "three"), json!({}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("complex"),
        "{body}"
    );
    assert_eq!(users::Entity::find().count(&app.db).await.unwrap(), 0);

    let (status, body) = app.post_graphql(&aliased(2, "two"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"],
        json!({ "r0": { "accepted": true }, "r1": { "accepted": true } })
    );
}

#[tokio::test]
async fn deeply_nested_documents_are_refused() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let nested = format!(
        "{{ __schema {{ types {{ fields {{ type {{ {} name {} }} }} }} }} }}",
        "ofType {".repeat(14),
        "}".repeat(14)
    );
    let (status, body) = app
        .post_graphql_accepting(GRAPHQL_RESPONSE, &nested, json!({}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nested"),
        "{body}"
    );
}

#[tokio::test]
async fn the_standard_introspection_query_fits_the_limits() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let data = app.graphql(INTROSPECTION, json!({})).await;
    assert_eq!(data["__schema"]["mutationType"]["name"], "Mutation");
    let types = data["__schema"]["types"].as_array().unwrap();
    assert!(types.iter().any(|t| t["name"] == "RegisterInput"));
    let user = types.iter().find(|t| t["name"] == "User").unwrap();
    let fields: Vec<&str> = user["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(!fields.contains(&"passwordHash"));
    assert!(user["description"].as_str().is_some_and(|d| !d.is_empty()));
}

#[tokio::test]
async fn introspection_can_be_switched_off() {
    let app = TestApp::spawn_with(Backend::Sqlite, &["--introspection", "false"]).await;
    // async-graphql answers introspection fields with null when it is off: nothing is revealed.
    let (_, body) = app
        .post_graphql(
            r#"{ __schema { types { name } } __type(name: "User") { fields { name } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(
        body["data"],
        json!({ "__schema": null, "__type": null }),
        "{body}"
    );
    // Ordinary operations still work.
    app.graphql("{ passwordPolicy { minLength } }", json!({}))
        .await;
}

async fn an_internal_failure_is_masked_logged_by_request_id_and_leaves_no_half_account(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    // Break the last write of `register`, so that it fails after the user row and the email were
    // written inside the transaction.
    app.db
        .execute_unprepared("DROP TABLE verification_tokens")
        .await
        .unwrap();

    let response = app
        .http
        .post(app.url("/graphql"))
        .json(&json!({
            "query": "mutation($input: RegisterInput!) { register(input: $input) { accepted } }",
            "variables": { "input": { "email": "broken@example.com", "password": PASSWORD } }
        }))
        .send()
        .await
        .unwrap();
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let text = response.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();

    let error = &body["errors"][0];
    assert_eq!(error["message"], "Internal server error");
    assert_eq!(error["extensions"]["code"], "INTERNAL_SERVER_ERROR");
    assert_eq!(error["extensions"]["requestId"], request_id.as_str());
    for leak in [
        "verification_tokens",
        "table",
        "relation",
        "SQL",
        "sqlx",
        PASSWORD,
    ] {
        assert!(!text.contains(leak), "{leak:?} leaked: {text}");
    }
    assert_eq!(users::Entity::find().count(&app.db).await.unwrap(), 0);
    assert_eq!(
        outbox_messages::Entity::find()
            .count(&app.db)
            .await
            .unwrap(),
        0
    );
    assert!(app.smtp.received().is_empty());
}

#[tokio::test]
async fn graphiql_loads_only_pinned_assets_with_integrity_and_cannot_be_framed() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let graphiql = app
        .http
        .get(app.url("/graphql"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(graphiql.status(), 200);
    let csp = graphiql.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let page = graphiql.text().await.unwrap();
    assert!(page.contains(r#"createFetcher({ url: "/graphql" })"#));
    let external: Vec<&str> = page
        .split(['"', '\''])
        .filter(|part| part.starts_with("https://"))
        .collect();
    assert_eq!(external.len(), 4, "{page}");
    for url in external {
        // An exact version, allowed by the policy one URL at a time, with an integrity hash.
        let version = url
            .split('@')
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap();
        assert_eq!(version.split('.').count(), 3, "{url}");
        assert!(
            version.split('.').all(|n| n.parse::<u32>().is_ok()),
            "{url}"
        );
        assert!(csp.contains(url), "{url} is not in the policy");
        let tag_end = page[page.find(url).unwrap()..].find('>').unwrap();
        let tag = &page[page.find(url).unwrap()..page.find(url).unwrap() + tag_end];
        assert!(tag.contains(r#"integrity="sha384-"#), "{tag}");
    }

    let playground = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(app.url("/playground"))
        .send()
        .await
        .unwrap();
    assert_eq!(playground.status(), 308);
    assert_eq!(playground.headers()["location"], "/graphql");
}

#[tokio::test]
async fn the_ide_can_be_switched_off() {
    let app = TestApp::spawn_with(Backend::Sqlite, &["--ide", "false"]).await;
    let response = app
        .http
        .get(app.url("/graphql"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(!response.text().await.unwrap().contains("<script"));
    let response = app.http.get(app.url("/playground")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    // Queries over GET still work.
    let response = app
        .http
        .get(app.url("/graphql"))
        .query(&[("query", "{ passwordPolicy { minLength } }")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn the_confirm_page_is_self_contained_and_leaks_no_referrer() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let response = app.http.get(app.url("/confirm")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["referrer-policy"], "no-referrer");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'sha256-"),
        "{csp}"
    );
    let page = response.text().await.unwrap();
    assert!(page.contains("Confirm my account"));
    assert!(page.contains("confirmAccount"));
    for external in ["src=\"http", "href=\"http", "@import", "url(http"] {
        assert!(!page.contains(external), "external asset: {external}");
    }
}

#[tokio::test]
async fn liveness_and_readiness_answer_ok_with_a_reachable_database() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let response = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "ok");
    let response = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "ready");
}

#[tokio::test]
async fn cors_admits_only_the_configured_origins_with_credentials() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            "--cors-origins",
            "https://app.example.com,http://localhost:5173",
        ],
    )
    .await;
    let preflight = |origin: &'static str| {
        app.http
            .request(reqwest::Method::OPTIONS, app.url("/graphql"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(
        allowed.headers()["access-control-allow-credentials"],
        "true"
    );
    let methods = allowed.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(methods.contains("POST"), "{methods}");

    let post = |origin: &'static str| {
        app.http
            .post(app.url("/graphql"))
            .header("origin", origin)
            .json(&json!({ "query": "{ passwordPolicy { minLength } }" }))
            .send()
    };
    let response = post("http://localhost:5173").await.unwrap();
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "http://localhost:5173"
    );
    assert_eq!(
        response.headers()["access-control-allow-credentials"],
        "true"
    );

    for stranger in [
        "https://evil.example",
        "https://app.example.com.evil.example",
    ] {
        let refused = preflight(stranger).await.unwrap();
        assert!(
            refused
                .headers()
                .get("access-control-allow-origin")
                .is_none(),
            "{stranger}"
        );
        let response = post(stranger).await.unwrap();
        assert!(
            response
                .headers()
                .get("access-control-allow-origin")
                .is_none(),
            "{stranger}"
        );
    }
}

#[tokio::test]
async fn without_configured_origins_no_page_elsewhere_may_read_the_api() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let response = app
        .http
        .post(app.url("/graphql"))
        .header("origin", "https://app.example.com")
        .json(&json!({ "query": "{ passwordPolicy { minLength } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test]
async fn the_demo_sign_up_page_is_served_at_the_root_and_can_be_switched_off() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let page = app.http.get(app.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    assert!(page.text().await.unwrap().contains("Create your account"));

    let app = TestApp::spawn_with(Backend::Sqlite, &["--demo-pages", "false"]).await;
    assert_eq!(
        app.http.get(app.url("/")).send().await.unwrap().status(),
        404
    );
    // The landing page of the confirmation links is not a demo: it stays.
    assert_eq!(
        app.http
            .get(app.url("/confirm"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
