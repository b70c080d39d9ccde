//! Password reset by email and password change by the signed-in owner, seen by the owner and
//! by an attacker.

use chrono::TimeDelta;
use entity::{outbox_messages, users, verification_tokens};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
use serde_json::{Value, json};

use crate::helpers::{
    Backend, PASSWORD, TestApp, client_from, error_codes, fail_in_a_row, on_both_backends,
};

on_both_backends!(
    a_reset_link_sets_a_new_password_ends_every_session_and_says_so_by_mail,
    reset_requests_answer_alike_for_every_address_and_mail_only_accounts,
    a_reset_confirms_an_unconfirmed_address_and_ends_its_pending_sign_ups,
    only_the_newest_unexpired_reset_link_of_that_purpose_works,
    the_new_password_meets_the_rules_and_a_refused_one_leaves_the_link_usable,
    two_resets_with_one_link_at_once_set_one_password,
    notices_go_out_even_when_the_address_has_used_up_its_mail_limits,
    changing_the_password_needs_the_current_one_and_ends_the_other_sessions,
    wrong_current_passwords_are_throttled_like_sign_ins,
    reset_and_link_requests_count_against_their_client_networks_budget,
);

const EMAIL: &str = "ada@example.com";
const NEW_PASSWORD: &str = "a brand new staple battery";

impl TestApp {
    async fn request_reset(&self, email: &str) -> Value {
        self.operation("RequestPasswordReset", json!({ "email": email }))
            .await["requestPasswordReset"]
            .clone()
    }

    async fn reset(&self, token: &str, password: &str) -> Value {
        self.operation(
            "ResetPassword",
            json!({ "input": { "token": token, "newPassword": password } }),
        )
        .await["resetPassword"]
            .clone()
    }

    /// Asks for a reset link and returns its token, read from the mail.
    async fn reset_token(&self, email: &str) -> String {
        let accepted = self.request_reset(email).await;
        assert_eq!(accepted["accepted"], true, "{accepted}");
        let mail = self.smtp.next_mail().await;
        assert!(mail.subject().contains("Reset"), "{}", mail.subject());
        mail.token()
    }

    /// Signs in with the bearer delivery; the token, or the error codes.
    async fn bearer(&self, email: &str, password: &str) -> Result<String, Vec<String>> {
        let payload = self
            .operation(
                "SignIn",
                json!({ "input": { "email": email, "password": password, "delivery": "BEARER" } }),
            )
            .await["signIn"]
            .clone();
        payload["sessionToken"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| error_codes(&payload))
    }

    async fn viewer_of(&self, token: &str) -> Value {
        self.as_bearer(token, "Viewer", json!({})).await["viewer"].clone()
    }

    async fn change_password(&self, token: &str, current: &str, new: &str) -> Value {
        let authorization = format!("Bearer {token}");
        self.operation_with(
            &self.http,
            "ChangePassword",
            json!({ "input": { "currentPassword": current, "newPassword": new } }),
            &[("authorization", &authorization)],
        )
        .await
        .1["changePassword"]
            .clone()
    }
}

async fn a_reset_link_sets_a_new_password_ends_every_session_and_says_so_by_mail(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--resend-cooldown", "0s"]).await;
    app.confirmed_account(EMAIL).await;
    let laptop = app.bearer(EMAIL, PASSWORD).await.unwrap();
    let phone = app.bearer(EMAIL, PASSWORD).await.unwrap();

    app.request_reset(EMAIL).await;
    let mail = app.smtp.next_mail().await;
    let link = mail.link();
    assert!(link.starts_with(&app.url("/reset#token=")), "{link}");
    assert!(mail.text().contains("valid for 1 hour"), "{}", mail.text());

    let reset = app.reset(&mail.token(), NEW_PASSWORD).await;
    assert_eq!(reset["userErrors"], json!([]));
    assert_eq!(reset["user"]["email"], EMAIL);

    for session in [&laptop, &phone] {
        assert_eq!(
            app.viewer_of(session).await,
            Value::Null,
            "every session ended"
        );
    }
    assert_eq!(
        app.bearer(EMAIL, PASSWORD).await,
        Err(vec!["INVALID_CREDENTIALS".to_owned()])
    );
    assert!(app.bearer(EMAIL, NEW_PASSWORD).await.is_ok());

    let notice = app.smtp.next_mail().await;
    assert!(
        notice.subject().contains("password was changed"),
        "{}",
        notice.subject()
    );
    assert!(
        notice.text().contains("every device was signed out"),
        "{}",
        notice.text()
    );
    assert!(
        !notice.text().contains("#token="),
        "a notice carries no link that acts"
    );

    let again = app
        .reset(&mail.token(), "yet another fine passphrase")
        .await;
    assert_eq!(error_codes(&again), ["TOKEN_USED"]);
    assert_eq!(again["user"], Value::Null);
}

async fn reset_requests_answer_alike_for_every_address_and_mail_only_accounts(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--resend-cooldown", "0s"]).await;
    app.register_and_read_mail("pending@example.com").await;
    app.confirmed_account(EMAIL).await;

    let unknown = app.request_reset("nobody@example.com").await;
    let pending = app.request_reset("pending@example.com").await;
    let confirmed = app.request_reset(EMAIL).await;
    assert_eq!(unknown, pending);
    assert_eq!(unknown, confirmed);
    assert_eq!(
        unknown,
        json!({ "accepted": true, "retryAfterSeconds": null, "userErrors": [] })
    );

    // Requests are handled in order: once the last one is mailed, the unknown one was handled.
    // The dispatcher sends several at once, so the two resets may arrive in either order.
    let mails = app.smtp.wait_for(4).await;
    let mut recipients: Vec<String> = mails[2..]
        .iter()
        .flat_map(|mail| mail.recipients.clone())
        .collect();
    recipients.sort();
    assert_eq!(recipients, [EMAIL, "pending@example.com"]);
    // And nothing was queued for the unknown address, to be sent later.
    let mut queued: Vec<String> = outbox_messages::Entity::find()
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|message| message.recipient)
        .collect();
    queued.sort();
    assert_eq!(
        queued,
        [EMAIL, EMAIL, "pending@example.com", "pending@example.com"]
    );

    let malformed = app.request_reset("not an address").await;
    assert_eq!(error_codes(&malformed), ["INVALID_EMAIL"]);
}

async fn a_reset_confirms_an_unconfirmed_address_and_ends_its_pending_sign_ups(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--resend-cooldown", "0s"]).await;
    let confirmation = app.register_and_read_mail(EMAIL).await.token();
    let token = app.reset_token(EMAIL).await;

    let reset = app.reset(&token, NEW_PASSWORD).await;

    assert_eq!(reset["user"]["confirmed"], true, "{reset}");
    let confirm = app.confirm(&confirmation).await;
    assert_eq!(error_codes(&confirm), ["TOKEN_SUPERSEDED"]);
    assert!(app.bearer(EMAIL, NEW_PASSWORD).await.is_ok());
    let stored = users::Entity::find().one(&app.db).await.unwrap().unwrap();
    assert!(stored.confirmed_at.is_some());
}

async fn only_the_newest_unexpired_reset_link_of_that_purpose_works(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--resend-cooldown", "0s"]).await;
    let confirmation = app.register_and_read_mail(EMAIL).await.token();
    app.confirm(&confirmation).await;
    let older = app.reset_token(EMAIL).await;
    let newer = app.reset_token(EMAIL).await;

    assert_eq!(
        error_codes(&app.reset(&older, NEW_PASSWORD).await),
        ["TOKEN_SUPERSEDED"]
    );
    assert_eq!(
        error_codes(&app.reset(&confirmation, NEW_PASSWORD).await),
        ["TOKEN_INVALID"]
    );
    assert_eq!(
        error_codes(&app.reset("not-a-token", NEW_PASSWORD).await),
        ["TOKEN_INVALID"]
    );
    // One character changed, whatever it was.
    let mut altered: Vec<char> = newer.chars().collect();
    altered[10] = if altered[10] == 'A' { 'B' } else { 'A' };
    let altered: String = altered.into_iter().collect();
    assert_eq!(
        error_codes(&app.reset(&altered, NEW_PASSWORD).await),
        ["TOKEN_INVALID"]
    );

    // Age the newest link past its hour instead of waiting.
    verification_tokens::Entity::update_many()
        .col_expr(
            verification_tokens::Column::ExpiresAt,
            Expr::value(chrono::Utc::now().fixed_offset() - TimeDelta::seconds(1)),
        )
        .filter(verification_tokens::Column::Purpose.eq("password_reset"))
        .exec(&app.db)
        .await
        .unwrap();
    assert_eq!(
        error_codes(&app.reset(&newer, NEW_PASSWORD).await),
        ["TOKEN_EXPIRED"]
    );
    assert!(
        app.bearer(EMAIL, PASSWORD).await.is_ok(),
        "the password is unchanged"
    );
}

async fn the_new_password_meets_the_rules_and_a_refused_one_leaves_the_link_usable(
    backend: Backend,
) {
    let app = TestApp::spawn_with(backend, &["--resend-cooldown", "0s"]).await;
    app.confirmed_account(EMAIL).await;
    let token = app.reset_token(EMAIL).await;

    for (password, code) in [
        ("short", "PASSWORD_TOO_SHORT"),
        ("password12345", "PASSWORD_TOO_COMMON"),
        ("ada ada ada ada ada", "PASSWORD_TOO_WEAK"),
    ] {
        let refused = app.reset(&token, password).await;
        assert_eq!(error_codes(&refused), [code], "{password}");
        assert_eq!(
            refused["userErrors"][0]["field"],
            json!(["input", "newPassword"])
        );
    }
    let reset = app.reset(&token, NEW_PASSWORD).await;
    assert_eq!(reset["userErrors"], json!([]));
}

async fn two_resets_with_one_link_at_once_set_one_password(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--resend-cooldown", "0s"]).await;
    app.confirmed_account(EMAIL).await;
    let token = app.reset_token(EMAIL).await;
    let passwords = ["first racing passphrase", "second racing passphrase"];

    let answers =
        futures::future::join_all(passwords.iter().map(|password| app.reset(&token, password)))
            .await;

    let winners: Vec<&str> = answers
        .iter()
        .zip(passwords)
        .filter(|(answer, _)| answer["user"] != Value::Null)
        .map(|(_, password)| password)
        .collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    let loser = answers
        .iter()
        .find(|answer| answer["user"] == Value::Null)
        .unwrap();
    assert_eq!(error_codes(loser), ["TOKEN_USED"]);
    assert!(app.bearer(EMAIL, winners[0]).await.is_ok());
    let other = passwords.iter().find(|p| **p != winners[0]).unwrap();
    assert!(app.bearer(EMAIL, other).await.is_err());
}

async fn notices_go_out_even_when_the_address_has_used_up_its_mail_limits(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &["--resend-cooldown", "0s", "--resend-hourly-limit", "2"],
    )
    .await;
    app.confirmed_account(EMAIL).await;
    let token = app.reset_token(EMAIL).await;
    let limited = app.request_reset(EMAIL).await;
    assert_eq!(
        error_codes(&limited),
        ["RATE_LIMITED"],
        "the limit is used up"
    );

    let reset = app.reset(&token, NEW_PASSWORD).await;

    assert_eq!(reset["userErrors"], json!([]));
    let notice = app.smtp.next_mail().await;
    assert!(
        notice.subject().contains("password was changed"),
        "{}",
        notice.subject()
    );
}

async fn changing_the_password_needs_the_current_one_and_ends_the_other_sessions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.confirmed_account(EMAIL).await;
    let this = app.bearer(EMAIL, PASSWORD).await.unwrap();
    let other = app.bearer(EMAIL, PASSWORD).await.unwrap();

    let anonymous = app
        .operation(
            "ChangePassword",
            json!({ "input": { "currentPassword": PASSWORD, "newPassword": NEW_PASSWORD } }),
        )
        .await["changePassword"]
        .clone();
    assert_eq!(error_codes(&anonymous), ["UNAUTHENTICATED"]);

    let wrong = app
        .change_password(&this, "not my password", NEW_PASSWORD)
        .await;
    assert_eq!(error_codes(&wrong), ["INVALID_CREDENTIALS"]);
    assert_eq!(
        wrong["userErrors"][0]["field"],
        json!(["input", "currentPassword"])
    );
    let weak = app.change_password(&this, PASSWORD, "short").await;
    assert_eq!(error_codes(&weak), ["PASSWORD_TOO_SHORT"]);
    assert_eq!(
        weak["userErrors"][0]["field"],
        json!(["input", "newPassword"])
    );
    assert!(
        app.viewer_of(&other).await != Value::Null,
        "nothing changed yet"
    );

    let changed = app.change_password(&this, PASSWORD, NEW_PASSWORD).await;

    assert_eq!(changed["userErrors"], json!([]));
    assert_eq!(changed["user"]["email"], EMAIL);
    assert_eq!(
        app.viewer_of(&this).await["user"]["email"],
        EMAIL,
        "this session stays"
    );
    assert_eq!(app.viewer_of(&other).await, Value::Null, "the others end");
    assert!(app.bearer(EMAIL, PASSWORD).await.is_err());
    assert!(app.bearer(EMAIL, NEW_PASSWORD).await.is_ok());
    let notice = app.smtp.next_mail().await;
    assert!(
        notice.subject().contains("password was changed"),
        "{}",
        notice.subject()
    );
    assert!(
        notice.text().contains("every other device was signed out"),
        "{}",
        notice.text()
    );
}

async fn wrong_current_passwords_are_throttled_like_sign_ins(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.confirmed_account(EMAIL).await;
    let session = app.bearer(EMAIL, PASSWORD).await.unwrap();

    let wrong_once = || async {
        error_codes(
            &app.change_password(&session, "not my password", NEW_PASSWORD)
                .await,
        )
    };
    fail_in_a_row(7, wrong_once).await;
    let hashes = app.hasher.completed();
    let waiting = app.change_password(&session, PASSWORD, NEW_PASSWORD).await;
    assert_eq!(error_codes(&waiting), ["RATE_LIMITED"]);
    assert!(waiting["retryAfterSeconds"].as_u64().unwrap() >= 1);
    assert_eq!(app.hasher.completed(), hashes, "no password was checked");
    assert_eq!(
        app.bearer(EMAIL, PASSWORD).await,
        Err(vec!["RATE_LIMITED".to_owned()])
    );
}

async fn reset_and_link_requests_count_against_their_client_networks_budget(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--ip-rate-limit", "3"]).await;
    let attacker = client_from("127.0.0.2");
    let neighbour = client_from("127.0.0.3");
    let run = |client: &reqwest::Client, name: &'static str, variables: Value| {
        let (app, client) = (&app, client.clone());
        async move {
            let (_, data) = app.operation_with(&client, name, variables, &[]).await;
            data.as_object().unwrap().values().next().unwrap().clone()
        }
    };
    let garbage = || json!({ "input": { "token": "A".repeat(43), "newPassword": NEW_PASSWORD } });

    // Asking for links and trying tokens share one budget per network.
    for i in 0..2 {
        let asked = run(
            &attacker,
            "RequestPasswordReset",
            json!({ "email": format!("p{i}@example.com") }),
        )
        .await;
        assert_eq!(asked["accepted"], true, "{asked}");
    }
    assert_eq!(
        error_codes(&run(&attacker, "ResetPassword", garbage()).await),
        ["TOKEN_INVALID"]
    );
    let hashes = app.hasher.completed();
    for (name, variables) in [
        ("ResetPassword", garbage()),
        ("RequestPasswordReset", json!({ "email": "p9@example.com" })),
        ("ConfirmEmailChange", json!({ "token": "A".repeat(43) })),
        ("RevertEmailChange", json!({ "token": "A".repeat(43) })),
    ] {
        let limited = run(&attacker, name, variables).await;
        assert_eq!(error_codes(&limited), ["RATE_LIMITED"], "{name}: {limited}");
        let message = limited["userErrors"][0]["message"].as_str().unwrap();
        assert!(message.contains("network"), "{name}: {message}");
    }
    assert_eq!(
        app.hasher.completed(),
        hashes,
        "refused requests cost no hash"
    );

    let served = run(&neighbour, "ResetPassword", garbage()).await;
    assert_eq!(error_codes(&served), ["TOKEN_INVALID"]);
    let served = run(
        &neighbour,
        "RequestPasswordReset",
        json!({ "email": "p9@example.com" }),
    )
    .await;
    assert_eq!(served["accepted"], true);
}
