use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Set when a newer token of the same purpose is issued, so the old link can say
        // "use the newest email" instead of merely "invalid".
        manager
            .alter_table(
                Table::alter()
                    .table(VerificationTokens::Table)
                    .add_column(timestamp_with_time_zone_null(
                        VerificationTokens::SupersededAt,
                    ))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(VerificationTokens::Table)
                    .drop_column(VerificationTokens::SupersededAt)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum VerificationTokens {
    Table,
    SupersededAt,
}
