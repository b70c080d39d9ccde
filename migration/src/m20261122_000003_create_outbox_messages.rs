use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(OutboxMessages::Table)
                    .if_not_exists()
                    .col(pk_uuid(OutboxMessages::Id))
                    .col(string_len(OutboxMessages::Recipient, 254))
                    .col(string_len(OutboxMessages::Subject, 255))
                    // Bodies may carry a live token: they are cleared once the message is sent.
                    .col(text_null(OutboxMessages::TextBody))
                    .col(text_null(OutboxMessages::HtmlBody))
                    .col(integer(OutboxMessages::Attempts).default(0))
                    .col(timestamp_with_time_zone(OutboxMessages::NextAttemptAt))
                    // A claim that expires, so a message held by a process that died is retried.
                    .col(timestamp_with_time_zone_null(OutboxMessages::LockedUntil))
                    .col(timestamp_with_time_zone_null(OutboxMessages::SentAt))
                    .col(text_null(OutboxMessages::LastError))
                    .col(timestamp_with_time_zone(OutboxMessages::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_outbox_messages_due")
                    .table(OutboxMessages::Table)
                    .col(OutboxMessages::SentAt)
                    .col(OutboxMessages::NextAttemptAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(OutboxMessages::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum OutboxMessages {
    Table,
    Id,
    Recipient,
    Subject,
    TextBody,
    HtmlBody,
    Attempts,
    NextAttemptAt,
    LockedUntil,
    SentAt,
    LastError,
    CreatedAt,
}
