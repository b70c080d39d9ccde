//! Signing in, sessions and the viewer, seen by a browser, a native app and an attacker.

use std::time::Duration;

use chrono::TimeDelta;
use entity::{sessions, users};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{
    helpers::{
        Backend, PASSWORD, TestApp, TestDatabase, client_from, error_codes, fail_in_a_row,
        on_both_backends,
    },
    process::AdmitProcess,
    smtp::SmtpServer,
};

on_both_backends!(
    signing_in_after_confirmation_sets_an_http_only_cookie_that_opens_the_viewer,
    unknown_addresses_and_wrong_passwords_get_the_same_answer_after_the_same_work,
    email_not_confirmed_is_told_only_to_the_right_password,
    failed_sign_ins_make_later_attempts_wait_without_checking_the_password,
    concurrent_guesses_cannot_slip_past_the_count,
    simultaneous_right_sign_ins_each_get_a_session_of_their_own,
    sign_ins_count_against_the_budget_of_their_client_network,
    bearer_sessions_hand_out_the_token_once_and_set_no_cookie,
    a_viewer_ends_its_own_sessions_and_nobody_elses,
    signing_out_ends_the_session_and_clears_the_cookie,
    behind_https_the_cookie_is_secure_and_host_only,
    the_cookie_counts_only_in_json_posts_from_allowed_origins,
    sessions_end_at_their_expiry_and_after_the_idle_timeout_and_are_purged,
    last_seen_is_written_at_most_once_a_minute,
    a_hash_made_with_older_parameters_is_renewed_at_sign_in,
    malformed_and_oversized_sign_ins_get_typed_answers_and_cost_no_hash,
);

const EMAIL: &str = "ada@example.com";

fn credentials(email: &str, password: &str) -> Value {
    json!({ "input": { "email": email, "password": password } })
}

fn bearer(email: &str, password: &str) -> Value {
    json!({ "input": { "email": email, "password": password, "delivery": "BEARER" } })
}

/// The `admit_session` value a `Set-Cookie` header sets, and the header itself.
fn set_cookie(headers: &reqwest::header::HeaderMap) -> Option<(String, String)> {
    let header = headers.get("set-cookie")?.to_str().ok()?.to_owned();
    let value = header
        .strip_prefix("admit_session=")?
        .split(';')
        .next()?
        .to_owned();
    Some((value, header))
}

impl TestApp {
    async fn sign_in(&self, variables: Value) -> (reqwest::header::HeaderMap, Value) {
        let (headers, data) = self
            .operation_with(&self.http, "SignIn", variables, &[])
            .await;
        (headers, data["signIn"].clone())
    }

    /// Signs in with the cookie delivery; the cookie's value.
    async fn cookie_session(&self, email: &str) -> String {
        let (headers, payload) = self.sign_in(credentials(email, PASSWORD)).await;
        assert_eq!(payload["userErrors"], json!([]), "{payload}");
        set_cookie(&headers).expect("a session cookie").0
    }

    /// Runs `name` with the session `cookie`, from the service's own origin.
    async fn with_cookie(
        &self,
        name: &str,
        variables: Value,
        cookie: &str,
    ) -> (reqwest::header::HeaderMap, Value) {
        let cookie = format!("admit_session={cookie}");
        self.operation_with(&self.http, name, variables, &[("cookie", &cookie)])
            .await
    }

    async fn session_rows(&self) -> Vec<sessions::Model> {
        sessions::Entity::find().all(&self.db).await.unwrap()
    }
}

async fn signing_in_after_confirmation_sets_an_http_only_cookie_that_opens_the_viewer(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    app.confirmed_account(EMAIL).await;

    let user_agent = format!("Mozilla/5.0 (X11)\tInjected: yes {}", "x".repeat(300));
    let (headers, payload) = app
        .operation_with(
            &app.http,
            "SignIn",
            credentials("  ADA@example.com ", PASSWORD),
            &[("user-agent", &user_agent)],
        )
        .await;
    let payload = &payload["signIn"];

    assert_eq!(payload["userErrors"], json!([]));
    assert_eq!(payload["user"]["email"], EMAIL);
    assert_eq!(payload["sessionToken"], Value::Null);
    assert_eq!(payload["session"]["current"], true);
    let (token, header) = set_cookie(&headers).expect("a session cookie");
    assert_eq!(token.len(), 43);
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=2592000"] {
        assert!(header.contains(attribute), "{attribute} missing: {header}");
    }
    assert!(!header.contains("Secure"), "plain http: {header}");
    assert!(
        !payload.to_string().contains(&token),
        "the token is not in the body"
    );

    // At rest: the token's SHA-256 only, and a cleaned user agent.
    let rows = app.session_rows().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].token_hash,
        hex::encode(Sha256::digest(token.as_bytes()))
    );
    assert!(!format!("{:?}", rows[0]).contains(&token));
    let kept = rows[0].user_agent.clone().unwrap_or_default();
    assert!(
        kept.starts_with("Mozilla/5.0 (X11)Injected: yes xx"),
        "{kept}"
    );
    assert_eq!(kept.chars().count(), 256);
    let expires = rows[0].expires_at - rows[0].created_at;
    assert_eq!(expires, TimeDelta::days(30));

    let (_, viewer) = app.with_cookie("Viewer", json!({}), &token).await;
    let viewer = &viewer["viewer"];
    assert_eq!(viewer["user"]["email"], EMAIL);
    assert_eq!(viewer["session"]["id"], payload["session"]["id"]);
    assert_eq!(viewer["session"]["current"], true);
    assert_eq!(viewer["sessions"].as_array().unwrap().len(), 1);

    let anonymous = app.operation("Viewer", json!({})).await;
    assert_eq!(anonymous["viewer"], Value::Null);
}

async fn unknown_addresses_and_wrong_passwords_get_the_same_answer_after_the_same_work(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    app.confirmed_account(EMAIL).await;
    let hashes = app.hasher.completed();

    let (wrong_headers, wrong) = app
        .sign_in(credentials(EMAIL, "correct horse battery stapler"))
        .await;
    let (unknown_headers, unknown) = app
        .sign_in(credentials("nobody@example.com", PASSWORD))
        .await;

    assert_eq!(wrong, unknown);
    assert_eq!(error_codes(&wrong), ["INVALID_CREDENTIALS"]);
    assert_eq!(wrong["user"], Value::Null);
    assert_eq!(wrong["session"], Value::Null);
    assert!(set_cookie(&wrong_headers).is_none() && set_cookie(&unknown_headers).is_none());
    // One Argon2 computation each: the unknown address was checked against a dummy.
    assert_eq!(app.hasher.completed(), hashes + 2);
    assert!(app.session_rows().await.is_empty());
}

async fn email_not_confirmed_is_told_only_to_the_right_password(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register_and_read_mail(EMAIL).await;

    let (_, wrong) = app
        .sign_in(credentials(EMAIL, "correct horse battery stapler"))
        .await;
    assert_eq!(error_codes(&wrong), ["INVALID_CREDENTIALS"]);

    let (headers, right) = app.sign_in(credentials(EMAIL, PASSWORD)).await;
    assert_eq!(error_codes(&right), ["EMAIL_NOT_CONFIRMED"]);
    let message = right["userErrors"][0]["message"].as_str().unwrap();
    assert!(message.contains("new link"), "{message}");
    assert_eq!(right["user"], Value::Null);
    assert!(set_cookie(&headers).is_none());
    assert!(app.session_rows().await.is_empty());
}

async fn failed_sign_ins_make_later_attempts_wait_without_checking_the_password(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.confirmed_account(EMAIL).await;

    // Five free failures, then waits of 1 s and 2 s: after the seventh, the next waits 4 s.
    let wrong_once = || async {
        let (_, payload) = app
            .sign_in(credentials(EMAIL, "wrong password, again"))
            .await;
        error_codes(&payload)
    };
    fail_in_a_row(7, wrong_once).await;
    // The right password during the wait: refused unchecked, like a wrong one.
    let hashes = app.hasher.completed();
    let (_, right) = app.sign_in(credentials(EMAIL, PASSWORD)).await;
    let (_, wrong) = app
        .sign_in(credentials(EMAIL, "wrong password, again"))
        .await;
    assert_eq!(error_codes(&right), ["RATE_LIMITED"]);
    assert_eq!(right["user"], Value::Null);
    let wait = right["retryAfterSeconds"].as_u64().unwrap();
    assert!((1..=4).contains(&wait), "{wait}");
    // Identical answers but for the seconds left, which may have ticked between the two.
    let without_wait = |payload: &Value| {
        let text: String = payload
            .to_string()
            .chars()
            .filter(|c| !c.is_ascii_digit())
            .collect();
        text
    };
    assert_eq!(without_wait(&right), without_wait(&wrong));
    assert_eq!(app.hasher.completed(), hashes, "no password was checked");

    // Unknown addresses are counted the same way.
    let ghost_once = || async {
        let (_, payload) = app
            .sign_in(credentials("ghost@example.com", PASSWORD))
            .await;
        error_codes(&payload)
    };
    fail_in_a_row(6, ghost_once).await;
    let (_, ghost) = app
        .sign_in(credentials("ghost@example.com", PASSWORD))
        .await;
    assert_eq!(error_codes(&ghost), ["RATE_LIMITED"]);

    // The owner gets in once the wait is over; waiting attempts do not extend it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let signed_in = loop {
        let (_, payload) = app.sign_in(credentials(EMAIL, PASSWORD)).await;
        if payload["user"] != Value::Null {
            break payload;
        }
        assert_eq!(error_codes(&payload), ["RATE_LIMITED"]);
        assert!(tokio::time::Instant::now() < deadline, "still waiting");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(signed_in["user"]["email"], EMAIL);

    // Success forgets the failures: five more are free again.
    for _ in 0..5 {
        let (_, payload) = app
            .sign_in(credentials(EMAIL, "wrong password, again"))
            .await;
        assert_eq!(error_codes(&payload), ["INVALID_CREDENTIALS"]);
    }
}

async fn concurrent_guesses_cannot_slip_past_the_count(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.confirmed_account(EMAIL).await;
    let hashes = app.hasher.completed();

    let answers = futures::future::join_all(
        (0..12).map(|i| app.sign_in(credentials(EMAIL, &format!("guess number {i}")))),
    )
    .await;

    let mut refused = 0;
    let mut checked = 0;
    for (_, payload) in &answers {
        match error_codes(payload).as_slice() {
            [code] if code == "INVALID_CREDENTIALS" => checked += 1,
            [code] if code == "RATE_LIMITED" => refused += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!((checked, refused), (5, 7));
    assert_eq!(app.hasher.completed(), hashes + 5);
}

async fn simultaneous_right_sign_ins_each_get_a_session_of_their_own(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.confirmed_account(EMAIL).await;

    let answers =
        futures::future::join_all((0..4).map(|_| app.sign_in(bearer(EMAIL, PASSWORD)))).await;

    let mut tokens: Vec<&str> = answers
        .iter()
        .map(|(_, payload)| payload["sessionToken"].as_str().expect("signed in"))
        .collect();
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), 4);
    assert_eq!(app.session_rows().await.len(), 4);
}

async fn sign_ins_count_against_the_budget_of_their_client_network(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--ip-rate-limit", "3"]).await;
    let attacker = client_from("127.0.0.2");
    let neighbour = client_from("127.0.0.3");

    for i in 0..3 {
        let (_, data) = app
            .operation_with(
                &attacker,
                "SignIn",
                credentials(&format!("a{i}@example.com"), PASSWORD),
                &[],
            )
            .await;
        assert_eq!(error_codes(&data["signIn"]), ["INVALID_CREDENTIALS"]);
    }
    let hashes = app.hasher.completed();
    let (_, limited) = app
        .operation_with(
            &attacker,
            "SignIn",
            credentials("a9@example.com", PASSWORD),
            &[],
        )
        .await;
    let limited = &limited["signIn"];
    assert_eq!(error_codes(limited), ["RATE_LIMITED"]);
    let message = limited["userErrors"][0]["message"].as_str().unwrap();
    assert!(message.contains("network"), "{message}");
    assert!(limited["retryAfterSeconds"].as_u64().unwrap() >= 1);
    assert_eq!(
        app.hasher.completed(),
        hashes,
        "a refused sign-in costs no hash"
    );

    let (_, served) = app
        .operation_with(
            &neighbour,
            "SignIn",
            credentials("a9@example.com", PASSWORD),
            &[],
        )
        .await;
    assert_eq!(error_codes(&served["signIn"]), ["INVALID_CREDENTIALS"]);
}

async fn bearer_sessions_hand_out_the_token_once_and_set_no_cookie(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.confirmed_account(EMAIL).await;

    let (headers, payload) = app.sign_in(bearer(EMAIL, PASSWORD)).await;
    let token = payload["sessionToken"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 43);
    assert!(set_cookie(&headers).is_none());
    let rows = app.session_rows().await;
    assert_eq!(
        rows[0].token_hash,
        hex::encode(Sha256::digest(token.as_bytes()))
    );

    let viewer = app.as_bearer(&token, "Viewer", json!({})).await;
    assert_eq!(viewer["viewer"]["user"]["email"], EMAIL);
    // Over GET too: a bearer token is no cookie, so no cross-site request can carry it.
    let response = app
        .http
        .get(app.url("/graphql"))
        .query(&[("query", "{ viewer { user { email } } }")])
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["viewer"]["user"]["email"], EMAIL);

    // A second device: both listed, newest first, this one marked current.
    let cookie = app.cookie_session(EMAIL).await;
    let listed = app.as_bearer(&token, "Viewer", json!({})).await;
    let sessions = listed["viewer"]["sessions"].as_array().unwrap().clone();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[0]["current"], false);
    assert_eq!(sessions[1]["current"], true);
    assert_eq!(sessions[1]["id"], payload["session"]["id"]);
    let (_, from_cookie) = app.with_cookie("Viewer", json!({}), &cookie).await;
    assert_eq!(from_cookie["viewer"]["sessions"][0]["current"], true);
}

async fn a_viewer_ends_its_own_sessions_and_nobody_elses(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.confirmed_account(EMAIL).await;
    app.confirmed_account("grace@example.com").await;
    let laptop = app.cookie_session(EMAIL).await;
    let phone = app.bearer_session(EMAIL).await;
    let other = app.bearer_session("grace@example.com").await;
    let other_id =
        app.as_bearer(&other, "Viewer", json!({})).await["viewer"]["session"]["id"].clone();
    let phone_id =
        app.as_bearer(&phone, "Viewer", json!({})).await["viewer"]["session"]["id"].clone();

    // Someone else's session, or no session at all: NOT_FOUND, nothing changes.
    for id in [
        other_id.clone(),
        json!("not-a-session"),
        json!(uuid::Uuid::now_v7().to_string()),
    ] {
        let (_, data) = app
            .with_cookie("RevokeSession", json!({ "id": id }), &laptop)
            .await;
        assert_eq!(data["revokeSession"]["revoked"], false);
        assert_eq!(error_codes(&data["revokeSession"]), ["NOT_FOUND"]);
    }
    let still = app.as_bearer(&other, "Viewer", json!({})).await;
    assert_eq!(still["viewer"]["user"]["email"], "grace@example.com");

    // Its own: the phone is signed out.
    let (_, data) = app
        .with_cookie("RevokeSession", json!({ "id": phone_id }), &laptop)
        .await;
    assert_eq!(data["revokeSession"]["revoked"], true);
    assert_eq!(
        app.as_bearer(&phone, "Viewer", json!({})).await["viewer"],
        Value::Null
    );

    // All but this one.
    let tablet = app.bearer_session(EMAIL).await;
    let (_, data) = app
        .with_cookie("RevokeOtherSessions", json!({}), &laptop)
        .await;
    assert_eq!(data["revokeOtherSessions"]["revoked"], true);
    assert_eq!(
        app.as_bearer(&tablet, "Viewer", json!({})).await["viewer"],
        Value::Null
    );
    let (_, kept) = app.with_cookie("Viewer", json!({}), &laptop).await;
    assert_eq!(kept["viewer"]["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(
        app.as_bearer(&other, "Viewer", json!({})).await["viewer"]["user"]["email"],
        "grace@example.com"
    );

    // Without a session, every one of them says so.
    let anonymous = app
        .operation("RevokeSession", json!({ "id": other_id }))
        .await;
    assert_eq!(
        error_codes(&anonymous["revokeSession"]),
        ["UNAUTHENTICATED"]
    );
    let anonymous = app.operation("RevokeOtherSessions", json!({})).await;
    assert_eq!(
        error_codes(&anonymous["revokeOtherSessions"]),
        ["UNAUTHENTICATED"]
    );
    let anonymous = app.operation("SignOut", json!({})).await;
    assert_eq!(anonymous["signOut"]["signedOut"], false);
    assert_eq!(error_codes(&anonymous["signOut"]), ["UNAUTHENTICATED"]);
}

async fn signing_out_ends_the_session_and_clears_the_cookie(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.confirmed_account(EMAIL).await;
    let cookie = app.cookie_session(EMAIL).await;

    let (headers, data) = app.with_cookie("SignOut", json!({}), &cookie).await;

    assert_eq!(
        data["signOut"],
        json!({ "signedOut": true, "userErrors": [] })
    );
    let (value, header) = set_cookie(&headers).expect("the cookie is cleared");
    assert_eq!(value, "");
    assert!(
        header.contains("Max-Age=0") && header.contains("HttpOnly"),
        "{header}"
    );
    assert!(app.session_rows().await.is_empty());
    let (_, viewer) = app.with_cookie("Viewer", json!({}), &cookie).await;
    assert_eq!(viewer["viewer"], Value::Null);
}

async fn behind_https_the_cookie_is_secure_and_host_only(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--public-url", "https://id.example.test/"]).await;
    app.confirmed_account(EMAIL).await;

    let (headers, _) = app.sign_in(credentials(EMAIL, PASSWORD)).await;
    let header = headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(header.starts_with("__Host-admit_session="), "{header}");
    for attribute in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(header.contains(attribute), "{attribute} missing: {header}");
    }
    assert!(!header.contains("Domain"), "{header}");
    let token = &header["__Host-admit_session=".len()..][..43];

    // Only the __Host- cookie counts, and only from the public origin.
    let host = format!("__Host-admit_session={token}");
    let plain = format!("admit_session={token}");
    assert_eq!(
        viewer_from(&app, &host, Some("https://id.example.test")).await["viewer"]["user"]["email"],
        EMAIL
    );
    assert_eq!(viewer_from(&app, &plain, None).await["viewer"], Value::Null);
    assert_eq!(
        viewer_from(&app, &host, Some("http://id.example.test")).await["viewer"],
        Value::Null
    );
}

async fn the_cookie_counts_only_in_json_posts_from_allowed_origins(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--cors-origins", "https://app.example.com"]).await;
    app.confirmed_account(EMAIL).await;
    let cookie = format!("admit_session={}", app.cookie_session(EMAIL).await);
    let own_origin = format!("http://{}", app.address);
    assert_eq!(
        viewer_from(&app, &cookie, None).await["viewer"]["user"]["email"],
        EMAIL
    );
    assert_eq!(
        viewer_from(&app, &cookie, Some(&own_origin)).await["viewer"]["user"]["email"],
        EMAIL
    );
    assert_eq!(
        viewer_from(&app, &cookie, Some("https://app.example.com")).await["viewer"]["user"]["email"],
        EMAIL
    );
    assert_eq!(
        viewer_from(&app, &cookie, Some("https://evil.example")).await["viewer"],
        Value::Null
    );
    assert_eq!(
        viewer_from(&app, &cookie, Some("null")).await["viewer"],
        Value::Null
    );

    // A foreign page cannot sign the person out either.
    let (_, data) = app
        .operation_with(
            &app.http,
            "SignOut",
            json!({}),
            &[("cookie", &cookie), ("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(error_codes(&data["signOut"]), ["UNAUTHENTICATED"]);
    assert_eq!(app.session_rows().await.len(), 1);

    // A GET (a link, an image, a prefetch) does not count the cookie.
    let response = app
        .http
        .get(app.url("/graphql"))
        .query(&[("query", "{ viewer { user { email } } }")])
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["viewer"], Value::Null);

    // A bearer token is sent on purpose: the origin does not matter.
    let token = app.bearer_session(EMAIL).await;
    let authorization = format!("Bearer {token}");
    let (_, data) = app
        .operation_with(
            &app.http,
            "Viewer",
            json!({}),
            &[
                ("authorization", &authorization),
                ("origin", "https://evil.example"),
            ],
        )
        .await;
    assert_eq!(data["viewer"]["user"]["email"], EMAIL);
}

/// The viewer a request with `cookie` and `origin` sees.
async fn viewer_from(app: &TestApp, cookie: &str, origin: Option<&str>) -> Value {
    let mut headers = vec![("cookie", cookie)];
    headers.extend(origin.map(|origin| ("origin", origin)));
    app.operation_with(&app.http, "Viewer", json!({}), &headers)
        .await
        .1
}

async fn sessions_end_at_their_expiry_and_after_the_idle_timeout_and_are_purged(backend: Backend) {
    // The server's own purge job, every 200 ms, is what removes ended sessions.
    let app = TestApp::spawn_with(
        backend,
        &[
            "--session-ttl",
            "1h",
            "--session-idle-timeout",
            "10m",
            "--purge-interval",
            "200ms",
        ],
    )
    .await;
    app.confirmed_account(EMAIL).await;

    let (headers, payload) = app.sign_in(credentials(EMAIL, PASSWORD)).await;
    let (expiring, header) = set_cookie(&headers).unwrap();
    assert!(header.contains("Max-Age=3600"), "{header}");
    let created: chrono::DateTime<chrono::Utc> = payload["session"]["createdAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let expires: chrono::DateTime<chrono::Utc> = payload["session"]["expiresAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(expires - created, TimeDelta::hours(1));
    let idle = app.bearer_session(EMAIL).await;
    let live = app.bearer_session(EMAIL).await;

    // Age the rows instead of waiting: the database is what the service consults.
    let now = chrono::Utc::now().fixed_offset();
    let hash = |token: &str| hex::encode(Sha256::digest(token.as_bytes()));
    sessions::Entity::update_many()
        .col_expr(
            sessions::Column::ExpiresAt,
            Expr::value(now - TimeDelta::seconds(1)),
        )
        .filter(sessions::Column::TokenHash.eq(hash(&expiring)))
        .exec(&app.db)
        .await
        .unwrap();
    sessions::Entity::update_many()
        .col_expr(
            sessions::Column::LastSeenAt,
            Expr::value(now - TimeDelta::minutes(11)),
        )
        .filter(sessions::Column::TokenHash.eq(hash(&idle)))
        .exec(&app.db)
        .await
        .unwrap();

    let (_, viewer) = app.with_cookie("Viewer", json!({}), &expiring).await;
    assert_eq!(viewer["viewer"], Value::Null);
    assert_eq!(
        app.as_bearer(&idle, "Viewer", json!({})).await["viewer"],
        Value::Null
    );
    let live_viewer = app.as_bearer(&live, "Viewer", json!({})).await;
    assert_eq!(
        live_viewer["viewer"]["sessions"].as_array().unwrap().len(),
        1,
        "ended sessions are not listed"
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows = app.session_rows().await;
        if rows.len() == 1 {
            assert_eq!(rows[0].token_hash, hash(&live), "the live session stays");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ended sessions not purged: {} rows",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn last_seen_is_written_at_most_once_a_minute(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.confirmed_account(EMAIL).await;
    let token = app.bearer_session(EMAIL).await;
    let first = app.session_rows().await[0].last_seen_at;

    for _ in 0..3 {
        app.as_bearer(&token, "Viewer", json!({})).await;
    }
    assert_eq!(app.session_rows().await[0].last_seen_at, first);

    let earlier = chrono::Utc::now().fixed_offset() - TimeDelta::minutes(2);
    sessions::Entity::update_many()
        .col_expr(sessions::Column::LastSeenAt, Expr::value(earlier))
        .exec(&app.db)
        .await
        .unwrap();
    let viewer = app.as_bearer(&token, "Viewer", json!({})).await;
    let seen = app.session_rows().await[0].last_seen_at;
    assert!(
        seen > earlier + TimeDelta::minutes(1),
        "{seen} after {earlier}"
    );
    let reported: chrono::DateTime<chrono::Utc> = viewer["viewer"]["session"]["lastSeenAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(reported.timestamp_micros(), seen.timestamp_micros());
}

async fn a_hash_made_with_older_parameters_is_renewed_at_sign_in(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.confirmed_account(EMAIL).await;
    let old = {
        use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, Version};
        let params = Params::new(8 * 1024, 3, 1, None).unwrap();
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_with_salt(PASSWORD.as_bytes(), b"an old salt, 16b")
            .unwrap()
            .to_string()
    };
    users::Entity::update_many()
        .col_expr(users::Column::PasswordHash, Expr::value(old.clone()))
        .exec(&app.db)
        .await
        .unwrap();

    let (_, payload) = app.sign_in(credentials(EMAIL, PASSWORD)).await;
    assert_eq!(payload["userErrors"], json!([]));

    let stored = users::Entity::find()
        .one(&app.db)
        .await
        .unwrap()
        .unwrap()
        .password_hash;
    assert_ne!(stored, old);
    assert!(
        stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{stored}"
    );
    let (_, again) = app.sign_in(credentials(EMAIL, PASSWORD)).await;
    assert_eq!(again["userErrors"], json!([]));
    let (_, wrong) = app
        .sign_in(credentials(EMAIL, "correct horse battery stapler"))
        .await;
    assert_eq!(error_codes(&wrong), ["INVALID_CREDENTIALS"]);
}

async fn malformed_and_oversized_sign_ins_get_typed_answers_and_cost_no_hash(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.confirmed_account(EMAIL).await;
    let hashes = app.hasher.completed();

    let (_, malformed) = app.sign_in(credentials("not an address", PASSWORD)).await;
    assert_eq!(error_codes(&malformed), ["INVALID_EMAIL"]);
    assert_eq!(
        malformed["userErrors"][0]["field"],
        json!(["input", "email"])
    );
    let (_, oversized) = app.sign_in(credentials(EMAIL, &"x".repeat(5_000))).await;
    assert_eq!(error_codes(&oversized), ["INVALID_CREDENTIALS"]);
    assert_eq!(app.hasher.completed(), hashes);

    // An unknown delivery is a request error, not a sign-in.
    let (status, body) = app
        .post_graphql(
            "mutation($input: SignInInput!) { signIn(input: $input) { sessionToken } }",
            json!({ "input": { "email": EMAIL, "password": PASSWORD, "delivery": "SMS" } }),
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("SMS"),
        "{body}"
    );
    assert!(app.session_rows().await.is_empty());

    // Garbage credentials are no session, not an error.
    for (name, value) in [
        ("authorization", "Bearer not-a-token"),
        ("authorization", "Basic YWRhOnB3"),
        ("cookie", "admit_session=%00%ff; admit_session=x"),
    ] {
        let (_, viewer) = app
            .operation_with(&app.http, "Viewer", json!({}), &[(name, value)])
            .await;
        assert_eq!(viewer["viewer"], Value::Null, "{name}: {value}");
    }

    // Two sign-ins in one request at most, batches and aliases together.
    let (_, body) = app
        .post_graphql(
            "mutation($i: SignInInput!) { a: signIn(input: $i) { sessionToken } b: signIn(input: $i) { sessionToken } c: signIn(input: $i) { sessionToken } }",
            json!({ "i": credentials(EMAIL, "wrong")["input"] }),
        )
        .await;
    assert!(
        body["errors"]
            .as_array()
            .is_some_and(|errors| !errors.is_empty()),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_and_session_tokens_never_reach_the_log() {
    let database = TestDatabase::create(Backend::Sqlite).await;
    let smtp = SmtpServer::start().await;
    let smtp_url = smtp.url();
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("DATABASE_URL", database.url.as_str()),
        ("ADMIT_SMTP_URL", smtp_url.as_str()),
        ("ADMIT_MAIL_FROM", "admit <no-reply@admit.test>"),
        // Mail to one address within a minute would otherwise wait.
        ("ADMIT_RESEND_COOLDOWN", "0s"),
        ("RUST_LOG", "debug"),
    ];
    let mut process = AdmitProcess::start(dir.path(), &env).await;
    let graphql = |query: &'static str, variables: Value| {
        let process = &process;
        async move {
            process
                .graphql_with_status(query, variables)
                .await
                .expect("an answer")
                .1
        }
    };

    graphql(
        "mutation($i: RegisterInput!) { register(input: $i) { accepted } }",
        json!({ "i": { "email": EMAIL, "password": PASSWORD } }),
    )
    .await;
    let link_token = smtp.next_mail().await.token();
    graphql(
        "mutation($t: String!) { confirmAccount(token: $t) { user { id } } }",
        json!({ "t": link_token }),
    )
    .await;
    let signed_in = graphql(
        "mutation($i: SignInInput!) { signIn(input: $i) { sessionToken } }",
        json!({ "i": { "email": EMAIL, "password": PASSWORD, "delivery": "BEARER" } }),
    )
    .await;
    let token = signed_in["data"]["signIn"]["sessionToken"]
        .as_str()
        .unwrap()
        .to_owned();
    graphql(
        "mutation($i: SignInInput!) { signIn(input: $i) { sessionToken } }",
        json!({ "i": { "email": EMAIL, "password": "a wrong password for the log" } }),
    )
    .await;
    // A reset by link, and a move to another address: their tokens and the new password.
    graphql(
        "mutation($e: String!) { requestPasswordReset(email: $e) { accepted } }",
        json!({ "e": EMAIL }),
    )
    .await;
    let reset_token = smtp.next_mail().await.token();
    let new_password = "a new password for the log";
    graphql(
        "mutation($i: ResetPasswordInput!) { resetPassword(input: $i) { user { id } } }",
        json!({ "i": { "token": reset_token, "newPassword": new_password } }),
    )
    .await;
    let signed_in = graphql(
        "mutation($i: SignInInput!) { signIn(input: $i) { sessionToken } }",
        json!({ "i": { "email": EMAIL, "password": new_password, "delivery": "BEARER" } }),
    )
    .await;
    let second = signed_in["data"]["signIn"]["sessionToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let moved = process
        .graphql_with_bearer(
            &second,
            "mutation($i: RequestEmailChangeInput!) { requestEmailChange(input: $i) { accepted } }",
            json!({ "i": { "newEmail": "ada@moved.example", "password": new_password } }),
        )
        .await;
    assert_eq!(
        moved["data"]["requestEmailChange"]["accepted"], true,
        "{moved}"
    );
    let mut change_token = String::new();
    for mail in smtp.wait_for(4).await {
        if mail.recipients == ["ada@moved.example"] {
            change_token = mail.token();
        }
    }
    assert!(!change_token.is_empty(), "the change link was mailed");
    for line in [
        "signed in",
        "invalid credentials",
        "password reset",
        "email change requested",
    ] {
        process.wait_for_line(line).await;
    }

    let log = process.log().await;
    for secret in [
        PASSWORD,
        "a wrong password for the log",
        new_password,
        token.as_str(),
        second.as_str(),
        link_token.as_str(),
        reset_token.as_str(),
        change_token.as_str(),
    ] {
        assert!(!log.contains(secret), "{secret:?} is in the log:\n{log}");
    }
    let token_hash = hex::encode(Sha256::digest(token.as_bytes()));
    assert!(!log.contains(&token_hash), "the token's hash is in the log");
}
