use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261122_000001_create_users::Users;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One row per signed-in device. The token a client holds is never stored: only its
        // SHA-256, which is what a request's token is looked up by. Revoking deletes the row.
        manager
            .create_table(
                Table::create()
                    .table(Sessions::Table)
                    .if_not_exists()
                    .col(pk_uuid(Sessions::Id))
                    .col(uuid(Sessions::UserId))
                    .col(string_len_uniq(Sessions::TokenHash, 64))
                    .col(timestamp_with_time_zone(Sessions::CreatedAt))
                    .col(timestamp_with_time_zone(Sessions::LastSeenAt))
                    .col(timestamp_with_time_zone(Sessions::ExpiresAt))
                    .col(string_len_null(Sessions::UserAgent, 256))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_sessions_user_id")
                            .from(Sessions::Table, Sessions::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // A viewer's sessions are listed by user; the purge finds old ones by either deadline.
        for (name, column) in [
            ("idx_sessions_user_id", Sessions::UserId),
            ("idx_sessions_expires_at", Sessions::ExpiresAt),
            ("idx_sessions_last_seen_at", Sessions::LastSeenAt),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Sessions::Table)
                        .col(column)
                        .to_owned(),
                )
                .await?;
        }
        // Consecutive failed sign-ins per address key, known or not, and until when the next
        // attempt must wait. Locked per row so that concurrent attempts are counted one by one.
        manager
            .create_table(
                Table::create()
                    .table(SignInThrottles::Table)
                    .if_not_exists()
                    .col(string_len(SignInThrottles::EmailKey, 254).primary_key())
                    .col(integer(SignInThrottles::Failures).default(0))
                    .col(timestamp_with_time_zone(SignInThrottles::LastAttemptAt))
                    .col(timestamp_with_time_zone_null(SignInThrottles::BlockedUntil))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_sign_in_throttles_last_attempt_at")
                    .table(SignInThrottles::Table)
                    .col(SignInThrottles::LastAttemptAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(SignInThrottles::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Sessions::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    Id,
    UserId,
    TokenHash,
    CreatedAt,
    LastSeenAt,
    ExpiresAt,
    UserAgent,
}

#[derive(DeriveIden)]
enum SignInThrottles {
    Table,
    EmailKey,
    Failures,
    LastAttemptAt,
    BlockedUntil,
}
