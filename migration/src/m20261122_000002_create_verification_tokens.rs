use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261122_000001_create_users::Users;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(VerificationTokens::Table)
                    .if_not_exists()
                    .col(pk_uuid(VerificationTokens::Id))
                    .col(uuid(VerificationTokens::UserId))
                    .col(string_len(VerificationTokens::Purpose, 32))
                    // SHA-256 of the token, hex: the token itself is never stored.
                    .col(string_len_uniq(VerificationTokens::TokenHash, 64))
                    .col(timestamp_with_time_zone(VerificationTokens::CreatedAt))
                    .col(timestamp_with_time_zone(VerificationTokens::ExpiresAt))
                    .col(timestamp_with_time_zone_null(
                        VerificationTokens::ConsumedAt,
                    ))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_verification_tokens_user_id")
                            .from(VerificationTokens::Table, VerificationTokens::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_verification_tokens_user_id")
                    .table(VerificationTokens::Table)
                    .col(VerificationTokens::UserId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(VerificationTokens::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum VerificationTokens {
    Table,
    Id,
    UserId,
    Purpose,
    TokenHash,
    CreatedAt,
    ExpiresAt,
    ConsumedAt,
}
