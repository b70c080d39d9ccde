use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One row per client network (a hash of it, not the address): how many costly requests
        // it made in the current minute. Kept in the database so the budget holds across
        // restarts and instances.
        manager
            .create_table(
                Table::create()
                    .table(ClientBudgets::Table)
                    .if_not_exists()
                    .col(string_len(ClientBudgets::ClientKey, 64).primary_key())
                    .col(timestamp_with_time_zone(ClientBudgets::WindowStartedAt))
                    .col(integer(ClientBudgets::Used).default(0))
                    .to_owned(),
            )
            .await?;
        // The purge deletes rows whose window is long over.
        manager
            .create_index(
                Index::create()
                    .name("idx_client_budgets_window_started_at")
                    .table(ClientBudgets::Table)
                    .col(ClientBudgets::WindowStartedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ClientBudgets::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum ClientBudgets {
    Table,
    ClientKey,
    WindowStartedAt,
    Used,
}
