//! Single-use links by email (password reset, email change and its revert): issuing one,
//! superseding older ones, and telling whether one can still be used. Confirmation links keep
//! their own rules (see `accounts`): a used one answers again with its account.

use chrono::TimeDelta;
use entity::verification_tokens;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseTransaction, DbErr, EntityTrait, QueryFilter,
    UpdateMany, sea_query::Expr,
};
use uuid::Uuid;

use super::accounts::new_token;
use crate::{db::now, domain::ConfirmationToken};

/// Why a link can no longer be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Spent {
    /// It was used.
    Used,
    /// A newer link of its kind was sent.
    Superseded,
    /// Its lifetime is over.
    Expired,
}

/// Issues a link of `purpose` valid for `ttl`, about `email` where the link concerns another
/// address than the account's. Callers supersede older links where only the newest may work.
pub(super) async fn issue(
    txn: &DatabaseTransaction,
    user_id: Uuid,
    purpose: &str,
    ttl: TimeDelta,
    email: Option<String>,
) -> anyhow::Result<ConfirmationToken> {
    let token = new_token()?;
    let now = now();
    verification_tokens::Entity::insert(verification_tokens::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        purpose: Set(purpose.to_owned()),
        token_hash: Set(token.hash().as_str().to_owned()),
        created_at: Set(now),
        expires_at: Set(now + ttl),
        consumed_at: Set(None),
        superseded_at: Set(None),
        signup_id: Set(None),
        password_hash: Set(None),
        display_name: Set(None),
        email: Set(email),
    })
    .exec_without_returning(txn)
    .await?;
    Ok(token)
}

/// An update that marks the account's unused links of `purpose` superseded; callers narrow it.
fn supersede_pending(user_id: Uuid, purpose: &str) -> UpdateMany<verification_tokens::Entity> {
    verification_tokens::Entity::update_many()
        .col_expr(
            verification_tokens::Column::SupersededAt,
            Expr::value(now()),
        )
        .filter(verification_tokens::Column::UserId.eq(user_id))
        .filter(verification_tokens::Column::Purpose.eq(purpose))
        .filter(verification_tokens::Column::ConsumedAt.is_null())
        .filter(verification_tokens::Column::SupersededAt.is_null())
}

/// Marks the account's unused links of `purpose` (but `except`) superseded.
pub(super) async fn supersede(
    txn: &DatabaseTransaction,
    user_id: Uuid,
    purpose: &str,
    except: Option<Uuid>,
) -> Result<(), DbErr> {
    let mut update = supersede_pending(user_id, purpose);
    if let Some(except) = except {
        update = update.filter(verification_tokens::Column::Id.ne(except));
    }
    update.exec(txn).await?;
    Ok(())
}

/// Marks the account's unused links of `purpose` issued after `than` superseded.
pub(super) async fn supersede_newer(
    txn: &DatabaseTransaction,
    user_id: Uuid,
    purpose: &str,
    than: &verification_tokens::Model,
) -> Result<(), DbErr> {
    supersede_pending(user_id, purpose)
        .filter(verification_tokens::Column::CreatedAt.gte(than.created_at))
        .filter(verification_tokens::Column::Id.ne(than.id))
        .exec(txn)
        .await?;
    Ok(())
}

/// Whether the link can still be used.
pub(super) fn usable(record: &verification_tokens::Model) -> Result<(), Spent> {
    if record.consumed_at.is_some() {
        return Err(Spent::Used);
    }
    if record.superseded_at.is_some() {
        return Err(Spent::Superseded);
    }
    if record.expires_at <= now() {
        return Err(Spent::Expired);
    }
    Ok(())
}

/// Marks the link used.
pub(super) async fn consume(txn: &DatabaseTransaction, id: Uuid) -> Result<(), DbErr> {
    verification_tokens::Entity::update_many()
        .col_expr(verification_tokens::Column::ConsumedAt, Expr::value(now()))
        .filter(verification_tokens::Column::Id.eq(id))
        .exec(txn)
        .await?;
    Ok(())
}
