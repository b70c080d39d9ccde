//! Password hashing with Argon2id, off the async threads and with bounded concurrency.

use std::sync::Arc;

use argon2::{Argon2, PasswordHasher as _};
use tokio::sync::Semaphore;

use crate::domain::Password;

/// Computes Argon2id hashes (the argon2 crate's defaults: OWASP's m = 19 MiB, t = 2, p = 1) on
/// the blocking pool, at most `concurrency` at a time, so a burst of sign-ups neither stalls the
/// runtime nor allocates memory without limit: callers beyond the limit wait their turn.
#[derive(Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
}

impl PasswordHasher {
    /// A hasher allowing `concurrency` (at least one) hashes at once.
    pub fn new(concurrency: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
        }
    }

    /// The PHC string of a fresh Argon2id hash of `password`, with a random salt.
    pub async fn hash(&self, password: Password) -> anyhow::Result<String> {
        let permit = Arc::clone(&self.permits).acquire_owned().await?;
        let phc = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            Argon2::default()
                .hash_password(password.expose().as_bytes())
                .map(|hash| hash.to_string())
        })
        .await?
        .map_err(|err| anyhow::anyhow!("argon2 failed: {err}"))?;
        Ok(phc)
    }
}
