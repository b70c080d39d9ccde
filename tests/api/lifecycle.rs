//! The life of an unconfirmed account: new links on request, superseded old links, limits per
//! address, and registering again.

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use entity::{mail_throttles, outbox_messages, users};
use sea_orm::{EntityTrait, PaginatorTrait, sea_query::Expr};
use serde_json::{Value, json};

use crate::helpers::{Backend, PASSWORD, TestApp, client_from, on_both_backends};

on_both_backends!(
    resend_confirmation_sends_a_new_link_and_the_old_one_answers_superseded,
    resend_confirmation_answers_unknown_and_confirmed_addresses_alike_and_mails_nothing,
    account_mail_is_rate_limited_per_address_for_every_address_alike,
    at_most_the_hourly_limit_of_account_emails_reach_one_address,
    rate_limits_hold_across_a_restart,
    a_link_confirms_the_sign_up_that_sent_it_whoever_signed_up_later,
    a_resend_renews_the_newest_sign_up_and_says_so_when_another_is_pending,
    simultaneous_resends_for_one_address_send_one_email,
    one_network_cannot_silence_an_address_for_its_owner,
);

const ACCEPTED: fn() -> Value =
    || json!({ "accepted": true, "retryAfterSeconds": null, "userErrors": [] });

fn assert_rate_limited(payload: &Value, field: &[&str], at_most: u64) -> u64 {
    assert_eq!(payload["accepted"], false, "{payload}");
    assert_eq!(
        payload["userErrors"][0]["code"], "RATE_LIMITED",
        "{payload}"
    );
    assert_eq!(payload["userErrors"][0]["field"], json!(field));
    let wait = payload["retryAfterSeconds"]
        .as_u64()
        .expect("retryAfterSeconds");
    assert!((1..=at_most).contains(&wait), "{payload}");
    wait
}

async fn resend_confirmation_sends_a_new_link_and_the_old_one_answers_superseded(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--resend-cooldown", "0s"]).await;
    let old = app
        .register_and_read_mail("resend@example.com")
        .await
        .token();

    assert_eq!(app.resend(" Resend@Example.com ").await, ACCEPTED());
    let mail = app.smtp.next_mail().await;
    assert_eq!(mail.recipients, vec!["Resend@example.com".to_owned()]);
    let new = mail.token();
    assert_ne!(new, old);

    let stale = app.confirm(&old).await;
    assert_eq!(stale["user"], Value::Null);
    assert_eq!(stale["userErrors"][0]["code"], "TOKEN_SUPERSEDED");
    let confirmed = app.confirm(&new).await;
    assert_eq!(confirmed["user"]["confirmed"], true);
}

async fn resend_confirmation_answers_unknown_and_confirmed_addresses_alike_and_mails_nothing(
    backend: Backend,
) {
    let app = TestApp::spawn_with(backend, &["--resend-cooldown", "0s"]).await;
    let token = app
        .register_and_read_mail("confirmed@example.com")
        .await
        .token();
    app.confirm(&token).await;
    app.register_and_read_mail("pending@example.com").await;

    let unknown = app.resend("nobody@example.com").await;
    let confirmed = app.resend("confirmed@example.com").await;
    let pending = app.resend("pending@example.com").await;

    assert_eq!(unknown, ACCEPTED());
    assert_eq!(confirmed, unknown);
    assert_eq!(pending, unknown);
    let mail = app.smtp.next_mail().await;
    assert_eq!(mail.recipients, vec!["pending@example.com".to_owned()]);
    // Only the pending account got mail: two registrations and that one resend.
    assert_eq!(
        outbox_messages::Entity::find()
            .count(&app.db)
            .await
            .unwrap(),
        3
    );

    let invalid = app.resend("not an address").await;
    assert_eq!(invalid["accepted"], false);
    assert_eq!(invalid["userErrors"][0]["code"], "INVALID_EMAIL");
    assert_eq!(invalid["userErrors"][0]["field"], json!(["email"]));
}

async fn account_mail_is_rate_limited_per_address_for_every_address_alike(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register_and_read_mail("cool@example.com").await;

    // A registered address, an unknown one: the second request within the cooldown is refused
    // the same way for both.
    assert_rate_limited(&app.resend("cool@example.com").await, &["email"], 60);
    assert_eq!(app.resend("ghost@example.com").await, ACCEPTED());
    assert_rate_limited(&app.resend("GHOST@example.com").await, &["email"], 60);
    assert_rate_limited(
        &app.register("Cool@Example.com", "another password entirely", None)
            .await,
        &["input", "email"],
        60,
    );
    // Other addresses are not affected.
    assert_eq!(app.resend("someone-else@example.com").await, ACCEPTED());
    // The refused register changed nothing.
    let user = users::Entity::find().one(&app.db).await.unwrap().unwrap();
    let hash = PasswordHash::new(&user.password_hash).unwrap();
    assert!(
        Argon2::default()
            .verify_password(PASSWORD.as_bytes(), &hash)
            .is_ok()
    );
    assert_eq!(
        outbox_messages::Entity::find()
            .count(&app.db)
            .await
            .unwrap(),
        1
    );
}

async fn at_most_the_hourly_limit_of_account_emails_reach_one_address(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &["--resend-cooldown", "0s", "--resend-hourly-limit", "5"],
    )
    .await;
    app.register_and_read_mail("busy@example.com").await;
    for _ in 0..4 {
        assert_eq!(app.resend("busy@example.com").await, ACCEPTED());
    }
    let wait = assert_rate_limited(&app.resend("busy@example.com").await, &["email"], 3600);
    assert!(wait > 3500, "the window has most of an hour to run: {wait}");
    app.smtp.wait_for(5).await;
    assert_eq!(
        outbox_messages::Entity::find()
            .count(&app.db)
            .await
            .unwrap(),
        5
    );
}

async fn rate_limits_hold_across_a_restart(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_eq!(app.resend("restart@example.com").await, ACCEPTED());

    let app = app.restart().await;

    assert_rate_limited(&app.resend("restart@example.com").await, &["email"], 60);
    let throttles = mail_throttles::Entity::find().all(&app.db).await.unwrap();
    assert_eq!(throttles.len(), 1);
    assert_eq!(throttles[0].email_key, "restart@example.com");
    assert_eq!(throttles[0].sent_in_window, 1);
}

async fn a_link_confirms_the_sign_up_that_sent_it_whoever_signed_up_later(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--resend-cooldown", "0s"]).await;
    // The owner signs up...
    let owner_password = "plum sunrise over tallinn";
    let payload = app
        .register("victim@example.com", owner_password, Some("Owner"))
        .await;
    assert_eq!(payload, ACCEPTED());
    let owner_mail = app.smtp.next_mail().await;
    assert_eq!(owner_mail.subject(), "Confirm your admit account");
    // ...then someone else signs the same address up with a password of their own. The owner's
    // inbox gets a link that says plainly what happened.
    let payload = app
        .register(
            "Victim@example.com",
            "attacker chosen secret words",
            Some("Mallory"),
        )
        .await;
    assert_eq!(payload, ACCEPTED());
    let again = app.smtp.next_mail().await;
    assert_eq!(
        again.subject(),
        "Your address was signed up for admit again"
    );
    assert!(
        again
            .text()
            .contains("If it was not you, ignore this email")
    );
    assert!(!again.text().contains("Mallory"));

    // The owner's own link still works, and activates the owner's password and name.
    let confirmed = app.confirm(&owner_mail.token()).await;
    assert_eq!(confirmed["user"]["displayName"], "Owner", "{confirmed}");
    assert_eq!(confirmed["user"]["confirmed"], true);
    let users = users::Entity::find().all(&app.db).await.unwrap();
    assert_eq!(users.len(), 1);
    let hash = PasswordHash::new(&users[0].password_hash).unwrap();
    assert!(
        Argon2::default()
            .verify_password(owner_password.as_bytes(), &hash)
            .is_ok()
    );
    assert!(
        Argon2::default()
            .verify_password(b"attacker chosen secret words", &hash)
            .is_err()
    );
    // The other sign-up ended with the confirmation.
    assert_eq!(
        app.confirm(&again.token()).await["userErrors"][0]["code"],
        "TOKEN_SUPERSEDED"
    );
}

async fn a_resend_renews_the_newest_sign_up_and_says_so_when_another_is_pending(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--resend-cooldown", "0s"]).await;
    let first = app
        .register_and_read_mail("twice@example.com")
        .await
        .token();
    app.register("twice@example.com", "second sign up words", None)
        .await;
    let second = app.smtp.next_mail().await.token();
    assert_eq!(app.resend("twice@example.com").await, ACCEPTED());
    let renewed = app.smtp.next_mail().await;
    // The renewed link belongs to the newest sign-up, and is worded as a repeated sign-up.
    assert_eq!(
        renewed.subject(),
        "Your address was signed up for admit again"
    );
    assert_eq!(
        app.confirm(&second).await["userErrors"][0]["code"],
        "TOKEN_SUPERSEDED"
    );
    // The first sign-up's link was left alone: it still confirms, with its own password.
    let confirmed = app.confirm(&first).await;
    assert_eq!(confirmed["user"]["confirmed"], true, "{confirmed}");
    let user = users::Entity::find().one(&app.db).await.unwrap().unwrap();
    let hash = PasswordHash::new(&user.password_hash).unwrap();
    assert!(
        Argon2::default()
            .verify_password(PASSWORD.as_bytes(), &hash)
            .is_ok()
    );
    assert_eq!(
        app.confirm(&renewed.token()).await["userErrors"][0]["code"],
        "TOKEN_SUPERSEDED"
    );
}

async fn simultaneous_resends_for_one_address_send_one_email(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register_and_read_mail("twice@example.com").await;
    // Let the cooldown that the sign-up email started run out.
    let earlier = chrono::Utc::now().fixed_offset() - chrono::TimeDelta::minutes(2);
    mail_throttles::Entity::update_many()
        .col_expr(mail_throttles::Column::LastSentAt, Expr::value(earlier))
        .exec(&app.db)
        .await
        .unwrap();

    let answers = futures::future::join_all((0..6).map(|_| app.resend("twice@example.com"))).await;

    let accepted = answers
        .iter()
        .filter(|answer| **answer == ACCEPTED())
        .count();
    assert_eq!(accepted, 1, "{answers:?}");
    for answer in answers.iter().filter(|answer| **answer != ACCEPTED()) {
        assert_rate_limited(answer, &["email"], 60);
    }
    // The accepted request is mailed by the worker after the answer: wait for it.
    crate::delivery::wait_for_outbox(&app.db, "the resent link queued", |rows| rows.len() >= 2)
        .await;
    assert_eq!(
        outbox_messages::Entity::find()
            .count(&app.db)
            .await
            .unwrap(),
        2
    );
}

async fn one_network_cannot_silence_an_address_for_its_owner(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[
            "--resend-cooldown",
            "0s",
            "--resend-hourly-limit",
            "3",
            "--resend-daily-limit",
            "4",
        ],
    )
    .await;
    async fn resend(app: &TestApp, client: &reqwest::Client) -> Value {
        let (_, body) = app
            .post_graphql_with(
                client,
                "mutation($email: String!) {
                   resendConfirmation(email: $email) { accepted retryAfterSeconds userErrors { field message code } }
                 }",
                json!({ "email": "victim@example.com" }),
            )
            .await;
        body["data"]["resendConfirmation"].clone()
    }
    let resend_from = |client| resend(&app, client);
    let attacker = client_from("127.0.0.2");
    let owner = client_from("127.0.0.3");
    let third = client_from("127.0.0.4");
    // One network gets half the daily cap, however often it asks...
    for _ in 0..2 {
        assert_eq!(resend_from(&attacker).await, ACCEPTED());
    }
    let refused = resend_from(&attacker).await;
    let wait = assert_rate_limited(&refused, &["email"], 86_400);
    assert!(
        wait > 3_600,
        "the attacker waits for the day, not the hour: {wait}"
    );
    // ...so the owner, from another network, is still served.
    assert_eq!(resend_from(&owner).await, ACCEPTED());
    assert_eq!(resend_from(&owner).await, ACCEPTED());
    // The daily cap per address bounds the mail any number of networks can cause.
    assert_rate_limited(&resend_from(&third).await, &["email"], 86_400);
    let rows = entity::mail_throttle_clients::Entity::find()
        .all(&app.db)
        .await
        .unwrap();
    // The refused request of the third network left nothing behind.
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|row| row.client_key.len() == 64 && !row.client_key.contains('.'))
    );
}
