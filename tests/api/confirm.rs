use chrono::Utc;
use entity::{users, verification_tokens};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::helpers::{Backend, TestApp, link_row, on_both_backends};

on_both_backends!(
    confirm_account_activates_the_account_from_the_mailed_link,
    confirm_account_returns_the_same_user_when_the_token_is_presented_again,
    confirm_account_rejects_an_altered_or_malformed_token,
    confirm_account_rejects_an_expired_token,
    confirm_account_rejects_a_token_issued_for_another_purpose,
    simultaneous_confirmations_with_one_token_confirm_the_account_once,
    two_sign_ups_links_clicked_at_once_confirm_one_and_supersede_the_other,
    the_token_lifetime_follows_the_setting_and_the_email_states_it,
    operators_name_the_product_and_override_templates_from_a_folder,
);

async fn confirm_account_activates_the_account_from_the_mailed_link(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("Turing@Example.com", crate::helpers::PASSWORD, Some("Alan"))
        .await;
    let token = app.smtp.next_mail().await.token();

    let payload = app.confirm(&token).await;

    assert_eq!(payload["userErrors"], json!([]));
    let user = &payload["user"];
    assert_eq!(user["email"], "Turing@Example.com");
    assert_eq!(user["displayName"], "Alan");
    assert_eq!(user["confirmed"], true);
    let stored = users::Entity::find().one(&app.db).await.unwrap().unwrap();
    assert_eq!(user["id"], stored.id.to_string());
    let confirmed_at = stored.confirmed_at.expect("confirmed in the database");
    let reported: chrono::DateTime<Utc> = user["confirmedAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(reported.timestamp_micros(), confirmed_at.timestamp_micros());
    let consumed = verification_tokens::Entity::find()
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert!(consumed.consumed_at.is_some());
}

async fn confirm_account_returns_the_same_user_when_the_token_is_presented_again(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app
        .register_and_read_mail("again@example.com")
        .await
        .token();

    let first = app.confirm(&token).await;
    let second = app.confirm(&token).await;

    assert_eq!(first["user"]["confirmed"], true);
    assert_eq!(first, second);
}

async fn confirm_account_rejects_an_altered_or_malformed_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app
        .register_and_read_mail("altered@example.com")
        .await
        .token();
    let mut altered: Vec<char> = token.chars().collect();
    altered[10] = if altered[10] == 'A' { 'B' } else { 'A' };
    let altered: String = altered.into_iter().collect();

    for bad in [
        altered.as_str(),
        "",
        "not a token",
        &token[..42],
        &format!("{token}x"),
    ] {
        let payload = app.confirm(bad).await;
        assert_eq!(payload["user"], serde_json::Value::Null, "{bad:?}");
        assert_eq!(payload["userErrors"][0]["code"], "TOKEN_INVALID", "{bad:?}");
        assert_eq!(payload["userErrors"][0]["field"], json!(["token"]));
    }
    let user = users::Entity::find().one(&app.db).await.unwrap().unwrap();
    assert_eq!(user.confirmed_at, None);
}

async fn confirm_account_rejects_an_expired_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.register_and_read_mail("late@example.com").await.token();
    // Age the token rather than sleep: the row is what the service consults.
    app.expire_tokens(None, chrono::TimeDelta::seconds(1)).await;

    let payload = app.confirm(&token).await;

    assert_eq!(payload["user"], serde_json::Value::Null);
    assert_eq!(payload["userErrors"][0]["code"], "TOKEN_EXPIRED");
    let user = users::Entity::find().one(&app.db).await.unwrap().unwrap();
    assert_eq!(user.confirmed_at, None);
}

async fn confirm_account_rejects_a_token_issued_for_another_purpose(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register_and_read_mail("purpose@example.com").await;
    let user = users::Entity::find().one(&app.db).await.unwrap().unwrap();
    let other = "A".repeat(43);
    let now = Utc::now().fixed_offset();
    verification_tokens::Entity::insert(link_row(
        user.id,
        "password_reset",
        hex::encode(Sha256::digest(other.as_bytes())),
        now,
        now + chrono::TimeDelta::hours(1),
    ))
    .exec(&app.db)
    .await
    .unwrap();

    let payload = app.confirm(&other).await;

    assert_eq!(payload["userErrors"][0]["code"], "TOKEN_INVALID");
    let user = users::Entity::find().one(&app.db).await.unwrap().unwrap();
    assert_eq!(user.confirmed_at, None);
}

async fn simultaneous_confirmations_with_one_token_confirm_the_account_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app
        .register_and_read_mail("together@example.com")
        .await
        .token();

    let answers = futures::future::join_all((0..8).map(|_| app.confirm(&token))).await;

    for answer in &answers {
        assert_eq!(answer["userErrors"], json!([]), "{answer}");
        assert_eq!(answer, &answers[0]);
    }
    let confirmed: Vec<_> = users::Entity::find()
        .filter(users::Column::ConfirmedAt.is_not_null())
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(confirmed.len(), 1);
    let reported: chrono::DateTime<Utc> = answers[0]["user"]["confirmedAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        reported.timestamp_micros(),
        confirmed[0].confirmed_at.unwrap().timestamp_micros()
    );
}

async fn two_sign_ups_links_clicked_at_once_confirm_one_and_supersede_the_other(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--resend-cooldown", "0s"]).await;
    // Rounds on fresh addresses, so that either link may come first.
    for round in 0..4 {
        let email = format!("pair{round}@example.com");
        app.register(&email, crate::helpers::PASSWORD, Some("First"))
            .await;
        let first = app.smtp.next_mail().await.token();
        app.register(&email, "another fine passphrase", Some("Second"))
            .await;
        let second = app.smtp.next_mail().await.token();

        let (a, b) = tokio::join!(app.confirm(&first), app.confirm(&second));

        let first_won = a["userErrors"] == json!([]);
        let (winner, loser, name, won, lost) = if first_won {
            (&first, &second, "First", &a, &b)
        } else {
            (&second, &first, "Second", &b, &a)
        };
        assert_eq!(won["userErrors"], json!([]), "{won}");
        assert_eq!(won["user"]["displayName"], name, "{won}");
        assert_eq!(lost["userErrors"][0]["code"], "TOKEN_SUPERSEDED", "{lost}");
        let stored = users::Entity::find()
            .filter(users::Column::Email.eq(email.as_str()))
            .one(&app.db)
            .await
            .unwrap()
            .unwrap();
        assert!(stored.confirmed_at.is_some());
        assert_eq!(stored.display_name.as_deref(), Some(name));
        let again = app.confirm(winner).await;
        assert_eq!(again["user"]["displayName"], name, "{again}");
        let refused = app.confirm(loser).await;
        assert_eq!(refused["userErrors"][0]["code"], "TOKEN_SUPERSEDED");
        let links = verification_tokens::Entity::find()
            .filter(verification_tokens::Column::UserId.eq(stored.id))
            .all(&app.db)
            .await
            .unwrap();
        assert_eq!(links.iter().filter(|l| l.consumed_at.is_some()).count(), 1);
        assert_eq!(
            links.iter().filter(|l| l.superseded_at.is_some()).count(),
            1
        );
    }
}

async fn the_token_lifetime_follows_the_setting_and_the_email_states_it(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--token-ttl", "2h"]).await;
    app.register("brief@example.com", crate::helpers::PASSWORD, None)
        .await;
    let mail = app.smtp.next_mail().await;

    assert!(mail.text().contains("valid for 2 hours"), "{}", mail.text());
    assert!(mail.html().contains("valid for 2 hours"));
    let token = verification_tokens::Entity::find()
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((token.expires_at - token.created_at).num_minutes(), 120);
}

async fn operators_name_the_product_and_override_templates_from_a_folder(backend: Backend) {
    let templates = tempfile::tempdir().unwrap();
    std::fs::write(
        templates.path().join("confirmation.subject.txt"),
        "{{ product_name }}: one click left",
    )
    .unwrap();
    let dir = templates.path().to_str().unwrap();
    let app = TestApp::spawn_with(
        backend,
        &["--product-name", "Acme Cloud", "--template-dir", dir],
    )
    .await;
    app.register("brand@example.com", crate::helpers::PASSWORD, Some("Bo"))
        .await;
    let mail = app.smtp.next_mail().await;

    assert_eq!(mail.subject(), "Acme Cloud: one click left");
    // The parts not overridden are the built-in ones, with the product name.
    assert!(
        mail.text().contains("activate your Acme Cloud account"),
        "{}",
        mail.text()
    );
    assert!(mail.html().contains("Confirm my account"));
    assert_eq!(mail.html_links(), vec![mail.link(), mail.link()]);
    assert_eq!(app.confirm(&mail.token()).await["user"]["confirmed"], true);
}
