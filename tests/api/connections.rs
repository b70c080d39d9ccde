//! Connections that never finish a request: they are closed after the header deadline, and
//! however many arrive, the process keeps its descriptors and keeps answering. One client
//! network may hold only its share of them.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
    time::Instant,
};

use crate::{
    helpers::{Backend, TestApp},
    process::AdmitProcess,
};

/// How long a test waits for the server to close a connection before calling it a hang.
const PATIENCE: Duration = Duration::from_secs(15);

/// Reads until the server closes `stream` (or resets it); returns everything it sent, or panics
/// after [`PATIENCE`].
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let deadline = Instant::now() + PATIENCE;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return String::from_utf8_lossy(&received).into_owned(),
            Ok(Ok(read)) => received.extend_from_slice(&buffer[..read]),
            Err(_) => panic!("the connection is still open after {PATIENCE:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_trickling_and_idle_connections_are_closed_after_the_header_deadline() {
    let app = TestApp::spawn_with(Backend::Sqlite, &["--header-timeout", "1s"]).await;

    let mut silent = TcpStream::connect(app.address).await.unwrap();

    let mut idle = TcpStream::connect(app.address).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: admit\r\n\r\n")
        .await
        .unwrap();

    // One header byte every 200 ms: activity, but never a whole request.
    let mut trickle = TcpStream::connect(app.address).await.unwrap();
    trickle
        .write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        .await
        .unwrap();
    let (mut trickle_read, mut trickle_write) = trickle.into_split();
    let dripping = tokio::spawn(async move {
        for _ in 0..100 {
            if trickle_write.write_all(b"a").await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    });

    assert_eq!(read_until_closed(&mut silent).await, "");
    let answered = read_until_closed(&mut idle).await;
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    let deadline = Instant::now() + PATIENCE;
    let mut buffer = [0u8; 64];
    loop {
        match tokio::time::timeout_at(deadline, trickle_read.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(_)) => {}
            Err(_) => panic!("the trickling connection is still open after {PATIENCE:?}"),
        }
    }
    assert!(
        dripping.await.unwrap(),
        "writes still went through after the close"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_trickles_in_is_cut_off_after_the_body_deadline() {
    let app = TestApp::spawn_with(Backend::Sqlite, &["--body-timeout", "1s"]).await;
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    stream
        .write_all(
            b"POST /graphql HTTP/1.1\r\nHost: admit\r\nContent-Type: application/json\r\n\
              Content-Length: 1000\r\n\r\n{",
        )
        .await
        .unwrap();
    let (mut read, mut write) = stream.into_split();
    tokio::spawn(async move {
        for _ in 0..100 {
            if write.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let deadline = Instant::now() + PATIENCE;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while !received.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, read.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
            Err(_) => panic!("no answer and no close after {PATIENCE:?}"),
        }
    }
    let head = String::from_utf8_lossy(&received);
    assert!(
        head.is_empty() || head.starts_with("HTTP/1.1 4"),
        "a trickled body got: {head}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_idle_connections_than_descriptors_neither_crash_nor_silence_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let mut admit = AdmitProcess::start_with_descriptors(
        dir.path(),
        // No cap per network: the hogs and the health check all come from 127.0.0.1.
        &[
            ("ADMIT_HEADER_TIMEOUT", "2s"),
            ("ADMIT_MAX_CLIENT_CONNECTIONS", "0"),
        ],
        256,
    )
    .await;
    // Far more connections than the process has descriptors; none of them sends anything.
    let mut hogs = Vec::new();
    for _ in 0..400 {
        hogs.push(TcpStream::connect(&admit.listen).await.unwrap());
    }
    // Queued behind them, a health check is answered once deadlines free slots.
    assert_eq!(
        admit.get("/healthz", Duration::from_secs(40)).await,
        Some(200)
    );
    assert!(admit.is_running());
    let log = admit.log().await;
    assert!(!log.contains("Too many open files"), "{log}");
    assert!(!log.contains("cannot accept"), "{log}");
    drop(hogs);
    assert_eq!(admit.terminate().await, Some(0));
}

/// The status line of a health check answered.
const OK: &str = "HTTP/1.1 200 OK";

/// A connection to `server` leaving from the loopback address `ip`.
async fn connect_from(ip: &str, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(ip.parse().unwrap(), 0))
        .unwrap();
    socket.connect(server).await.unwrap()
}

/// Asks for `/healthz` on `stream`, keeping it open; the answer's status line, or `None` when
/// the server closed the connection instead of answering.
async fn health_on(stream: &mut TcpStream) -> Option<String> {
    if stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: admit\r\n\r\n")
        .await
        .is_err()
    {
        return None;
    }
    let deadline = Instant::now() + PATIENCE;
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return None,
            Ok(Ok(read)) => received.extend_from_slice(&buffer[..read]),
            Err(_) => panic!("no answer and no close after {PATIENCE:?}"),
        }
        let text = String::from_utf8_lossy(&received);
        // The health answer is short: its head and body arrive together.
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length: "))
                .and_then(|value| value.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return head.lines().next().map(str::to_owned);
            }
        }
    }
}

/// `count` connections from `ip`, each answered once and kept open.
async fn served_from(ip: &str, server: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut served = Vec::with_capacity(count);
    for _ in 0..count {
        let mut stream = connect_from(ip, server).await;
        assert_eq!(health_on(&mut stream).await.as_deref(), Some(OK));
        served.push(stream);
    }
    served
}

/// Opens connections from `ip` until one is answered, for a cap that frees as the server
/// notices a close; panics after [`PATIENCE`].
async fn served_again_from(ip: &str, server: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut stream = connect_from(ip, server).await;
        if let Some(status) = health_on(&mut stream).await {
            assert_eq!(status, OK);
            return stream;
        }
        assert!(
            Instant::now() < deadline,
            "{ip} was still refused after {PATIENCE:?}"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_network_holds_at_most_its_share_of_connections_and_others_are_still_served() {
    let app = TestApp::spawn_with(Backend::Sqlite, &["--max-client-connections", "3"]).await;
    let mut held = served_from("127.0.0.2", app.address, 3).await;

    // A fourth from the same network is closed unanswered, and so is every further one.
    for _ in 0..5 {
        let mut refused = connect_from("127.0.0.2", app.address).await;
        assert_eq!(health_on(&mut refused).await, None);
        assert_eq!(read_until_closed(&mut refused).await, "");
    }

    // Another network is served meanwhile, and the three held connections still are.
    let _other = served_from("127.0.0.3", app.address, 1).await;
    for stream in &mut held {
        assert_eq!(health_on(stream).await.as_deref(), Some(OK));
    }

    // One of them closes: the network may open one more, and only one.
    drop(held.pop());
    held.push(served_again_from("127.0.0.2", app.address).await);
    let mut refused = connect_from("127.0.0.2", app.address).await;
    assert_eq!(health_on(&mut refused).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_may_hold_more_connections_than_one_client_network() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            "--max-client-connections",
            "1",
            "--trusted-proxies",
            "127.0.0.2/32",
        ],
    )
    .await;
    // The proxy carries many clients' requests: its connections are not capped.
    let _proxied = served_from("127.0.0.2", app.address, 4).await;
    // A client that is not a proxy still is.
    let _first = served_from("127.0.0.3", app.address, 1).await;
    let mut second = connect_from("127.0.0.3", app.address).await;
    assert_eq!(health_on(&mut second).await, None);
}
