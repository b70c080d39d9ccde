use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // What a recorded mail request asks for: a new confirmation link (every request so
        // far) or a password reset link. Either is recorded the same way for every address,
        // and a worker decides afterwards whether a mail goes out.
        manager
            .alter_table(
                Table::alter()
                    .table(ResendRequests::Table)
                    .add_column(
                        string_len(ResendRequests::Purpose, 32).default("account_confirmation"),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ResendRequests::Table)
                    .drop_column(ResendRequests::Purpose)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum ResendRequests {
    Table,
    Purpose,
}
