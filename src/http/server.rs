//! The accept loop: HTTP/1.1 with a deadline for every request's headers, a cap on open
//! connections below the descriptor limit, a smaller cap per client network, and a graceful
//! drain.
//!
//! `axum::serve` offers none of these settings, and without them a client that opens
//! connections and never finishes a request holds a descriptor each until the process can
//! accept nothing at all; without the cap per client, one client that keeps its connections
//! busy could hold every slot of the process cap, and everyone else would wait. Only HTTP/1.1
//! is spoken: HTTP/2 has no header deadline in hyper, and the proxies and browsers that reach
//! admit over plain HTTP speak HTTP/1.1 to it.

use std::{
    collections::HashMap,
    future::Future,
    net::{IpAddr, SocketAddr},
    num::NonZeroUsize,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use axum::{body::Body, extract::ConnectInfo};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use ipnet::IpNet;
use tokio::{net::TcpListener, sync::Semaphore};
use tower::ServiceExt as _;

use crate::domain::ClientNetwork;

/// Descriptors kept back from connections: the database pool, SMTP, the listener, logs and
/// templates all need some.
const RESERVED_DESCRIPTORS: u64 = 64;
/// Connections allowed when the descriptor limit is generous.
const DEFAULT_MAX_CONNECTIONS: u64 = 10_000;

/// How the listener treats connections.
#[derive(Debug, Clone)]
pub struct ConnectionPolicy {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most connections open at once from one client network (an IPv4 address or an IPv6
    /// /64); `None`: no cap per network.
    pub max_per_client: Option<NonZeroUsize>,
    /// Peers whose connections carry many clients' requests, so no cap per network applies to
    /// them (the per-request limits count the clients they name).
    pub trusted_proxies: Arc<[IpNet]>,
    /// Deadline for a request's headers, from when the connection opens or goes idle.
    pub header_timeout: Duration,
}

/// The connections each client network has open, within [`ConnectionPolicy::max_per_client`].
struct ClientConnections {
    cap: Option<NonZeroUsize>,
    trusted_proxies: Arc<[IpNet]>,
    open: Mutex<HashMap<ClientNetwork, usize>>,
}

impl ClientConnections {
    /// A place for one more connection from `peer`, or `None` when its network already has
    /// as many open as it may.
    fn enter(self: &Arc<Self>, peer: IpAddr) -> Option<ClientSlot> {
        let Some(cap) = self.cap else {
            return Some(ClientSlot(None));
        };
        if super::client::is_trusted_proxy(peer, &self.trusted_proxies) {
            return Some(ClientSlot(None));
        }
        let network = ClientNetwork::of(peer);
        // Never held across an await: the lock only guards a count.
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(network).or_insert(0);
        if *count >= cap.get() {
            return None;
        }
        *count += 1;
        Some(ClientSlot(Some((Arc::clone(self), network))))
    }

    fn leave(&self, network: ClientNetwork) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&network) {
            *count = count.saturating_sub(1);
            // Gone when zero, so the map holds only networks with connections open.
            if *count == 0 {
                open.remove(&network);
            }
        }
    }
}

/// One open connection counted against its network; given back when dropped.
struct ClientSlot(Option<(Arc<ClientConnections>, ClientNetwork)>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        if let Some((connections, network)) = self.0.take() {
            connections.leave(network);
        }
    }
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
    app: super::App,
    policy: ConnectionPolicy,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(policy.max_connections.max(1)));
    let per_client = Arc::new(ClientConnections {
        cap: policy.max_per_client,
        trusted_proxies: Arc::clone(&policy.trusted_proxies),
        open: Mutex::new(HashMap::new()),
    });
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
        // A network at its cap is refused at once, its connection closed unread: waiting
        // would hold the process's slot, the one thing the cap keeps for everyone else.
        let Some(client_slot) = per_client.enter(peer.ip()) else {
            metrics::counter!(crate::metrics::CONNECTIONS_REFUSED).increment(1);
            tracing::debug!("connection refused: its network has as many open as it may");
            drop(stream);
            continue;
        };
        // Answers are small and written whole: send them without waiting on Nagle.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone().map_request(
            move |mut request: hyper::Request<Incoming>| {
                request
                    .extensions_mut()
                    .insert(ConnectInfo::<SocketAddr>(peer));
                request.map(Body::new)
            },
        ));
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // A connection that ends badly (reset, header deadline) concerns only its client.
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
            drop(client_slot);
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
