//! What one client can make admit spend: a budget of costly requests per client network and
//! minute (kept in the database), at most two costly operations per HTTP request, no hashing for
//! a request that will be refused anyway, and a bounded hashing queue in which client networks
//! take turns.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::{Value, json};

use crate::helpers::{Backend, PASSWORD, TestApp, client_from, on_both_backends};

on_both_backends!(
    one_client_over_its_budget_is_refused_without_hashing_while_another_is_served,
    behind_a_trusted_proxy_the_forwarded_client_is_counted,
    the_budget_survives_a_restart,
    a_client_over_its_budget_cannot_use_even_a_valid_link_which_still_works_from_elsewhere,
    simultaneous_confirmations_from_one_network_are_counted_exactly,
    a_password_is_judged_only_within_the_clients_budget,
    a_signed_in_password_check_takes_from_the_clients_budget_before_any_hashing,
    a_sign_up_refused_by_the_address_limits_does_no_hashing,
);

const CONFIRM: &str = "mutation($token: String!) {
    confirmAccount(token: $token) { user { id } retryAfterSeconds userErrors { code message } }
}";
const REGISTER: &str = "mutation($input: RegisterInput!) {
    register(input: $input) { accepted retryAfterSeconds userErrors { code message } }
}";

/// A token of the right shape that admit never issued.
fn unknown_token() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(uuid::Uuid::now_v7().as_bytes().repeat(2))
}

async fn confirm_from(app: &TestApp, client: &reqwest::Client) -> Value {
    let (status, body) = app
        .post_graphql_with(client, CONFIRM, json!({ "token": unknown_token() }))
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"]["confirmAccount"].clone()
}

fn first_code(payload: &Value) -> &str {
    payload["userErrors"][0]["code"]
        .as_str()
        .unwrap_or_default()
}

async fn one_client_over_its_budget_is_refused_without_hashing_while_another_is_served(
    backend: Backend,
) {
    let app = TestApp::spawn_with(backend, &["--ip-rate-limit", "3"]).await;
    let greedy = client_from("127.0.0.2");
    let other = client_from("127.0.0.3");
    for _ in 0..3 {
        assert_eq!(
            first_code(&confirm_from(&app, &greedy).await),
            "TOKEN_INVALID"
        );
    }
    let refused = confirm_from(&app, &greedy).await;
    assert_eq!(first_code(&refused), "RATE_LIMITED", "{refused}");
    let wait = refused["retryAfterSeconds"].as_u64().unwrap();
    assert!((1..=60).contains(&wait), "{refused}");
    assert!(
        refused["userErrors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("your network")
    );

    // A sign-up from the greedy client is refused before any hashing, and creates nothing.
    let hashed = app.hasher.completed();
    let (_, body) = app
        .post_graphql_with(
            &greedy,
            REGISTER,
            json!({ "input": { "email": "late@example.com", "password": PASSWORD } }),
        )
        .await;
    assert_eq!(
        first_code(&body["data"]["register"]),
        "RATE_LIMITED",
        "{body}"
    );
    assert_eq!(app.hasher.completed(), hashed);
    assert_eq!(
        entity::users::Entity::find().count(&app.db).await.unwrap(),
        0
    );

    // The other client has a budget of its own.
    assert_eq!(
        first_code(&confirm_from(&app, &other).await),
        "TOKEN_INVALID"
    );
    let (_, body) = app
        .post_graphql_with(
            &other,
            REGISTER,
            json!({ "input": { "email": "other@example.com", "password": PASSWORD } }),
        )
        .await;
    assert_eq!(body["data"]["register"]["accepted"], true, "{body}");
}

/// Judging a password's guessability can cost as much CPU as a hash (far more for a crafted
/// one), so it is done after the client's budget is taken, never before.
async fn a_password_is_judged_only_within_the_clients_budget(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--ip-rate-limit", "1"]).await;
    let greedy = client_from("127.0.0.2");
    let sign_up = |client, email| sign_up_from(&app, client, email, "password12345");
    let judged = sign_up(&greedy, "first@example.com").await;
    assert_eq!(first_code(&judged), "PASSWORD_TOO_COMMON", "{judged}");
    // Over its budget, the same sign-up is refused before its password is looked at.
    let refused = sign_up(&greedy, "second@example.com").await;
    assert_eq!(first_code(&refused), "RATE_LIMITED", "{refused}");
    // Another network is still told what is wrong with the password; nothing was created.
    let other = sign_up(&client_from("127.0.0.3"), "third@example.com").await;
    assert_eq!(first_code(&other), "PASSWORD_TOO_COMMON", "{other}");
    assert_eq!(app.hasher.completed(), 0);
    assert_eq!(
        entity::users::Entity::find().count(&app.db).await.unwrap(),
        0
    );
}

async fn a_client_over_its_budget_cannot_use_even_a_valid_link_which_still_works_from_elsewhere(
    backend: Backend,
) {
    use entity::{users, verification_tokens};
    let app = TestApp::spawn_with(backend, &["--ip-rate-limit", "2"]).await;
    let token = app
        .register_and_read_mail("owner@example.com")
        .await
        .token();
    let greedy = client_from("127.0.0.2");
    for _ in 0..2 {
        assert_eq!(
            first_code(&confirm_from(&app, &greedy).await),
            "TOKEN_INVALID"
        );
    }
    let (_, body) = app
        .post_graphql_with(&greedy, CONFIRM, json!({ "token": token }))
        .await;
    assert_eq!(
        first_code(&body["data"]["confirmAccount"]),
        "RATE_LIMITED",
        "{body}"
    );
    // Refused before the link was looked at: neither it nor the account changed.
    let user = users::Entity::find().one(&app.db).await.unwrap().unwrap();
    assert_eq!(user.confirmed_at, None);
    let link = verification_tokens::Entity::find()
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((link.consumed_at, link.superseded_at), (None, None));
    // The owner, on another network, confirms with it.
    let (_, body) = app
        .post_graphql_with(
            &client_from("127.0.0.3"),
            CONFIRM,
            json!({ "token": token }),
        )
        .await;
    assert_eq!(
        body["data"]["confirmAccount"]["user"]["id"],
        user.id.to_string(),
        "{body}"
    );
}

async fn simultaneous_confirmations_from_one_network_are_counted_exactly(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--ip-rate-limit", "5"]).await;
    let greedy = client_from("127.0.0.2");
    let answers = futures::future::join_all((0..12).map(|_| confirm_from(&app, &greedy))).await;
    let count = |code: &str| answers.iter().filter(|a| first_code(a) == code).count();
    assert_eq!(
        (count("TOKEN_INVALID"), count("RATE_LIMITED")),
        (5, 7),
        "{answers:?}"
    );
    let budgets = entity::client_budgets::Entity::find()
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(budgets.len(), 1, "{budgets:?}");
    assert_eq!(budgets[0].used, 12, "refused requests count too");
    // A minute later the count starts again.
    use sea_orm::{ColumnTrait as _, QueryFilter as _, sea_query::Expr};
    entity::client_budgets::Entity::update_many()
        .col_expr(
            entity::client_budgets::Column::WindowStartedAt,
            Expr::value(budgets[0].window_started_at - chrono::TimeDelta::seconds(61)),
        )
        .filter(entity::client_budgets::Column::ClientKey.eq(budgets[0].client_key.as_str()))
        .exec(&app.db)
        .await
        .unwrap();
    assert_eq!(
        first_code(&confirm_from(&app, &greedy).await),
        "TOKEN_INVALID"
    );
    let budget = entity::client_budgets::Entity::find()
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(budget.used, 1);
    assert!(budget.window_started_at > budgets[0].window_started_at);
}

async fn behind_a_trusted_proxy_the_forwarded_client_is_counted(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &["--ip-rate-limit", "2", "--trusted-proxies", "127.0.0.2/32"],
    )
    .await;
    let proxy = client_from("127.0.0.2");
    let stranger = client_from("127.0.0.3");
    let confirm = |client: &reqwest::Client, forwarded: &str| {
        let request = client
            .post(app.url("/graphql"))
            .header("x-forwarded-for", forwarded)
            .json(&json!({ "query": CONFIRM, "variables": { "token": unknown_token() } }));
        async move {
            let body: Value = request.send().await.unwrap().json().await.unwrap();
            first_code(&body["data"]["confirmAccount"]).to_owned()
        }
    };
    // Through the proxy, each forwarded client has its own budget; what a client wrote to the
    // left of the proxy's entry does not matter.
    assert_eq!(confirm(&proxy, "203.0.113.7").await, "TOKEN_INVALID");
    assert_eq!(
        confirm(&proxy, "198.51.100.1, 203.0.113.7").await,
        "TOKEN_INVALID"
    );
    assert_eq!(
        confirm(&proxy, "10.0.0.1, 203.0.113.7").await,
        "RATE_LIMITED"
    );
    assert_eq!(confirm(&proxy, "203.0.113.8").await, "TOKEN_INVALID");
    // A client that is not the proxy cannot pick someone else's budget, nor escape its own.
    assert_eq!(confirm(&stranger, "203.0.113.7").await, "TOKEN_INVALID");
    assert_eq!(confirm(&stranger, "203.0.113.9").await, "TOKEN_INVALID");
    assert_eq!(confirm(&stranger, "203.0.113.10").await, "RATE_LIMITED");
}

async fn the_budget_survives_a_restart(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--ip-rate-limit", "2"]).await;
    let client = client_from("127.0.0.2");
    for _ in 0..2 {
        assert_eq!(
            first_code(&confirm_from(&app, &client).await),
            "TOKEN_INVALID"
        );
    }
    let app = app.restart().await;
    assert_eq!(
        first_code(&confirm_from(&app, &client).await),
        "RATE_LIMITED"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_runs_at_most_two_costly_operations_batches_and_aliases_together() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let register = |i: usize| {
        json!({
            "query": REGISTER,
            "variables": { "input": { "email": format!("batch{i}@example.com"), "password": PASSWORD } },
        })
    };
    let batch: Vec<Value> = (0..5).map(register).collect();
    let answers: Vec<Value> = app
        .http
        .post(app.url("/graphql"))
        .json(&batch)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let accepted = answers
        .iter()
        .filter(|answer| answer["data"]["register"]["accepted"] == true)
        .count();
    let refused = answers
        .iter()
        .filter(|answer| answer["errors"][0]["extensions"]["code"] == "TOO_MANY_OPERATIONS")
        .count();
    assert_eq!((accepted, refused), (2, 3), "{answers:?}");
    assert_eq!(app.hasher.completed(), 2);
}

/// `register` for `email` with `password` from `client`; its payload.
async fn sign_up_from(
    app: &TestApp,
    client: &reqwest::Client,
    email: &str,
    password: &str,
) -> Value {
    let input = json!({ "input": { "email": email, "password": password } });
    let (status, body) = app.post_graphql_with(client, REGISTER, input).await;
    assert_eq!(status, 200, "{body}");
    body["data"]["register"].clone()
}

/// The check before hashing reads the address's limits and the client network's limits on it
/// in one statement, where either may be missing.
async fn a_sign_up_refused_by_the_address_limits_does_no_hashing(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &["--resend-cooldown", "0s", "--resend-hourly-limit", "1"],
    )
    .await;
    let first_network = client_from("127.0.0.2");
    let second_network = client_from("127.0.0.3");
    // Neither row exists yet.
    let first = sign_up_from(&app, &first_network, "again@example.com", PASSWORD).await;
    assert_eq!(first["accepted"], true, "{first}");
    assert_eq!(app.hasher.completed(), 1);
    // Both exist: this network's hour is used up.
    let second = sign_up_from(&app, &first_network, "again@example.com", PASSWORD).await;
    assert_eq!(first_code(&second), "RATE_LIMITED", "{second}");
    assert_eq!(app.hasher.completed(), 1);
    // The address's row exists, this network's does not: served.
    let other = sign_up_from(&app, &second_network, "again@example.com", PASSWORD).await;
    assert_eq!(other["accepted"], true, "{other}");
    assert_eq!(app.hasher.completed(), 2);
    // Another address from the first network: its limits are its own.
    let elsewhere = sign_up_from(&app, &first_network, "elsewhere@example.com", PASSWORD).await;
    assert_eq!(elsewhere["accepted"], true, "{elsewhere}");
    assert_eq!(app.hasher.completed(), 3);

    // The cooldown, kept in the address's row, refuses every network.
    let app = TestApp::spawn(backend).await;
    let first = sign_up_from(&app, &first_network, "again@example.com", PASSWORD).await;
    assert_eq!(first["accepted"], true, "{first}");
    for network in [&first_network, &second_network] {
        let again = sign_up_from(&app, network, "again@example.com", PASSWORD).await;
        assert_eq!(first_code(&again), "RATE_LIMITED", "{again}");
    }
    assert_eq!(app.hasher.completed(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_hashing_queue_answers_service_unavailable_at_once() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &["--hash-concurrency", "1", "--hash-queue", "1"],
    )
    .await;
    let answers = futures::future::join_all((0..40).map(|i| {
        let app = &app;
        async move {
            let response = app
                .http
                .post(app.url("/graphql"))
                .json(&json!({
                    "query": REGISTER,
                    "variables": { "input": { "email": format!("burst{i}@example.com"), "password": PASSWORD } },
                }))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|value| value.to_str().unwrap().to_owned());
            let body: Value = response.json().await.unwrap();
            (status, retry_after, body)
        }
    }))
    .await;
    let mut accepted = 0u64;
    let mut unavailable = 0u64;
    for (status, retry_after, body) in &answers {
        if body["data"]["register"]["accepted"] == true {
            accepted += 1;
            assert_eq!(*retry_after, None);
        } else {
            assert_eq!(*status, 503, "{body}");
            let extensions = &body["errors"][0]["extensions"];
            assert_eq!(extensions["code"], "SERVICE_UNAVAILABLE", "{body}");
            // When to try again: the backlog at the hashing pace, at least a second, in the
            // body and in the header alike.
            let seconds = extensions["retryAfterSeconds"].as_u64().unwrap_or_default();
            assert!((1..=60).contains(&seconds), "{body}");
            assert_eq!(retry_after.as_deref(), Some(seconds.to_string().as_str()));
            unavailable += 1;
        }
    }
    assert!(accepted >= 1 && unavailable >= 1, "{answers:?}");
    assert_eq!(accepted + unavailable, 40);
    assert_eq!(app.hasher.completed(), accepted);
}

/// Threads of normal priority that keep every core busy until dropped, as another program on
/// the machine might (a compile, a backup, a heavy query); a minute at most.
struct BusyCores {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl BusyCores {
    fn start() -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let threads = (0..cores)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let until = std::time::Instant::now() + Duration::from_secs(60);
                    while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < until {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for BusyCores {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ups_and_sign_ins_still_go_through_while_other_threads_keep_every_core_busy() {
    // The default deadline: a sign-up waits at most 4 s for its hash. Hashing threads that
    // yield to everything (Linux's idle class) got nothing from the busy cores, and every
    // sign-up and sign-in was answered SERVICE_UNAVAILABLE after those 4 s.
    let app = TestApp::spawn(Backend::Sqlite).await;
    let busy = BusyCores::start();
    let registered = app.register("busy@example.com", PASSWORD, None).await;
    assert_eq!(registered["accepted"], true, "{registered}");
    let token = app.smtp.next_mail().await.token();
    let confirmed = app.confirm(&token).await;
    assert_eq!(confirmed["user"]["confirmed"], true, "{confirmed}");
    // Sign-in checks the password on the same threads.
    let session = app.bearer_session("busy@example.com").await;
    drop(busy);
    assert_eq!(app.hasher.completed(), 2);
    let viewer = app.as_bearer(&session, "Viewer", json!({})).await;
    assert_eq!(
        viewer["viewer"]["user"]["email"], "busy@example.com",
        "{viewer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_up_from_another_network_is_hashed_before_a_flood_queued_ahead_of_it() {
    // One hashing thread, and a deadline that hashing at low priority on a busy machine does
    // not reach: this test is about the order of the queue, not its speed.
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &["--hash-concurrency", "1", "--db-timeout", "25s"],
    )
    .await;
    let flooder = client_from("127.0.0.2");
    let other = client_from("127.0.0.3");
    const FLOOD: usize = 24;
    let answered = AtomicUsize::new(0);
    let flood = futures::future::join_all((0..FLOOD).map(|i| {
        let (app, flooder, answered) = (&app, &flooder, &answered);
        async move {
            let (status, body) = app
                .post_graphql_with(
                    flooder,
                    REGISTER,
                    json!({ "input": { "email": format!("flood{i}@example.com"), "password": PASSWORD } }),
                )
                .await;
            answered.fetch_add(1, Ordering::SeqCst);
            (status, body)
        }
    }));
    let late_comer = async {
        // Once most of the flood waits for the thread...
        tokio::time::timeout(Duration::from_secs(25), async {
            while app.hasher.waiting() < FLOOD / 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the flood never queued");
        let before = answered.load(Ordering::SeqCst);
        let (_, body) = app
            .post_graphql_with(
                &other,
                REGISTER,
                json!({ "input": { "email": "late@example.com", "password": PASSWORD } }),
            )
            .await;
        (body, answered.load(Ordering::SeqCst) - before)
    };
    let (flood, (late, flood_answered_meanwhile)) = tokio::join!(flood, late_comer);
    assert_eq!(late["data"]["register"]["accepted"], true, "{late}");
    // ...the other network's sign-up waits for the flood's job being hashed and for one more
    // (the flood's turn came first), not for the dozen queued before it. One more may finish
    // while the late comer's answer is written.
    assert!(
        flood_answered_meanwhile <= 3,
        "{flood_answered_meanwhile} of the flood were answered first"
    );
    let mut accepted = 0u64;
    for (status, body) in &flood {
        if body["data"]["register"]["accepted"] == true {
            accepted += 1;
        } else {
            assert_eq!(*status, 503, "{body}");
        }
    }
    assert_eq!(app.hasher.completed(), accepted + 1);
}

/// Changing the password, changing the address and deleting the account each check the
/// password (a hash) and mail a notice that no per-address limit holds back: the client's
/// budget is taken first, as for a sign-in, so a session is no way around it.
async fn a_signed_in_password_check_takes_from_the_clients_budget_before_any_hashing(
    backend: Backend,
) {
    let app = TestApp::spawn_with(backend, &["--ip-rate-limit", "3"]).await;
    // Sign-up, confirmation and sign-in spend the default client's own budget.
    app.confirmed_account("owner@example.com").await;
    let token = app.bearer_session("owner@example.com").await;
    let authorization = format!("Bearer {token}");
    let signed_in = |client, name: &'static str, variables: Value| {
        let (app, authorization) = (&app, &authorization);
        async move {
            let headers = [("authorization", authorization.as_str())];
            let data = app
                .operation_with(client, name, variables, &headers)
                .await
                .1;
            data.as_object()
                .and_then(|fields| fields.values().next())
                .cloned()
                .unwrap_or_default()
        }
    };
    let change = |current: &str, new: &str| json!({ "input": { "currentPassword": current, "newPassword": new } });
    let greedy = client_from("127.0.0.2");

    let first = signed_in(
        &greedy,
        "ChangePassword",
        change(PASSWORD, "a second long passphrase"),
    )
    .await;
    assert_eq!(first["userErrors"], json!([]), "{first}");
    let second = signed_in(
        &greedy,
        "ChangePassword",
        change("a second long passphrase", "a third long passphrase"),
    )
    .await;
    assert_eq!(second["userErrors"], json!([]), "{second}");
    let wrong = signed_in(
        &greedy,
        "DeleteAccount",
        json!({ "password": "not the password" }),
    )
    .await;
    assert_eq!(first_code(&wrong), "INVALID_CREDENTIALS", "{wrong}");

    // The budget is spent: each of the three is refused before its password is hashed.
    let hashed = app.hasher.completed();
    let refused = [
        signed_in(&greedy, "ChangePassword", change("a third long passphrase", PASSWORD)).await,
        signed_in(&greedy, "DeleteAccount", json!({ "password": "a third long passphrase" })).await,
        signed_in(
            &greedy,
            "RequestEmailChange",
            json!({ "input": { "newEmail": "new@example.com", "password": "a third long passphrase" } }),
        )
        .await,
    ];
    for payload in &refused {
        assert_eq!(first_code(payload), "RATE_LIMITED", "{payload}");
        assert!(
            payload["userErrors"][0]["message"]
                .as_str()
                .is_some_and(|message| message.contains("your network")),
            "{payload}"
        );
        // `deleteAccount`'s payload has no wait to give; the other two must give one.
        if let Some(wait) = payload.get("retryAfterSeconds") {
            let wait = wait.as_u64();
            assert!(
                wait.is_some_and(|wait| (1..=60).contains(&wait)),
                "{payload}"
            );
        }
    }
    assert_eq!(app.hasher.completed(), hashed);
    assert_eq!(
        entity::users::Entity::find().count(&app.db).await.unwrap(),
        1,
        "the account is still there"
    );

    // The same session from another network has a budget of its own.
    let elsewhere = signed_in(
        &client_from("127.0.0.3"),
        "ChangePassword",
        change("a third long passphrase", PASSWORD),
    )
    .await;
    assert_eq!(elsewhere["userErrors"], json!([]), "{elsewhere}");
}
