use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .if_not_exists()
                    .col(pk_uuid(Users::Id))
                    // The address as the person typed it (trimmed): mail goes to what they wrote.
                    .col(string_len(Users::Email, 254))
                    // Computed in Rust; the UNIQUE index is what makes duplicate sign-ups
                    // impossible, even when two arrive at once.
                    .col(string_len_uniq(Users::EmailKey, 254))
                    .col(text(Users::PasswordHash))
                    .col(string_len_null(Users::DisplayName, 100))
                    .col(timestamp_with_time_zone(Users::CreatedAt))
                    .col(timestamp_with_time_zone_null(Users::ConfirmedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Users::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
pub enum Users {
    Table,
    Id,
    Email,
    EmailKey,
    PasswordHash,
    DisplayName,
    CreatedAt,
    ConfirmedAt,
}
