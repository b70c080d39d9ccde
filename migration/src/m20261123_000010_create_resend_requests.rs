use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Requests for a new confirmation link, recorded the same way for every address; a
        // worker decides afterwards whether a mail goes out. So the request itself does the
        // same work whether or not the address has an unconfirmed account.
        manager
            .create_table(
                Table::create()
                    .table(ResendRequests::Table)
                    .if_not_exists()
                    .col(pk_uuid(ResendRequests::Id))
                    .col(string_len(ResendRequests::EmailKey, 254))
                    .col(string_len(ResendRequests::Recipient, 254))
                    .col(timestamp_with_time_zone(ResendRequests::RequestedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_resend_requests_requested_at")
                    .table(ResendRequests::Table)
                    .col(ResendRequests::RequestedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ResendRequests::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum ResendRequests {
    Table,
    Id,
    EmailKey,
    Recipient,
    RequestedAt,
}
