use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // A confirmation link carries the sign-up that sent it: the password hash and display
        // name chosen then. Confirming activates exactly those, so a later sign-up of the same
        // address by someone else cannot change what an earlier link confirms. Sign-ups are
        // grouped by `signup_id` (a resend issues a new link for the same sign-up). SQLite
        // alters one column per statement.
        for column in [
            uuid_null(VerificationTokens::SignupId),
            text_null(VerificationTokens::PasswordHash),
            string_len_null(VerificationTokens::DisplayName, 100),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(VerificationTokens::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            VerificationTokens::SignupId,
            VerificationTokens::PasswordHash,
            VerificationTokens::DisplayName,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(VerificationTokens::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum VerificationTokens {
    Table,
    SignupId,
    PasswordHash,
    DisplayName,
}
