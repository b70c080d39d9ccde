//! What operators can watch: counters and histograms recorded where things happen (with the
//! `metrics` crate), and `/metrics` in the Prometheus text format on a listener of its own
//! (`ADMIT_METRICS_LISTEN`), never on the public one.

use std::{net::SocketAddr, sync::OnceLock, time::Duration};

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use chrono::Utc;
use entity::outbox_messages::{self, Column};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sea_orm::{
    ColumnTrait, DatabaseConnection, DatabaseConnectionType, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder,
};
use tokio::{net::TcpListener, sync::watch};

/// Requests by GraphQL operation and outcome.
pub const GRAPHQL_REQUESTS: &str = "admit_graphql_requests_total";
/// Time to answer one GraphQL operation, by operation.
pub const GRAPHQL_DURATION: &str = "admit_graphql_request_duration_seconds";
/// Sign-ups accepted (new addresses and repeated sign-ups alike).
pub const SIGNUPS: &str = "admit_signups_total";
/// Accounts confirmed.
pub const CONFIRMATIONS: &str = "admit_confirmations_total";
/// From sign-up to confirmation: the funnel.
pub const SIGNUP_TO_CONFIRMATION: &str = "admit_signup_to_confirmation_seconds";
/// Sessions started by a sign-in.
pub const SIGN_INS: &str = "admit_sign_ins_total";
/// Mail written to the outbox.
pub const MAIL_QUEUED: &str = "admit_mail_queued_total";
/// Mail the transport took.
pub const MAIL_SENT: &str = "admit_mail_sent_total";
/// Failed attempts to send.
pub const MAIL_FAILED: &str = "admit_mail_failed_total";
/// Mail given up on.
pub const MAIL_DEAD: &str = "admit_mail_dead_total";
/// Time a password waited for a hashing thread.
pub const HASH_QUEUE_WAIT: &str = "admit_hash_queue_wait_seconds";
/// Sign-ups turned away because the hashing queue was full (or gave way there to another
/// client network's), or because they waited too long for their turn to finish within their
/// deadline.
pub const HASH_REJECTED: &str = "admit_hash_rejected_total";
/// Hashes skipped because their requester had stopped waiting (deadline or disconnect).
pub const HASH_ABANDONED: &str = "admit_hash_abandoned_total";
/// Connections closed unread because their client network had as many open as it may
/// (`ADMIT_MAX_CLIENT_CONNECTIONS`).
pub const CONNECTIONS_REFUSED: &str = "admit_connections_refused_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's recorder, installed at the first call: metrics are process-wide (several
/// services in one process, as in the tests, share them).
pub fn recorder() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = || {
                let latency = [
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ];
                let funnel = [60.0, 300.0, 900.0, 3_600.0, 21_600.0, 86_400.0, 604_800.0];
                PrometheusBuilder::new()
                    .set_buckets(&latency)
                    .and_then(|builder| {
                        builder.set_buckets_for_metric(
                            Matcher::Full(SIGNUP_TO_CONFIRMATION.to_owned()),
                            &funnel,
                        )
                    })
                    .unwrap_or_else(|_| PrometheusBuilder::new())
            };
            // Another recorder may already be installed (an embedding program's): then ours
            // still renders what it records, which is nothing.
            builder()
                .install_recorder()
                .unwrap_or_else(|_| builder().build_recorder().handle())
        })
        .clone()
}

/// Serves `/metrics` on `listener` until `shutdown` turns true. Gauges that live in the
/// database (outbox depth, age of the oldest due message, pool use) are read at each scrape.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    db: DatabaseConnection,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state((handle, db));
    let stop = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    if let Err(err) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::error!(error = %err, "the metrics listener failed");
    }
}

async fn scrape(
    State((handle, db)): State<(PrometheusHandle, DatabaseConnection)>,
) -> impl IntoResponse {
    // Bounded: a scrape must not hang on a database that does not answer.
    if tokio::time::timeout(Duration::from_secs(2), database_gauges(&db))
        .await
        .is_err()
    {
        tracing::warn!("metrics: the database gauges timed out");
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
}

async fn database_gauges(db: &DatabaseConnection) {
    let now = crate::db::now();
    let pending = outbox_messages::Entity::find()
        .filter(Column::SentAt.is_null())
        .filter(Column::DeadAt.is_null());
    if let Ok(depth) = pending.clone().count(db).await {
        metrics::gauge!("admit_outbox_depth").set(depth as f64);
    }
    let oldest = pending
        .filter(Column::NextAttemptAt.lte(now))
        .order_by_asc(Column::NextAttemptAt)
        .one(db)
        .await;
    if let Ok(oldest) = oldest {
        let age = oldest.map_or(0.0, |message| {
            (Utc::now() - message.next_attempt_at.with_timezone(&Utc))
                .to_std()
                .unwrap_or_default()
                .as_secs_f64()
        });
        metrics::gauge!("admit_outbox_oldest_due_seconds").set(age);
    }
    let (size, idle) = pool_use(db);
    metrics::gauge!("admit_db_pool_connections", "state" => "open").set(size as f64);
    metrics::gauge!("admit_db_pool_connections", "state" => "idle").set(idle as f64);
}

/// Open and idle connections of the pool.
fn pool_use(db: &DatabaseConnection) -> (u32, usize) {
    match &db.inner {
        DatabaseConnectionType::SqlxSqlitePoolConnection(_) => {
            let pool = db.get_sqlite_connection_pool();
            (pool.size(), pool.num_idle())
        }
        DatabaseConnectionType::SqlxPostgresPoolConnection(_) => {
            let pool = db.get_postgres_connection_pool();
            (pool.size(), pool.num_idle())
        }
        _ => (0, 0),
    }
}

/// Binds the metrics listener, if one is configured.
pub async fn bind(address: Option<SocketAddr>) -> std::io::Result<Option<TcpListener>> {
    match address {
        Some(address) => TcpListener::bind(address).await.map(Some),
        None => Ok(None),
    }
}
