//! A small SMTP server on loopback that keeps what it receives. It speaks just enough SMTP for
//! lettre (EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT) and nothing is mocked on admit's side.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use mail_parser::MessageParser;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::Notify,
    task::JoinHandle,
};

/// A message as the server received it.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// `RCPT TO` addresses.
    pub recipients: Vec<String>,
    /// The raw message after dot-unstuffing.
    pub data: Vec<u8>,
}

impl ReceivedMail {
    /// The decoded plain-text part.
    pub fn text(&self) -> String {
        self.parsed(|message| message.body_text(0).map(|text| text.into_owned()))
    }

    /// The decoded HTML part.
    pub fn html(&self) -> String {
        self.parsed(|message| message.body_html(0).map(|html| html.into_owned()))
    }

    /// The subject line.
    pub fn subject(&self) -> String {
        self.parsed(|message| message.subject().map(str::to_owned))
    }

    /// The Message-ID header, without angle brackets.
    pub fn message_id(&self) -> String {
        self.parsed(|message| message.message_id().map(str::to_owned))
    }

    /// The first link in the plain-text part, as a person reading it would find it.
    pub fn link(&self) -> String {
        let text = self.text();
        let start = text.find("http").expect("the email has a link");
        text[start..]
            .split_whitespace()
            .next()
            .expect("the link ends")
            .to_owned()
    }

    /// The token from the link's `#token=` fragment.
    pub fn token(&self) -> String {
        let link = self.link();
        let (_, fragment) = link
            .split_once("#token=")
            .expect("the link carries a token");
        fragment.to_owned()
    }

    fn parsed<T>(&self, get: impl FnOnce(&mail_parser::Message<'_>) -> Option<T>) -> T {
        let message = MessageParser::default()
            .parse(&self.data)
            .expect("the message parses");
        get(&message).expect("the message has that part")
    }
}

/// The server; it stops when dropped.
pub struct SmtpServer {
    port: u16,
    inbox: Arc<Mutex<Vec<ReceivedMail>>>,
    arrived: Arc<Notify>,
    task: JoinHandle<()>,
}

impl SmtpServer {
    /// Listens on a free loopback port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind SMTP");
        Self::serve(listener)
    }

    /// Listens on `port`, e.g. one a service was told to use before the server came up.
    pub async fn start_on(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind SMTP on port");
        Self::serve(listener)
    }

    fn serve(listener: TcpListener) -> Self {
        let port = listener.local_addr().expect("local addr").port();
        let inbox = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let task = tokio::spawn({
            let inbox = Arc::clone(&inbox);
            let arrived = Arc::clone(&arrived);
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(session(stream, Arc::clone(&inbox), Arc::clone(&arrived)));
                }
            }
        });
        Self {
            port,
            inbox,
            arrived,
            task,
        }
    }

    /// The URL to give admit as `ADMIT_SMTP_URL`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<ReceivedMail> {
        self.inbox.lock().expect("inbox lock").clone()
    }

    /// Waits (up to 20 s) until at least `count` messages have arrived, and returns them all.
    pub async fn wait_for(&self, count: usize) -> Vec<ReceivedMail> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let notified = self.arrived.notified();
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("expected {count} messages, got {}", self.received().len());
            }
        }
    }

    /// Waits for the next message after those already received.
    pub async fn next_mail(&self) -> ReceivedMail {
        let count = self.received().len() + 1;
        self.wait_for(count).await.pop().expect("a message")
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn session(stream: TcpStream, inbox: Arc<Mutex<Vec<ReceivedMail>>>, arrived: Arc<Notify>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut recipients = Vec::new();
    if write.write_all(b"220 test-smtp ESMTP\r\n").await.is_err() {
        return;
    }
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let command = line.trim_end().to_ascii_uppercase();
        let reply: &[u8] = if command.starts_with("EHLO") {
            b"250-test-smtp\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
        } else if command.starts_with("HELO") || command.starts_with("MAIL FROM") {
            b"250 OK\r\n"
        } else if command.starts_with("RCPT TO") {
            let address = line.trim_end()[8..].trim().trim_start_matches('<');
            recipients.push(address.split('>').next().unwrap_or_default().to_owned());
            b"250 OK\r\n"
        } else if command == "DATA" {
            if write
                .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                .await
                .is_err()
            {
                return;
            }
            let mut data = Vec::new();
            loop {
                line.clear();
                match lines.read_line(&mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if line == ".\r\n" {
                    break;
                }
                let unstuffed = line.strip_prefix('.').unwrap_or(&line);
                data.extend_from_slice(unstuffed.as_bytes());
            }
            inbox.lock().expect("inbox lock").push(ReceivedMail {
                recipients: std::mem::take(&mut recipients),
                data,
            });
            arrived.notify_waiters();
            b"250 OK queued\r\n"
        } else if command == "RSET" {
            recipients.clear();
            b"250 OK\r\n"
        } else if command == "NOOP" {
            b"250 OK\r\n"
        } else if command == "QUIT" {
            let _ = write.write_all(b"221 Bye\r\n").await;
            return;
        } else {
            b"500 Unrecognised command\r\n"
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}
