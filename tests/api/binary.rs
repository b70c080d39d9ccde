//! The `admit` binary as a newcomer runs it: no settings, a fresh folder, SQLite and mail files.

use mail_parser::MessageParser;
use serde_json::json;

use crate::{
    helpers::PASSWORD,
    process::{AdmitProcess, admit_command},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_on_embedded_defaults_confirms_from_a_mail_file_and_logs_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let mut admit = AdmitProcess::start(dir.path(), &[]).await;
    let line = admit.wait_for_line("admit is serving").await;
    assert!(line.contains("sqlite://admit.db"), "{line}");
    assert!(line.contains("files in ./mail"), "{line}");

    assert!(admit.register("newcomer@example.com").await);
    admit.wait_for_line("mail sent").await;
    let (file, token) = the_one_mail_file(dir.path());
    // The mail file holds a live link; the database and the generated key are secrets too.
    {
        use std::os::unix::fs::PermissionsExt;
        for path in [
            file,
            dir.path().join("admit.db"),
            dir.path().join("admit.key"),
        ] {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
        }
    }
    assert_confirms(&admit, &token).await;
    assert!(dir.path().join("admit.db").exists());

    assert_eq!(admit.terminate().await, Some(0));
    let log = admit.log().await;
    assert!(!log.contains(PASSWORD), "the password is in the log");
    assert!(!log.contains(&token), "the token is in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_database_takes_a_sign_up_to_its_confirmation_and_leaves_no_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut admit = AdmitProcess::start(dir.path(), &[("DATABASE_URL", "sqlite::memory:")]).await;
    admit
        .wait_for_line("every account is lost when admit stops")
        .await;

    assert!(admit.register("ephemeral@example.com").await);
    admit.wait_for_line("mail sent").await;
    let (_, token) = the_one_mail_file(dir.path());
    assert_confirms(&admit, &token).await;

    assert_eq!(admit.terminate().await, Some(0));
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["admit.key", "mail"]);
}

/// The path of the one mail file in `dir`'s `mail` folder, and the token its link carries.
fn the_one_mail_file(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let files: Vec<_> = std::fs::read_dir(dir.join("mail"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].extension().unwrap(), "eml");
    let raw = std::fs::read(&files[0]).unwrap();
    let message = MessageParser::default().parse(&raw).unwrap();
    let text = message.body_text(0).unwrap();
    let token = text
        .split("#token=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(token.len(), 43);
    (files[0].clone(), token)
}

async fn assert_confirms(admit: &AdmitProcess, token: &str) {
    let confirmed = admit
        .operation("ConfirmAccount", json!({ "token": token }))
        .await
        .unwrap();
    assert_eq!(
        confirmed["data"]["confirmAccount"]["user"]["confirmed"], true,
        "{confirmed}"
    );
}

#[tokio::test]
async fn migrate_creates_the_schema_and_export_schema_writes_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let status = admit_command(dir.path())
        .arg("migrate")
        .status()
        .await
        .unwrap();
    assert!(status.success());
    assert!(dir.path().join("admit.db").exists());

    let out = dir.path().join("schema.graphql");
    let status = admit_command(dir.path())
        .args(["export-schema", "--out"])
        .arg(&out)
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let written = std::fs::read_to_string(&out).unwrap();
    let printed = admit_command(dir.path())
        .arg("export-schema")
        .output()
        .await
        .unwrap()
        .stdout;
    assert_eq!(written.as_bytes(), printed.as_slice());
}

#[tokio::test]
async fn contradictory_settings_are_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (
            &["--password-min-length", "20", "--password-max-length", "10"],
            "ADMIT_PASSWORD_MIN_LENGTH",
        ),
        (
            &["--token-ttl", "0s"],
            "invalid value '0s' for '--token-ttl <TOKEN_TTL>': must be longer than zero",
        ),
        (
            &["--db-timeout", "soon"],
            "invalid value 'soon' for '--db-timeout <TIMEOUT>'",
        ),
        (
            &["--mail-lease", "5s", "--smtp-timeout", "10s"],
            "ADMIT_MAIL_LEASE",
        ),
        (
            &["--cors-origins", "https://app.example.com/signup"],
            "is not an origin; did you mean \"https://app.example.com\"",
        ),
    ];
    for (args, expected) in cases {
        let output = admit_command(dir.path())
            .arg("serve")
            .args(args)
            .output()
            .await
            .unwrap();
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn a_command_refuses_settings_it_does_not_use() {
    let dir = tempfile::tempdir().unwrap();
    let output = admit_command(dir.path())
        .args(["migrate", "--smtp-url", "smtp://127.0.0.1:1"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unexpected argument '--smtp-url'"),
        "{stderr}"
    );
}

#[tokio::test]
async fn log_lines_can_be_json_for_log_shippers() {
    let dir = tempfile::tempdir().unwrap();
    let output = admit_command(dir.path())
        .arg("migrate")
        .env("ADMIT_LOG_FORMAT", "json")
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    let log = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|line| line["fields"]["message"] == "migrations applied"),
        "{log}"
    );
}
