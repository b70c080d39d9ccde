//! SMTP over connections admit opens and pools itself, so that each socket has `TCP_NODELAY`.
//!
//! lettre 0.11.23 writes a message's body and its closing `.` in two writes on a socket with
//! Nagle's algorithm on, so the closing `.` waits for the server's delayed ACK (40 ms on Linux)
//! on every message: 22 messages/s per connection on loopback. lettre merged the fix upstream
//! (lettre/lettre#1159) but has not released it; until it does, admit connects the socket
//! itself and hands it to lettre's SMTP conversation (greeting, STARTTLS, AUTH, MAIL, RCPT,
//! DATA), which is used as is. `smtps://` (TLS from the first byte) keeps lettre's own socket,
//! so it still has the delay; several connections in flight hide most of it.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use lettre::{
    Message,
    transport::smtp::{
        authentication::{Credentials, DEFAULT_MECHANISMS},
        client::{AsyncSmtpConnection, TlsParameters},
        extension::ClientId,
    },
};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

/// An idle connection older than this is closed rather than reused: servers drop idle clients
/// (RFC 5321 lets them after 5 minutes, many do sooner) and a dead one would cost a retry.
const IDLE_LIMIT: Duration = Duration::from_secs(30);

/// How the conversation is protected.
enum Tls {
    /// Plain SMTP (`smtp://`).
    None,
    /// STARTTLS after the greeting (`smtp://...?tls=required` or `?tls=opportunistic`).
    Starttls {
        required: bool,
        parameters: TlsParameters,
    },
    /// TLS from the first byte (`smtps://`).
    Wrapper(TlsParameters),
}

/// Where mail goes, read from `ADMIT_SMTP_URL` in the forms lettre documents for
/// `AsyncSmtpTransport::from_url`, with the same default ports.
struct Server {
    host: String,
    port: u16,
    tls: Tls,
    hello: ClientId,
    credentials: Option<Credentials>,
    timeout: Duration,
}

impl Server {
    /// Errors never echo the URL, which may hold a password.
    fn parse(url: &SecretString, timeout: Duration) -> Result<Self, String> {
        let url = Url::parse(url.expose_secret()).map_err(|err| format!("not a URL: {err}"))?;
        let host = url
            .host_str()
            .ok_or("no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let tls_parameter = url
            .query_pairs()
            .find(|(key, _)| key == "tls")
            .map(|(_, value)| value.into_owned());
        let parameters =
            || TlsParameters::new(host.clone()).map_err(|err| format!("TLS parameters: {err}"));
        let (default_port, tls) = match (url.scheme(), tls_parameter.as_deref()) {
            ("smtp", None) => (25, Tls::None),
            ("smtp", Some(mode @ ("required" | "opportunistic"))) => (
                587,
                Tls::Starttls {
                    required: mode == "required",
                    parameters: parameters()?,
                },
            ),
            ("smtps", _) => (465, Tls::Wrapper(parameters()?)),
            (scheme, tls) => {
                return Err(format!(
                    "scheme {scheme:?} with tls={tls:?}: use smtp://, smtp://...?tls=required, smtp://...?tls=opportunistic or smtps://"
                ));
            }
        };
        let hello = match url.path().trim_matches('/') {
            "" => ClientId::default(),
            name => ClientId::Domain(name.to_owned()),
        };
        let decode = |part: &str| {
            percent_encoding::percent_decode_str(part)
                .decode_utf8()
                .map(|text| text.into_owned())
                .map_err(|_| "the user name or password is not UTF-8 once decoded".to_owned())
        };
        let credentials = match url.password() {
            Some(password) => Some(Credentials::new(decode(url.username())?, decode(password)?)),
            None => None,
        };
        Ok(Self {
            port: url.port().unwrap_or(default_port),
            host,
            tls,
            hello,
            credentials,
            timeout,
        })
    }

    /// A new connection, greeted, encrypted and authenticated as the URL asks.
    async fn connect(&self) -> Result<AsyncSmtpConnection, String> {
        let mut connection = match &self.tls {
            Tls::Wrapper(parameters) => AsyncSmtpConnection::connect_tokio1(
                (self.host.as_str(), self.port),
                Some(self.timeout),
                &self.hello,
                Some(parameters.clone()),
                None,
            )
            .await
            .map_err(|err| err.to_string())?,
            Tls::None | Tls::Starttls { .. } => {
                let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                    .await
                    .map_err(|err| format!("cannot connect: {err}"))?;
                stream
                    .set_nodelay(true)
                    .map_err(|err| format!("cannot set TCP_NODELAY: {err}"))?;
                AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello)
                    .await
                    .map_err(|err| err.to_string())?
            }
        };
        if let Tls::Starttls {
            required,
            parameters,
        } = &self.tls
        {
            if connection.can_starttls() {
                connection
                    .starttls(parameters.clone(), &self.hello)
                    .await
                    .map_err(|err| err.to_string())?;
            } else if *required {
                return Err("the server does not offer STARTTLS, and tls=required".to_owned());
            }
        }
        if let Some(credentials) = &self.credentials {
            connection
                .auth(DEFAULT_MECHANISMS, credentials)
                .await
                .map_err(|err| err.to_string())?;
        }
        Ok(connection)
    }
}

/// Up to `size` SMTP connections kept open between messages.
#[derive(Clone)]
pub(super) struct SmtpPool {
    server: Arc<Server>,
    idle: Arc<Mutex<Vec<(AsyncSmtpConnection, Instant)>>>,
    size: usize,
}

impl SmtpPool {
    /// A pool for `url` (errors never echo it), whose connections give up after `timeout`.
    pub(super) fn new(url: &SecretString, size: usize, timeout: Duration) -> Result<Self, String> {
        Ok(Self {
            server: Arc::new(Server::parse(url, timeout)?),
            idle: Arc::new(Mutex::new(Vec::with_capacity(size))),
            size,
        })
    }

    /// Sends `message` on an idle connection or a new one; the connection is kept only if the
    /// server took the message.
    pub(super) async fn send(&self, message: &Message) -> Result<u16, String> {
        let mut connection = match self.take_idle() {
            Some(connection) => connection,
            None => self.server.connect().await?,
        };
        let response = connection
            .send(message.envelope(), &message.formatted())
            .await
            .map_err(|err| err.to_string())?;
        if !connection.has_broken() {
            self.give_back(connection);
        }
        Ok(u16::from(response.code()))
    }

    fn take_idle(&self) -> Option<AsyncSmtpConnection> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some((connection, since)) = idle.pop() {
            if since.elapsed() < IDLE_LIMIT {
                return Some(connection);
            }
        }
        None
    }

    fn give_back(&self, connection: AsyncSmtpConnection) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < self.size {
            idle.push((connection, Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<Server, String> {
        Server::parse(&SecretString::from(url), Duration::from_secs(1))
    }

    #[test]
    fn smtp_urls_take_lettres_forms_and_default_ports() {
        let plain = parse("smtp://127.0.0.1").unwrap();
        assert_eq!((plain.host.as_str(), plain.port), ("127.0.0.1", 25));
        assert!(matches!(plain.tls, Tls::None) && plain.credentials.is_none());
        let submission = parse("smtp://user:p%40ss@mail.example.com?tls=required").unwrap();
        assert_eq!(submission.port, 587);
        assert!(matches!(
            submission.tls,
            Tls::Starttls { required: true, .. }
        ));
        assert!(submission.credentials.is_some());
        let wrapped = parse("smtps://mail.example.com:2465/client.example.com").unwrap();
        assert_eq!(wrapped.port, 2465);
        assert!(matches!(wrapped.tls, Tls::Wrapper(_)));
        assert_eq!(
            wrapped.hello,
            ClientId::Domain("client.example.com".to_owned())
        );
        let v6 = parse("smtp://[::1]:2525").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 2525));
    }

    #[test]
    fn malformed_smtp_urls_are_refused_without_echoing_them() {
        for bad in [
            "mail.example.com",
            "http://secret@mail.example.com",
            "smtp://mail.example.com?tls=sometimes",
            "smtp://user:secret%FF@mail.example.com",
        ] {
            let err = parse(bad).err().unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(!err.contains("secret"), "{err}");
        }
    }
}
