//! The `admit` binary as a newcomer runs it: no settings, a fresh folder, SQLite and mail files.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use mail_parser::MessageParser;
use serde_json::{Value, json};

use crate::helpers::PASSWORD;

/// `admit` in `dir` with a clean environment (none of the developer's settings leak in).
fn admit(dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_admit"));
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command
}

struct Running {
    child: Child,
    log: mpsc::Receiver<String>,
    lines: Vec<String>,
}

impl Running {
    /// Waits (bounded) for a log line containing `needle`.
    fn wait_for_line(&mut self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.log.recv_timeout(left) {
                Ok(line) => {
                    self.lines.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "no log line with {needle:?}; got:\n{}",
            self.lines.join("\n")
        );
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_binary_runs_on_embedded_defaults_confirms_from_a_mail_file_and_logs_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = admit(dir.path())
        .env("ADMIT_LISTEN", "127.0.0.1:0")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start admit");
    let stderr = child.stderr.take().unwrap();
    let (send, log) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    let mut running = Running {
        child,
        log,
        lines: Vec::new(),
    };

    let line = running.wait_for_line("admit is serving");
    let listen = line
        .split("listen=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert!(line.contains("sqlite://admit.db"), "{line}");
    assert!(line.contains("files in ./mail"), "{line}");
    let http = reqwest::Client::new();
    let graphql = |query: &'static str, variables: Value| {
        let http = http.clone();
        let url = format!("http://{listen}/graphql");
        async move {
            let response = http
                .post(url)
                .json(&json!({ "query": query, "variables": variables }))
                .send()
                .await
                .unwrap();
            response.json::<Value>().await.unwrap()
        }
    };

    let registered = graphql(
        "mutation($input: RegisterInput!) { register(input: $input) { accepted } }",
        json!({ "input": { "email": "newcomer@example.com", "password": PASSWORD } }),
    )
    .await;
    assert_eq!(
        registered["data"]["register"]["accepted"], true,
        "{registered}"
    );

    running.wait_for_line("mail sent");
    let mail_dir = dir.path().join("mail");
    let files: Vec<_> = std::fs::read_dir(&mail_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
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

    let confirmed = graphql(
        "mutation($token: String!) { confirmAccount(token: $token) { user { email confirmed } } }",
        json!({ "token": token }),
    )
    .await;
    assert_eq!(
        confirmed["data"]["confirmAccount"]["user"]["confirmed"], true,
        "{confirmed}"
    );
    assert!(dir.path().join("admit.db").exists());

    // SIGTERM: a clean exit.
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(running.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let mut exited = None;
    for _ in 0..200 {
        if let Some(status) = running.child.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(exited.expect("admit exits after SIGTERM").code(), Some(0));
    while let Ok(line) = running.log.recv_timeout(Duration::from_millis(200)) {
        running.lines.push(line);
    }
    let log = running.lines.join("\n");
    assert!(!log.contains(PASSWORD), "the password is in the log");
    assert!(!log.contains(&token), "the token is in the log");
}

#[test]
fn migrate_creates_the_schema_and_export_schema_writes_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let status = admit(dir.path()).arg("migrate").status().unwrap();
    assert!(status.success());
    assert!(dir.path().join("admit.db").exists());

    let out = dir.path().join("schema.graphql");
    let status = admit(dir.path())
        .args(["export-schema", "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let written = std::fs::read_to_string(&out).unwrap();
    let printed = admit(dir.path())
        .arg("export-schema")
        .output()
        .unwrap()
        .stdout;
    assert_eq!(written.as_bytes(), printed.as_slice());
}

#[test]
fn contradictory_settings_are_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let output = admit(dir.path())
        .args([
            "migrate",
            "--password-min-length",
            "20",
            "--password-max-length",
            "10",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("ADMIT_PASSWORD_MIN_LENGTH"));
}
