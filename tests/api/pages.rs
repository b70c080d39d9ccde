//! admit's pages in a real browser: Debian's Chromium driven by playwright-core
//! (`tests/browser`, installed by `npm ci`). Screenshots of every state go to
//! `$CARGO_TARGET_TMPDIR/screenshots`.

use std::path::PathBuf;

use entity::users;
use sea_orm::EntityTrait;
use serde_json::{Value, json};

use crate::helpers::{Backend, PASSWORD, TestApp};

/// What the browser saw.
struct Seen(Value);

impl Seen {
    fn state(&self) -> &str {
        self.0["state"].as_str().unwrap_or_default()
    }

    fn read(&self, key: &str) -> String {
        match &self.0["reads"][key] {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        }
    }

    fn posts(&self) -> &Value {
        &self.0["posts"]
    }
}

/// Runs `steps` in Chromium; fails the test if the page loaded anything from another origin or
/// logged an error.
async fn browse(steps: Value) -> Seen {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let output = tokio::process::Command::new("node")
        .arg(root.join("drive.mjs"))
        .arg(steps.to_string())
        .arg(&shots)
        .output()
        .await
        .expect("run node");
    assert!(
        output.status.success(),
        "driver failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_slice(&output.stdout).expect("driver prints JSON");
    assert_eq!(
        seen["external"],
        json!([]),
        "the page loaded external assets"
    );
    assert_eq!(seen["consoleErrors"], json!([]), "the page logged errors");
    Seen(seen)
}

async fn confirmed(app: &TestApp) -> bool {
    users::Entity::find()
        .one(&app.db)
        .await
        .unwrap()
        .unwrap()
        .confirmed_at
        .is_some()
}

#[tokio::test]
async fn a_newcomer_signs_up_on_the_demo_page_and_confirms_from_the_email() {
    if !crate::helpers::browser_ready() {
        return;
    }
    let app = TestApp::spawn(Backend::Sqlite).await;

    let signed_up = browse(json!([
        { "goto": app.url("/"), "size": "390x844" },
        { "waitState": ["ready"] },
        { "read": "#password-hint", "as": "hint" },
        { "screenshot": "signup-empty" },
        { "fill": "#email", "value": "newcomer@example.com" },
        { "fill": "#password", "value": "short" },
        { "read": "#password-hint", "as": "short" },
        { "fill": "#password", "value": PASSWORD },
        { "read": "#password-hint", "as": "long-enough" },
        { "fill": "#displayName", "value": "Newcomer" },
        { "screenshot": "signup-filled" },
        { "click": "#submit" },
        { "waitState": ["sent", "invalid", "error"] },
        { "read": "#sent-message", "as": "sent" },
        { "screenshot": "signup-sent" },
    ]))
    .await;
    assert_eq!(signed_up.state(), "sent");
    assert_eq!(
        signed_up.read("hint"),
        "Use 12 to 128 characters. Spaces and any characters are fine."
    );
    assert_eq!(signed_up.read("short"), "7 more characters needed.");
    assert_eq!(signed_up.read("long-enough"), "Long enough.");
    assert!(
        signed_up.read("sent").contains("newcomer@example.com"),
        "{}",
        signed_up.read("sent")
    );

    let mail = app.smtp.next_mail().await;
    assert!(!mail.text().contains("Newcomer"));
    let link = mail.link();

    // Opening the link changes nothing: mail scanners do that too.
    let opened = browse(json!([
        { "goto": link, "size": "390x844" },
        { "wait": 500 },
        { "visible": "#confirm", "as": "button" },
        { "screenshot": "confirm-ready" },
    ]))
    .await;
    assert_eq!(opened.state(), "ready");
    assert_eq!(opened.read("button"), "true");
    assert_eq!(
        opened.posts(),
        &json!([]),
        "the page sent a request on load"
    );
    assert!(!confirmed(&app).await);

    let clicked = browse(json!([
        { "goto": link, "size": "390x844" },
        { "click": "#confirm" },
        { "waitState": ["confirmed", "invalid", "expired", "superseded", "error"] },
        { "read": "#message", "as": "message" },
        { "screenshot": "confirm-confirmed" },
    ]))
    .await;
    assert_eq!(clicked.state(), "confirmed", "{}", clicked.read("message"));
    assert!(clicked.read("message").contains("newcomer@example.com"));
    assert_eq!(clicked.posts(), &json!(["/graphql"]));
    assert!(confirmed(&app).await);

    // A second click on the same link (a reload, another tab) still says confirmed.
    let again = browse(json!([
        { "goto": link },
        { "click": "#confirm" },
        { "waitState": ["confirmed", "invalid", "expired", "superseded", "error"] },
        { "screenshot": "confirm-confirmed-again" },
    ]))
    .await;
    assert_eq!(again.state(), "confirmed");
}

#[tokio::test]
async fn the_form_shows_each_error_next_to_its_field() {
    if !crate::helpers::browser_ready() {
        return;
    }
    let app = TestApp::spawn(Backend::Sqlite).await;
    let seen = browse(json!([
        { "goto": app.url("/") },
        { "waitState": ["ready"] },
        { "fill": "#email", "value": "not-an-address" },
        { "fill": "#password", "value": "short" },
        { "click": "#submit" },
        { "waitState": ["sent", "invalid", "error"] },
        { "read": "#email-error", "as": "email" },
        { "read": "#password-error", "as": "password" },
        { "read": "#displayName-error", "as": "displayName" },
        { "screenshot": "signup-field-errors" },
    ]))
    .await;
    assert_eq!(seen.state(), "invalid");
    assert_eq!(
        seen.read("email"),
        "Enter a valid email address, like name@example.com."
    );
    assert_eq!(seen.read("password"), "Use at least 12 characters.");
    assert_eq!(seen.read("displayName"), "");
    assert!(app.smtp.received().is_empty());
}

#[tokio::test]
async fn an_expired_link_offers_a_new_one_by_email_and_the_new_one_works() {
    if !crate::helpers::browser_ready() {
        return;
    }
    let app = TestApp::spawn_with(Backend::Sqlite, &["--resend-cooldown", "0s"]).await;
    let link = app.register_and_read_mail("late@example.com").await.link();
    app.expire_tokens(None, chrono::TimeDelta::seconds(1)).await;

    let seen = browse(json!([
        { "goto": link, "size": "390x844" },
        { "click": "#confirm" },
        { "waitState": ["confirmed", "invalid", "expired", "superseded", "error"] },
        { "read": "#message", "as": "expired" },
        { "screenshot": "confirm-expired" },
        { "fill": "#resend-email", "value": "late@example.com" },
        { "click": "#resend-submit" },
        { "waitState": ["resent", "rate-limited", "resend-invalid", "error"] },
        { "read": "#message", "as": "resent" },
        { "screenshot": "confirm-resent" },
    ]))
    .await;
    assert_eq!(seen.state(), "resent");
    assert!(seen.read("expired").contains("expired"));
    assert!(seen.read("resent").contains("Check your inbox"));
    assert!(!confirmed(&app).await);

    let fresh = app.smtp.next_mail().await.link();
    assert_ne!(fresh, link);
    let seen = browse(json!([
        { "goto": fresh },
        { "click": "#confirm" },
        { "waitState": ["confirmed", "invalid", "expired", "superseded", "error"] },
    ]))
    .await;
    assert_eq!(seen.state(), "confirmed");
}

#[tokio::test]
async fn asking_again_too_soon_shows_how_long_to_wait() {
    if !crate::helpers::browser_ready() {
        return;
    }
    let app = TestApp::spawn(Backend::Sqlite).await;
    let link = app.register_and_read_mail("eager@example.com").await.link();
    app.expire_tokens(None, chrono::TimeDelta::seconds(1)).await;

    // The sign-up email started the cooldown: asking for a new link at once is refused.
    let seen = browse(json!([
        { "goto": link },
        { "click": "#confirm" },
        { "waitState": ["expired"] },
        { "fill": "#resend-email", "value": "eager@example.com" },
        { "click": "#resend-submit" },
        { "waitState": ["resent", "rate-limited", "resend-invalid", "error"] },
        { "read": "#resend-error", "as": "wait" },
        { "screenshot": "confirm-rate-limited" },
    ]))
    .await;
    assert_eq!(seen.state(), "rate-limited");
    assert!(
        seen.read("wait").contains("seconds"),
        "{}",
        seen.read("wait")
    );
}

#[tokio::test]
async fn the_page_explains_an_invalid_a_superseded_and_a_missing_link() {
    if !crate::helpers::browser_ready() {
        return;
    }
    let app = TestApp::spawn_with(Backend::Sqlite, &["--resend-cooldown", "0s"]).await;
    let link = app
        .register_and_read_mail("explain@example.com")
        .await
        .link();
    let (base, token) = link.split_once("#token=").unwrap();
    let click = |url: String, shot: &str| {
        json!([
            { "goto": url },
            { "click": "#confirm" },
            { "waitState": ["confirmed", "invalid", "expired", "superseded", "error"] },
            { "read": "#message", "as": "message" },
            { "screenshot": shot },
        ])
    };

    let altered = format!("{base}#token={}", token.chars().rev().collect::<String>());
    let invalid = browse(click(altered, "confirm-invalid")).await;
    assert_eq!(invalid.state(), "invalid");
    assert!(invalid.read("message").contains("not valid"));

    let missing = browse(json!([
        { "goto": base },
        { "visible": "#confirm", "as": "button" },
        { "screenshot": "confirm-missing" },
    ]))
    .await;
    assert_eq!(missing.state(), "missing");
    assert_eq!(missing.read("button"), "false");

    assert_eq!(app.resend("explain@example.com").await["accepted"], true);
    app.smtp.next_mail().await;
    let superseded = browse(click(link.clone(), "confirm-superseded")).await;
    assert_eq!(superseded.state(), "superseded");
    assert!(superseded.read("message").contains("most recent email"));
    assert!(!confirmed(&app).await);
}

#[tokio::test]
async fn a_server_that_cannot_be_reached_gets_a_retry_not_a_dead_end() {
    if !crate::helpers::browser_ready() {
        return;
    }
    let app = TestApp::spawn(Backend::Sqlite).await;
    let link = app
        .register_and_read_mail("offline@example.com")
        .await
        .link();
    // The page loads, then the network goes away before the click.
    let seen = browse(json!([
        { "goto": link },
        { "offline": true },
        { "click": "#confirm" },
        { "waitState": ["confirmed", "invalid", "expired", "superseded", "error"] },
        { "read": "#message", "as": "message" },
        { "visible": "#confirm", "as": "retry" },
        { "screenshot": "confirm-network-error" },
    ]))
    .await;
    assert_eq!(seen.state(), "error");
    assert!(seen.read("message").contains("try again"));
    assert_eq!(seen.read("retry"), "true");
    assert!(!confirmed(&app).await);

    // Back online, the same button confirms.
    let seen = browse(json!([
        { "goto": link },
        { "offline": true },
        { "click": "#confirm" },
        { "waitState": ["error"] },
        { "offline": false },
        { "click": "#confirm" },
        { "waitState": ["confirmed", "invalid", "expired", "superseded", "error"] },
    ]))
    .await;
    assert_eq!(seen.state(), "confirmed");
}

#[tokio::test]
async fn graphiql_renders_under_its_policy_from_the_pinned_assets() {
    if !crate::helpers::browser_ready() {
        return;
    }
    let app = TestApp::spawn(Backend::Sqlite).await;
    // The CDN is answered from the npm packages of the same versions: a file that differs from
    // its integrity hash, or anything the policy refuses, shows up as a console error.
    let seen = browse(json!([
        { "mirror": "https://unpkg.com/" },
        { "goto": app.url("/graphql") },
        { "waitFor": ".graphiql-container" },
        { "visible": ".graphiql-editors", "as": "editors" },
        { "screenshot": "graphiql" },
    ]))
    .await;
    assert_eq!(seen.read("editors"), "true");
    assert_eq!(
        seen.0["mirrored"].as_array().unwrap().len(),
        4,
        "{}",
        seen.0
    );
}

#[tokio::test]
async fn a_newcomer_signs_up_confirms_signs_in_sees_their_sessions_and_signs_out() {
    if !crate::helpers::browser_ready() {
        return;
    }
    let app = TestApp::spawn_with(Backend::Sqlite, &["--resend-cooldown", "0s"]).await;

    // Sign up, then try to sign in before confirming: the page says so and offers a new link.
    let early = browse(json!([
        { "goto": app.url("/"), "size": "390x844" },
        { "waitState": ["ready"] },
        { "fill": "#email", "value": "reader@example.com" },
        { "fill": "#password", "value": PASSWORD },
        { "click": "#submit" },
        { "waitState": ["sent"] },
        { "click": "a[href=signin]" },
        { "waitFor": "#signin" },
        { "fill": "#email", "value": "reader@example.com" },
        { "fill": "#password", "value": PASSWORD },
        { "click": "#submit" },
        { "waitState": ["not-confirmed", "invalid-credentials", "invalid", "error"] },
        { "read": "#form-error", "as": "error" },
        { "screenshot": "signin-not-confirmed" },
        { "click": "#resend-submit" },
        { "waitState": ["resent", "resend-refused", "error"] },
        { "read": "#resend-message", "as": "resent" },
    ]))
    .await;
    assert_eq!(early.state(), "resent", "{}", early.read("error"));
    assert!(
        early.read("error").contains("not confirmed"),
        "{}",
        early.read("error")
    );
    let mails = app.smtp.wait_for(2).await;
    let link = mails.last().expect("the new link").link();

    let seen = browse(json!([
        { "goto": link, "size": "390x844" },
        { "click": "#confirm" },
        { "waitState": ["confirmed"] },
        { "goto": app.url("/signin") },
        { "fill": "#email", "value": "reader@example.com" },
        { "fill": "#password", "value": "not the password at all" },
        { "click": "#submit" },
        { "waitState": ["invalid-credentials", "not-confirmed", "invalid", "error"] },
        { "read": "#form-error", "as": "wrong" },
        { "screenshot": "signin-wrong-password" },
        { "fill": "#password", "value": PASSWORD },
        { "click": "#submit" },
        { "waitFor": "body[data-state=signed-in] #account" },
        { "read": "#email", "as": "email" },
        { "read": "#sessions", "as": "sessions" },
        { "eval": "document.cookie", "as": "script-cookie" },
        { "cookies": "cookies" },
        { "screenshot": "account-signed-in" },
        { "click": "#signout" },
        { "waitState": ["signed-out", "error"] },
        { "read": "#message", "as": "after" },
        { "screenshot": "account-signed-out" },
        { "goto": app.url("/account") },
        { "waitState": ["signed-out", "signed-in", "error"] },
        { "read": "#message", "as": "reload" },
    ]))
    .await;

    assert!(
        seen.read("wrong").contains("do not match"),
        "{}",
        seen.read("wrong")
    );
    assert_eq!(seen.read("email"), "reader@example.com");
    assert!(
        seen.read("sessions").contains("(this device)"),
        "{}",
        seen.read("sessions")
    );
    assert!(seen.read("sessions").contains("Sign out this device"));
    assert_eq!(
        seen.read("script-cookie"),
        "",
        "page scripts must not see the session"
    );
    let cookies = &seen.0["reads"]["cookies"];
    assert_eq!(
        cookies,
        &json!([{ "name": "admit_session", "httpOnly": true, "sameSite": "Lax" }]),
        "while signed in"
    );
    assert_eq!(seen.read("after"), "You are signed out.");
    assert_eq!(seen.state(), "signed-out");
    assert_eq!(seen.read("reload"), "You are not signed in.");
    assert!(
        entity::sessions::Entity::find()
            .all(&app.db)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_forgotten_password_is_reset_from_the_emailed_link() {
    if !crate::helpers::browser_ready() {
        return;
    }
    let app = TestApp::spawn_with(Backend::Sqlite, &["--resend-cooldown", "0s"]).await;
    app.confirmed_account("forgetful@example.com").await;

    let asked = browse(json!([
        { "goto": app.url("/signin"), "size": "390x844" },
        { "click": "#forgot-link" },
        { "fill": "#email", "value": "forgetful@example.com" },
        { "click": "#forgot-submit" },
        { "waitState": ["reset-requested", "reset-refused", "error"] },
        { "read": "#forgot-message", "as": "message" },
        { "screenshot": "signin-forgot" },
    ]))
    .await;
    assert_eq!(
        asked.state(),
        "reset-requested",
        "{}",
        asked.read("message")
    );
    let link = app.smtp.next_mail().await.link();
    assert!(link.contains("/reset#token="), "{link}");

    let reset = browse(json!([
        { "goto": link, "size": "390x844" },
        { "waitState": ["ready"] },
        { "wait": 300 },
        { "read": "#password-hint", "as": "hint" },
        { "fill": "#password", "value": "short" },
        { "fill": "#repeat", "value": "short" },
        { "click": "#submit" },
        { "waitState": ["invalid-password", "changed", "error"] },
        { "read": "#password-error", "as": "short" },
        { "fill": "#password", "value": "a brand new staple battery" },
        { "fill": "#repeat", "value": "a brand new staple batter" },
        { "click": "#submit" },
        { "waitState": ["mismatch"] },
        { "read": "#repeat-error", "as": "mismatch" },
        { "fill": "#repeat", "value": "a brand new staple battery" },
        { "click": "#submit" },
        { "waitState": ["changed", "invalid-password", "error"] },
        { "read": "#message", "as": "changed" },
        { "screenshot": "reset-changed" },
    ]))
    .await;
    assert!(
        reset.read("hint").contains("12 to 128"),
        "{}",
        reset.read("hint")
    );
    assert_eq!(reset.read("short"), "Use at least 12 characters.");
    assert_eq!(
        reset.read("mismatch"),
        "The two passwords are not the same."
    );
    assert_eq!(reset.state(), "changed");
    assert!(
        reset
            .read("changed")
            .contains("sign in with your new password")
    );
    let signed_in = app
        .operation(
            "SignIn",
            json!({ "input": { "email": "forgetful@example.com", "password": "a brand new staple battery" } }),
        )
        .await;
    assert_eq!(signed_in["signIn"]["userErrors"], json!([]));

    let used = browse(json!([
        { "goto": link },
        { "fill": "#password", "value": "another new staple battery" },
        { "fill": "#repeat", "value": "another new staple battery" },
        { "click": "#submit" },
        { "waitState": ["used", "changed", "error"] },
        { "visible": "#again", "as": "offers-new-link" },
        { "screenshot": "reset-used" },
    ]))
    .await;
    assert_eq!(used.state(), "used");
    assert_eq!(used.read("offers-new-link"), "true");

    let invalid = browse(json!([
        { "goto": app.url("/reset#token=not-a-token") },
        { "fill": "#password", "value": "another new staple battery" },
        { "fill": "#repeat", "value": "another new staple battery" },
        { "click": "#submit" },
        { "waitState": ["invalid", "changed", "error"] },
        { "fill": "#again-email", "value": "forgetful@example.com" },
        { "click": "#again-submit" },
        { "waitState": ["resent", "resend-refused", "error"] },
        { "read": "#again-message", "as": "again" },
    ]))
    .await;
    assert_eq!(invalid.state(), "resent", "{}", invalid.read("again"));
    let notice = app.smtp.next_mail().await;
    assert!(
        notice.subject().contains("password was changed"),
        "{}",
        notice.subject()
    );
    let fresh = app.smtp.next_mail().await;
    assert!(fresh.subject().contains("Reset"), "{}", fresh.subject());
}

#[tokio::test]
async fn an_address_is_changed_undone_and_the_account_deleted_from_the_pages() {
    if !crate::helpers::browser_ready() {
        return;
    }
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.confirmed_account("mover@example.com").await;
    let sign_in = |email: &str| {
        json!([
            { "goto": app.url("/signin"), "size": "390x844" },
            { "fill": "#email", "value": email },
            { "fill": "#password", "value": PASSWORD },
            { "click": "#submit" },
            { "waitFor": "body[data-state=signed-in] #account" },
        ])
    };

    let mut steps = sign_in("mover@example.com");
    steps.as_array_mut().unwrap().extend(
        json!([
            { "fill": "#new-email", "value": "moved@example.com" },
            { "fill": "#email-password", "value": PASSWORD },
            { "click": "#email-submit" },
            { "waitState": ["email-requested", "email-refused", "error"] },
            { "read": "#email-message", "as": "requested" },
            { "screenshot": "account-email-requested" },
        ])
        .as_array()
        .unwrap()
        .clone(),
    );
    let requested = browse(steps).await;
    assert_eq!(
        requested.state(),
        "email-requested",
        "{}",
        requested.read("requested")
    );
    let link = app.smtp.next_mail().await.link();

    let opened = browse(json!([
        { "goto": link, "size": "390x844" },
        { "wait": 300 },
        { "screenshot": "email-change-ready" },
        { "click": "#act" },
        { "waitState": ["done", "invalid", "expired", "superseded", "used", "refused", "error"] },
        { "read": "#message", "as": "message" },
        { "screenshot": "email-change-done" },
    ]))
    .await;
    assert_eq!(opened.state(), "done", "{}", opened.read("message"));
    assert!(opened.read("message").contains("moved@example.com"));
    assert_eq!(
        opened.posts(),
        &json!(["/graphql"]),
        "only the click sent something"
    );
    let revert = app.smtp.next_mail().await.link();
    assert!(revert.contains("/email-revert#token="), "{revert}");

    let undone = browse(json!([
        { "goto": revert, "size": "390x844" },
        { "click": "#act" },
        { "waitState": ["done", "invalid", "expired", "superseded", "used", "refused", "error"] },
        { "read": "#message", "as": "message" },
        { "screenshot": "email-revert-done" },
    ]))
    .await;
    assert_eq!(undone.state(), "done", "{}", undone.read("message"));
    assert!(undone.read("message").contains("mover@example.com again"));
    assert!(app.smtp.next_mail().await.link().contains("/reset#token="));

    let mut steps = sign_in("mover@example.com");
    steps.as_array_mut().unwrap().extend(
        json!([
            { "fill": "#delete-password", "value": "not my password" },
            { "click": "#delete-submit" },
            { "waitState": ["delete-refused", "deleted", "error"] },
            { "read": "#delete-error", "as": "wrong" },
            { "fill": "#delete-password", "value": PASSWORD },
            { "click": "#delete-submit" },
            { "waitState": ["deleted", "delete-refused", "error"] },
            { "read": "#message", "as": "deleted" },
            { "screenshot": "account-deleted" },
        ])
        .as_array()
        .unwrap()
        .clone(),
    );
    let deleted = browse(steps).await;
    assert_eq!(deleted.read("wrong"), "Your password is wrong.");
    assert_eq!(deleted.state(), "deleted", "{}", deleted.read("deleted"));
    assert!(users::Entity::find().one(&app.db).await.unwrap().is_none());
}
