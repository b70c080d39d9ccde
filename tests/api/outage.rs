//! The database going away: requests fail fast with `SERVICE_UNAVAILABLE`, liveness stays up,
//! readiness goes down, the log says so in one line per failure, and all recovers with the
//! database.

use std::{net::SocketAddr, time::Duration};

use sea_orm::{Database, SqliteTransactionMode, TransactionOptions, TransactionTrait};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    time::Instant,
};

use crate::{
    helpers::{Backend, PASSWORD, TestApp, TestDatabase},
    process::AdmitProcess,
};

const REGISTER: &str = "mutation($input: RegisterInput!) { register(input: $input) { accepted } }";
const CONFIRM: &str = "mutation($token: String!) { confirmAccount(token: $token) { user { id } } }";

/// A TCP relay to a database that can be cut: while cut it relays nothing in either direction
/// and holds every connection open, old and new, as a dead network or a hung server would.
struct CutProxy {
    address: SocketAddr,
    cut: watch::Sender<bool>,
}

impl CutProxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (cut, watching) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                tokio::spawn(relay(inbound, target, watching.clone()));
            }
        });
        Self { address, cut }
    }

    fn cut(&self) {
        self.cut.send_replace(true);
    }

    fn restore(&self) {
        self.cut.send_replace(false);
    }
}

async fn relay(mut inbound: TcpStream, target: SocketAddr, mut cut: watch::Receiver<bool>) {
    if cut.wait_for(|cut| !cut).await.is_err() {
        return;
    }
    let Ok(mut outbound) = TcpStream::connect(target).await else {
        return;
    };
    let (mut from_client, mut to_client) = inbound.split();
    let (mut from_server, mut to_server) = outbound.split();
    let mut up = [0u8; 8192];
    let mut down = [0u8; 8192];
    loop {
        tokio::select! {
            read = from_client.read(&mut up) => {
                let Ok(read @ 1..) = read else { return };
                if cut.wait_for(|cut| !cut).await.is_err() || to_server.write_all(&up[..read]).await.is_err() {
                    return;
                }
            }
            read = from_server.read(&mut down) => {
                let Ok(read @ 1..) = read else { return };
                if cut.wait_for(|cut| !cut).await.is_err() || to_client.write_all(&down[..read]).await.is_err() {
                    return;
                }
            }
            changed = cut.changed() => {
                if changed.is_err() || (*cut.borrow_and_update() && cut.wait_for(|cut| !cut).await.is_err()) {
                    return;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_unreachable_requests_fail_fast_and_readiness_goes_down_then_recovers() {
    let database = TestDatabase::create(Backend::Postgres).await;
    let mut url = url::Url::parse(&database.url).unwrap();
    let target: SocketAddr = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432))
        .parse()
        .unwrap();
    let proxy = CutProxy::start(target).await;
    url.set_port(Some(proxy.address.port())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut admit = AdmitProcess::start(
        dir.path(),
        &[
            ("DATABASE_URL", url.as_str()),
            ("ADMIT_DB_TIMEOUT", "2s"),
            ("RUST_BACKTRACE", "1"),
        ],
    )
    .await;
    assert!(admit.register("before@example.com").await);
    assert_eq!(
        admit.get("/readyz", Duration::from_secs(5)).await,
        Some(200)
    );

    proxy.cut();
    let started = Instant::now();
    let register = json!({ "input": { "email": "during@example.com", "password": PASSWORD } });
    let (status, body) = admit.graphql_with_status(REGISTER, register).await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "SERVICE_UNAVAILABLE"
    );
    // Nothing tells when the database is back: the least wait.
    assert_eq!(body["errors"][0]["extensions"]["retryAfterSeconds"], 1);
    let request_id = body["errors"][0]["extensions"]["requestId"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = "A".repeat(43);
    let (status, body) = admit
        .graphql_with_status(CONFIRM, json!({ "token": token }))
        .await
        .unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "SERVICE_UNAVAILABLE"
    );
    // Two requests, each bounded by the 2 s deadline, instead of 30 s and an empty 408 each.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        admit.get("/healthz", Duration::from_secs(5)).await,
        Some(200)
    );
    assert_eq!(
        admit.get("/readyz", Duration::from_secs(5)).await,
        Some(503)
    );

    let log = admit.log().await;
    let failure = log
        .lines()
        .find(|line| line.contains(&request_id))
        .unwrap_or_else(|| panic!("no log line names {request_id}:\n{log}"));
    assert!(failure.contains("service unavailable"), "{failure}");
    assert!(!log.contains("backtrace"), "{log}");
    assert!(!log.contains(PASSWORD));

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(30);
    while admit.get("/readyz", Duration::from_secs(5)).await != Some(200) {
        assert!(Instant::now() < deadline, "readiness did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(admit.register("after@example.com").await);
    assert_eq!(admit.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sqlite_locked_by_another_process_writes_answer_service_unavailable_in_time() {
    let app = TestApp::spawn_with(Backend::Sqlite, &["--db-timeout", "1s"]).await;
    let other = Database::connect(&app.database_url).await.unwrap();
    let lock = other
        .begin_with_options(TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Exclusive),
            ..TransactionOptions::default()
        })
        .await
        .unwrap();
    let started = Instant::now();
    let (status, body) = app
        .post_graphql(
            REGISTER,
            json!({ "input": { "email": "locked@example.com", "password": PASSWORD } }),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "SERVICE_UNAVAILABLE"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    lock.rollback().await.unwrap();

    let payload = app.register("locked@example.com", PASSWORD, None).await;
    assert_eq!(payload["accepted"], true, "{payload}");
}
