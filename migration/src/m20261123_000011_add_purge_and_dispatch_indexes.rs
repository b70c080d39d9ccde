use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// (index, table, column): what the purge and the mail dispatcher filter on, so that neither
/// scans a whole table as it grows.
const INDEXES: [(&str, &str, &str); 6] = [
    ("idx_users_created_at", "users", "created_at"),
    (
        "idx_verification_tokens_expires_at",
        "verification_tokens",
        "expires_at",
    ),
    (
        "idx_outbox_messages_next_attempt_at",
        "outbox_messages",
        "next_attempt_at",
    ),
    ("idx_outbox_messages_sent_at", "outbox_messages", "sent_at"),
    ("idx_outbox_messages_dead_at", "outbox_messages", "dead_at"),
    (
        "idx_mail_throttles_window_started_at",
        "mail_throttles",
        "window_started_at",
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, table, column) in INDEXES {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Alias::new(table))
                        .col(Alias::new(column))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, table, _) in INDEXES {
            manager
                .drop_index(Index::drop().name(name).table(Alias::new(table)).to_owned())
                .await?;
        }
        Ok(())
    }
}
