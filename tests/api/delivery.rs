//! Mail delivery when things go wrong, each fault provoked for real: an SMTP server that refuses,
//! hangs or is slow, a SIGTERM mid-send, a `kill -9` mid-burst, and two processes on one database.

use std::{collections::HashMap, time::Duration};

use entity::outbox_messages;
use futures::StreamExt;
use sea_orm::{Database, EntityTrait, PaginatorTrait, TransactionTrait};

use crate::{
    helpers::{Backend, PASSWORD, TestApp, TestDatabase, on_both_backends},
    process::{AdmitProcess, admit_command},
    smtp::{Behaviour, ReceivedMail, SmtpServer},
};

on_both_backends!(
    mail_refused_by_the_server_is_retried_and_delivered_exactly_once,
    a_hanging_server_times_out_and_the_mail_goes_out_once_it_answers,
    mail_that_fails_every_attempt_is_dead_until_an_operator_retries_it,
    sigterm_lets_the_message_being_sent_finish_and_exits_cleanly,
    sigterm_answers_the_requests_in_flight_before_exiting,
    after_kill_9_mid_burst_every_accepted_registration_gets_its_email,
    three_thousand_queued_messages_are_each_delivered_once,
    a_server_without_starttls_gets_no_mail_when_tls_is_required,
);

/// Polls (bounded) until `done` holds for the outbox rows.
pub async fn wait_for_outbox(
    db: &sea_orm::DatabaseConnection,
    what: &str,
    done: impl Fn(&[outbox_messages::Model]) -> bool,
) -> Vec<outbox_messages::Model> {
    for _ in 0..400 {
        let rows = outbox_messages::Entity::find().all(db).await.unwrap();
        if done(&rows) {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("outbox never reached: {what}");
}

async fn three_thousand_queued_messages_are_each_delivered_once(backend: Backend) {
    const COUNT: usize = 3000;
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let app = TestApp::spawn_with(backend, &["--secret-key", key]).await;
    let keys = admit::secrets::SecretKeys::parse(key).unwrap();
    // Queued straight into the outbox, as a burst of sign-ups would leave it (without spending
    // minutes on their password hashes), in transactions of 500 like a busy instance's.
    for chunk in 0..COUNT / 500 {
        let txn = app.db.begin().await.unwrap();
        for i in chunk * 500..(chunk + 1) * 500 {
            let email = admit::mail::OutgoingEmail {
                subject: format!("message {i}"),
                text: format!("text {i}"),
                html: format!("<p>html {i}</p>"),
            };
            admit::mail::enqueue(&txn, &keys, &format!("many{i}@example.com"), email)
                .await
                .unwrap();
        }
        txn.commit().await.unwrap();
    }

    let rows = wait_for_outbox(&app.db, "all sent", |rows| {
        rows.len() == COUNT && rows.iter().all(|row| row.sent_at.is_some())
    })
    .await;
    let received = app.smtp.wait_for(COUNT).await;
    assert_eq!(received.len(), COUNT, "a message was sent twice");
    let ids: std::collections::HashSet<String> =
        received.iter().map(ReceivedMail::message_id).collect();
    assert_eq!(ids.len(), COUNT, "duplicate Message-IDs");
    let expected: std::collections::HashSet<String> = rows
        .iter()
        .map(|row| format!("{}@admit.test", row.id))
        .collect();
    assert_eq!(ids, expected);
    assert!(
        rows.iter()
            .all(|row| row.attempts == 1 && row.text_body.is_none())
    );
}

async fn a_server_without_starttls_gets_no_mail_when_tls_is_required(backend: Backend) {
    // The test server offers no STARTTLS: a message must wait, never go out in clear.
    let plain = SmtpServer::start().await;
    let app =
        TestApp::spawn_with_smtp_url(backend, format!("{}?tls=required", plain.url()), &[]).await;
    assert_eq!(
        app.register("secret@example.com", PASSWORD, None).await["accepted"],
        true
    );

    let rows = wait_for_outbox(&app.db, "a failed attempt", |rows| {
        rows.iter().any(|row| row.attempts >= 1)
    })
    .await;
    let error = rows[0].last_error.clone().unwrap_or_default();
    assert!(error.contains("STARTTLS"), "{error}");
    assert!(rows[0].sent_at.is_none());
    assert!(plain.received().is_empty());
}

fn by_recipient(mails: &[ReceivedMail]) -> HashMap<String, Vec<String>> {
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    for mail in mails {
        seen.entry(mail.recipients.join(","))
            .or_default()
            .push(mail.message_id());
    }
    seen
}

async fn mail_refused_by_the_server_is_retried_and_delivered_exactly_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.smtp.set_behaviour(Behaviour::Refuse(554));
    let addresses = ["one@example.com", "two@example.com", "three@example.com"];
    for address in addresses {
        assert_eq!(
            app.register(address, PASSWORD, None).await["accepted"],
            true
        );
    }
    wait_for_outbox(&app.db, "two failed attempts each", |rows| {
        rows.len() == 3 && rows.iter().all(|row| row.attempts >= 2)
    })
    .await;
    // A temporary refusal next, then the server recovers.
    app.smtp.set_behaviour(Behaviour::Refuse(451));
    wait_for_outbox(&app.db, "a third attempt each", |rows| {
        rows.iter().all(|row| row.attempts >= 3)
    })
    .await;
    assert!(app.smtp.received().is_empty());
    app.smtp.set_behaviour(Behaviour::Accept);

    let rows = wait_for_outbox(&app.db, "all sent", |rows| {
        rows.iter().all(|row| row.sent_at.is_some())
    })
    .await;
    let received = app.smtp.received();
    assert_eq!(received.len(), 3, "each message exactly once");
    let seen = by_recipient(&received);
    for address in addresses {
        assert_eq!(seen[address].len(), 1, "{address}");
    }
    for row in rows {
        assert_eq!(row.last_error, None);
        assert_eq!(row.dead_at, None);
    }
}

async fn a_hanging_server_times_out_and_the_mail_goes_out_once_it_answers(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--smtp-timeout", "1s", "--mail-lease", "3s"]).await;
    app.smtp.set_behaviour(Behaviour::Hang);

    assert_eq!(
        app.register("hung@example.com", PASSWORD, None).await["accepted"],
        true
    );

    let rows = wait_for_outbox(&app.db, "a timed-out attempt", |rows| rows[0].attempts >= 1).await;
    let error = rows[0].last_error.clone().unwrap_or_default();
    assert!(error.to_lowercase().contains("time"), "{error}");
    app.smtp.set_behaviour(Behaviour::Accept);

    wait_for_outbox(&app.db, "sent", |rows| rows[0].sent_at.is_some()).await;
    assert_eq!(app.smtp.received().len(), 1);
}

async fn mail_that_fails_every_attempt_is_dead_until_an_operator_retries_it(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--mail-max-attempts", "2"]).await;
    app.smtp.set_behaviour(Behaviour::Refuse(550));
    assert_eq!(
        app.register("dead@example.com", PASSWORD, None).await["accepted"],
        true
    );

    let rows = wait_for_outbox(&app.db, "dead", |rows| rows[0].dead_at.is_some()).await;
    assert_eq!(rows[0].attempts, 2);
    assert!(
        rows[0]
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("550"),
        "{rows:?}"
    );
    // Dead means left alone: no third attempt.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let still = outbox_messages::Entity::find()
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(still.attempts, 2);

    let dir = tempfile::tempdir().unwrap();
    let mail = |args: &'static [&'static str]| {
        let mut command = admit_command(dir.path());
        command
            .arg("mail")
            .args(args)
            .env("DATABASE_URL", &app.database_url);
        async move {
            let output = command.output().await.unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8(output.stdout).unwrap()
        }
    };
    assert_eq!(mail(&["status"]).await, "pending: 0\ndead: 1\nsent: 0\n");

    app.smtp.set_behaviour(Behaviour::Accept);
    assert_eq!(mail(&["retry", "--all"]).await, "queued again: 1\n");
    let delivered = app.smtp.next_mail().await;
    assert_eq!(delivered.recipients, vec!["dead@example.com".to_owned()]);
    wait_for_outbox(&app.db, "sent", |rows| rows[0].sent_at.is_some()).await;
    assert_eq!(mail(&["status"]).await, "pending: 0\ndead: 0\nsent: 1\n");
}

fn process_env<'a>(database: &'a TestDatabase, smtp_url: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("DATABASE_URL", database.url.as_str()),
        ("ADMIT_SMTP_URL", smtp_url),
        ("ADMIT_MAIL_FROM", "admit <no-reply@admit.test>"),
        ("ADMIT_MAIL_RETRY_BASE", "200ms"),
        ("ADMIT_MAIL_RETRY_MAX", "1s"),
        ("ADMIT_SMTP_TIMEOUT", "2s"),
        ("ADMIT_MAIL_LEASE", "3s"),
        ("RUST_LOG", "info"),
    ]
}

async fn sigterm_lets_the_message_being_sent_finish_and_exits_cleanly(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let smtp = SmtpServer::start().await;
    smtp.set_behaviour(Behaviour::SlowData(Duration::from_millis(1500)));
    let smtp_url = smtp.url();
    let dir = tempfile::tempdir().unwrap();
    let mut admit = AdmitProcess::start(dir.path(), &process_env(&database, &smtp_url)).await;

    assert!(admit.register("inflight@example.com").await);
    smtp.data_read().await;
    // The message is on the wire, its confirmation 1.5 s away.
    assert_eq!(admit.terminate().await, Some(0));

    assert_eq!(smtp.received().len(), 1);
    let db = Database::connect(&database.url).await.unwrap();
    let row = outbox_messages::Entity::find()
        .one(&db)
        .await
        .unwrap()
        .unwrap();
    assert!(
        row.sent_at.is_some(),
        "the send in flight was recorded before exit"
    );
    assert_eq!(row.locked_until, None);
    db.close().await.unwrap();
}

async fn sigterm_answers_the_requests_in_flight_before_exiting(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let smtp = SmtpServer::start().await;
    let smtp_url = smtp.url();
    let dir = tempfile::tempdir().unwrap();
    let mut env = process_env(&database, &smtp_url);
    // One hash at a time, so that most of the burst is still queued when SIGTERM arrives.
    env.push(("ADMIT_HASH_CONCURRENCY", "1"));
    let mut admit = AdmitProcess::start(dir.path(), &env).await;

    let addresses: Vec<String> = (0..10)
        .map(|i| format!("graceful{i}@example.com"))
        .collect();
    let mut burst: futures::stream::FuturesUnordered<_> = addresses
        .iter()
        .map(|address| {
            let admit = &admit;
            async move { admit.register(address).await }
        })
        .collect();
    assert!(
        burst.next().await.expect("a first answer"),
        "the first sign-up is accepted"
    );
    admit.signal("-TERM").await;
    let mut answered = 1;
    while let Some(accepted) = burst.next().await {
        assert!(accepted, "a request in flight at SIGTERM was not answered");
        answered += 1;
    }
    drop(burst);
    assert_eq!(answered, addresses.len());
    assert_eq!(admit.wait().await, Some(0));

    let db = Database::connect(&database.url).await.unwrap();
    let queued = outbox_messages::Entity::find().count(&db).await.unwrap();
    assert_eq!(queued, 10, "every answered sign-up has its email queued");
    db.close().await.unwrap();
}

async fn after_kill_9_mid_burst_every_accepted_registration_gets_its_email(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let smtp = SmtpServer::start().await;
    smtp.set_behaviour(Behaviour::SlowData(Duration::from_millis(150)));
    let smtp_url = smtp.url();
    let dir = tempfile::tempdir().unwrap();
    let mut env = process_env(&database, &smtp_url);
    let in_flight = 4;
    env.push(("ADMIT_SMTP_CONNECTIONS", "4"));
    let first = AdmitProcess::start(dir.path(), &env).await;

    let addresses: Vec<String> = (0..40).map(|i| format!("burst{i}@example.com")).collect();
    // Kill after the tenth answer, with the rest of the burst still in flight.
    let mut burst: futures::stream::FuturesUnordered<_> = addresses
        .iter()
        .map(|address| {
            let first = &first;
            async move { (address, first.register(address).await) }
        })
        .collect();
    let mut accepted = Vec::new();
    let mut unanswered = 0;
    while let Some((address, ok)) = burst.next().await {
        if ok {
            accepted.push(address);
            if accepted.len() == 10 {
                first.kill().await;
            }
        } else {
            unanswered += 1;
        }
    }
    drop(burst);
    assert!(accepted.len() >= 10);
    assert!(
        unanswered > 0,
        "the kill came after the whole burst was answered"
    );

    let mut second = AdmitProcess::start(dir.path(), &env).await;
    smtp.set_behaviour(Behaviour::Accept);
    let db = Database::connect(&database.url).await.unwrap();
    wait_for_outbox(&db, "all sent", |rows| {
        rows.iter().all(|row| row.sent_at.is_some())
    })
    .await;
    let seen = by_recipient(&smtp.received());
    for address in &accepted {
        assert!(
            seen.contains_key(*address),
            "{address} was accepted but never mailed"
        );
    }
    // A duplicate is possible only for the sends in flight at the crash, and carries the same
    // Message-ID so that it can be recognised downstream.
    let duplicated: Vec<_> = seen.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(duplicated.len() <= in_flight, "{duplicated:?}");
    for (_, ids) in &duplicated {
        assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
    }
    eprintln!(
        "kill -9 mid-burst: {} of {} registrations accepted, {} mailed, {} duplicated",
        accepted.len(),
        addresses.len(),
        seen.len(),
        duplicated.len()
    );
    db.close().await.unwrap();
    assert_eq!(second.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_postgres_database_send_every_message_once() {
    let database = TestDatabase::create(Backend::Postgres).await;
    let smtp = SmtpServer::start().await;
    let smtp_url = smtp.url();
    let dir = tempfile::tempdir().unwrap();
    let mut env = process_env(&database, &smtp_url);
    // Forty sign-ups at once, hashed at low priority while the rest of the suite keeps both
    // cores busy, can wait longer than the default deadline allows a hash to wait (4 of 5 s):
    // this test is about delivery, not about hashing capacity.
    env.push(("ADMIT_DB_TIMEOUT", "30s"));
    let mut first = AdmitProcess::start(dir.path(), &env).await;
    let mut second = AdmitProcess::start(dir.path(), &env).await;

    let addresses: Vec<String> = (0..40).map(|i| format!("shared{i}@example.com")).collect();
    let answers = futures::future::join_all(addresses.iter().enumerate().map(|(i, address)| {
        let process = if i % 2 == 0 { &first } else { &second };
        process.register(address)
    }))
    .await;
    assert!(answers.iter().all(|ok| *ok));

    smtp.wait_for(addresses.len()).await;
    let db = Database::connect(&database.url).await.unwrap();
    wait_for_outbox(&db, "all sent", |rows| {
        rows.iter().all(|row| row.sent_at.is_some())
    })
    .await;
    // Both processes poll the shared outbox; give a double send every chance to show up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let received = smtp.received();
    assert_eq!(
        received.len(),
        addresses.len(),
        "a message was sent twice or not at all"
    );
    let seen = by_recipient(&received);
    assert_eq!(seen.len(), addresses.len());
    let first_log = first.log().await;
    let second_log = second.log().await;
    let sent_by_first = first_log.matches("mail sent").count();
    let sent_by_second = second_log.matches("mail sent").count();
    assert!(
        sent_by_first > 0 && sent_by_second > 0,
        "{sent_by_first} / {sent_by_second}"
    );
    assert_eq!(sent_by_first + sent_by_second, addresses.len());
    eprintln!("two processes: {sent_by_first} + {sent_by_second} messages, none twice");
    db.close().await.unwrap();
    assert_eq!(first.terminate().await, Some(0));
    assert_eq!(second.terminate().await, Some(0));
}
