use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Account mail to one address, counted per client network (hashed): the hourly limit
        // and a share of the daily cap apply per network, so that one client cannot use up an
        // address's mail and silence its owner. `mail_throttles` keeps the per-address cooldown
        // and daily cap.
        manager
            .create_table(
                Table::create()
                    .table(MailThrottleClients::Table)
                    .if_not_exists()
                    .col(string_len(MailThrottleClients::EmailKey, 254))
                    .col(string_len(MailThrottleClients::ClientKey, 64))
                    .col(timestamp_with_time_zone(MailThrottleClients::HourStartedAt))
                    .col(integer(MailThrottleClients::SentInHour).default(0))
                    .col(timestamp_with_time_zone(MailThrottleClients::DayStartedAt))
                    .col(integer(MailThrottleClients::SentInDay).default(0))
                    .primary_key(
                        Index::create()
                            .col(MailThrottleClients::EmailKey)
                            .col(MailThrottleClients::ClientKey),
                    )
                    .to_owned(),
            )
            .await?;
        // The purge deletes rows whose day is long over.
        manager
            .create_index(
                Index::create()
                    .name("idx_mail_throttle_clients_day_started_at")
                    .table(MailThrottleClients::Table)
                    .col(MailThrottleClients::DayStartedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(MailThrottleClients::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum MailThrottleClients {
    Table,
    EmailKey,
    ClientKey,
    HourStartedAt,
    SentInHour,
    DayStartedAt,
    SentInDay,
}
