//! Documents built to hurt: nesting that overflows a recursive parser, fragments that expand
//! exponentially, variables nested as deep, and answers inflated by errors. Each is refused
//! before anything recursive sees it, while the service keeps serving everyone else.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Backend, GRAPHQL_RESPONSE, TestApp, client_from};

/// A value nested `levels` deep in an argument: 1,600 levels overflowed a worker's stack.
fn nested_argument(levels: usize) -> String {
    format!(
        "{{ passwordPolicy(x: {}1{}) {{ minLength }} }}",
        "[".repeat(levels),
        "]".repeat(levels)
    )
}

/// `F{i}` spreads `F{i-1}` `fan_out` times: fan_out^levels selections from a kilobyte.
fn fragment_bomb(levels: usize, fan_out: usize) -> String {
    let mut document = format!("query {{ passwordPolicy {{ ...F{levels} }} }}\n");
    document.push_str("fragment F0 on PasswordPolicy { minLength }\n");
    for level in 1..=levels {
        let spreads = format!("...F{} ", level - 1).repeat(fan_out);
        document.push_str(&format!(
            "fragment F{level} on PasswordPolicy {{ {spreads}}}\n"
        ));
    }
    document
}

/// POSTs `body` as JSON and returns the status, the `extensions.code` of the first error and
/// the body.
async fn post(app: &TestApp, client: &reqwest::Client, body: &Value) -> (u16, Value) {
    let response = client
        .post(app.url("/graphql"))
        .header("accept", GRAPHQL_RESPONSE)
        .json(body)
        .send()
        .await
        .expect("an answer, not a hang or a dead process");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_documents_are_refused_with_400_while_a_cheap_query_is_served() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    // Before these limits, the first document killed the process and the second kept a worker
    // busy for a minute: a short deadline turns either into a failure here.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let cases = [
        (
            json!({ "query": nested_argument(1_600) }),
            "DOCUMENT_TOO_DEEP",
        ),
        (
            json!({ "query": format!("query($v: [[Int]] = {}1{}) {{ passwordPolicy {{ minLength }} }}", "[".repeat(1_600), "]".repeat(1_600)) }),
            "DOCUMENT_TOO_DEEP",
        ),
        (
            json!({ "query": format!("{{ passwordPolicy @include(if: {}true{}) {{ minLength }} }}", "[".repeat(1_600), "]".repeat(1_600)) }),
            "DOCUMENT_TOO_DEEP",
        ),
        (
            json!({ "query": fragment_bomb(28, 2) }),
            "DOCUMENT_TOO_LARGE",
        ),
        (
            json!({ "query": fragment_bomb(8, 10) }),
            "DOCUMENT_TOO_LARGE",
        ),
        (
            json!({ "query": "{ passwordPolicy { ...A } }
                fragment A on PasswordPolicy { ...B ...B }
                fragment B on PasswordPolicy { ...A ...A }" }),
            "FRAGMENT_CYCLE",
        ),
        (
            json!({ "query": format!("{{ {} }}", "passwordPolicy { minLength } ".repeat(2_000)) }),
            "DOCUMENT_TOO_LARGE",
        ),
    ];
    let cheap = json!({ "query": "{ passwordPolicy { minLength } }" });
    let hostile = futures::future::join_all(cases.iter().map(|(body, expected)| {
        let client = &client;
        let app = &app;
        async move {
            let (status, answer) = post(app, client, body).await;
            assert_eq!(status, 400, "{answer}");
            assert_eq!(code(&answer), *expected, "{answer}");
            assert!(answer.get("data").is_none(), "{answer}");
        }
    }));
    let served = async {
        for _ in 0..20 {
            let (status, answer) = post(&app, &client, &cheap).await;
            assert_eq!(status, 200, "{answer}");
            assert_eq!(answer["data"]["passwordPolicy"]["minLength"], 12);
        }
    };
    tokio::join!(hostile, served);

    // The same nesting over GET, and in the variables.
    let response = client
        .get(app.url("/graphql"))
        .query(&[("query", nested_argument(1_600))])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(code(&answer), "DOCUMENT_TOO_DEEP", "{answer}");

    let mut deep = json!(1);
    for _ in 0..40 {
        deep = json!([deep]);
    }
    let (status, answer) = post(
        &app,
        &client,
        &json!({ "query": "query($v: Int) { passwordPolicy { minLength } }", "variables": { "v": deep } }),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(code(&answer), "DOCUMENT_TOO_DEEP", "{answer}");

    // Still alive and serving.
    let (status, _) = post(&app, &client, &cheap).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn an_answer_lists_at_most_fifty_errors_and_counts_the_rest() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let fields: String = (0..400).map(|i| format!("f{i} ")).collect();
    let (status, body) = app
        .post_graphql(&format!("{{ passwordPolicy {{ {fields} }} }}"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 51, "{body}");
    assert_eq!(errors[50]["extensions"]["code"], "TOO_MANY_ERRORS");
    assert!(
        errors[50]["message"]
            .as_str()
            .unwrap()
            .starts_with("350 more errors"),
        "{}",
        errors[50]
    );
}

#[tokio::test]
async fn with_introspection_off_errors_suggest_no_field_names() {
    let misspelled = "{ passwordPolicy { minLenght } }";
    let open = TestApp::spawn(Backend::Sqlite).await;
    let (_, body) = open.post_graphql(misspelled, json!({})).await;
    assert!(body.to_string().contains("Did you mean"), "{body}");

    let closed = TestApp::spawn_with(Backend::Sqlite, &["--introspection", "false"]).await;
    let (_, body) = closed.post_graphql(misspelled, json!({})).await;
    assert!(body["errors"][0]["message"].is_string(), "{body}");
    assert!(!body.to_string().contains("Did you mean"), "{body}");
    assert!(!body.to_string().contains("minLength"), "{body}");
}

#[tokio::test]
async fn get_requests_honour_operation_name_and_still_refuse_mutations() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let document = "query Min { passwordPolicy { minLength } }
                    query Max { passwordPolicy { maxLength } }
                    mutation Confirm { confirmAccount(token: \"x\") { user { id } } }";
    let get = |operation: &'static str| {
        app.http
            .get(app.url("/graphql"))
            .query(&[("query", document), ("operationName", operation)])
            .send()
    };
    let response = get("Max").await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({ "data": { "passwordPolicy": { "maxLength": 128 } } })
    );
    let response = get("Confirm").await.unwrap();
    assert_eq!(response.status(), 405);

    let response = app
        .http
        .get(app.url("/graphql"))
        .query(&[
            ("query", "query($n: Int) { passwordPolicy { minLength } }"),
            ("variables", r#"{"n": 1}"#),
            ("extensions", r#"{"persistedQuery": null}"#),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = app
        .http
        .get(app.url("/graphql"))
        .query(&[
            ("query", "{ passwordPolicy { minLength } }"),
            ("query", "{ passwordPolicy { maxLength } }"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn every_answer_says_no_store() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut answers = vec![
        app.http
            .get(app.url("/graphql"))
            .query(&[("query", "{ passwordPolicy { minLength } }")])
            .send()
            .await
            .unwrap(),
        app.http
            .post(app.url("/graphql"))
            .json(&json!({ "query": "{ passwordPolicy { minLength } }" }))
            .send()
            .await
            .unwrap(),
        app.http
            .post(app.url("/graphql"))
            .body("not json")
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap(),
    ];
    for path in ["/healthz", "/readyz", "/confirm", "/", "/nowhere"] {
        answers.push(app.http.get(app.url(path)).send().await.unwrap());
    }
    for answer in answers {
        assert_eq!(
            answer.headers()["cache-control"],
            "no-store",
            "{}",
            answer.url()
        );
    }
}

#[tokio::test]
async fn a_client_request_id_is_kept_only_when_short_and_plain() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let echoed = |id: String| {
        let request = app.http.get(app.url("/healthz")).header("x-request-id", id);
        async move {
            let response = request.send().await.unwrap();
            response.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_owned()
        }
    };
    assert_eq!(echoed("abc-123_x.y".to_owned()).await, "abc-123_x.y");
    for hostile in [
        "a".repeat(65),
        "has space".to_owned(),
        "semi;colon".to_owned(),
    ] {
        let answer = echoed(hostile.clone()).await;
        assert_ne!(answer, hostile);
        assert!(uuid::Uuid::parse_str(&answer).is_ok(), "{answer}");
    }
}

#[tokio::test]
async fn a_document_whose_validation_is_remembered_still_refuses_variables_that_do_not_fit() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let client = reqwest::Client::new();
    let confirm = "mutation($token: String!) { confirmAccount(token: $token) { user { id } } }";
    let register = "mutation($input: RegisterInput!) { register(input: $input) { accepted } }";
    let sign_in = "mutation($input: SignInInput!) { signIn(input: $input) { sessionToken } }";
    // Each document with variables that fit, and with variables that do not.
    let cases = [
        (
            confirm,
            json!({ "token": "not-a-real-token" }),
            vec![
                json!({ "token": 5 }),
                json!({ "token": null }),
                json!({ "token": ["x"] }),
            ],
        ),
        (
            register,
            json!({ "input": { "email": "not an address", "password": "correct horse battery" } }),
            vec![
                json!({ "input": { "email": "a@example.com" } }),
                json!({ "input": { "email": "a@example.com", "password": 1 } }),
                json!({ "input": { "email": "a@example.com", "password": "x", "admin": true } }),
            ],
        ),
        (
            sign_in,
            json!({ "input": { "email": "nobody@example.com", "password": "wrong", "delivery": "BEARER" } }),
            vec![
                json!({ "input": { "email": "nobody@example.com", "password": "wrong", "delivery": "SIDEWAYS" } }),
                json!({ "input": { "email": "nobody@example.com", "password": "wrong", "delivery": "bearer" } }),
            ],
        ),
    ];
    for (document, fits, misfits) in &cases {
        // Refusals are never remembered, so these are what validation itself answers.
        let mut fresh = Vec::new();
        for variables in misfits {
            let answer = post(
                &app,
                &client,
                &json!({ "query": document, "variables": variables }),
            )
            .await;
            assert_eq!(answer.0, 400, "{variables} must not validate: {}", answer.1);
            assert!(answer.1.get("data").is_none(), "{}", answer.1);
            fresh.push(answer);
        }
        for _ in 0..2 {
            let (status, body) = post(
                &app,
                &client,
                &json!({ "query": document, "variables": fits }),
            )
            .await;
            assert_eq!(status, 200, "{fits} validates: {body}");
            assert!(body.get("data").is_some(), "{body}");
        }
        for (variables, fresh) in misfits.iter().zip(&fresh) {
            let answer = post(
                &app,
                &client,
                &json!({ "query": document, "variables": variables }),
            )
            .await;
            assert_eq!(
                &answer, fresh,
                "{document} with {variables}, once remembered"
            );
        }
    }
}

#[tokio::test]
async fn a_client_sending_endless_new_documents_does_not_change_what_another_is_answered() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let flood = client_from("127.0.0.2");
    let other = client_from("127.0.0.3");
    let confirm = "mutation($token: String!) { confirmAccount(token: $token) { user { id } } }";
    let fits = json!({ "query": confirm, "variables": { "token": "not-a-real-token" } });
    let misfits = json!({ "query": confirm, "variables": { "token": 5 } });
    let refused = post(&app, &other, &misfits).await;
    assert_eq!(refused.0, 400, "{}", refused.1);
    let accepted = post(&app, &other, &fits).await;
    assert_eq!(accepted.0, 200, "{}", accepted.1);

    // More new documents than the document cache and the validation memo each hold (256).
    for i in 0..600 {
        let document = format!("query F{i} {{ p{i}: passwordPolicy {{ minLength }} }}");
        let (status, body) = post(&app, &flood, &json!({ "query": document })).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body["data"][format!("p{i}")]["minLength"].is_number(),
            "{body}"
        );
    }

    assert_eq!(post(&app, &other, &misfits).await, refused);
    assert_eq!(post(&app, &other, &fits).await, accepted);
}
