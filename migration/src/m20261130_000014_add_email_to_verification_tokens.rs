use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The address a link is about, where the account's own is not: the new address of an
        // email change, the old one of its revert link. As deliverable (ASCII domain).
        manager
            .alter_table(
                Table::alter()
                    .table(VerificationTokens::Table)
                    .add_column(string_len_null(VerificationTokens::Email, 254))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(VerificationTokens::Table)
                    .drop_column(VerificationTokens::Email)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum VerificationTokens {
    Table,
    Email,
}
