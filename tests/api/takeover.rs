//! Takeover.
//!
//! - Pre-registration: someone signs up an address that is not theirs, hoping its owner
//!   confirms their sign-up. A link confirms exactly the sign-up that sent it, even when the
//!   owner's confirmation and the foreign sign-up arrive at the same moment.
//! - Holding on: someone who knows the old password, or holds a session, races the owner's
//!   password reset. A request whose password was checked before the reset committed gets no
//!   session, sets no password, mails no address-change link and deletes nothing; a pending
//!   address change dies with the reset.

use std::future::Future;

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use entity::{sessions, users, verification_tokens};
use sea_orm::{
    ColumnTrait, DatabaseTransaction, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
};
use serde_json::{Value, json};

use crate::helpers::{
    Backend, PASSWORD, TestApp, error_codes, on_both_backends, waiting_for_locks,
};

on_both_backends!(
    a_confirmation_racing_a_foreign_sign_up_activates_the_password_of_its_own_link,
    a_reset_or_a_password_change_cancels_a_pending_address_change,
);

const OWNER: &str = "the owner's own long passphrase";
const STRANGER: &str = "attacker chosen secret words";

async fn a_confirmation_racing_a_foreign_sign_up_activates_the_password_of_its_own_link(
    backend: Backend,
) {
    let app = TestApp::spawn_with(
        backend,
        &[
            "--resend-cooldown",
            "0s",
            "--resend-hourly-limit",
            "1000",
            "--ip-rate-limit",
            "0",
        ],
    )
    .await;
    for trial in 0..12 {
        let email = format!("race{trial}@example.com");
        let payload = app.register(&email, OWNER, None).await;
        assert_eq!(payload["accepted"], true, "{payload}");
        let link = app.smtp.next_mail().await.token();

        // Every answer is checked for top-level errors by the helpers: a deadlock or any other
        // internal failure fails the test.
        let (confirmed, foreign) =
            tokio::join!(app.confirm(&link), app.register(&email, STRANGER, None));
        assert_eq!(foreign["accepted"], true, "{foreign}");
        assert_eq!(
            confirmed["user"]["confirmed"], true,
            "trial {trial}: {confirmed}"
        );
        let _foreign_mail = app.smtp.next_mail().await;

        let user = users::Entity::find()
            .filter(users::Column::EmailKey.eq(email.as_str()))
            .one(&app.db)
            .await
            .unwrap()
            .unwrap();
        let hash = PasswordHash::new(&user.password_hash).unwrap();
        assert!(
            Argon2::default()
                .verify_password(OWNER.as_bytes(), &hash)
                .is_ok(),
            "trial {trial}: the owner's link activated another password"
        );
    }
}

const EMAIL: &str = "owner@example.com";
const RESET_TO: &str = "violet harbour lantern seventeen";
const THIEF_ADDRESS: &str = "thief@elsewhere.example";
const THIEF_PASSWORD: &str = "the thief's chosen passphrase";

/// The owner's reset of [`EMAIL`] to [`RESET_TO`], and `attack`, made to race so that the reset
/// commits first and the attack looks at the account after that, although it checked the old
/// password before. A transaction of the test holds the account's row; the reset queues for
/// it, then the attack does, and PostgreSQL hands the row to its waiters in turn. Returns the
/// attack's answer.
async fn reset_committed_while(app: &TestApp, attack: impl Future<Output = Value>) -> Value {
    let asked = app
        .operation("RequestPasswordReset", json!({ "email": EMAIL }))
        .await;
    assert_eq!(asked["requestPasswordReset"]["accepted"], true, "{asked}");
    let mail = app.smtp.next_mail().await;
    assert!(mail.subject().contains("Reset"), "{}", mail.subject());
    let link = mail.token();
    let account = account(app).await;
    let holder = app.db.begin().await.unwrap();
    users::Entity::find_by_id(account.id)
        .lock_exclusive()
        .one(&holder)
        .await
        .unwrap();

    let reset = app.operation(
        "ResetPassword",
        json!({ "input": { "token": link, "newPassword": RESET_TO } }),
    );
    let (reset, attacked) = in_turn(app, holder, reset, attack).await;
    assert_eq!(reset["resetPassword"]["userErrors"], json!([]), "{reset}");
    attacked
}

/// Runs `first` until it waits for a row that `holder` has locked, then `second` until it
/// waits too, then commits `holder`: PostgreSQL hands the row to its waiters in turn, so
/// `first` gets it before `second`. Both answers.
async fn in_turn(
    app: &TestApp,
    holder: DatabaseTransaction,
    first: impl Future<Output = Value>,
    second: impl Future<Output = Value>,
) -> (Value, Value) {
    let second = async {
        waiting_for_locks(&app.db, 1).await;
        let release = async {
            waiting_for_locks(&app.db, 2).await;
            holder.commit().await.unwrap();
        };
        tokio::join!(second, release).0
    };
    tokio::join!(first, second)
}

async fn account(app: &TestApp) -> users::Model {
    users::Entity::find()
        .filter(users::Column::EmailKey.eq(EMAIL))
        .one(&app.db)
        .await
        .unwrap()
        .expect("the owner's account")
}

/// Whether `password` is the account's password now.
async fn is_the_password(app: &TestApp, password: &str) -> bool {
    let stored = account(app).await.password_hash;
    let hash = PasswordHash::new(&stored).unwrap();
    Argon2::default()
        .verify_password(password.as_bytes(), &hash)
        .is_ok()
}

async fn sessions_of_the_account(app: &TestApp) -> u64 {
    sessions::Entity::find()
        .filter(sessions::Column::UserId.eq(account(app).await.id))
        .count(&app.db)
        .await
        .unwrap()
}

/// A signed-in thief who knows the password, on PostgreSQL (the only backend on which the
/// test can hold a row while requests queue for it; SQLite runs one write at a time).
async fn thief_signed_in() -> (TestApp, String) {
    let app = TestApp::spawn_with(Backend::Postgres, &["--resend-cooldown", "0s"]).await;
    app.confirmed_account(EMAIL).await;
    let session = app.bearer_session(EMAIL).await;
    (app, session)
}

/// The thief's `operation` from their session, with the password they know, racing the
/// owner's reset; it must be answered `UNAUTHENTICATED`: its session ended before it could act.
/// The app and the operation's payload.
async fn thiefs_request_racing_a_reset(operation: &str, variables: Value) -> (TestApp, Value) {
    let (app, thief) = thief_signed_in().await;
    let answer = reset_committed_while(&app, app.as_bearer(&thief, operation, variables)).await;
    let field = operation[..1].to_lowercase() + &operation[1..];
    let payload = answer[field.as_str()].clone();
    assert_eq!(error_codes(&payload), ["UNAUTHENTICATED"], "{answer}");
    (app, payload)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_sign_in_with_the_old_password_racing_a_reset_gets_no_session() {
    let (app, thief) = thief_signed_in().await;

    let signed_in = reset_committed_while(
        &app,
        app.operation(
            "SignIn",
            json!({ "input": { "email": EMAIL, "password": PASSWORD, "delivery": "BEARER" } }),
        ),
    )
    .await;

    assert_eq!(
        error_codes(&signed_in["signIn"]),
        ["INVALID_CREDENTIALS"],
        "{signed_in}"
    );
    assert_eq!(signed_in["signIn"]["sessionToken"], Value::Null);
    assert_eq!(
        sessions_of_the_account(&app).await,
        0,
        "the reset ended every session"
    );
    let viewer = app.as_bearer(&thief, "Viewer", json!({})).await;
    assert_eq!(viewer["viewer"], Value::Null, "{viewer}");
    assert!(is_the_password(&app, RESET_TO).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_password_change_racing_a_reset_does_not_replace_the_owners_password() {
    let (app, _) = thiefs_request_racing_a_reset(
        "ChangePassword",
        json!({ "input": { "currentPassword": PASSWORD, "newPassword": THIEF_PASSWORD } }),
    )
    .await;

    assert!(
        is_the_password(&app, RESET_TO).await,
        "the owner's reset stands"
    );
    assert!(!is_the_password(&app, THIEF_PASSWORD).await);
    assert_eq!(sessions_of_the_account(&app).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_an_address_change_asked_for_while_a_reset_commits_mails_no_link() {
    let (app, _) = thiefs_request_racing_a_reset(
        "RequestEmailChange",
        json!({ "input": { "newEmail": THIEF_ADDRESS, "password": PASSWORD } }),
    )
    .await;

    let links = verification_tokens::Entity::find()
        .filter(verification_tokens::Column::Purpose.eq("email_change"))
        .count(&app.db)
        .await
        .unwrap();
    assert_eq!(links, 0, "no address-change link was made");
    assert!(
        app.smtp
            .received()
            .iter()
            .all(|mail| !mail.recipients.iter().any(|to| to.contains(THIEF_ADDRESS))),
        "nothing was mailed to the thief"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_deletion_racing_a_reset_keeps_the_account() {
    let (app, deleted) =
        thiefs_request_racing_a_reset("DeleteAccount", json!({ "password": PASSWORD })).await;

    assert_eq!(deleted["deleted"], false, "{deleted}");
    assert!(
        is_the_password(&app, RESET_TO).await,
        "the account is still there"
    );
}

async fn a_reset_or_a_password_change_cancels_a_pending_address_change(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--resend-cooldown", "0s"]).await;
    app.confirmed_account(EMAIL).await;
    let ask_to_move = |session: String, password: &'static str| {
        let app = &app;
        async move {
            let asked = app
                .as_bearer(
                    &session,
                    "RequestEmailChange",
                    json!({ "input": { "newEmail": THIEF_ADDRESS, "password": password } }),
                )
                .await;
            assert_eq!(asked["requestEmailChange"]["accepted"], true, "{asked}");
            let mail = app.smtp.next_mail().await;
            assert_eq!(mail.recipients, [THIEF_ADDRESS], "{}", mail.subject());
            mail.token()
        }
    };
    let use_link = |token: String| {
        let app = &app;
        async move {
            let used = app
                .operation("ConfirmEmailChange", json!({ "token": token }))
                .await;
            error_codes(&used["confirmEmailChange"])
        }
    };

    // A thief with the password asks to move the account; the owner resets the password.
    let thief = app.bearer_session(EMAIL).await;
    let thiefs_link = ask_to_move(thief, PASSWORD).await;
    app.operation("RequestPasswordReset", json!({ "email": EMAIL }))
        .await;
    let reset_link = app.smtp.next_mail().await.token();
    let reset = app
        .operation(
            "ResetPassword",
            json!({ "input": { "token": reset_link, "newPassword": RESET_TO } }),
        )
        .await;
    assert_eq!(reset["resetPassword"]["userErrors"], json!([]), "{reset}");
    let _notice = app.smtp.next_mail().await;
    assert_eq!(use_link(thiefs_link).await, ["TOKEN_SUPERSEDED"]);
    assert_eq!(account(&app).await.email, EMAIL);

    // The same when the password is changed from a session.
    let signed_in = app
        .operation(
            "SignIn",
            json!({ "input": { "email": EMAIL, "password": RESET_TO, "delivery": "BEARER" } }),
        )
        .await;
    let session = signed_in["signIn"]["sessionToken"]
        .as_str()
        .expect("a session")
        .to_owned();
    let pending = ask_to_move(session.clone(), RESET_TO).await;
    let changed = app
        .as_bearer(
            &session,
            "ChangePassword",
            json!({ "input": { "currentPassword": RESET_TO, "newPassword": THIEF_PASSWORD } }),
        )
        .await;
    assert_eq!(
        changed["changePassword"]["userErrors"],
        json!([]),
        "{changed}"
    );
    assert_eq!(use_link(pending).await, ["TOKEN_SUPERSEDED"]);
    assert_eq!(account(&app).await.email, EMAIL);
}

/// The owner changes the password from one session (which ends the others) while the thief
/// signs out every session but theirs: both end sessions, and each must take the account's
/// row before any session's, or each can hold a session the other wants. The test holds the
/// oldest session's row so that the thief's sign-out reaches it first, then the owner's change
/// queues behind; before, that order deadlocked and one of the two got an internal error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_password_change_and_a_sign_out_of_the_other_sessions_never_deadlock() {
    let app = TestApp::spawn(Backend::Postgres).await;
    app.confirmed_account(EMAIL).await;
    let _older_device = app.bearer_session(EMAIL).await;
    let owner = app.bearer_session(EMAIL).await;
    let thief = app.bearer_session(EMAIL).await;
    let oldest = sessions::Entity::find()
        .filter(sessions::Column::UserId.eq(account(&app).await.id))
        .order_by_asc(sessions::Column::CreatedAt)
        .order_by_asc(sessions::Column::Id)
        .one(&app.db)
        .await
        .unwrap()
        .expect("a session");
    let holder = app.db.begin().await.unwrap();
    sessions::Entity::find_by_id(oldest.id)
        .lock_exclusive()
        .one(&holder)
        .await
        .unwrap();

    let signed_out = app.as_bearer(&thief, "RevokeOtherSessions", json!({}));
    let change = app.as_bearer(
        &owner,
        "ChangePassword",
        json!({ "input": { "currentPassword": PASSWORD, "newPassword": RESET_TO } }),
    );
    // The helpers fail the test on any top-level error, a deadlock's included.
    let (signed_out, changed) = in_turn(&app, holder, signed_out, change).await;

    assert_eq!(
        signed_out["revokeOtherSessions"]["revoked"], true,
        "{signed_out}"
    );
    assert_eq!(
        error_codes(&changed["changePassword"]),
        ["UNAUTHENTICATED"],
        "the owner's session ended first: {changed}"
    );
    assert!(is_the_password(&app, PASSWORD).await);
    assert_eq!(
        sessions_of_the_account(&app).await,
        1,
        "the thief's session"
    );
}
