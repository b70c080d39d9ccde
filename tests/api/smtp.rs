//! A small SMTP server on loopback that keeps what it receives. It speaks just enough SMTP for
//! lettre (EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT) and nothing is mocked on admit's side. It
//! can also misbehave on demand, as real servers do: refuse, hang, or take its time.

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

/// How the server treats the next conversations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Takes every message.
    Accept,
    /// Answers `MAIL FROM` with this reply code (4xx temporary, 5xx permanent).
    Refuse(u16),
    /// Accepts the connection and never says a word.
    Hang,
    /// Takes the message, but waits this long before confirming it.
    SlowData(Duration),
}

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

    /// The targets of the HTML part's links, decoded as a mail client decodes them.
    pub fn html_links(&self) -> Vec<String> {
        self.html()
            .split("href=\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .map(|href| html_escape::decode_html_entities(href).into_owned())
            .collect()
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

/// A port held for a server that will start later.
pub struct ReservedPort {
    socket: tokio::net::TcpSocket,
    /// The port number.
    pub port: u16,
}

/// The server; it stops when dropped.
pub struct SmtpServer {
    port: u16,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

struct Shared {
    inbox: Mutex<Vec<ReceivedMail>>,
    arrived: Notify,
    behaviour: Mutex<Behaviour>,
    /// Signalled when a message's data has been read and its confirmation is pending.
    data_read: Notify,
    /// How many messages' data has been read with `SlowData` (what `data_read` waits for).
    data_reads: std::sync::atomic::AtomicUsize,
    /// How many messages `next_mail` has handed out.
    taken: std::sync::atomic::AtomicUsize,
}

impl SmtpServer {
    /// Listens on a free loopback port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind SMTP");
        Self::serve(listener)
    }

    /// A loopback port held for a server that is not up yet: bound but not listening, so
    /// connections to it are refused and no other test can take it meanwhile.
    pub fn reserve() -> ReservedPort {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("address"))
            .expect("bind SMTP");
        let port = socket.local_addr().expect("local addr").port();
        ReservedPort { socket, port }
    }

    /// Starts listening on a port held by [`reserve`](Self::reserve).
    pub fn start_on(reserved: ReservedPort) -> Self {
        Self::serve(
            reserved
                .socket
                .listen(128)
                .expect("listen on the reserved port"),
        )
    }

    fn serve(listener: TcpListener) -> Self {
        let port = listener.local_addr().expect("local addr").port();
        let shared = Arc::new(Shared {
            inbox: Mutex::new(Vec::new()),
            arrived: Notify::new(),
            behaviour: Mutex::new(Behaviour::Accept),
            data_read: Notify::new(),
            data_reads: std::sync::atomic::AtomicUsize::new(0),
            taken: std::sync::atomic::AtomicUsize::new(0),
        });
        let task = tokio::spawn({
            let shared = Arc::clone(&shared);
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(session(stream, Arc::clone(&shared)));
                }
            }
        });
        Self { port, shared, task }
    }

    /// The URL to give admit as `ADMIT_SMTP_URL`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<ReceivedMail> {
        self.shared.inbox.lock().expect("inbox lock").clone()
    }

    /// Changes how the server treats conversations from now on.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.shared.behaviour.lock().expect("behaviour lock") = behaviour;
    }

    /// Resolves once a message has been read but not yet confirmed (with `SlowData`), also
    /// when that happened before the call.
    pub async fn data_read(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            // Created before the check, so a signal between the two is not lost.
            let notified = self.shared.data_read.notified();
            if self
                .shared
                .data_reads
                .load(std::sync::atomic::Ordering::SeqCst)
                > 0
            {
                return;
            }
            tokio::time::timeout_at(deadline, notified)
                .await
                .expect("a message reaches the DATA stage");
        }
    }

    /// Waits (up to 20 s) until at least `count` messages have arrived, and returns them all.
    pub async fn wait_for(&self, count: usize) -> Vec<ReceivedMail> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let notified = self.shared.arrived.notified();
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("expected {count} messages, got {}", self.received().len());
            }
        }
    }

    /// Waits for the next message not yet taken by this method (messages are read in the
    /// order they arrived, like an inbox), and takes it.
    pub async fn next_mail(&self) -> ReceivedMail {
        let index = self
            .shared
            .taken
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.wait_for(index + 1).await.swap_remove(index)
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn session(stream: TcpStream, shared: Arc<Shared>) {
    // Read at each step, not once per connection: lettre keeps connections in a pool.
    let behaviour = || *shared.behaviour.lock().expect("behaviour lock");
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    if behaviour() == Behaviour::Hang {
        // Hold the connection open without a greeting until the client gives up.
        let mut sink = String::new();
        while matches!(lines.read_line(&mut sink).await, Ok(n) if n > 0) {}
        return;
    }
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
        let refusal;
        let reply: &[u8] = if command.starts_with("EHLO") {
            b"250-test-smtp\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
        } else if command.starts_with("MAIL FROM") {
            match behaviour() {
                Behaviour::Refuse(code) => {
                    refusal = format!("{code} refused by the test server\r\n");
                    refusal.as_bytes()
                }
                _ => b"250 OK\r\n",
            }
        } else if command.starts_with("HELO") {
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
            if let Behaviour::SlowData(delay) = behaviour() {
                shared
                    .data_reads
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                shared.data_read.notify_waiters();
                tokio::time::sleep(delay).await;
            }
            shared.inbox.lock().expect("inbox lock").push(ReceivedMail {
                recipients: std::mem::take(&mut recipients),
                data,
            });
            shared.arrived.notify_waiters();
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
