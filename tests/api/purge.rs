//! Never-confirmed accounts and old tokens are purged; confirmed accounts never are.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use entity::{mail_throttles, outbox_messages, sessions, users, verification_tokens};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, sea_query::Expr};

use crate::{
    helpers::{Backend, TestApp, link_row, on_both_backends},
    process::admit_command,
};

on_both_backends!(
    purge_unconfirmed_removes_only_accounts_never_confirmed_in_time,
    the_server_purges_never_confirmed_accounts_periodically,
    a_purge_larger_than_one_batch_removes_every_stale_row_and_nothing_else,
);

async fn a_purge_larger_than_one_batch_removes_every_stale_row_and_nothing_else(backend: Backend) {
    use sea_orm::{ActiveValue::Set, TransactionTrait};
    let app = TestApp::spawn(backend).await;
    let kept = app.register_and_read_mail("kept@example.com").await.token();
    app.confirm(&kept).await;
    // Confirmed a month ago: as old as the stale ones, and kept.
    age_user(&app, "kept@example.com", TimeDelta::days(30)).await;
    app.register_and_read_mail("fresh@example.com").await;
    // More stale accounts (each with a link) and per-client mail limits than one batch holds.
    let (stale, limits) = (1234, 777);
    let long_ago = Utc::now().fixed_offset() - TimeDelta::days(30);
    let txn = app.db.begin().await.unwrap();
    insert_stale_accounts(&txn, stale, long_ago).await;
    for i in 0..limits {
        entity::mail_throttle_clients::Entity::insert(entity::mail_throttle_clients::ActiveModel {
            email_key: Set(format!("limited{}@example.com", i % 7)),
            client_key: Set(format!("10.0.{}.0/24", i / 7)),
            hour_started_at: Set(long_ago),
            sent_in_hour: Set(1),
            day_started_at: Set(long_ago),
            sent_in_day: Set(1),
        })
        .exec_without_returning(&txn)
        .await
        .unwrap();
    }
    txn.commit().await.unwrap();

    let report = admit::services::purge::purge(&app.db, week_retention())
        .await
        .unwrap();

    assert_eq!(report.users, stale);
    assert!(report.throttles >= limits, "{report:?}");
    assert!(!report.longest_statement.is_zero(), "{report:?}");
    assert_eq!(
        emails(&app).await,
        ["fresh@example.com", "kept@example.com"]
    );
    assert_eq!(
        verification_tokens::Entity::find()
            .count(&app.db)
            .await
            .unwrap(),
        2
    );
    // Only the two live sign-ups' limits are left.
    let left = entity::mail_throttle_clients::Entity::find()
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().all(|row| !row.email_key.starts_with("limited")));
}

/// A week for unconfirmed accounts, mail and idle sessions, as by default.
fn week_retention() -> admit::services::purge::Retention {
    admit::services::purge::Retention {
        unconfirmed: TimeDelta::days(7),
        cooldown: TimeDelta::minutes(1),
        mail: TimeDelta::days(7),
        session_idle: TimeDelta::days(7),
    }
}

/// `count` never-confirmed accounts signed up `at`, each with its link, expired a day later.
async fn insert_stale_accounts(
    db: &impl sea_orm::ConnectionTrait,
    count: u64,
    at: chrono::DateTime<chrono::FixedOffset>,
) {
    use sea_orm::ActiveValue::Set;
    let (accounts, links): (Vec<_>, Vec<_>) = (0..count)
        .map(|i| {
            let id = uuid::Uuid::now_v7();
            let user = users::ActiveModel {
                id: Set(id),
                email: Set(format!("stale{i}@example.com")),
                email_key: Set(format!("stale{i}@example.com")),
                password_hash: Set("unused".to_owned()),
                display_name: Set(None),
                created_at: Set(at),
                confirmed_at: Set(None),
            };
            let link = link_row(
                id,
                "account_confirmation",
                format!("{i:064}"),
                at,
                at + TimeDelta::days(1),
            );
            (user, link)
        })
        .unzip();
    users::Entity::insert_many(accounts)
        .exec_without_returning(db)
        .await
        .unwrap();
    verification_tokens::Entity::insert_many(links)
        .exec_without_returning(db)
        .await
        .unwrap();
}

async fn age_user(app: &TestApp, email_key: &str, by: TimeDelta) {
    let then = Utc::now().fixed_offset() - by;
    users::Entity::update_many()
        .col_expr(users::Column::CreatedAt, Expr::value(then))
        .filter(users::Column::EmailKey.eq(email_key))
        .exec(&app.db)
        .await
        .unwrap();
}

async fn emails(app: &TestApp) -> Vec<String> {
    let mut emails: Vec<String> = users::Entity::find()
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|user| user.email)
        .collect();
    emails.sort();
    emails
}

async fn purge_unconfirmed_removes_only_accounts_never_confirmed_in_time(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let stale = app
        .register_and_read_mail("stale@example.com")
        .await
        .token();
    let kept = app.register_and_read_mail("kept@example.com").await.token();
    app.confirm(&kept).await;
    app.register_and_read_mail("fresh@example.com").await;
    // Eight days ago, past the default week: one never confirmed, one confirmed.
    age_user(&app, "stale@example.com", TimeDelta::days(8)).await;
    age_user(&app, "kept@example.com", TimeDelta::days(8)).await;
    // The confirmed account's token expired nine days ago: past its week of grace. The fresh
    // account's token expired yesterday: still answers "expired".
    app.expire_tokens(Some("kept@example.com"), TimeDelta::days(9))
        .await;
    app.expire_tokens(Some("fresh@example.com"), TimeDelta::days(1))
        .await;
    let now = Utc::now().fixed_offset();
    let find = |key: &'static str| {
        users::Entity::find()
            .filter(users::Column::EmailKey.eq(key))
            .one(&app.db)
    };
    let kept_user = find("kept@example.com").await.unwrap().unwrap();
    let fresh_user = find("fresh@example.com").await.unwrap().unwrap();
    // An idle mail-limit row from over a day ago.
    mail_throttles::Entity::update_many()
        .col_expr(
            mail_throttles::Column::WindowStartedAt,
            Expr::value(now - TimeDelta::days(2)),
        )
        .col_expr(
            mail_throttles::Column::LastSentAt,
            Expr::value(now - TimeDelta::days(2)),
        )
        .filter(mail_throttles::Column::EmailKey.eq("stale@example.com"))
        .exec(&app.db)
        .await
        .unwrap();

    // Three sessions of the confirmed account: one unused for eight days, past the idle
    // timeout, one past its expiry, one live.
    for _ in 0..3 {
        let signed_in = app
            .operation(
                "SignIn",
                serde_json::json!({ "input": { "email": "kept@example.com", "password": crate::helpers::PASSWORD, "delivery": "BEARER" } }),
            )
            .await;
        assert!(
            signed_in["signIn"]["sessionToken"].is_string(),
            "{signed_in}"
        );
    }
    let signed_in = sessions::Entity::find().all(&app.db).await.unwrap();
    let (idle, expired) = (&signed_in[0], &signed_in[1]);
    sessions::Entity::update_many()
        .col_expr(
            sessions::Column::ExpiresAt,
            Expr::value(now - TimeDelta::minutes(1)),
        )
        .filter(sessions::Column::Id.eq(expired.id))
        .exec(&app.db)
        .await
        .unwrap();
    sessions::Entity::update_many()
        .col_expr(
            sessions::Column::LastSeenAt,
            Expr::value(now - TimeDelta::days(8)),
        )
        .filter(sessions::Column::Id.eq(idle.id))
        .exec(&app.db)
        .await
        .unwrap();

    // Sent mail is kept a week (ADMIT_MAIL_RETENTION); one message went out eight days ago.
    let sent = outbox_messages::Entity::find()
        .filter(outbox_messages::Column::Recipient.eq("stale@example.com"))
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    outbox_messages::Entity::update_many()
        .col_expr(
            outbox_messages::Column::SentAt,
            Expr::value(now - TimeDelta::days(8)),
        )
        .filter(outbox_messages::Column::Id.eq(sent.id))
        .exec(&app.db)
        .await
        .unwrap();
    // Dead mail is kept as long; one message gave up eight days ago.
    outbox_messages::Entity::update_many()
        .col_expr(
            outbox_messages::Column::SentAt,
            Expr::value(None::<chrono::DateTime<chrono::FixedOffset>>),
        )
        .col_expr(
            outbox_messages::Column::DeadAt,
            Expr::value(now - TimeDelta::days(8)),
        )
        .filter(outbox_messages::Column::Recipient.eq("fresh@example.com"))
        .exec(&app.db)
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let output = admit_command(dir.path())
        .arg("purge-unconfirmed")
        .env("DATABASE_URL", &app.database_url)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let (counts, longest) = stdout.split_once("longest statement: ").unwrap();
    assert_eq!(
        counts,
        "users: 1\ntokens: 1\nthrottles: 1\nmails: 2\nsessions: 2\n"
    );
    assert!(
        longest
            .strip_suffix(" ms\n")
            .unwrap()
            .parse::<u64>()
            .is_ok(),
        "{stdout}"
    );
    let left = sessions::Entity::find().all(&app.db).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_ne!(left[0].id, idle.id);
    assert_ne!(left[0].id, expired.id);
    assert_eq!(
        outbox_messages::Entity::find()
            .count(&app.db)
            .await
            .unwrap(),
        1,
        "the one recent mail that went out is kept"
    );

    assert_eq!(
        emails(&app).await,
        vec!["fresh@example.com", "kept@example.com"]
    );
    assert_eq!(
        app.confirm(&stale).await["userErrors"][0]["code"],
        "TOKEN_INVALID"
    );
    assert_eq!(
        verification_tokens::Entity::find()
            .filter(verification_tokens::Column::UserId.eq(kept_user.id))
            .count(&app.db)
            .await
            .unwrap(),
        0
    );
    let fresh_token = verification_tokens::Entity::find()
        .filter(verification_tokens::Column::UserId.eq(fresh_user.id))
        .count(&app.db)
        .await
        .unwrap();
    assert_eq!(fresh_token, 1);
    let kept_after = users::Entity::find_by_id(kept_user.id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        kept_after, kept_user,
        "a confirmed account is never touched"
    );
}

async fn the_server_purges_never_confirmed_accounts_periodically(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &["--purge-interval", "200ms", "--unconfirmed-ttl", "1h"],
    )
    .await;
    app.register_and_read_mail("old@example.com").await;
    app.register_and_read_mail("new@example.com").await;
    age_user(&app, "old@example.com", TimeDelta::hours(2)).await;

    let mut remaining = Vec::new();
    for _ in 0..100 {
        remaining = emails(&app).await;
        if remaining.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(remaining, vec!["new@example.com"]);
}

/// The purge's tables, each of which it walks along an index.
const PURGED_TABLES: &str = "'users', 'verification_tokens', 'mail_throttles', \
    'mail_throttle_clients', 'client_budgets', 'sign_in_throttles', 'sessions', 'outbox_messages'";

/// Sequential scans of the purge's tables so far, as PostgreSQL counts them: `db` has one
/// connection, whose counts are flushed and read afresh here.
async fn sequential_scans(db: &sea_orm::DatabaseConnection) -> Vec<(String, i64)> {
    use sea_orm::{ConnectionTrait as _, FromQueryResult, Statement};
    #[derive(FromQueryResult)]
    struct Scans {
        relname: String,
        seq_scan: i64,
    }
    db.execute_unprepared("SELECT pg_stat_force_next_flush()")
        .await
        .unwrap();
    db.execute_unprepared("SELECT pg_stat_clear_snapshot()")
        .await
        .unwrap();
    Scans::find_by_statement(Statement::from_string(
        sea_orm::DbBackend::Postgres,
        format!(
            "SELECT relname::text AS relname, seq_scan FROM pg_stat_user_tables \
             WHERE relname IN ({PURGED_TABLES}) ORDER BY relname"
        ),
    ))
    .all(db)
    .await
    .unwrap()
    .into_iter()
    .map(|row| (row.relname, row.seq_scan))
    .collect()
}

/// A fresh PostgreSQL database, migrated, and a pool of `connections` to it.
async fn migrated_postgres(
    connections: u32,
) -> (crate::helpers::TestDatabase, sea_orm::DatabaseConnection) {
    let database = crate::helpers::TestDatabase::create(Backend::Postgres).await;
    let db = admit::db::connect(&database.url, Duration::from_secs(10), Some(connections))
        .await
        .unwrap();
    admit::db::migrate(&db).await.unwrap();
    (database, db)
}

/// Whatever PostgreSQL's statistics say (here: none yet, as after a flood of stale rows that
/// autovacuum has not analyzed), every batch is found along an index: a scan of a whole table,
/// dead rows and all, is what made the last, empty batch of a million-row purge take 260 ms.
#[tokio::test]
async fn on_postgres_the_purge_finds_every_batch_along_an_index_never_by_reading_a_table() {
    // One connection, so that the counts read are those of the purge's own statements.
    let (_database, db) = migrated_postgres(1).await;
    let long_ago = Utc::now().fixed_offset() - TimeDelta::days(30);
    let stale = 600;
    insert_stale_accounts(&db, stale, long_ago).await;
    let before = sequential_scans(&db).await;
    assert_eq!(before.len(), 8, "{before:?}");

    let report = admit::services::purge::purge(&db, week_retention())
        .await
        .unwrap();

    assert_eq!((report.users, report.tokens), (stale, stale));
    assert_eq!(sequential_scans(&db).await, before);
    db.close().await.unwrap();
}

/// A purge batch is chosen from a snapshot: a stale account confirmed after that, while the
/// batch's delete waits for the confirmation's lock on its row, is no longer stale when the
/// delete gets the row, and must be kept. (Only PostgreSQL lets the two overlap; SQLite
/// writes one transaction at a time.)
#[tokio::test]
async fn on_postgres_an_account_confirmed_while_the_purge_deletes_its_batch_is_kept() {
    use sea_orm::TransactionTrait as _;
    let (database, db) = migrated_postgres(2).await;
    let watcher = admit::db::connect(&database.url, Duration::from_secs(10), Some(1))
        .await
        .unwrap();
    insert_stale_accounts(&db, 1, Utc::now().fixed_offset() - TimeDelta::days(30)).await;

    // The account is being confirmed: the row is locked until the confirmation commits.
    let confirming = db.begin().await.unwrap();
    let confirmed_at = Utc::now().fixed_offset();
    users::Entity::update_many()
        .col_expr(users::Column::ConfirmedAt, Expr::value(confirmed_at))
        .filter(users::Column::EmailKey.eq("stale0@example.com"))
        .exec(&confirming)
        .await
        .unwrap();
    let purge = tokio::spawn({
        let db = db.clone();
        async move { admit::services::purge::purge(&db, week_retention()).await }
    });
    crate::helpers::waiting_for_locks(&watcher, 1).await;
    confirming.commit().await.unwrap();
    let report = purge.await.unwrap().unwrap();

    let kept = users::Entity::find()
        .filter(users::Column::EmailKey.eq("stale0@example.com"))
        .one(&db)
        .await
        .unwrap();
    assert!(
        kept.is_some_and(|user| user.confirmed_at.is_some()),
        "a confirmed account was purged: {report:?}"
    );
    assert_eq!(report.users, 0, "{report:?}");
}
