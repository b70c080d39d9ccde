use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One row per address key, known or not: how much account mail it was sent lately.
        // Kept in the database so the limits hold across restarts and instances, and locked
        // per row so that concurrent requests for one address are decided one at a time.
        manager
            .create_table(
                Table::create()
                    .table(MailThrottles::Table)
                    .if_not_exists()
                    .col(string_len(MailThrottles::EmailKey, 254).primary_key())
                    .col(timestamp_with_time_zone(MailThrottles::WindowStartedAt))
                    .col(integer(MailThrottles::SentInWindow).default(0))
                    .col(timestamp_with_time_zone_null(MailThrottles::LastSentAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(MailThrottles::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum MailThrottles {
    Table,
    EmailKey,
    WindowStartedAt,
    SentInWindow,
    LastSentAt,
}
