//! Starting admit for a test: its own database (a SQLite file or a PostgreSQL database), a real
//! SMTP server on loopback, and real HTTP on a random port.

use std::{net::SocketAddr, time::Duration};

use admit::{Application, services::PasswordHasher, settings::ServeSettings};
use entity::{users, verification_tokens};
use sea_orm::{
    ColumnTrait, ConnectionTrait, Database, DatabaseConnection, EntityTrait, QueryFilter,
    sea_query::Expr,
};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::smtp::{ReceivedMail, SmtpServer};

/// The GraphQL-over-HTTP media type, under which request errors get 4xx.
pub const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

/// A password that meets the default policy.
pub const PASSWORD: &str = "correct horse battery staple";

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server the tests create their databases on. `.ci/run` sets it; the default
/// is the local server. PostgreSQL tests fail, never skip, when it is unreachable.
fn postgres_admin_url() -> String {
    std::env::var("ADMIT_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database that exists for one test and is dropped after it.
pub struct TestDatabase {
    pub url: String,
    backend: Backend,
    name: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    pub async fn create(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("admit.db").display()
                );
                Self {
                    url,
                    backend,
                    name: String::new(),
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let admin_url = postgres_admin_url();
                let name = format!("admit_test_{}", uuid::Uuid::now_v7().simple());
                let admin = Database::connect(&admin_url).await.unwrap_or_else(|err| {
                    panic!("PostgreSQL at {admin_url} is needed for this test: {err}")
                });
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create test database");
                admin.close().await.ok();
                let mut url = url::Url::parse(&admin_url).expect("admin URL");
                url.set_path(&name);
                Self {
                    url: url.to_string(),
                    backend,
                    name,
                    _dir: None,
                }
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.backend != Backend::Postgres {
            return;
        }
        let name = std::mem::take(&mut self.name);
        // Drop cannot be async, and the test's runtime may be gone: use a runtime of our own.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(admin) = Database::connect(postgres_admin_url()).await {
                    let _ = admin
                        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
}

/// A running admit with everything it talks to.
pub struct TestApp {
    pub address: SocketAddr,
    pub database_url: String,
    pub db: DatabaseConnection,
    pub smtp: SmtpServer,
    pub http: reqwest::Client,
    /// The service's password hasher, to count the hashes a request cost.
    pub hasher: PasswordHasher,
    /// Where `/metrics` is served, when the test asked for it (`--metrics-listen`).
    pub metrics: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    args: Vec<String>,
    // Dropped last: the database outlives the service using it.
    _database: TestDatabase,
}

impl TestApp {
    /// admit with default settings on `backend`.
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, &[]).await
    }

    /// admit on `backend` with extra command-line settings, e.g. `["--token-ttl", "2h"]`.
    pub async fn spawn_with(backend: Backend, extra: &[&str]) -> Self {
        let smtp = SmtpServer::start().await;
        let url = smtp.url();
        Self::start(backend, smtp, url, extra).await
    }

    /// admit sending to `smtp_url` instead of its own SMTP server, e.g. one that is down.
    pub async fn spawn_with_smtp_url(backend: Backend, smtp_url: String, extra: &[&str]) -> Self {
        Self::start(backend, SmtpServer::start().await, smtp_url, extra).await
    }

    async fn start(backend: Backend, smtp: SmtpServer, smtp_url: String, extra: &[&str]) -> Self {
        let database = TestDatabase::create(backend).await;
        let defaults = [
            ("--database-url", database.url.as_str()),
            ("--listen", "127.0.0.1:0"),
            ("--smtp-url", smtp_url.as_str()),
            ("--mail-from", "admit <no-reply@admit.test>"),
            ("--mail-retry-base", "200ms"),
            ("--mail-retry-max", "1s"),
            ("--smtp-timeout", "5s"),
            ("--mail-lease", "10s"),
        ];
        let mut args = vec!["admit"];
        for (flag, value) in defaults {
            // A test's own value for a setting replaces the default.
            if !extra.contains(&flag) {
                args.extend([flag, value]);
            }
        }
        args.extend_from_slice(extra);
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        let running = Running::launch(&args).await;
        Self {
            address: running.address,
            database_url: database.url.clone(),
            db: running.db,
            hasher: running.hasher,
            metrics: running.metrics,
            smtp,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("HTTP client"),
            stop: Some(running.stop),
            server: Some(running.server),
            args,
            _database: database,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// POSTs a GraphQL request and returns the HTTP status and the JSON body.
    pub async fn post_graphql(&self, query: &str, variables: Value) -> (u16, Value) {
        self.post_graphql_accepting("application/json", query, variables)
            .await
    }

    /// POSTs a GraphQL request with `accept` as its `Accept` header.
    pub async fn post_graphql_accepting(
        &self,
        accept: &str,
        query: &str,
        variables: Value,
    ) -> (u16, Value) {
        self.send_graphql(&self.http, accept, query, variables)
            .await
    }

    /// Runs `query` and returns `data`, failing the test on any error.
    pub async fn graphql(&self, query: &str, variables: Value) -> Value {
        let (status, body) = self.post_graphql(query, variables).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// POSTs a GraphQL request with `client` (e.g. one bound to another loopback address).
    pub async fn post_graphql_with(
        &self,
        client: &reqwest::Client,
        query: &str,
        variables: Value,
    ) -> (u16, Value) {
        self.send_graphql(client, "application/json", query, variables)
            .await
    }

    /// POSTs `query` with `client`, accepting `accept`; the status and the JSON body.
    async fn send_graphql(
        &self,
        client: &reqwest::Client,
        accept: &str,
        query: &str,
        variables: Value,
    ) -> (u16, Value) {
        let response = client
            .post(self.url("/graphql"))
            .header("accept", accept)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("POST /graphql");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    /// A query under an operation name of the client's choosing.
    pub async fn operation_named_freely(&self, name: &str) {
        let response = self
            .http
            .post(self.url("/graphql"))
            .json(&json!({
                "query": format!("query {name} {{ passwordPolicy {{ minLength }} }}"),
                "operationName": name,
            }))
            .send()
            .await
            .expect("POST /graphql");
        assert_eq!(response.status(), 200);
    }

    /// `register` with the given fields; returns the payload.
    pub async fn register(&self, email: &str, password: &str, display_name: Option<&str>) -> Value {
        let input = json!({ "input": { "email": email, "password": password, "displayName": display_name } });
        self.operation("Register", input).await["register"].clone()
    }

    /// `resendConfirmation` for `email`; returns the payload.
    pub async fn resend(&self, email: &str) -> Value {
        self.operation("ResendConfirmation", json!({ "email": email }))
            .await["resendConfirmation"]
            .clone()
    }

    /// `confirmAccount` with `token`; returns the payload.
    pub async fn confirm(&self, token: &str) -> Value {
        self.operation("ConfirmAccount", json!({ "token": token }))
            .await["confirmAccount"]
            .clone()
    }

    /// Runs one of admit's operations (`clients/typescript/src/operations.graphql`, the single
    /// source the pages and the typed client use too) and returns `data`, failing the test on
    /// any error.
    pub async fn operation(&self, name: &str, variables: Value) -> Value {
        self.operation_with(&self.http, name, variables, &[])
            .await
            .1
    }

    /// Runs shared operation `name` from `client` with extra request `headers` (a cookie, a
    /// bearer token, an origin); returns the answer's headers and `data`, failing the test on
    /// any error.
    pub async fn operation_with(
        &self,
        client: &reqwest::Client,
        name: &str,
        variables: Value,
        headers: &[(&str, &str)],
    ) -> (reqwest::header::HeaderMap, Value) {
        let mut request = client.post(self.url("/graphql")).json(&json!({
            "query": admit::graphql::operation_document(name).expect("a shared operation"),
            "operationName": name,
            "variables": variables,
        }));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("POST /graphql");
        assert_eq!(response.status(), 200);
        let headers = response.headers().clone();
        let body: Value = response.json().await.expect("JSON body");
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        (headers, body["data"].clone())
    }

    /// Runs shared operation `name` with the session `token` as a bearer; returns `data`.
    pub async fn as_bearer(&self, token: &str, name: &str, variables: Value) -> Value {
        let authorization = format!("Bearer {token}");
        self.operation_with(
            &self.http,
            name,
            variables,
            &[("authorization", &authorization)],
        )
        .await
        .1
    }

    /// Signs `email` in with the default password and the bearer delivery; the token.
    pub async fn bearer_session(&self, email: &str) -> String {
        let data = self
            .operation(
                "SignIn",
                json!({ "input": { "email": email, "password": PASSWORD, "delivery": "BEARER" } }),
            )
            .await;
        data["signIn"]["sessionToken"]
            .as_str()
            .unwrap_or_else(|| panic!("a session token: {data}"))
            .to_owned()
    }

    /// Registers `email` with the default password and confirms it from the mailed link.
    pub async fn confirmed_account(&self, email: &str) {
        let token = self.register_and_read_mail(email).await.token();
        let confirmed = self.confirm(&token).await;
        assert_eq!(confirmed["user"]["confirmed"], true, "{confirmed}");
    }

    /// Registers `email` with the default password and returns the email it was sent.
    pub async fn register_and_read_mail(&self, email: &str) -> ReceivedMail {
        let payload = self.register(email, PASSWORD, None).await;
        assert_eq!(payload["accepted"], true, "{payload}");
        self.smtp.next_mail().await
    }

    /// Stops the service and starts a new one on the same database, SMTP server and settings.
    pub async fn restart(self) -> Self {
        self.restart_with(&[]).await
    }

    /// Like [`restart`](Self::restart), with some settings changed: `["--flag", "value", ...]`.
    pub async fn restart_with(mut self, changes: &[&str]) -> Self {
        for pair in changes.chunks(2) {
            let [flag, value] = pair else {
                panic!("flags and values come in pairs")
            };
            match self.args.iter().position(|arg| arg == flag) {
                Some(at) => self.args[at + 1] = (*value).to_owned(),
                None => self.args.extend([(*flag).to_owned(), (*value).to_owned()]),
            }
        }
        self.shut_down().await;
        let running = Running::launch(&self.args).await;
        self.address = running.address;
        self.db = running.db;
        self.hasher = running.hasher;
        self.metrics = running.metrics;
        self.stop = Some(running.stop);
        self.server = Some(running.server);
        self
    }

    /// Stops the service as a SIGTERM would, and waits until it has.
    pub async fn stop(mut self) {
        self.shut_down().await;
    }

    async fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server ran cleanly");
        }
    }

    /// Sets the expiry of the tokens of the account with `email_key` (of every account when
    /// `None`) to `ago` before now: ageing a row instead of waiting for it.
    pub async fn expire_tokens(&self, email_key: Option<&str>, ago: chrono::TimeDelta) {
        let at = chrono::Utc::now().fixed_offset() - ago;
        let mut update = verification_tokens::Entity::update_many()
            .col_expr(verification_tokens::Column::ExpiresAt, Expr::value(at));
        if let Some(key) = email_key {
            let user = users::Entity::find()
                .filter(users::Column::EmailKey.eq(key))
                .one(&self.db)
                .await
                .unwrap()
                .expect("an account with that key");
            update = update.filter(verification_tokens::Column::UserId.eq(user.id));
        }
        update.exec(&self.db).await.unwrap();
    }
}

/// An `Application` started in the background.
struct Running {
    address: SocketAddr,
    db: DatabaseConnection,
    hasher: PasswordHasher,
    metrics: Option<SocketAddr>,
    stop: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn launch(args: &[String]) -> Self {
        let settings = ServeSettings::try_parse_from(args).expect("test settings");
        let app = Application::build(settings).await.expect("admit starts");
        let address = app.local_addr().expect("bound address");
        let db = app.state().db.clone();
        let hasher = app.state().accounts.hasher().clone();
        let metrics = app.metrics_addr();
        let (stop, stopped) = oneshot::channel();
        let server = tokio::spawn(app.run(async {
            let _ = stopped.await;
        }));
        Self {
            address,
            db,
            hasher,
            metrics,
            stop,
            server,
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// Makes `attempt` fail with `INVALID_CREDENTIALS` `failures` times in a row, polling through
/// the waits that start after the fifth (1 s, 2 s, 4 s, ...). `attempt` returns the error codes
/// of one attempt's payload. A later wait is long enough that the next request lands in it
/// however slow the machine, where the first one (1 s) is not.
pub async fn fail_in_a_row<F, Fut>(failures: usize, mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Vec<String>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut failed = 0;
    while failed < failures {
        match attempt().await.as_slice() {
            [code] if code == "INVALID_CREDENTIALS" => failed += 1,
            [code] if code == "RATE_LIMITED" => {
                assert!(failed >= 5, "a wait before five failures");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("unexpected answer {other:?}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "still failing");
    }
}

/// The `code` of each of a payload's `userErrors`.
pub fn error_codes(payload: &Value) -> Vec<String> {
    payload["userErrors"]
        .as_array()
        .expect("userErrors")
        .iter()
        .map(|error| error["code"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Generates one test per backend from `async fn name(backend: Backend)`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await;
                }
            )*
        }
    };
}
pub(crate) use on_both_backends;

/// An unused, unsuperseded link row of `purpose` for `user_id`, stored under `token_hash`,
/// for tests that put links straight into the database.
pub fn link_row(
    user_id: uuid::Uuid,
    purpose: &str,
    token_hash: String,
    created_at: chrono::DateTime<chrono::FixedOffset>,
    expires_at: chrono::DateTime<chrono::FixedOffset>,
) -> verification_tokens::ActiveModel {
    use sea_orm::ActiveValue::Set;
    verification_tokens::ActiveModel {
        id: Set(uuid::Uuid::now_v7()),
        user_id: Set(user_id),
        purpose: Set(purpose.to_owned()),
        token_hash: Set(token_hash),
        created_at: Set(created_at),
        expires_at: Set(expires_at),
        consumed_at: Set(None),
        superseded_at: Set(None),
        signup_id: Set(None),
        password_hash: Set(None),
        display_name: Set(None),
        email: Set(None),
    }
}

/// Waits until at least `count` statements in the PostgreSQL database `watcher` is connected
/// to wait for locks that other transactions hold.
pub async fn waiting_for_locks(watcher: &DatabaseConnection, count: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting = watcher
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                "SELECT count(*) AS waiting FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            ))
            .await
            .unwrap()
            .and_then(|row| row.try_get::<i64>("", "waiting").ok())
            .unwrap_or(0);
        if waiting >= count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{waiting} statements, not {count}, waited for a lock within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An HTTP client whose connections leave from `ip`: 127.0.0.2 and 127.0.0.3 are as local as
/// 127.0.0.1, so one machine can play two clients.
pub fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<std::net::IpAddr>().expect("an IP address"))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

/// Whether a test that needs Node tools can run: `marker` is a file the install leaves behind.
/// Under `scripts/test` (which installs everything and sets `ADMIT_TEST_ALL=1`) a missing tool
/// fails the test; under a plain `cargo test`, for Rust-only work, the test says what it
/// skipped and why, and passes without running.
pub fn node_tools_ready(marker: &std::path::Path, what: &str) -> bool {
    if marker.exists() {
        return true;
    }
    let need = format!(
        "{what} need {} (run `scripts/test`, which installs it)",
        marker.display()
    );
    if std::env::var_os("ADMIT_TEST_ALL").is_some() {
        panic!("{need}");
    }
    eprintln!("skipped: {need}");
    false
}

/// Whether the browser tests can run (playwright-core from `tests/browser` and Chromium).
pub fn browser_ready() -> bool {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = std::env::var_os("CHROMIUM_PATH")
        .map_or_else(|| std::path::PathBuf::from("/usr/bin/chromium"), Into::into);
    node_tools_ready(
        &root.join("node_modules/playwright-core"),
        "the browser tests",
    ) && node_tools_ready(&chromium, "the browser tests")
}
