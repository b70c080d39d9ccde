//! The real `admit` binary as a child process, for what only a process can show: start-up on
//! defaults, SIGTERM, `kill -9`, and several instances sharing one database.

use std::{path::Path, process::Stdio, time::Duration};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::mpsc,
};

/// `admit` with a clean environment (none of the developer's settings leak in) in `dir`.
pub fn admit_command(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_admit"));
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .kill_on_drop(true);
    command
}

/// A running `admit serve`.
pub struct AdmitProcess {
    child: Child,
    log: mpsc::UnboundedReceiver<String>,
    lines: Vec<String>,
    /// `host:port` it listens on.
    pub listen: String,
    http: reqwest::Client,
}

impl AdmitProcess {
    /// Starts `admit` in `dir` on a free port with `env`, and waits until it serves.
    pub async fn start(dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::spawn(admit_command(dir), env).await
    }

    /// Like [`start`](Self::start), with the process allowed only `descriptors` open files
    /// (`ulimit -n`), soft and hard.
    pub async fn start_with_descriptors(
        dir: &Path,
        env: &[(&str, &str)],
        descriptors: u32,
    ) -> Self {
        let mut command = Command::new("sh");
        command
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .kill_on_drop(true)
            .arg("-c")
            .arg(format!("ulimit -n {descriptors} && exec \"$0\""))
            .arg(env!("CARGO_BIN_EXE_admit"));
        Self::spawn(command, env).await
    }

    async fn spawn(mut command: Command, env: &[(&str, &str)]) -> Self {
        command
            .env("ADMIT_LISTEN", "127.0.0.1:0")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start admit");
        let stderr = child.stderr.take().expect("stderr");
        let (send, log) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let mut process = Self {
            child,
            log,
            lines: Vec::new(),
            listen: String::new(),
            http: reqwest::Client::new(),
        };
        let line = process.wait_for_line("admit is serving").await;
        process.listen = line
            .split("listen=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("the start-up line names the address")
            .to_owned();
        process
    }

    /// Waits (up to 30 s) for a log line containing `needle`, and returns it.
    pub async fn wait_for_line(&mut self, needle: &str) -> String {
        if let Some(line) = self.lines.iter().find(|line| line.contains(needle)) {
            return line.clone();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match tokio::time::timeout_at(deadline, self.log.recv()).await {
                Ok(Some(line)) => {
                    self.lines.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                _ => panic!(
                    "no log line with {needle:?}; got:\n{}",
                    self.lines.join("\n")
                ),
            }
        }
    }

    /// Everything logged so far.
    pub async fn log(&mut self) -> String {
        while let Ok(Some(line)) =
            tokio::time::timeout(Duration::from_millis(100), self.log.recv()).await
        {
            self.lines.push(line);
        }
        self.lines.join("\n")
    }

    /// POSTs a GraphQL request; the status and body, `None` when no answer came in 30 s.
    pub async fn graphql_with_status(&self, query: &str, variables: Value) -> Option<(u16, Value)> {
        let response = self
            .http
            .post(format!("http://{}/graphql", self.listen))
            .timeout(Duration::from_secs(30))
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.json().await.ok()?))
    }

    /// POSTs a GraphQL request with `Authorization: Bearer token`; the JSON body.
    pub async fn graphql_with_bearer(&self, token: &str, query: &str, variables: Value) -> Value {
        self.http
            .post(format!("http://{}/graphql", self.listen))
            .timeout(Duration::from_secs(30))
            .bearer_auth(token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("POST /graphql")
            .json()
            .await
            .expect("JSON body")
    }

    /// `register` for `email` with the test password; whether it was accepted.
    pub async fn register(&self, email: &str) -> bool {
        let body = self
            .operation(
                "Register",
                json!({ "input": { "email": email, "password": crate::helpers::PASSWORD } }),
            )
            .await;
        body.is_some_and(|body| body["data"]["register"]["accepted"] == true)
    }

    /// Runs one of admit's operations (`admit::graphql::OPERATIONS`) by name; `None` when the
    /// process did not answer.
    pub async fn operation(&self, name: &str, variables: Value) -> Option<Value> {
        let response = self
            .http
            .post(format!("http://{}/graphql", self.listen))
            .timeout(Duration::from_secs(30))
            .json(&json!({ "query": admit::graphql::operation_document(name).expect("a shared operation"), "operationName": name, "variables": variables }))
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    }

    /// Sends `signal` (`-TERM`, `-KILL`, ...) without waiting for the process.
    pub async fn signal(&self, signal: &str) {
        let pid = self.pid();
        let status = Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .await;
        assert!(status.expect("kill runs").success());
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("still running")
    }

    /// Sends SIGTERM and waits (up to 30 s) for the exit code.
    pub async fn terminate(&mut self) -> Option<i32> {
        self.signal("-TERM").await;
        self.wait().await
    }

    /// Waits (up to 30 s) for the process to exit, and returns its exit code.
    pub async fn wait(&mut self) -> Option<i32> {
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("admit exits after SIGTERM")
            .expect("wait");
        status.code()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// GETs `path`; the status, or `None` when no answer came within `timeout`.
    pub async fn get(&self, path: &str, timeout: Duration) -> Option<u16> {
        let response = self
            .http
            .get(format!("http://{}{path}", self.listen))
            .timeout(timeout)
            .send()
            .await
            .ok()?;
        Some(response.status().as_u16())
    }

    /// `kill -9`: no chance to clean up.
    pub async fn kill(&self) {
        self.signal("-KILL").await;
    }
}
