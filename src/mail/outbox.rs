use std::sync::Arc;

use entity::outbox_messages;
use sea_orm::{ActiveValue::Set, ConnectionTrait, DbErr, EntityTrait};
use tokio::sync::Notify;
use uuid::Uuid;

use super::OutgoingEmail;

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
pub async fn enqueue<C: ConnectionTrait>(
    db: &C,
    recipient: &str,
    email: OutgoingEmail,
) -> Result<Uuid, DbErr> {
    let id = Uuid::now_v7();
    let now = crate::db::now();
    let row = outbox_messages::ActiveModel {
        id: Set(id),
        recipient: Set(recipient.to_owned()),
        subject: Set(email.subject),
        text_body: Set(Some(email.text)),
        html_body: Set(Some(email.html)),
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
    Ok(id)
}
