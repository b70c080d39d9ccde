//! `/metrics` for operators: Prometheus text on a listener of its own, never on the public one.

use crate::helpers::{Backend, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_apart_from_the_api_and_count_the_funnel() {
    let app = TestApp::spawn_with(Backend::Sqlite, &["--metrics-listen", "127.0.0.1:0"]).await;
    let token = app
        .register_and_read_mail("counted@example.com")
        .await
        .token();
    let confirmed = app.confirm(&token).await;
    assert_eq!(confirmed["user"]["confirmed"], true);
    // A name a client chose is not a label.
    app.operation_named_freely("MyVeryOwnName").await;

    let metrics = app.metrics.expect("a metrics listener");
    let response = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    for expected in [
        r#"admit_graphql_requests_total{operation="Register",outcome="ok"}"#,
        r#"admit_graphql_requests_total{operation="ConfirmAccount",outcome="ok"}"#,
        r#"admit_graphql_requests_total{operation="other",outcome="ok"}"#,
        "admit_graphql_request_duration_seconds_bucket",
        "admit_signups_total",
        "admit_confirmations_total",
        "admit_signup_to_confirmation_seconds_bucket",
        "admit_mail_queued_total",
        "admit_mail_sent_total",
        "admit_hash_queue_wait_seconds_bucket",
        "admit_outbox_depth",
        "admit_outbox_oldest_due_seconds",
        r#"admit_db_pool_connections{state="open"}"#,
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    assert!(!text.contains("MyVeryOwnName"));

    // Not on the public listener.
    let public = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(public.status(), 404);
}
