use argon2::{Argon2, PasswordHash, PasswordVerifier};
use entity::{outbox_messages, users, verification_tokens};
use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{Backend, PASSWORD, TestApp, on_both_backends};

on_both_backends!(
    register_accepts_a_valid_sign_up_and_mails_a_confirmation_link,
    register_stores_an_unconfirmed_user_with_an_argon2id_hash_of_the_normalized_password,
    register_never_keeps_the_token_in_clear,
    register_reports_every_invalid_field_at_once,
    register_refuses_display_names_that_hide_characters_or_carry_links,
    register_rejects_addresses_that_cannot_receive_mail,
    register_counts_password_length_in_code_points_within_configured_limits,
    register_answers_a_confirmed_address_like_a_new_one_and_only_notifies_its_owner,
    simultaneous_registrations_of_one_address_create_exactly_one_account,
    password_policy_query_reports_the_configured_limits,
    mail_queued_during_an_smtp_outage_is_delivered_when_the_server_returns,
);

fn codes(payload: &Value) -> Vec<(String, String)> {
    payload["userErrors"]
        .as_array()
        .expect("userErrors")
        .iter()
        .map(|error| {
            (
                error["field"].as_array().map_or_else(String::new, |path| {
                    path.iter()
                        .map(|p| p.as_str().unwrap_or_default())
                        .collect::<Vec<_>>()
                        .join(".")
                }),
                error["code"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

async fn register_accepts_a_valid_sign_up_and_mails_a_confirmation_link(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let payload = app
        .register("  Ada@Example.COM ", PASSWORD, Some("Ada"))
        .await;
    assert_eq!(
        payload,
        json!({ "accepted": true, "retryAfterSeconds": null, "userErrors": [] })
    );

    let mail = app.smtp.next_mail().await;
    assert_eq!(mail.recipients, vec!["Ada@example.com".to_owned()]);
    assert_eq!(mail.subject(), "Confirm your admit account");
    // The address is not proven yet: nothing the requester wrote is mailed to it.
    assert!(mail.text().starts_with("Hello,"), "{}", mail.text());
    assert!(!mail.text().contains("Ada,") && !mail.html().contains("Ada,"));
    assert!(
        mail.text().contains("valid for 24 hours"),
        "{}",
        mail.text()
    );
    let link = mail.link();
    assert!(link.starts_with(&app.url("/confirm#token=")), "{link}");
    let token = mail.token();
    assert_eq!(token.len(), 43);
    assert!(
        token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    );
    // The button and the raw link beneath it.
    assert_eq!(mail.html_links(), vec![link.clone(), link.clone()]);
    let outbox = outbox_messages::Entity::find().all(&app.db).await.unwrap();
    assert_eq!(mail.message_id(), format!("{}@admit.test", outbox[0].id));
    app.stop().await;
}

async fn register_stores_an_unconfirmed_user_with_an_argon2id_hash_of_the_normalized_password(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    // "é" as e + combining acute: NFKC composes it, so the composed form must verify.
    let typed = "cafe\u{301} con leche, por favor";
    let composed = "caf\u{e9} con leche, por favor";

    let payload = app.register("Grace@Example.com", typed, None).await;
    assert_eq!(payload["accepted"], true);

    let stored = users::Entity::find().all(&app.db).await.unwrap();
    assert_eq!(stored.len(), 1);
    let user = &stored[0];
    assert_eq!(user.email, "Grace@Example.com");
    assert_eq!(user.email_key, "grace@example.com");
    assert_eq!(user.confirmed_at, None);
    assert_eq!(user.display_name, None);
    assert!(
        user.password_hash
            .starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{}",
        user.password_hash
    );
    let hash = PasswordHash::new(&user.password_hash).unwrap();
    assert!(
        Argon2::default()
            .verify_password(composed.as_bytes(), &hash)
            .is_ok()
    );
    assert!(
        Argon2::default()
            .verify_password(b"something else entirely", &hash)
            .is_err()
    );
}

async fn register_never_keeps_the_token_in_clear(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app
        .register_and_read_mail("hopper@example.com")
        .await
        .token();

    let tokens = verification_tokens::Entity::find()
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].purpose, "account_confirmation");
    assert_eq!(
        tokens[0].token_hash,
        hex::encode(Sha256::digest(token.as_bytes()))
    );
    assert_ne!(tokens[0].token_hash, token);
    let lifetime = tokens[0].expires_at - tokens[0].created_at;
    assert_eq!(lifetime.num_hours(), 24);

    // Once sent, the message no longer holds the link at rest.
    let mut sent = None;
    for _ in 0..100 {
        let rows = outbox_messages::Entity::find().all(&app.db).await.unwrap();
        if rows[0].sent_at.is_some() {
            sent = Some(rows[0].clone());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let sent = sent.expect("the outbox row is marked sent");
    assert_eq!(sent.text_body, None);
    assert_eq!(sent.html_body, None);
    assert_eq!(sent.attempts, 1);
}

async fn register_reports_every_invalid_field_at_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let long_name = "n".repeat(101);

    let payload = app
        .register("not-an-address", "short", Some(&long_name))
        .await;

    assert_eq!(payload["accepted"], false);
    assert_eq!(
        codes(&payload),
        vec![
            ("input.email".to_owned(), "INVALID_EMAIL".to_owned()),
            ("input.password".to_owned(), "PASSWORD_TOO_SHORT".to_owned()),
            ("input.displayName".to_owned(), "INVALID_INPUT".to_owned()),
        ]
    );
    for error in payload["userErrors"].as_array().unwrap() {
        assert!(!error["message"].as_str().unwrap().is_empty());
    }
    assert_eq!(users::Entity::find().count(&app.db).await.unwrap(), 0);
    assert_eq!(
        outbox_messages::Entity::find()
            .count(&app.db)
            .await
            .unwrap(),
        0
    );
}

async fn register_refuses_display_names_that_hide_characters_or_carry_links(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (index, name) in [
        "Ada. URGENT: verify now at https://evil.example/login",
        "Ada visit evil.example",
        "Ada\u{202E}ecalevol",
        "Ada\u{2028}Lovelace",
        "Ada\u{2029}Lovelace",
    ]
    .into_iter()
    .enumerate()
    {
        let payload = app
            .register(&format!("name{index}@example.com"), PASSWORD, Some(name))
            .await;
        assert_eq!(
            codes(&payload),
            vec![("input.displayName".to_owned(), "INVALID_INPUT".to_owned())],
            "{name:?}"
        );
    }
    assert_eq!(users::Entity::find().count(&app.db).await.unwrap(), 0);
}

async fn register_rejects_addresses_that_cannot_receive_mail(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let too_long = format!("{}@{}.com", "a".repeat(64), "b".repeat(186));
    assert_eq!(too_long.len(), 255);
    for email in [
        "",
        "plainaddress",
        "two@@example.com",
        "a@localhost",
        "a@[192.168.0.1]",
        "a@192.168.0.1",
        "in side@example.com",
        "tab\there@example.com",
        "bell\u{7}@example.com",
        "dots@example..com",
        // The mailer refuses these local parts: accepting them would strand the message.
        "a..b@example.com",
        ".a@example.com",
        "a.@example.com",
        // An IPv4 address in another notation, and a numeric top-level domain.
        "user@0x7f.1",
        "user@example.42",
        // The validator crate's rule is ASCII for the local part (SMTPUTF8 is rarely offered).
        "ünïcode@example.com",
        too_long.as_str(),
    ] {
        let payload = app.register(email, PASSWORD, None).await;
        assert_eq!(payload["accepted"], false, "{email:?}");
        assert_eq!(
            codes(&payload),
            vec![("input.email".to_owned(), "INVALID_EMAIL".to_owned())],
            "{email:?}"
        );
    }
    assert_eq!(users::Entity::find().count(&app.db).await.unwrap(), 0);

    // Internationalized domains are fine, and +tags are part of the address.
    for email in ["unicode@bücher.example", "ada+signup@example.com"] {
        let payload = app.register(email, PASSWORD, None).await;
        assert_eq!(payload["accepted"], true, "{email:?}: {payload}");
    }
    let mut keys: Vec<String> = users::Entity::find()
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|user| user.email_key)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        vec!["ada+signup@example.com", "unicode@xn--bcher-kva.example"]
    );
}

async fn register_counts_password_length_in_code_points_within_configured_limits(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &["--password-min-length", "10", "--password-max-length", "20"],
    )
    .await;
    let cases = [
        ("密码安全长城黄河月亮", None), // 10 code points, 30 bytes
        ("密码安全长城黄河月", Some("PASSWORD_TOO_SHORT")), // 9
        ("  qx7!vb  ", None),           // kept as typed: 10
        ("        ", Some("PASSWORD_TOO_SHORT")), // never trimmed, still 8
        ("            ", Some("PASSWORD_TOO_WEAK")), // twelve spaces
        ("\u{FDFA}", Some("PASSWORD_TOO_SHORT")), // one code point, eighteen after NFKC
        ("password1234", Some("PASSWORD_TOO_COMMON")),
        ("user7 is my password", Some("PASSWORD_TOO_WEAK")), // holds its address, user7@
        ("tangerine orbit velv", None),                      // 20
        ("tangerine orbit velve", Some("PASSWORD_TOO_LONG")), // 21: rejected, not truncated
    ];
    for (index, (password, expected)) in cases.into_iter().enumerate() {
        let payload = app
            .register(&format!("user{index}@example.com"), password, None)
            .await;
        match expected {
            None => assert_eq!(payload["accepted"], true, "{password:?}: {payload}"),
            Some(code) => assert_eq!(
                codes(&payload),
                vec![("input.password".to_owned(), code.to_owned())],
                "{password:?}"
            ),
        }
    }
}

async fn register_answers_a_confirmed_address_like_a_new_one_and_only_notifies_its_owner(
    backend: Backend,
) {
    let app = TestApp::spawn_with(backend, &["--resend-cooldown", "0s"]).await;
    let new = app.register("lovelace@example.com", PASSWORD, None).await;
    let token = app.smtp.next_mail().await.token();
    app.confirm(&token).await;
    let before = users::Entity::find().one(&app.db).await.unwrap().unwrap();

    let again = app
        .register(
            "LoveLace@EXAMPLE.com",
            "a different password",
            Some("Imposter"),
        )
        .await;

    assert_eq!(again, new);
    assert_eq!(
        again,
        json!({ "accepted": true, "retryAfterSeconds": null, "userErrors": [] })
    );
    let after = users::Entity::find().all(&app.db).await.unwrap();
    assert_eq!(after, vec![before], "the confirmed account is untouched");
    let notice = app.smtp.next_mail().await;
    assert_eq!(notice.recipients, vec!["LoveLace@example.com".to_owned()]);
    assert_eq!(
        notice.subject(),
        "Someone tried to sign up for admit with your address"
    );
    assert!(notice.text().contains("already has a confirmed account"));
    assert!(
        !notice.text().contains("token="),
        "a notice carries no link to act on"
    );
    assert_eq!(
        verification_tokens::Entity::find()
            .count(&app.db)
            .await
            .unwrap(),
        1
    );
}

async fn simultaneous_registrations_of_one_address_create_exactly_one_account(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let spellings = [
        "race@example.com",
        "RACE@example.com",
        "Race@Example.com",
        "race@EXAMPLE.COM",
        "rAcE@example.com",
        "RaCe@ExAmPlE.cOm",
        "race@example.Com",
        "RACE@EXAMPLE.COM",
    ];

    let answers = futures::future::join_all(
        spellings
            .iter()
            .map(|email| app.register(email, PASSWORD, None)),
    )
    .await;

    // One registration wins; the others meet the per-address cooldown its email started. No
    // caller sees an error, and the answers would be the same had the address existed before.
    let accepted = answers
        .iter()
        .filter(|answer| answer["accepted"] == true)
        .count();
    assert_eq!(accepted, 1, "{answers:?}");
    for answer in answers.iter().filter(|answer| answer["accepted"] == false) {
        assert_eq!(
            codes(answer),
            vec![("input.email".to_owned(), "RATE_LIMITED".to_owned())]
        );
        let wait = answer["retryAfterSeconds"].as_u64().unwrap();
        assert!((1..=60).contains(&wait), "{answer}");
    }
    assert_eq!(users::Entity::find().count(&app.db).await.unwrap(), 1);
    assert_eq!(
        verification_tokens::Entity::find()
            .count(&app.db)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        outbox_messages::Entity::find()
            .count(&app.db)
            .await
            .unwrap(),
        1
    );
    app.smtp.wait_for(1).await;
}

async fn password_policy_query_reports_the_configured_limits(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--password-min-length", "15"]).await;
    let data = app
        .graphql("{ passwordPolicy { minLength maxLength } }", json!({}))
        .await;
    assert_eq!(
        data,
        json!({ "passwordPolicy": { "minLength": 15, "maxLength": 128 } })
    );
}

async fn mail_queued_during_an_smtp_outage_is_delivered_when_the_server_returns(backend: Backend) {
    // Hold a port that refuses connections: admit is configured for a server not up yet.
    let reserved = crate::smtp::SmtpServer::reserve();
    let url = format!("smtp://127.0.0.1:{}", reserved.port);
    let app = TestApp::spawn_with_smtp_url(backend, url, &[]).await;

    let payload = app.register("patient@example.com", PASSWORD, None).await;
    assert_eq!(payload["accepted"], true);

    // The first attempt fails and is recorded; the message stays queued.
    let mut failed = None;
    for _ in 0..100 {
        let rows = outbox_messages::Entity::find().all(&app.db).await.unwrap();
        if rows[0].attempts >= 1 {
            failed = Some(rows[0].clone());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let failed = failed.expect("a failed attempt is recorded");
    assert_eq!(failed.sent_at, None);
    assert!(
        failed
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("SMTP"),
        "{failed:?}"
    );
    assert!(failed.text_body.is_some());

    let server = crate::smtp::SmtpServer::start_on(reserved);
    let mail = server.next_mail().await;
    assert_eq!(mail.recipients, vec!["patient@example.com".to_owned()]);
    assert_eq!(app.confirm(&mail.token()).await["user"]["confirmed"], true);
}
