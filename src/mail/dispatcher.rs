use std::time::Duration;

use entity::outbox_messages::{self, Column};
use lettre::{
    Message,
    message::{Mailbox, MultiPart},
};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, DatabaseConnection, DbErr, EntityTrait, QueryFilter,
    sea_query::{Expr, LockBehavior, LockType, Order, Query},
};
use tokio::sync::watch;

use super::{OutboxSignal, Transport, outbox::body_context};
use crate::secrets::SecretKeys;

/// How often the outbox is checked when nothing wakes the dispatcher (retries come due this way).
const POLL: Duration = Duration::from_secs(1);
/// How hard to try: exponential backoff with jitter, capped, for a bounded number of attempts.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryPolicy {
    /// Delay after the first failure.
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Attempts after which a message is marked dead.
    pub max_attempts: u32,
    /// How long a claim on a message lasts: a process that dies mid-send loses it after this,
    /// and another process sends the message.
    pub lease: Duration,
    /// Messages sent at once. A round claims no more than this, so that no claimed message
    /// waits for a free slot while its lease runs out.
    pub in_flight: usize,
}

impl DeliveryPolicy {
    /// Delay after the `failures`-th failed attempt: base · 2^(failures−1), capped, less up to a
    /// fifth at random so that messages that failed together do not retry in lockstep.
    pub fn delay(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(20);
        let full = self.base.saturating_mul(1 << exponent).min(self.max);
        let mut byte = [0u8; 1];
        let jitter = match getrandom::fill(&mut byte) {
            Ok(()) => full.mul_f64(f64::from(byte[0]) / 255.0 / 5.0),
            Err(_) => Duration::ZERO,
        };
        full.saturating_sub(jitter)
    }
}

/// Delivers queued mail from the outbox.
pub struct Dispatcher {
    db: DatabaseConnection,
    keys: SecretKeys,
    transport: Transport,
    from: Mailbox,
    signal: OutboxSignal,
    policy: DeliveryPolicy,
}

impl Dispatcher {
    /// A dispatcher sending from `from` through `transport`, opening sealed bodies with `keys`.
    pub fn new(
        db: DatabaseConnection,
        keys: SecretKeys,
        transport: Transport,
        from: Mailbox,
        signal: OutboxSignal,
        policy: DeliveryPolicy,
    ) -> Self {
        Self {
            db,
            keys,
            transport,
            from,
            signal,
            policy,
        }
    }

    /// Sends due mail until `shutdown` turns true; a message being sent then is finished first.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            match self.deliver_due(&shutdown).await {
                // A full round may have left due mail behind. A round with room to spare
                // claimed all there was: mail queued since woke the signal, which keeps that
                // wake for the wait below, so asking again at once would find nothing (on
                // SQLite a statement and the pool's ping, for every message of a steady
                // stream of sign-ups).
                Ok(claimed) if claimed >= self.policy.in_flight.max(1) && !*shutdown.borrow() => {
                    continue;
                }
                Ok(_) => {}
                Err(err) => tracing::error!(error = %err, "outbox: cannot read due mail"),
            }
            if *shutdown.borrow() {
                break;
            }
            tokio::select! {
                () = self.signal.woken() => {}
                () = tokio::time::sleep(POLL) => {}
                _ = shutdown.changed() => {}
            }
        }
        tracing::info!("outbox dispatcher stopped");
    }

    /// One round: claims up to `in_flight` due messages and sends them all at once. Returns
    /// how many it claimed.
    async fn deliver_due(&self, shutdown: &watch::Receiver<bool>) -> Result<usize, DbErr> {
        if *shutdown.borrow() {
            return Ok(0);
        }
        let claimed = self.claim_due().await?;
        let count = claimed.len();
        let outcomes = futures_util::future::join_all(
            claimed.into_iter().map(|message| self.deliver(message)),
        )
        .await;
        outcomes.into_iter().collect::<Result<(), DbErr>>()?;
        Ok(count)
    }

    /// Takes the lease on the due messages, oldest first, in one statement: a message another
    /// dispatcher holds, or is claiming at this moment (PostgreSQL skips its locked rows), is
    /// left to it.
    async fn claim_due(&self) -> Result<Vec<outbox_messages::Model>, DbErr> {
        let now = crate::db::now();
        let due = Query::select()
            .column(Column::Id)
            .from(outbox_messages::Entity)
            .and_where(Column::SentAt.is_null())
            .and_where(Column::DeadAt.is_null())
            .and_where(Column::NextAttemptAt.lte(now))
            .cond_where(unclaimed(now))
            .order_by(Column::NextAttemptAt, Order::Asc)
            .limit(u64::try_from(self.policy.in_flight.max(1)).unwrap_or(1))
            .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
            .to_owned();
        outbox_messages::Entity::update_many()
            .col_expr(Column::LockedUntil, Expr::value(now + self.policy.lease))
            .filter(Column::Id.in_subquery(due))
            .exec_with_returning(&self.db)
            .await
    }

    async fn deliver(&self, message: outbox_messages::Model) -> Result<(), DbErr> {
        let attempts = message.attempts.saturating_add(1);
        // A body that cannot be opened never will be (a key is missing or the row was
        // altered): no point retrying.
        let mut hopeless = false;
        let outcome = match self.build(&message) {
            Ok(email) => self
                .transport
                .send(email)
                .await
                .map_err(|err| err.to_string()),
            Err(Unsendable::Sealed(err)) => {
                hopeless = true;
                Err(format!("cannot be decrypted: {err}"))
            }
            Err(Unsendable::Invalid(err)) => Err(err),
        };
        let now = crate::db::now();
        let mut update = outbox_messages::ActiveModel {
            id: Set(message.id),
            attempts: Set(attempts),
            locked_until: Set(None),
            ..Default::default()
        };
        match outcome {
            Ok(detail) => {
                metrics::counter!(crate::metrics::MAIL_SENT).increment(1);
                tracing::info!(message_id = %message.id, attempts, "mail sent: {detail}");
                update.sent_at = Set(Some(now));
                update.last_error = Set(None);
                // The bodies carry a live token: once delivered, it has no reason to stay at rest.
                update.text_body = Set(None);
                update.html_body = Set(None);
            }
            Err(error) => {
                metrics::counter!(crate::metrics::MAIL_FAILED).increment(1);
                let failures = u32::try_from(attempts).unwrap_or(u32::MAX);
                if hopeless || failures >= self.policy.max_attempts {
                    tracing::error!(message_id = %message.id, attempts, %error, "mail dead after its last attempt; `admit mail retry` sends it again");
                    metrics::counter!(crate::metrics::MAIL_DEAD).increment(1);
                    update.dead_at = Set(Some(now));
                } else {
                    let delay = self.policy.delay(failures);
                    tracing::warn!(message_id = %message.id, attempts, retry_in = ?delay, %error, "mail not sent");
                    update.next_attempt_at = Set(now + delay);
                }
                update.last_error = Set(Some(error));
            }
        }
        outbox_messages::Entity::update(update)
            .exec(&self.db)
            .await
            .map(drop)
    }

    fn build(&self, message: &outbox_messages::Model) -> Result<Message, Unsendable> {
        let to: Mailbox = message
            .recipient
            .parse()
            .map_err(|err| Unsendable::Invalid(format!("bad recipient: {err}")))?;
        let open = |body: &Option<String>, part: &str| {
            body.as_deref()
                .map_or(Ok(String::new()), |sealed| {
                    self.keys.open(sealed, &body_context(message.id, part))
                })
                .map_err(Unsendable::Sealed)
        };
        let text = open(&message.text_body, "text")?;
        let html = open(&message.html_body, "html")?;
        let domain = self.from.email.domain();
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(&message.subject)
            // Stable per outbox row, so a resend after a crash can be recognised downstream.
            .message_id(Some(format!("<{}@{domain}>", message.id)))
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|err| Unsendable::Invalid(format!("cannot build message: {err}")))
    }
}

/// Why a queued row could not become a message.
enum Unsendable {
    /// Its bodies cannot be opened.
    Sealed(crate::secrets::OpenError),
    /// Anything else (a recipient the mailer refuses, ...).
    Invalid(String),
}

fn unclaimed(now: sea_orm::prelude::DateTimeWithTimeZone) -> Condition {
    Condition::any()
        .add(Column::LockedUntil.is_null())
        .add(Column::LockedUntil.lt(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_and_are_capped() {
        let policy = DeliveryPolicy {
            base: Duration::from_secs(10),
            max: Duration::from_secs(60),
            max_attempts: 5,
            lease: Duration::from_secs(60),
            in_flight: 1,
        };
        let first = policy.delay(1);
        assert!(first <= Duration::from_secs(10) && first >= Duration::from_secs(8));
        let second = policy.delay(2);
        assert!(second <= Duration::from_secs(20) && second >= Duration::from_secs(16));
        assert!(policy.delay(30) <= Duration::from_secs(60));
    }
}
