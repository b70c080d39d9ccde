//! The confirmation page in a real browser: Debian's Chromium driven by playwright-core
//! (`tests/browser`, installed by `npm ci`). Screenshots go to `target/tmp/screenshots`.

use std::path::PathBuf;

use entity::users;
use sea_orm::EntityTrait;
use serde_json::Value;

use crate::helpers::{Backend, TestApp};

/// What the driver saw.
struct Seen(Value);

impl Seen {
    fn state(&self) -> &str {
        self.0["state"].as_str().unwrap_or_default()
    }
    fn message(&self) -> &str {
        self.0["message"].as_str().unwrap_or_default()
    }
}

async fn browse(url: &str, action: &str, shot: &str, size: &str) -> Seen {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        root.join("node_modules/playwright-core").exists(),
        "browser tests need `npm ci --prefix tests/browser` and Debian's chromium (.ci/run installs both)"
    );
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let output = tokio::process::Command::new("node")
        .arg(root.join("drive.mjs"))
        .args([url, action])
        .arg(shots.join(format!("{shot}.png")))
        .arg(size)
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
        serde_json::json!([]),
        "the page loaded external assets"
    );
    assert_eq!(
        seen["consoleErrors"],
        serde_json::json!([]),
        "the page logged errors"
    );
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
async fn opening_the_link_confirms_nothing_until_the_person_clicks() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let link = app.smtp_link_for("clicker@example.com").await;

    let opened = browse(&link, "open", "confirm-ready", "1024x768").await;
    assert_eq!(opened.state(), "ready");
    assert!(opened.0["buttonVisible"].as_bool().unwrap());
    assert_eq!(
        opened.0["posts"],
        serde_json::json!([]),
        "the page sent a request on load"
    );
    assert!(!confirmed(&app).await);

    // A phone-sized screen, as most people open their mail.
    let clicked = browse(&link, "click", "confirm-confirmed", "390x844").await;
    assert_eq!(clicked.state(), "confirmed", "{}", clicked.message());
    assert!(
        clicked.message().contains("clicker@example.com"),
        "{}",
        clicked.message()
    );
    assert_eq!(clicked.0["posts"], serde_json::json!(["/graphql"]));
    assert!(confirmed(&app).await);

    // Opening the link again and clicking again (a reload, a second tab) still says confirmed.
    let again = browse(&link, "click", "confirm-confirmed-again", "1024x768").await;
    assert_eq!(again.state(), "confirmed", "{}", again.message());
}

#[tokio::test]
async fn the_page_explains_an_invalid_a_superseded_an_expired_and_a_missing_link() {
    let app = TestApp::spawn_with(Backend::Sqlite, &["--resend-cooldown", "0s"]).await;
    let link = app.smtp_link_for("explain@example.com").await;
    let (base, token) = link.split_once("#token=").unwrap();

    let altered = format!("{base}#token={}", token.chars().rev().collect::<String>());
    let invalid = browse(&altered, "click", "confirm-invalid", "1024x768").await;
    assert_eq!(invalid.state(), "invalid", "{}", invalid.message());
    assert!(invalid.message().contains("not valid"));

    let missing = browse(base, "open", "confirm-missing", "1024x768").await;
    assert_eq!(missing.state(), "missing");
    assert!(!missing.0["buttonVisible"].as_bool().unwrap());

    assert_eq!(app.resend("explain@example.com").await["accepted"], true);
    let newest = app.smtp.next_mail().await.link();
    let superseded = browse(&link, "click", "confirm-superseded", "1024x768").await;
    assert_eq!(superseded.state(), "superseded", "{}", superseded.message());
    assert!(superseded.message().contains("most recent email"));

    app.expire_tokens(None, chrono::TimeDelta::seconds(1)).await;
    let expired = browse(&newest, "click", "confirm-expired", "1024x768").await;
    assert_eq!(expired.state(), "expired", "{}", expired.message());
    assert!(expired.message().contains("expired"));
    assert!(!confirmed(&app).await);
}
