//! Secrets at rest: no link, token or password can be read out of the database files, sent or
//! waiting; SQLite's files and the generated key are the owner's only; a message whose key is
//! gone is marked dead with a reason instead of being retried for ever.

use std::time::Duration;

use entity::outbox_messages;
use sea_orm::{ConnectionTrait, Database, EntityTrait, Statement};

use crate::{
    helpers::{Backend, PASSWORD, TestApp, on_both_backends},
    smtp::Behaviour,
};

on_both_backends!(
    no_link_token_or_password_can_be_read_from_the_database_files,
    a_message_sealed_with_a_key_that_is_gone_is_marked_dead_with_the_reason,
);

/// Every byte the database keeps on disk for this test's database: SQLite's file and WAL, or
/// PostgreSQL's heap and TOAST files of every table (read through the server after a
/// CHECKPOINT, as someone with the data directory or a file-level backup would see them).
async fn database_bytes(app: &TestApp, backend: Backend) -> Vec<u8> {
    match backend {
        Backend::Sqlite => {
            let file = admit::db::sqlite_file(&app.database_url).unwrap();
            let mut bytes = Vec::new();
            for suffix in ["", "-wal"] {
                let mut path = file.as_os_str().to_owned();
                path.push(suffix);
                if let Ok(content) = std::fs::read(&path) {
                    bytes.extend(content);
                }
            }
            bytes
        }
        Backend::Postgres => {
            let db = Database::connect(&app.database_url).await.unwrap();
            db.execute_unprepared("CHECKPOINT").await.unwrap();
            let files = db
                .query_all_raw(Statement::from_string(
                    db.get_database_backend(),
                    "SELECT pg_relation_filepath(c.oid) AS path FROM pg_class c
                     WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
                     UNION ALL
                     SELECT pg_relation_filepath(c.reltoastrelid) FROM pg_class c
                     WHERE c.relnamespace = 'public'::regnamespace AND c.reltoastrelid <> 0",
                ))
                .await
                .unwrap();
            let mut bytes = Vec::new();
            for row in files {
                let path: String = row.try_get("", "path").unwrap();
                let content = db
                    .query_one_raw(Statement::from_sql_and_values(
                        db.get_database_backend(),
                        "SELECT pg_read_binary_file($1) AS content",
                        [path.into()],
                    ))
                    .await
                    .unwrap()
                    .unwrap();
                bytes.extend(content.try_get::<Vec<u8>>("", "content").unwrap());
            }
            bytes
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

async fn no_link_token_or_password_can_be_read_from_the_database_files(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--ip-rate-limit", "0"]).await;
    // Five messages sent (their tokens known from the mail)...
    let mut tokens = Vec::new();
    for i in 0..5 {
        tokens.push(
            app.register_and_read_mail(&format!("sent{i}@example.com"))
                .await
                .token(),
        );
    }
    // Two sessions of a confirmed account, one per delivery...
    app.confirm(&tokens[0]).await;
    let mut sessions = Vec::new();
    for delivery in ["BEARER", "COOKIE"] {
        let (headers, data) = app
            .operation_with(
                &app.http,
                "SignIn",
                serde_json::json!({ "input": { "email": "sent0@example.com", "password": PASSWORD, "delivery": delivery } }),
                &[],
            )
            .await;
        let token = match data["signIn"]["sessionToken"].as_str() {
            Some(token) => token.to_owned(),
            None => {
                headers["set-cookie"].to_str().unwrap()["admit_session=".len()..][..43].to_owned()
            }
        };
        sessions.push(token);
    }
    // ...and five waiting in the outbox, with the server refusing them.
    app.smtp.set_behaviour(Behaviour::Refuse(451));
    for i in 0..5 {
        let payload = app
            .register(&format!("waiting{i}@example.com"), PASSWORD, None)
            .await;
        assert_eq!(payload["accepted"], true, "{payload}");
    }
    let waiting = outbox_messages::Entity::find().all(&app.db).await.unwrap();
    assert_eq!(waiting.iter().filter(|m| m.sent_at.is_none()).count(), 5);

    let bytes = database_bytes(&app, backend).await;
    assert!(
        contains(&bytes, b"waiting0@example.com"),
        "the files were read"
    );
    for token in tokens.iter().chain(&sessions) {
        assert!(
            !contains(&bytes, token.as_bytes()),
            "a token is in the files"
        );
    }
    for needle in ["#token=", "/confirm", PASSWORD] {
        assert!(
            !contains(&bytes, needle.as_bytes()),
            "{needle:?} is in the files"
        );
    }

    if backend == Backend::Sqlite {
        use std::os::unix::fs::PermissionsExt;
        let file = admit::db::sqlite_file(&app.database_url).unwrap();
        let key = file.with_file_name("admit.key");
        for path in [file.clone(), file.with_extension("db-wal"), key] {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
        }
    }
}

async fn a_message_sealed_with_a_key_that_is_gone_is_marked_dead_with_the_reason(backend: Backend) {
    let old = "old=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let new = "new=ERERERERERERERERERERERERERERERERERERERERERE=";
    let app = TestApp::spawn_with(backend, &["--secret-key", old]).await;
    app.smtp.set_behaviour(Behaviour::Refuse(451));
    let payload = app.register("sealed@example.com", PASSWORD, None).await;
    assert_eq!(payload["accepted"], true);
    let app = app
        .restart_with(&["--secret-key", &format!("{new},{old}")])
        .await;
    // Rotation: the old key still opens what it sealed.
    app.smtp.set_behaviour(Behaviour::Accept);
    let mail = app.smtp.next_mail().await;
    assert_eq!(mail.token().len(), 43);

    app.smtp.set_behaviour(Behaviour::Refuse(451));
    let payload = app.register("orphan@example.com", PASSWORD, None).await;
    assert_eq!(payload["accepted"], true);
    // Without the key that sealed it, the message can never go out: dead at once, with why.
    let app = app.restart_with(&["--secret-key", old]).await;
    app.smtp.set_behaviour(Behaviour::Accept);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let dead = loop {
        let rows = outbox_messages::Entity::find().all(&app.db).await.unwrap();
        if let Some(dead) = rows.into_iter().find(|m| m.dead_at.is_some()) {
            break dead;
        }
        assert!(tokio::time::Instant::now() < deadline, "no message died");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(dead.recipient, "orphan@example.com");
    let reason = dead.last_error.unwrap();
    assert!(reason.contains("cannot be decrypted"), "{reason}");
    assert!(reason.contains("\"new\""), "{reason}");
    assert_eq!(app.smtp.received().len(), 1);
}
