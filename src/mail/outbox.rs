use std::sync::Arc;

use entity::outbox_messages;
use sea_orm::{ActiveValue::Set, ConnectionTrait, DbErr, EntityTrait};
use tokio::sync::Notify;
use uuid::Uuid;

use super::OutgoingEmail;
use crate::secrets::{KeyError, SecretKeys};

/// A message could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// Sealing failed.
    #[error("cannot seal the mail")]
    Seal(#[from] KeyError),
    /// The database refused the row.
    #[error("cannot queue the mail")]
    Database(#[from] DbErr),
}

/// What a body's seal is bound to: its message and its part, so that it opens nowhere else.
pub(super) fn body_context(id: Uuid, part: &str) -> String {
    format!("outbox:{id}:{part}")
}

/// Wakes the dispatcher when a transaction has committed new mail, so it goes out at once
/// instead of at the next poll.
#[derive(Clone, Default)]
pub struct OutboxSignal(Arc<Notify>);

impl OutboxSignal {
    /// Tell the dispatcher there is mail; call after the commit, never before.
    pub fn wake(&self) {
        self.0.notify_one();
    }

    /// Resolves at the next [`wake`](Self::wake) (or at once if one came since the last wait).
    pub async fn woken(&self) {
        self.0.notified().await;
    }
}

/// Queues `email` for `recipient` in the caller's transaction: it is sent only if that commits.
/// Its bodies are sealed with `keys` (they may carry a live link), bound to the message's id.
pub async fn enqueue<C: ConnectionTrait>(
    db: &C,
    keys: &SecretKeys,
    recipient: &str,
    email: OutgoingEmail,
) -> Result<Uuid, EnqueueError> {
    let id = Uuid::now_v7();
    let text = keys.seal(&email.text, &body_context(id, "text"))?;
    let html = keys.seal(&email.html, &body_context(id, "html"))?;
    let now = crate::db::now();
    let row = outbox_messages::ActiveModel {
        id: Set(id),
        recipient: Set(recipient.to_owned()),
        subject: Set(email.subject),
        text_body: Set(Some(text)),
        html_body: Set(Some(html)),
        attempts: Set(0),
        next_attempt_at: Set(now),
        locked_until: Set(None),
        sent_at: Set(None),
        last_error: Set(None),
        created_at: Set(now),
        dead_at: Set(None),
    };
    outbox_messages::Entity::insert(row)
        .exec_without_returning(db)
        .await?;
    // Counted when written, even if the caller's transaction later rolls back: a close
    // approximation, and never an undercount of what reached the outbox.
    metrics::counter!(crate::metrics::MAIL_QUEUED).increment(1);
    Ok(id)
}
