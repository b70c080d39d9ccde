use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UNCONFIRMED: &str = "idx_users_unconfirmed_created_at";
const ALL: &str = "idx_users_created_at";

#[derive(DeriveIden)]
enum Users {
    Table,
    CreatedAt,
    ConfirmedAt,
}

/// The purge looks for unconfirmed accounts by age. An index of every account's age made it
/// walk over the confirmed ones too, which are most accounts of a live service and are never
/// purged; this index holds the unconfirmed ones only and replaces it (the purge was its only
/// reader).
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(UNCONFIRMED)
                    .table(Users::Table)
                    .col(Users::CreatedAt)
                    .and_where(Expr::col(Users::ConfirmedAt).is_null())
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(Index::drop().name(ALL).table(Users::Table).to_owned())
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(ALL)
                    .table(Users::Table)
                    .col(Users::CreatedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name(UNCONFIRMED)
                    .table(Users::Table)
                    .to_owned(),
            )
            .await
    }
}
