//! Moving an account to another address, undoing it, and deleting an account: seen by the
//! owner, by whoever holds the other address, and by an attacker who knows the password.

use entity::{outbox_messages, sessions, users, verification_tokens};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};

use crate::{
    helpers::{Backend, PASSWORD, TestApp, error_codes, on_both_backends},
    smtp::Behaviour,
};

on_both_backends!(
    an_address_changes_only_from_the_link_and_the_old_address_is_told,
    a_wrong_password_the_same_address_or_no_session_changes_nothing,
    an_address_with_an_account_gets_a_notice_and_the_asker_the_same_answer,
    the_revert_link_restores_the_old_address_ends_sessions_and_mails_a_reset_link,
    two_accounts_racing_for_one_address_end_with_one_winner,
    the_owners_revert_link_ends_those_of_later_changes,
    a_thief_moving_the_account_on_cannot_cut_the_owner_off,
    an_unconfirmed_account_on_the_new_address_gives_way,
    deleting_an_account_needs_the_password_and_frees_the_address,
);

const EMAIL: &str = "ada@example.com";
const NEW: &str = "ada@new.example";

impl TestApp {
    /// A confirmed account signed in with a bearer token.
    async fn signed_in(&self, email: &str) -> String {
        self.confirmed_account(email).await;
        self.bearer_session(email).await
    }

    async fn request_change(&self, token: &str, new_email: &str, password: &str) -> Value {
        self.as_bearer(
            token,
            "RequestEmailChange",
            json!({ "input": { "newEmail": new_email, "password": password } }),
        )
        .await["requestEmailChange"]
            .clone()
    }

    async fn confirm_change(&self, token: &str) -> Value {
        self.operation("ConfirmEmailChange", json!({ "token": token }))
            .await["confirmEmailChange"]
            .clone()
    }

    async fn address_of(&self, token: &str) -> Value {
        self.as_bearer(token, "Viewer", json!({})).await["viewer"]["user"]["email"].clone()
    }
}

async fn an_address_changes_only_from_the_link_and_the_old_address_is_told(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let session = app.signed_in(EMAIL).await;

    let asked = app.request_change(&session, NEW, PASSWORD).await;
    assert_eq!(
        asked,
        json!({ "accepted": true, "retryAfterSeconds": null, "userErrors": [] })
    );
    let mail = app.smtp.next_mail().await;
    assert_eq!(mail.recipients, [NEW]);
    assert!(
        mail.link().starts_with(&app.url("/email-change#token=")),
        "{}",
        mail.link()
    );
    assert!(
        mail.text().contains("valid for 24 hours"),
        "{}",
        mail.text()
    );
    assert_eq!(
        app.address_of(&session).await,
        EMAIL,
        "nothing changes before the link"
    );

    let confirmed = app.confirm_change(&mail.token()).await;

    assert_eq!(confirmed["userErrors"], json!([]));
    assert_eq!(confirmed["user"]["email"], NEW);
    assert_eq!(app.address_of(&session).await, NEW, "the session stays");
    let notice = app.smtp.next_mail().await;
    assert_eq!(notice.recipients, [EMAIL]);
    assert!(notice.text().contains(NEW), "{}", notice.text());
    assert!(
        notice.link().starts_with(&app.url("/email-revert#token=")),
        "{}",
        notice.link()
    );
    assert!(
        notice.text().contains("valid for 7 days"),
        "{}",
        notice.text()
    );
    let old = app
        .operation(
            "SignIn",
            json!({ "input": { "email": EMAIL, "password": PASSWORD } }),
        )
        .await;
    assert_eq!(error_codes(&old["signIn"]), ["INVALID_CREDENTIALS"]);
    let new = app
        .operation(
            "SignIn",
            json!({ "input": { "email": NEW, "password": PASSWORD } }),
        )
        .await;
    assert_eq!(new["signIn"]["userErrors"], json!([]));
    assert_eq!(
        error_codes(&app.confirm_change(&mail.token()).await),
        ["TOKEN_USED"]
    );
}

async fn a_wrong_password_the_same_address_or_no_session_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let session = app.signed_in(EMAIL).await;
    let mails = app.smtp.received().len();

    let wrong = app.request_change(&session, NEW, "not my password").await;
    assert_eq!(error_codes(&wrong), ["INVALID_CREDENTIALS"]);
    assert_eq!(
        wrong["userErrors"][0]["field"],
        json!(["input", "password"])
    );
    let same = app
        .request_change(&session, " ADA@example.com", PASSWORD)
        .await;
    assert_eq!(error_codes(&same), ["INVALID_EMAIL"]);
    let malformed = app
        .request_change(&session, "not an address", PASSWORD)
        .await;
    assert_eq!(error_codes(&malformed), ["INVALID_EMAIL"]);
    let anonymous = app
        .operation(
            "RequestEmailChange",
            json!({ "input": { "newEmail": NEW, "password": PASSWORD } }),
        )
        .await["requestEmailChange"]
        .clone();
    assert_eq!(error_codes(&anonymous), ["UNAUTHENTICATED"]);
    for token in ["not-a-token", &"A".repeat(43)] {
        assert_eq!(
            error_codes(&app.confirm_change(token).await),
            ["TOKEN_INVALID"]
        );
    }

    assert_eq!(app.smtp.received().len(), mails, "no mail went out");
    assert_eq!(app.address_of(&session).await, EMAIL);
}

async fn an_address_with_an_account_gets_a_notice_and_the_asker_the_same_answer(backend: Backend) {
    // Without a cooldown: the owner of the taken address got its confirmation a moment ago.
    let app = TestApp::spawn_with(backend, &["--resend-cooldown", "0s"]).await;
    app.confirmed_account("grace@example.com").await;
    let session = app.signed_in(EMAIL).await;

    let free = app.request_change(&session, NEW, PASSWORD).await;
    app.smtp.next_mail().await;
    let taken = app
        .request_change(&session, "grace@example.com", PASSWORD)
        .await;

    assert_eq!(free, taken);
    let notice = app.smtp.next_mail().await;
    assert_eq!(notice.recipients, ["grace@example.com"]);
    assert!(!notice.text().contains("#token="), "{}", notice.text());
    assert!(
        notice.text().contains("Nothing was changed"),
        "{}",
        notice.text()
    );
    assert_eq!(app.address_of(&session).await, EMAIL);
}

async fn the_revert_link_restores_the_old_address_ends_sessions_and_mails_a_reset_link(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let session = app.signed_in(EMAIL).await;
    app.request_change(&session, NEW, PASSWORD).await;
    let change = app.smtp.next_mail().await.token();
    app.confirm_change(&change).await;
    let revert = app.smtp.next_mail().await.token();

    let reverted = app
        .operation("RevertEmailChange", json!({ "token": revert }))
        .await["revertEmailChange"]
        .clone();

    assert_eq!(reverted["userErrors"], json!([]));
    assert_eq!(reverted["user"]["email"], EMAIL);
    assert_eq!(
        app.as_bearer(&session, "Viewer", json!({})).await["viewer"],
        Value::Null
    );
    assert_eq!(sessions::Entity::find().count(&app.db).await.unwrap(), 0);
    let reset = app.smtp.next_mail().await;
    assert_eq!(reset.recipients, [EMAIL]);
    assert!(
        reset.link().starts_with(&app.url("/reset#token=")),
        "{}",
        reset.link()
    );
    let new_password = "taken back with a fresh passphrase";
    let done = app
        .operation(
            "ResetPassword",
            json!({ "input": { "token": reset.token(), "newPassword": new_password } }),
        )
        .await;
    assert_eq!(done["resetPassword"]["userErrors"], json!([]));
    let again = app
        .operation("RevertEmailChange", json!({ "token": revert }))
        .await["revertEmailChange"]
        .clone();
    assert_eq!(error_codes(&again), ["TOKEN_USED"]);
}

async fn two_accounts_racing_for_one_address_end_with_one_winner(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ada = app.signed_in(EMAIL).await;
    let grace = app.signed_in("grace@example.com").await;
    let shared = "shared@example.com";
    app.request_change(&ada, shared, PASSWORD).await;
    let first = app.smtp.next_mail().await.token();
    // The next mail to the same address waits out the cooldown: the limits apply to it too.
    let limited = app.request_change(&grace, shared, PASSWORD).await;
    assert_eq!(error_codes(&limited), ["RATE_LIMITED"]);
    let app = app.restart_with(&["--resend-cooldown", "0s"]).await;
    app.request_change(&grace, shared, PASSWORD).await;
    let second = app.smtp.next_mail().await.token();

    let answers =
        futures::future::join_all([app.confirm_change(&first), app.confirm_change(&second)]).await;

    let won: Vec<&Value> = answers
        .iter()
        .filter(|a| a["user"] != Value::Null)
        .collect();
    let lost: Vec<&Value> = answers
        .iter()
        .filter(|a| a["user"] == Value::Null)
        .collect();
    assert_eq!((won.len(), lost.len()), (1, 1), "{answers:?}");
    assert_eq!(error_codes(lost[0]), ["INVALID_INPUT"]);
    let holders = users::Entity::find()
        .filter(users::Column::EmailKey.eq(shared))
        .count(&app.db)
        .await
        .unwrap();
    assert_eq!(holders, 1);
    assert_eq!(users::Entity::find().count(&app.db).await.unwrap(), 2);
}

async fn an_unconfirmed_account_on_the_new_address_gives_way(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--resend-cooldown", "0s"]).await;
    app.register_and_read_mail(NEW).await;
    let session = app.signed_in(EMAIL).await;

    app.request_change(&session, NEW, PASSWORD).await;
    let mail = app.smtp.next_mail().await;
    assert!(
        mail.link().contains("/email-change#token="),
        "a link, not a notice"
    );
    let confirmed = app.confirm_change(&mail.token()).await;

    assert_eq!(confirmed["user"]["email"], NEW);
    assert_eq!(users::Entity::find().count(&app.db).await.unwrap(), 1);
}

async fn deleting_an_account_needs_the_password_and_frees_the_address(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--resend-cooldown", "0s"]).await;
    let session = app.signed_in(EMAIL).await;
    let delete = |password: &'static str| {
        let app = &app;
        let session = session.clone();
        async move {
            app.as_bearer(&session, "DeleteAccount", json!({ "password": password }))
                .await["deleteAccount"]
                .clone()
        }
    };

    let anonymous = app
        .operation("DeleteAccount", json!({ "password": PASSWORD }))
        .await;
    assert_eq!(
        error_codes(&anonymous["deleteAccount"]),
        ["UNAUTHENTICATED"]
    );
    let wrong = delete("not my password").await;
    assert_eq!(error_codes(&wrong), ["INVALID_CREDENTIALS"]);
    assert_eq!(wrong["deleted"], false);

    // A reset link waits in the outbox (the server refuses it for now): it must not go out.
    app.smtp.set_behaviour(Behaviour::Refuse(451));
    app.operation("RequestPasswordReset", json!({ "email": EMAIL }))
        .await;
    crate::delivery::wait_for_outbox(&app.db, "a reset link waiting", |rows| {
        rows.iter()
            .any(|row| row.sent_at.is_none() && row.attempts >= 1)
    })
    .await;

    let deleted = delete(PASSWORD).await;

    assert_eq!(deleted, json!({ "deleted": true, "userErrors": [] }));
    assert_eq!(users::Entity::find().count(&app.db).await.unwrap(), 0);
    assert_eq!(sessions::Entity::find().count(&app.db).await.unwrap(), 0);
    assert_eq!(
        verification_tokens::Entity::find()
            .count(&app.db)
            .await
            .unwrap(),
        0
    );
    let waiting = outbox_messages::Entity::find()
        .filter(outbox_messages::Column::SentAt.is_null())
        .count(&app.db)
        .await
        .unwrap();
    assert_eq!(waiting, 1, "only the notice waits");
    app.smtp.set_behaviour(Behaviour::Accept);
    let notice = app.smtp.next_mail().await;
    assert!(notice.subject().contains("deleted"), "{}", notice.subject());
    assert_eq!(
        app.as_bearer(&session, "Viewer", json!({})).await["viewer"],
        Value::Null
    );

    // The address is free again.
    let again = app.register(EMAIL, PASSWORD, None).await;
    assert_eq!(again["accepted"], true);
    let welcome = app.smtp.next_mail().await;
    assert!(
        welcome.link().contains("/confirm#token="),
        "{}",
        welcome.link()
    );
}

/// The owner's address A moved to B, then (by whoever holds B) to C: the revert links R1 (to A)
/// and R2 (to B).
async fn changed_twice(app: &TestApp) -> (String, String) {
    let session = app.signed_in(EMAIL).await;
    let mut reverts = Vec::new();
    for address in ["thief@b.example", "thief@c.example"] {
        app.request_change(&session, address, PASSWORD).await;
        let link = app.smtp.next_mail().await.token();
        assert_eq!(app.confirm_change(&link).await["user"]["email"], address);
        reverts.push(app.smtp.next_mail().await.token());
    }
    (reverts[0].clone(), reverts[1].clone())
}

async fn revert(app: &TestApp, token: &str) -> Value {
    app.operation("RevertEmailChange", json!({ "token": token }))
        .await["revertEmailChange"]
        .clone()
}

async fn the_owners_revert_link_ends_those_of_later_changes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owners, thiefs) = changed_twice(&app).await;

    assert_eq!(revert(&app, &owners).await["user"]["email"], EMAIL);
    let refused = revert(&app, &thiefs).await;

    assert_eq!(error_codes(&refused), ["TOKEN_SUPERSEDED"]);
    let user = users::Entity::find().one(&app.db).await.unwrap().unwrap();
    assert_eq!(user.email, EMAIL);
}

async fn a_thief_moving_the_account_on_cannot_cut_the_owner_off(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owners, thiefs) = changed_twice(&app).await;

    assert_eq!(
        revert(&app, &thiefs).await["user"]["email"],
        "thief@b.example"
    );
    let restored = revert(&app, &owners).await;

    assert_eq!(restored["userErrors"], json!([]));
    assert_eq!(restored["user"]["email"], EMAIL);
    assert_eq!(sessions::Entity::find().count(&app.db).await.unwrap(), 0);
    // Only the owner's reset link still works: the one mailed to B was superseded.
    let mails = app.smtp.wait_for(7).await;
    let resets: Vec<_> = mails
        .iter()
        .filter(|mail| mail.link().contains("/reset#token="))
        .collect();
    // Found by recipient, not by order: the dispatcher sends several messages at once, so
    // two mails queued moments apart may arrive either way round.
    let reset_to = |address: &str| {
        let sent: Vec<_> = resets
            .iter()
            .filter(|mail| mail.recipients == [address])
            .collect();
        assert_eq!(sent.len(), 1, "{address}");
        sent[0]
    };
    assert_eq!(resets.len(), 2);
    reset_to(EMAIL);
    let thief_reset = app
        .operation(
            "ResetPassword",
            json!({ "input": { "token": reset_to("thief@b.example").token(), "newPassword": "the thief's own passphrase" } }),
        )
        .await;
    assert_eq!(
        error_codes(&thief_reset["resetPassword"]),
        ["TOKEN_SUPERSEDED"]
    );
}
