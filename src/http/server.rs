//! The accept loop: HTTP/1.1 with a deadline for every request's headers, a cap on open
//! connections below the descriptor limit, and a graceful drain.
//!
//! `axum::serve` offers none of these settings, and without them a client that opens
//! connections and never finishes a request holds a descriptor each until the process can
//! accept nothing at all. Only HTTP/1.1 is spoken: HTTP/2 has no header deadline in hyper, and
//! the proxies and browsers that reach admit over plain HTTP speak HTTP/1.1 to it.

use std::{future::Future, net::SocketAddr, num::NonZeroUsize, sync::Arc, time::Duration};

use axum::{Router, extract::ConnectInfo};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tower::ServiceExt as _;

/// Descriptors kept back from connections: the database pool, SMTP, the listener, logs and
/// templates all need some.
const RESERVED_DESCRIPTORS: u64 = 64;
/// Connections allowed when the descriptor limit is generous.
const DEFAULT_MAX_CONNECTIONS: u64 = 10_000;

/// How the listener treats connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionPolicy {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Deadline for a request's headers, from when the connection opens or goes idle.
    pub header_timeout: Duration,
}

/// The connection cap for this process: `configured`, or the default, lowered to what the
/// descriptor limit allows. The soft limit is raised to the hard one first, as most servers do.
/// Returns the cap and the descriptor limit it was derived from.
pub fn connection_cap(configured: Option<NonZeroUsize>) -> (usize, u64) {
    let descriptors = rlimit::increase_nofile_limit(u64::MAX)
        .or_else(|_| rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft))
        .unwrap_or(1024);
    let reserve = RESERVED_DESCRIPTORS.min(descriptors / 2);
    let available = usize::try_from(descriptors - reserve)
        .unwrap_or(usize::MAX)
        .max(1);
    let wanted = configured.map_or_else(
        || usize::try_from(DEFAULT_MAX_CONNECTIONS).unwrap_or(usize::MAX),
        NonZeroUsize::get,
    );
    if wanted > available && configured.is_some() {
        tracing::warn!(
            configured = wanted,
            descriptors,
            "ADMIT_MAX_CONNECTIONS is more than the descriptor limit allows; using {available}"
        );
    }
    (wanted.min(available), descriptors)
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and waits for the
/// open connections to finish their requests (idle ones close at once).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    policy: ConnectionPolicy,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(policy.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(policy.header_timeout);
    tokio::pin!(shutdown);
    loop {
        // Past the cap, new connections wait in the kernel's backlog: the header deadline frees
        // a slot within `header_timeout` at the latest.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Per-connection failures (reset before accept) and descriptor exhaustion
                    // alike: log, pause briefly so as not to spin, and keep accepting.
                    tracing::warn!(error = %err, "cannot accept a connection");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        };
        // Answers are small and written whole: send them without waiting on Nagle.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone().map_request(
            move |mut request: hyper::Request<Incoming>| {
                request
                    .extensions_mut()
                    .insert(ConnectInfo::<SocketAddr>(peer));
                request
            },
        ));
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // A connection that ends badly (reset, header deadline) concerns only its client.
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
