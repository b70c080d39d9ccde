use std::{path::PathBuf, time::Duration};

use lettre::{AsyncFileTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::SecretString;

use super::smtp::SmtpPool;

/// Where messages go, and how long one hand-over may take.
#[derive(Clone)]
pub struct Transport {
    kind: Kind,
    timeout: Duration,
}

#[derive(Clone)]
enum Kind {
    /// SMTP over pooled connections (see [`super::smtp`]).
    Smtp(SmtpPool),
    /// One `.eml` file per message, for local development.
    Files(PathBuf),
}

/// The transport did not take the message; the text is safe to store and log.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SendError(String);

impl Transport {
    /// SMTP at `url` when given, keeping up to `connections` open, otherwise files in
    /// `mail_dir` (created if missing). No send takes longer than `timeout`.
    pub fn new(
        url: Option<&SecretString>,
        mail_dir: PathBuf,
        timeout: Duration,
        connections: usize,
    ) -> anyhow::Result<Self> {
        let kind = match url {
            Some(url) => Kind::Smtp(
                // The pool's URL errors do not echo the URL, so no credentials leak here.
                SmtpPool::new(url, connections, timeout)
                    .map_err(|err| anyhow::anyhow!("invalid ADMIT_SMTP_URL: {err}"))?,
            ),
            None => {
                std::fs::create_dir_all(&mail_dir).map_err(|err| {
                    anyhow::anyhow!("cannot create mail folder {}: {err}", mail_dir.display())
                })?;
                Kind::Files(mail_dir)
            }
        };
        Ok(Self { kind, timeout })
    }

    /// Hands `message` over; `Ok` means the server (or the file system) accepted it.
    pub async fn send(&self, message: Message) -> Result<String, SendError> {
        // lettre's own timeout covers reads and writes, not a server that accepts the
        // connection and never greets: bound the whole conversation.
        match tokio::time::timeout(self.timeout, self.send_unbounded(message)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(SendError(format!(
                "timed out after {}",
                humantime::format_duration(self.timeout)
            ))),
        }
    }

    async fn send_unbounded(&self, message: Message) -> Result<String, SendError> {
        match &self.kind {
            Kind::Smtp(smtp) => smtp
                .send(&message)
                .await
                .map(|code| format!("SMTP {code}"))
                .map_err(|err| SendError(format!("SMTP: {err}"))),
            Kind::Files(dir) => AsyncFileTransport::<Tokio1Executor>::new(dir)
                .send(message)
                .await
                .map(|id| format!("written to {}", dir.join(format!("{id}.eml")).display()))
                .map_err(|err| SendError(format!("mail folder: {err}"))),
        }
    }
}
