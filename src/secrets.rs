//! Sealing what must not rest in clear: outgoing mail that carries a link is stored encrypted
//! (XChaCha20-Poly1305) and opened only to be sent.
//!
//! Keys have ids so they can be rotated: the first key seals, every key opens. They come from
//! `ADMIT_SECRET_KEY` or `ADMIT_SECRET_KEY_FILE` (`id=BASE64` entries separated by commas or
//! lines; a bare BASE64 key has the id `k1`), or, when neither is set, from a key file that
//! admit generates on first start beside the database, readable by its owner only.

use std::{
    collections::HashMap,
    fmt,
    io::Write as _,
    path::{Path, PathBuf},
};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use chacha20poly1305::{
    XChaCha20Poly1305, XNonce,
    aead::{Aead, KeyInit, Payload},
};
use secrecy::{ExposeSecret, SecretBox, SecretString};

/// Bytes in a key.
const KEY_BYTES: usize = 32;
/// Bytes in a nonce: random nonces of this size never repeat in practice.
const NONCE_BYTES: usize = 24;
/// What a sealed value starts with, so that the format can change later.
const PREFIX: &str = "sealed:v1:";
/// The id of a key given without one.
const DEFAULT_ID: &str = "k1";
/// Longest key id.
const MAX_ID: usize = 16;

/// The keys that seal and open secrets at rest. It cannot be printed.
#[derive(Clone)]
pub struct SecretKeys {
    current: String,
    keys: std::sync::Arc<HashMap<String, SecretBox<[u8; KEY_BYTES]>>>,
}

impl fmt::Debug for SecretKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKeys")
            .field("current", &self.current)
            .field("ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Keys that could not be read or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The text is not a list of keys.
    #[error("ADMIT_SECRET_KEY: {0}")]
    Malformed(String),
    /// The key file could not be read or written.
    #[error("secret key file {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// No randomness to make a key with.
    #[error("cannot generate a secret key: {0}")]
    Random(String),
    /// The key file admit generates was found readable by others, so it was not made by admit
    /// (it may have come out of a repository or a backup) and is not trusted.
    #[error(
        "secret key file {path} can be read by other users (mode {mode:o}); admit generates it \
         readable by its owner only. Delete it to generate a new one, or `chmod 600` it if it \
         is yours"
    )]
    Exposed {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
}

/// A sealed value could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Sealed with a key this process does not have.
    #[error("sealed with key {0:?}, which is not configured (ADMIT_SECRET_KEY)")]
    UnknownKey(String),
    /// Altered, truncated, or sealed for another record.
    #[error("the sealed value is damaged or belongs to another record")]
    Damaged,
}

impl SecretKeys {
    /// Parses `id=BASE64` entries separated by commas or new lines; the first one seals.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let mut current = None;
        let mut keys = HashMap::new();
        for entry in text
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .flat_map(|line| line.split(','))
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
        {
            // A key's base64 is 44 characters and may end in `=`: only a short name before the
            // first `=` is an id.
            let (id, encoded) = entry
                .split_once('=')
                .filter(|(id, _)| {
                    (1..=MAX_ID).contains(&id.len())
                        && id
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                })
                .unwrap_or((DEFAULT_ID, entry));
            let bytes = STANDARD
                .decode(encoded.trim())
                .map_err(|_| KeyError::Malformed(format!("key {id:?} is not base64")))?;
            let key: [u8; KEY_BYTES] = bytes.try_into().map_err(|_| {
                KeyError::Malformed(format!("key {id:?} must be {KEY_BYTES} bytes"))
            })?;
            if keys
                .insert(id.to_owned(), SecretBox::new(Box::new(key)))
                .is_some()
            {
                return Err(KeyError::Malformed(format!("key id {id:?} appears twice")));
            }
            current.get_or_insert_with(|| id.to_owned());
        }
        let current = current.ok_or_else(|| KeyError::Malformed("no key given".to_owned()))?;
        Ok(Self {
            current,
            keys: std::sync::Arc::new(keys),
        })
    }

    /// The keys from `key` or `file`, or from `generated` (created with a fresh key, readable
    /// by the owner only, when it does not exist yet). Says in the log when it generates one.
    pub fn load(
        key: Option<&SecretString>,
        file: Option<&Path>,
        generated: &Path,
    ) -> Result<Self, KeyError> {
        if let Some(key) = key {
            return Self::parse(key.expose_secret());
        }
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| KeyError::File {
                path: path.display().to_string(),
                source,
            })
        };
        if let Some(file) = file {
            return Self::parse(&read(file)?);
        }
        if generated.exists() {
            refuse_if_exposed(generated)?;
            return Self::parse(&read(generated)?);
        }
        let mut key = [0u8; KEY_BYTES];
        getrandom::fill(&mut key).map_err(|err| KeyError::Random(err.to_string()))?;
        let text = format!(
            "# admit's secret key: it opens the mail waiting in the outbox. Keep it with backups\n\
             # of the database, and give every instance sharing the database the same key.\n\
             {DEFAULT_ID}={}\n",
            STANDARD.encode(key)
        );
        write_private(generated, &text).map_err(|source| KeyError::File {
            path: generated.display().to_string(),
            source,
        })?;
        tracing::warn!(
            file = %generated.display(),
            "generated a secret key for the outbox; set ADMIT_SECRET_KEY or ADMIT_SECRET_KEY_FILE in production"
        );
        Self::parse(&text)
    }

    /// A fresh random key, for tests and tools.
    pub fn generate() -> Result<Self, KeyError> {
        let mut key = [0u8; KEY_BYTES];
        getrandom::fill(&mut key).map_err(|err| KeyError::Random(err.to_string()))?;
        Self::parse(&STANDARD.encode(key))
    }

    /// `plaintext` sealed with the current key, bound to `context` (e.g. the record's id and
    /// field): a sealed value copied to another record does not open there.
    pub fn seal(&self, plaintext: &str, context: &str) -> Result<String, KeyError> {
        let key = self
            .keys
            .get(&self.current)
            .ok_or_else(|| KeyError::Malformed("the current key is missing".to_owned()))?;
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).map_err(|err| KeyError::Random(err.to_string()))?;
        let cipher = XChaCha20Poly1305::new(key.expose_secret().into());
        let sealed = cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| KeyError::Malformed("encryption failed".to_owned()))?;
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        Ok(format!(
            "{PREFIX}{}:{}",
            self.current,
            STANDARD.encode(bytes)
        ))
    }

    /// Opens a value [`seal`](Self::seal)ed for `context`. Values without the sealed prefix were
    /// stored before sealing existed and are returned as they are.
    pub fn open(&self, stored: &str, context: &str) -> Result<String, OpenError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_owned());
        };
        let (id, encoded) = rest.split_once(':').ok_or(OpenError::Damaged)?;
        let key = self
            .keys
            .get(id)
            .ok_or_else(|| OpenError::UnknownKey(id.to_owned()))?;
        let bytes = STANDARD.decode(encoded).map_err(|_| OpenError::Damaged)?;
        if bytes.len() < NONCE_BYTES {
            return Err(OpenError::Damaged);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| OpenError::Damaged)?;
        let cipher = XChaCha20Poly1305::new(key.expose_secret().into());
        let plaintext = cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| OpenError::Damaged)?;
        String::from_utf8(plaintext).map_err(|_| OpenError::Damaged)
    }
}

/// Where the generated key lives: beside the SQLite database file, else in the working folder.
pub fn default_key_file(database_file: Option<&Path>) -> PathBuf {
    database_file
        .and_then(Path::parent)
        .map_or_else(|| PathBuf::from("admit.key"), |dir| dir.join("admit.key"))
}

/// Refuses a key file that users other than its owner can read. Only the generated file is
/// checked: a file named in `ADMIT_SECRET_KEY_FILE` is mounted by the operator's own tools
/// (a secret volume, say), whose modes are theirs to choose.
fn refuse_if_exposed(path: &Path) -> Result<(), KeyError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path)
            .map_err(|source| KeyError::File {
                path: path.display().to_string(),
                source,
            })?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Exposed {
                path: path.display().to_string(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Creates `path` readable and writable by its owner only, and writes `text` into it.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_with_its_key_and_context_only() {
        let keys = SecretKeys::generate().unwrap();
        let sealed = keys
            .seal("https://x.test/confirm#token=abc", "row-1:text")
            .unwrap();
        assert!(!sealed.contains("token=abc"));
        assert_eq!(
            keys.open(&sealed, "row-1:text").unwrap(),
            "https://x.test/confirm#token=abc"
        );
        assert_eq!(keys.open(&sealed, "row-2:text"), Err(OpenError::Damaged));
        let mut altered = sealed.clone();
        altered.insert(sealed.len() - 3, 'A');
        assert!(keys.open(&altered, "row-1:text").is_err());
        assert_eq!(
            keys.open("legacy plain text", "row-1:text").unwrap(),
            "legacy plain text"
        );
    }

    #[test]
    fn rotated_keys_still_open_what_older_keys_sealed() {
        let old = SecretKeys::parse(&format!("old={}", STANDARD.encode([7u8; 32]))).unwrap();
        let sealed = old.seal("secret", "c").unwrap();
        let rotated = SecretKeys::parse(&format!(
            "new={}, old={}",
            STANDARD.encode([9u8; 32]),
            STANDARD.encode([7u8; 32])
        ))
        .unwrap();
        assert_eq!(rotated.open(&sealed, "c").unwrap(), "secret");
        assert!(
            rotated
                .seal("x", "c")
                .unwrap()
                .starts_with("sealed:v1:new:")
        );
        let without = SecretKeys::parse(&format!("new={}", STANDARD.encode([9u8; 32]))).unwrap();
        assert_eq!(
            without.open(&sealed, "c"),
            Err(OpenError::UnknownKey("old".to_owned()))
        );
    }

    #[test]
    fn a_generated_key_file_loads_again_and_is_the_owners_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admit.key");
        let first = SecretKeys::load(None, None, &path).unwrap();
        let sealed = first.seal("x", "c").unwrap();
        let again = SecretKeys::load(None, None, &path).unwrap();
        assert_eq!(again.open(&sealed, "c").unwrap(), "x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_others_can_read_is_refused_where_admit_would_have_generated_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admit.key");
        let sealed = SecretKeys::load(None, None, &path)
            .unwrap()
            .seal("x", "c")
            .unwrap();
        // What a checkout from git gives a committed file.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = SecretKeys::load(None, None, &path).unwrap_err();
        assert!(
            matches!(err, KeyError::Exposed { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
        // Named explicitly, the operator's mode is accepted.
        let named = SecretKeys::load(None, Some(&path), &dir.path().join("unused.key")).unwrap();
        assert_eq!(named.open(&sealed, "c").unwrap(), "x");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let again = SecretKeys::load(None, None, &path).unwrap();
        assert_eq!(again.open(&sealed, "c").unwrap(), "x");
    }

    #[test]
    fn malformed_keys_are_refused_and_keys_never_print() {
        for bad in [
            "",
            "k=notbase64!",
            "k=AAAA",
            "a=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,a=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ] {
            assert!(SecretKeys::parse(bad).is_err(), "{bad:?}");
        }
        let encoded = STANDARD.encode([5u8; 32]);
        let keys = SecretKeys::parse(&encoded).unwrap();
        assert!(!format!("{keys:?}").contains(&encoded));
    }
}
