//! What operators see and do with the outbox (`admit mail status`, `admit mail retry`).

use entity::outbox_messages::{self, Column};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter, sea_query::Expr,
};
use uuid::Uuid;

/// How many messages are in each state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailStatus {
    /// Waiting to be sent or retried.
    pub pending: u64,
    /// Failed every attempt; waiting for `admit mail retry`.
    pub dead: u64,
    /// Delivered to the transport.
    pub sent: u64,
}

/// Counts the outbox by state.
pub async fn status<C: ConnectionTrait>(db: &C) -> Result<MailStatus, DbErr> {
    let count =
        |condition: sea_orm::Condition| outbox_messages::Entity::find().filter(condition).count(db);
    let pending = count(
        sea_orm::Condition::all()
            .add(Column::SentAt.is_null())
            .add(Column::DeadAt.is_null()),
    )
    .await?;
    let dead = count(sea_orm::Condition::all().add(Column::DeadAt.is_not_null())).await?;
    let sent = count(sea_orm::Condition::all().add(Column::SentAt.is_not_null())).await?;
    Ok(MailStatus {
        pending,
        dead,
        sent,
    })
}

/// Puts dead messages back in the queue with a fresh set of attempts: those in `ids`, or all
/// of them when `ids` is empty. Returns how many were revived.
pub async fn retry_dead<C: ConnectionTrait>(db: &C, ids: &[Uuid]) -> Result<u64, DbErr> {
    let mut update = outbox_messages::Entity::update_many()
        .col_expr(
            Column::DeadAt,
            Expr::value(Option::<sea_orm::prelude::DateTimeWithTimeZone>::None),
        )
        .col_expr(Column::Attempts, Expr::value(0))
        .col_expr(Column::NextAttemptAt, Expr::value(crate::db::now()))
        .filter(Column::DeadAt.is_not_null());
    if !ids.is_empty() {
        update = update.filter(Column::Id.is_in(ids.iter().copied()));
    }
    Ok(update.exec(db).await?.rows_affected)
}
