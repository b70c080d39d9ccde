//! `admit-bench`: runs the release `admit` binary on loopback and measures it.
//!
//! `memory`: resident memory while many clients sign up at once. Each figure is set against a
//! bound measured in the same run: the idle process plus one Argon2 memory block per hashing
//! thread, which is what bounded hashing should cost at most.
//!
//! `resend-timing`: `resendConfirmation`, then `requestPasswordReset`, for unknown,
//! unconfirmed and confirmed addresses, interleaved, median time per class: the three must not
//! be told apart.
//!
//! `sign-in-timing`: `signIn` for an unknown address and for a known address with a wrong
//! password, interleaved, median time per class: the two must not be told apart. The right
//! password is measured alongside, for scale.
//!
//! `crafted-password`: what one HTTP request of sign-ups with a crafted password costs admit
//! (CPU, from `/proc`) against the same request with an ordinary passphrase, interleaved, from
//! one client network with the default budget. The request is ten batched documents of two
//! aliased `register` calls each (4.9 KB); the crafted password is 128 characters of l33t
//! substitutions, the input that makes zxcvbn's matcher explode, with the costliest sixteen
//! characters first.
//!
//! `confirm-throughput`: `confirmAccount` per second and its latency (p50, p99 from HDR
//! histograms) at several concurrencies, one keep-alive HTTP/1.1 connection per concurrent
//! client on loopback, against a bound measured in the same run: admit's own confirmation
//! statements (`admit::services::confirmation::confirm`) run directly on a pool with admit's
//! settings, without HTTP or GraphQL. The two take turns in ten slices. Beside admit's CPU per
//! confirmation it prints, per operation of each phase, the benchmark's own CPU, the CPU of
//! every PostgreSQL process and the time the cores sat idle (all from `/proc`): where the
//! machine's time went. Accounts and their links are seeded straight into the database
//! (`--accounts` of them never confirmed, to size the tables, plus fresh ones for every
//! phase), so each phase confirms `--confirms` first clicks; a reload of the same links
//! follows.
//! `--database-url` points it at PostgreSQL (an empty database) instead of SQLite.
//! `--budget N` turns on admit's per-client budget (`ADMIT_IP_RATE_LIMIT`, off by default
//! here): each concurrent client then comes from a loopback network of its own, and the
//! bound's workers take from the same budgets.
//!
//! `mail-drain`: `--messages` queued straight into the outbox, delivered to a loopback SMTP
//! sink: mails per second, duplicate Message-IDs, admit's peak RSS; lettre's own pooled
//! transport to the same sink, in the same run, for scale.
//!
//! `purge`: `--accounts` never-confirmed accounts a month old (each with an expired link) are
//! purged while a concurrent writer keeps taking client budgets (one upsert each): how long
//! the purge took, its longest statement, and how long the writer waited.
//!
//! `register-throughput`: accepted `register` calls per second at each `--concurrency` (mail
//! to a loopback SMTP sink), for
//! `--seconds` each, against the rate of two threads doing nothing but Argon2id hashes with
//! admit's parameters, measured before and after each round: the bound for a 2-core machine.
//! A connection answered busy waits the `retryAfterSeconds` it was given before its next
//! sign-up, as a well-behaved client would.
//! admit's CPU per sign-up is split into its hashing threads' and the rest.
//!
//! `all`: register, confirm, flood, mail and memory in one run, then one summary table of every
//! figure beside its bound (`--database-url` moves the confirmation part to PostgreSQL).
//!
//! `--smoke` makes either of the two last a moment's run, so that CI keeps them working.
//!
//! `flood-latency`: the p50/p99 of `confirmAccount` (one client, one request at a time) and
//! of `passwordPolicy` while 256 connections keep signing up, against the same without the
//! flood, in the same run; then 20 sign-ups in turn from a second client network (127.0.0.3),
//! the p50 and the slowest, against the same without the flood.
//!
//! `ADMIT_*` variables in the benchmark's environment are passed on to every admit it starts
//! (a scenario's own settings win).
//!
//! ```sh
//! cargo build --release -p admit -p admit-bench
//! target/release/admit-bench memory --signups 500
//! target/release/admit-bench resend-timing --per-class 100
//! target/release/admit-bench sign-in-timing --per-class 100
//! target/release/admit-bench confirm-throughput --accounts 10000 --confirms 20000 --concurrency 1,16,64
//! target/release/admit-bench mail-drain --messages 3000
//! target/release/admit-bench flood-latency --seconds 10
//! target/release/admit-bench all --database-url postgres://USER@HOST/EMPTY_DATABASE
//! ```

use std::{
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// Rows of the summary table `all` prints: what was measured, admit's figure, and the bound or
/// peer measured in the same run.
type Summary = Vec<[String; 3]>;

fn row(
    measure: impl Into<String>,
    admit: impl Into<String>,
    bound: impl Into<String>,
) -> [String; 3] {
    [measure.into(), admit.into(), bound.into()]
}

/// Argon2id's memory per hash with admit's parameters (m = 19,456 KiB).
const ARGON2_KIB: u64 = 19_456;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let scenario = args.next().unwrap_or_default();
    let mut signups = 500usize;
    let mut per_class = 100usize;
    let mut accounts = 10_000usize;
    let mut confirms = 20_000usize;
    let mut messages = 3_000usize;
    let mut seconds = 10u64;
    let mut concurrency = vec![1usize, 16, 64];
    let mut database_url: Option<String> = None;
    let mut pool: Option<u32> = None;
    let mut budget = 0u32;
    let mut admit = sibling("admit")?;
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--signups" => signups = args.next().context("--signups N")?.parse()?,
            "--per-class" => per_class = args.next().context("--per-class N")?.parse()?,
            "--admit" => admit = PathBuf::from(args.next().context("--admit PATH")?),
            "--accounts" => accounts = args.next().context("--accounts N")?.parse()?,
            "--confirms" => confirms = args.next().context("--confirms N")?.parse()?,
            "--messages" => messages = args.next().context("--messages N")?.parse()?,
            "--seconds" => seconds = args.next().context("--seconds N")?.parse()?,
            "--concurrency" => {
                concurrency = args
                    .next()
                    .context("--concurrency N,N,...")?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
            }
            "--budget" => budget = args.next().context("--budget N")?.parse()?,
            "--db-connections" => {
                pool = Some(args.next().context("--db-connections N")?.parse()?);
            }
            "--database-url" => database_url = Some(args.next().context("--database-url URL")?),
            "--smoke" => {
                (accounts, confirms, seconds, concurrency, messages) =
                    (100, 50, 1, vec![1, 4], 100);
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    let db = database_url.as_deref();
    let run = Duration::from_secs(seconds);
    let summary = match scenario.as_str() {
        "memory" => memory(&admit, signups).await?,
        "resend-timing" => {
            resend_timing(&admit, per_class).await?;
            Summary::new()
        }
        "sign-in-timing" => {
            sign_in_timing(&admit, per_class).await?;
            Summary::new()
        }
        "crafted-password" => {
            crafted_password(&admit, per_class).await?;
            Summary::new()
        }
        "purge" => {
            purge_stale(&admit, db, accounts).await?;
            Summary::new()
        }
        "flood-latency" => flood_latency(&admit, run).await?,
        "mail-drain" => mail_drain(&admit, db, messages).await?,
        "register-throughput" => register_throughput(&admit, db, run, &concurrency).await?,
        "confirm-throughput" => {
            confirm_throughput(&admit, db, accounts, confirms, &concurrency, pool, budget).await?
        }
        "all" => {
            let mut all = register_throughput(&admit, None, run, &[8, 256]).await?;
            all.extend(
                confirm_throughput(&admit, db, accounts, confirms, &concurrency, pool, budget)
                    .await?,
            );
            all.extend(flood_latency(&admit, run).await?);
            all.extend(mail_drain(&admit, None, messages).await?);
            all.extend(memory(&admit, signups).await?);
            all
        }
        _ => bail!(
            "usage: admit-bench all [--seconds N] [--accounts N] [--confirms N] [--messages N] [--signups N] [--database-url URL] | memory [--signups N] | resend-timing [--per-class N] | sign-in-timing [--per-class N] | crafted-password [--per-class N] | confirm-throughput [--accounts N] [--confirms N] [--concurrency N,N] [--db-connections N] [--budget N] [--database-url URL] [--smoke] | mail-drain [--messages N] [--database-url URL] [--smoke] | purge [--accounts N] [--database-url URL] | register-throughput [--seconds N] [--concurrency N,N] [--database-url URL] | flood-latency [--seconds N]  [--admit PATH]"
        ),
    };
    if scenario == "all" {
        println!();
        println!("| measure | admit | bound or peer, same run |");
        println!("|---|---|---|");
        for [measure, figure, bound] in summary {
            println!("| {measure} | {figure} | {bound} |");
        }
        println!(
            "(release build, loopback, the load generator on the same cores; confirmAccount on {}, everything else on SQLite)",
            if db.is_some() { "PostgreSQL" } else { "SQLite" }
        );
    }
    Ok(())
}

/// The binary named `name` beside this one (both are built into the same target directory).
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    Ok(me.with_file_name(name))
}

/// A running admit on a fresh SQLite database, with mail written to files.
struct Admit {
    child: Child,
    listen: String,
    /// From spawning the process to its log line saying it listens (migrations done).
    ready_after: Duration,
    _dir: tempfile::TempDir,
}

impl Admit {
    async fn start(binary: &Path, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let spawned = Instant::now();
        let mut child = Command::new(binary)
            .current_dir(dir.path())
            .env_clear()
            // The floods open 256 connections from one address, past admit's cap per client
            // network; the benchmark measures throughput, not that cap.
            .env("ADMIT_MAX_CLIENT_CONNECTIONS", "0")
            // Settings given to the benchmark go to admit too (`ADMIT_DB_TIMEOUT=2s`, say,
            // to see the busy path on a fast machine); the scenario's own win.
            .envs(std::env::vars().filter(|(key, _)| key.starts_with("ADMIT_")))
            .envs(env.iter().copied())
            .env("ADMIT_LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "warn,admit=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let stderr = child.stderr.take().context("stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let listen = loop {
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .context("admit did not start in 30 s")??
                .context("admit exited during start-up")?;
            if let Some(rest) = line.split("listen=").nth(1) {
                break rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
            }
        };
        let ready_after = spawned.elapsed();
        // Keep draining the log so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            child,
            listen,
            ready_after,
            _dir: dir,
        })
    }

    /// Ends the process, keeping its folder (and a SQLite database in it).
    async fn stop(&mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// A `VmXXX:` figure of /proc/PID/status, in KiB.
    fn status_kib(&self, field: &str) -> anyhow::Result<u64> {
        let pid = self.child.id().context("admit exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.split_whitespace().next())
            .context("no such field")?
            .parse()
            .context("not a number")
    }

    /// `given` (the PostgreSQL database admit was started on), else admit's own SQLite file.
    fn database_url(&self, given: Option<&str>) -> String {
        given.map_or_else(
            || {
                format!(
                    "sqlite://{}?mode=rw",
                    self._dir.path().join("admit.db").display()
                )
            },
            str::to_owned,
        )
    }

    /// CPU time admit has used so far, user and system.
    fn cpu_time(&self) -> anyhow::Result<Duration> {
        cpu_time_of(self.child.id().context("admit exited")?)
    }

    /// The `/proc` folders of admit's hashing workers (threads named `admit-hash-N`).
    fn hashing_tasks(&self) -> anyhow::Result<Vec<PathBuf>> {
        let pid = self.child.id().context("admit exited")?;
        let mut tasks = Vec::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let task = task?.path();
            let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
            if name.starts_with("admit-hash") {
                tasks.push(task);
            }
        }
        Ok(tasks)
    }

    /// CPU time admit's hashing workers have used so far.
    fn hashing_cpu(&self) -> anyhow::Result<Duration> {
        let mut total = Duration::ZERO;
        for task in self.hashing_tasks()? {
            total += cpu_time_in(&task.join("stat"))?;
        }
        Ok(total)
    }
}

/// CPU time process `pid` has used so far, user and system.
fn cpu_time_of(pid: u32) -> anyhow::Result<Duration> {
    cpu_time_in(Path::new(&format!("/proc/{pid}/stat")))
}

/// CPU time every process named `postgres` has used so far (processes that ended meanwhile
/// are missed; PostgreSQL keeps its backends for as long as their connections live).
fn postgres_cpu() -> anyhow::Result<Duration> {
    let mut total = Duration::ZERO;
    for entry in std::fs::read_dir("/proc")? {
        let path = entry?.path();
        let is_postgres = std::fs::read_to_string(path.join("comm"))
            .is_ok_and(|name| name.trim_end() == "postgres");
        // A process may end between the two reads.
        if is_postgres && let Ok(cpu) = cpu_time_in(&path.join("stat")) {
            total += cpu;
        }
    }
    Ok(total)
}

/// Time the machine's cores have spent idle since boot, summed over the cores.
fn machine_idle() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let cpu = stat.lines().next().context("empty /proc/stat")?;
    // cpu user nice system idle iowait ...
    let fields: Vec<&str> = cpu.split_whitespace().collect();
    Ok(from_ticks(
        fields.get(4).context("no idle")?.parse::<u64>()?
            + fields.get(5).context("no iowait")?.parse::<u64>()?,
    ))
}

/// A duration counted in `/proc`'s clock ticks (100 a second on Linux).
fn from_ticks(ticks: u64) -> Duration {
    Duration::from_millis(ticks * 10)
}

/// The user and system CPU time in a `/proc/.../stat` file.
fn cpu_time_in(path: &Path) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(path)?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("malformed stat")?
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15.
    Ok(from_ticks(
        fields.get(11).context("no utime")?.parse::<u64>()?
            + fields.get(12).context("no stime")?.parse::<u64>()?,
    ))
}

/// One keep-alive HTTP/1.1 connection to admit's `/graphql`: hyper's client connection with
/// no pool, URL parsing or redirect handling per request, driven by the task that sends on it
/// (no task of its own to wake), so that the load generator takes as little as it can of the
/// cores it shares with admit.
struct Lane {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    connection: std::pin::Pin<
        Box<
            hyper::client::conn::http1::Connection<
                hyper_util::rt::TokioIo<tokio::net::TcpStream>,
                http_body_util::Full<bytes::Bytes>,
            >,
        >,
    >,
    host: hyper::header::HeaderValue,
}

impl Lane {
    /// A connection to `listen` from the loopback address `from`.
    async fn open(listen: &str, from: Ipv4Addr) -> anyhow::Result<Self> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(std::net::SocketAddr::from((from, 0)))?;
        let stream = socket.connect(listen.parse()?).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        Ok(Self {
            sender,
            connection: Box::pin(connection),
            host: listen.parse()?,
        })
    }

    /// `count` lanes, one per concurrent client, each from [`lane_address`].
    async fn open_many(
        listen: &str,
        count: usize,
        networks: Networks,
    ) -> anyhow::Result<Vec<tokio::sync::Mutex<Self>>> {
        let mut lanes = Vec::with_capacity(count);
        for lane in 0..count.max(1) {
            let from = lane_address(lane, networks);
            lanes.push(tokio::sync::Mutex::new(Self::open(listen, from).await?));
        }
        Ok(lanes)
    }

    /// POSTs `body` (JSON) to `/graphql` and returns the answer's body.
    async fn post_json(&mut self, body: String) -> anyhow::Result<bytes::Bytes> {
        use http_body_util::BodyExt as _;
        let request = hyper::Request::post("/graphql")
            .header(hyper::header::HOST, self.host.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))?;
        let sender = &mut self.sender;
        let exchange = async move {
            sender.ready().await?;
            let answer = sender.send_request(request).await?;
            anyhow::Ok(answer.into_body().collect().await?.to_bytes())
        };
        tokio::select! {
            answer = exchange => answer,
            ended = self.connection.as_mut() => {
                ended?;
                bail!("admit closed the connection")
            }
        }
    }
}

/// An HTTP client whose connections leave from the loopback address `ip`, so that admit
/// counts it as a client network of its own.
fn client_from(ip: Ipv4Addr, timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(ip))
        .timeout(timeout)
        .build()
}

async fn memory(binary: &Path, signups: usize) -> anyhow::Result<Summary> {
    let admit = Admit::start(binary, &[]).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_kib = admit.status_kib("VmRSS:")?;
    // Many clients: each from its own loopback address, two sign-ups each, so that the
    // per-client budget is not what limits them.
    let clients: Vec<reqwest::Client> = (0..signups.div_ceil(2))
        .map(|i| {
            let ip = Ipv4Addr::new(
                127,
                1,
                u8::try_from(i / 250).unwrap_or(255),
                u8::try_from(i % 250 + 1).unwrap_or(255),
            );
            client_from(ip, Duration::from_secs(60))
        })
        .collect::<Result<_, _>>()?;
    let url = format!("http://{}/graphql", admit.listen);
    let started = Instant::now();
    let answers = futures::future::join_all((0..signups).map(|i| {
        let client = &clients[i / 2];
        let url = &url;
        async move {
            let input = json!({ "input": { "email": format!("flood{i}@example.com"), "password": PASSWORD } });
            graphql(client, url, REGISTER, input).await
        }
    }))
    .await;
    let elapsed = started.elapsed();
    let peak_kib = admit.status_kib("VmHWM:")?;
    let workers = u64::try_from(admit.hashing_tasks()?.len())?;
    // Past the hashing threads' idle release (5 s).
    tokio::time::sleep(Duration::from_secs(8)).await;
    let after_kib = admit.status_kib("VmRSS:")?;

    let (mut accepted, mut unavailable, mut other) = (0, 0, 0);
    for answer in &answers {
        match SignUpAnswer::of(answer) {
            SignUpAnswer::Accepted => accepted += 1,
            SignUpAnswer::Busy(_) => unavailable += 1,
            SignUpAnswer::Other => other += 1,
        }
    }
    let bound_kib = idle_kib + workers * ARGON2_KIB;
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| concurrent sign-ups | {signups} from {} client addresses |",
        clients.len()
    );
    println!(
        "| answered accepted / SERVICE_UNAVAILABLE / other | {accepted} / {unavailable} / {other} |"
    );
    println!("| wall time | {:.1} s |", elapsed.as_secs_f64());
    println!("| idle RSS | {:.1} MiB |", mib(idle_kib));
    println!("| hashing threads | {workers} |");
    println!(
        "| bound: idle RSS + threads x 19 MiB | {:.1} MiB |",
        mib(bound_kib)
    );
    println!(
        "| VmHWM (peak RSS) | {:.1} MiB ({:.2} x bound) |",
        mib(peak_kib),
        peak_kib as f64 / bound_kib as f64
    );
    println!(
        "| RSS 8 s after (hashing memory released) | {:.1} MiB ({:.2} x idle) |",
        mib(after_kib),
        after_kib as f64 / idle_kib as f64
    );
    println!(
        "| start to ready (fresh SQLite database) | {:.0} ms |",
        admit.ready_after.as_secs_f64() * 1000.0
    );
    Ok(vec![
        row(
            format!("VmHWM, {signups} sign-ups at once"),
            format!(
                "{:.1} MiB ({:.2} x the bound)",
                mib(peak_kib),
                peak_kib as f64 / bound_kib as f64
            ),
            format!(
                "idle RSS + {workers} hashing threads x 19 MiB: {:.1} MiB",
                mib(bound_kib)
            ),
        ),
        row(
            "start to ready / idle RSS (SQLite)",
            format!(
                "{:.0} ms / {:.1} MiB",
                admit.ready_after.as_secs_f64() * 1000.0,
                mib(idle_kib)
            ),
            "",
        ),
    ])
}

/// The latency at `quantile` of a histogram of microseconds, in milliseconds.
fn ms_at(histogram: &hdrhistogram::Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

/// A histogram's "p50 / p99 ms".
fn p50_p99(histogram: &hdrhistogram::Histogram<u64>) -> String {
    format!(
        "{:.2} / {:.2} ms",
        ms_at(histogram, 0.5),
        ms_at(histogram, 0.99)
    )
}

/// Microseconds since `sent`, at least 1 (what the histograms record).
fn micros_since(sent: Instant) -> u64 {
    u64::try_from(sent.elapsed().as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// POSTs one GraphQL request and returns the answer.
async fn graphql(
    client: &reqwest::Client,
    url: &str,
    query: &str,
    variables: Value,
) -> anyhow::Result<Value> {
    let body = json!({ "query": query, "variables": variables });
    Ok(client.post(url).json(&body).send().await?.json().await?)
}

/// What a `register` call was answered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SignUpAnswer {
    Accepted,
    /// `SERVICE_UNAVAILABLE`: the hashing queue was full, or the sign-up waited too long;
    /// with the wait the answer asks for.
    Busy(Option<Duration>),
    Other,
}

impl SignUpAnswer {
    fn of(answer: &anyhow::Result<Value>) -> Self {
        match answer {
            Ok(body) if body["data"]["register"]["accepted"] == true => Self::Accepted,
            Ok(body) if body["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE" => {
                Self::Busy(
                    body["errors"][0]["extensions"]["retryAfterSeconds"]
                        .as_u64()
                        .map(Duration::from_secs),
                )
            }
            _ => Self::Other,
        }
    }
}

/// Every confirmation token mailed so far, by recipient, read from admit's `.eml` files.
fn mailed_tokens(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let raw = std::fs::read(entry?.path())?;
        let Some(message) = mail_parser::MessageParser::default().parse(&raw) else {
            continue;
        };
        let to = message
            .to()
            .and_then(|to| to.first())
            .and_then(|address| address.address())
            .unwrap_or_default()
            .to_owned();
        let text = message.body_text(0).unwrap_or_default();
        if let Some(token) = text
            .split("#token=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
        {
            found.push((to, token.to_owned()));
        }
    }
    Ok(found)
}

/// The password every benchmark account has.
const PASSWORD: &str = "correct horse battery staple";
/// The sign-up every scenario sends.
const REGISTER: &str = "mutation($input: RegisterInput!) { register(input: $input) { accepted } }";

/// Signs up `emails` and, with `confirm`, confirms each from its mailed link.
async fn sign_up(
    admit: &Admit,
    client: &reqwest::Client,
    url: &str,
    emails: &[String],
    confirm: bool,
) -> anyhow::Result<()> {
    for email in emails {
        let input = json!({ "input": { "email": email, "password": PASSWORD } });
        let answer = graphql(client, url, REGISTER, input).await?;
        if answer["data"]["register"]["accepted"] != true {
            bail!("sign-up refused: {answer}");
        }
    }
    if !confirm {
        return Ok(());
    }
    let mail_dir = admit._dir.path().join("mail");
    let deadline = Instant::now() + Duration::from_secs(60);
    let tokens = loop {
        let tokens: Vec<(String, String)> = mailed_tokens(&mail_dir)
            .unwrap_or_default()
            .into_iter()
            .filter(|(to, _)| emails.contains(to))
            .collect();
        if tokens.len() >= emails.len() {
            break tokens;
        }
        if Instant::now() > deadline {
            bail!("only {} of {} mails arrived", tokens.len(), emails.len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let confirm =
        "mutation($token: String!) { confirmAccount(token: $token) { user { confirmed } } }";
    for (to, token) in &tokens {
        let answer = graphql(client, url, confirm, json!({ "token": token })).await?;
        if answer["data"]["confirmAccount"]["user"]["confirmed"] != true {
            bail!("{to} not confirmed: {answer}");
        }
    }
    Ok(())
}

/// Prints the median of each class against the fastest, as a Markdown table.
fn print_medians(what: &str, classes: &[&str], samples: &mut [Vec<Duration>], per_class: usize) {
    let medians: Vec<Duration> = samples.iter_mut().map(|s| median(s)).collect();
    let fastest = medians.iter().min().copied().unwrap_or_default();
    println!("| class | median {what} | vs fastest |");
    println!("|---|---|---|");
    for (class, median) in classes.iter().zip(&medians) {
        println!(
            "| {class} | {:.2} ms | {:.3} |",
            median.as_secs_f64() * 1000.0,
            median.as_secs_f64() / fastest.as_secs_f64()
        );
    }
    println!("({per_class} requests per class, interleaved)");
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

async fn resend_timing(binary: &Path, per_class: usize) -> anyhow::Result<()> {
    let admit = Admit::start(
        binary,
        &[
            ("ADMIT_IP_RATE_LIMIT", "0"),
            ("ADMIT_RESEND_COOLDOWN", "0s"),
            ("ADMIT_RESEND_HOURLY_LIMIT", "1000"),
            ("ADMIT_RESEND_DAILY_LIMIT", "2000"),
        ],
    )
    .await?;
    let client = reqwest::Client::new();
    let url = format!("http://{}/graphql", admit.listen);
    // Unconfirmed and confirmed accounts; unknown addresses need nothing.
    let pending: Vec<String> = (0..per_class)
        .map(|i| format!("pending{i}@bench.test"))
        .collect();
    let confirmed: Vec<String> = (0..per_class)
        .map(|i| format!("confirmed{i}@bench.test"))
        .collect();
    sign_up(&admit, &client, &url, &pending, false).await?;
    sign_up(&admit, &client, &url, &confirmed, true).await?;

    // The same measurement for each of the two requests recorded alike for every address.
    for (operation, field) in [
        (
            "mutation($email: String!) { resendConfirmation(email: $email) { accepted } }",
            "resendConfirmation",
        ),
        (
            "mutation($email: String!) { requestPasswordReset(email: $email) { accepted } }",
            "requestPasswordReset",
        ),
    ] {
        let classes = ["unknown", "pending", "confirmed"];
        let mut samples: [Vec<Duration>; 3] = Default::default();
        for i in 0..per_class {
            // Interleaved, in a rotating order, with a pause that lets background work finish.
            for k in 0..3 {
                let class = (i + k) % 3;
                let email = format!("{}{i}@bench.test", classes[class]);
                let started = Instant::now();
                let answer = graphql(&client, &url, operation, json!({ "email": email })).await?;
                let took = started.elapsed();
                if answer["data"][field]["accepted"] != true {
                    bail!("{field} refused: {answer}");
                }
                samples[class].push(took);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        print_medians(field, &classes, &mut samples, per_class);
    }
    Ok(())
}

async fn sign_in_timing(binary: &Path, per_class: usize) -> anyhow::Result<()> {
    let admit = Admit::start(binary, &[("ADMIT_IP_RATE_LIMIT", "0")]).await?;
    let client = reqwest::Client::new();
    let url = format!("http://{}/graphql", admit.listen);
    let known: Vec<String> = (0..per_class)
        .map(|i| format!("known{i}@bench.test"))
        .collect();
    sign_up(&admit, &client, &url, &known, true).await?;

    let sign_in = "mutation($input: SignInInput!) { signIn(input: $input) { user { id } userErrors { code } } }";
    let classes = ["unknown address", "wrong password", "right password"];
    let mut samples: [Vec<Duration>; 3] = Default::default();
    for (i, known) in known.iter().enumerate() {
        // Each address fails once at most: the throttle never starts.
        for k in 0..3 {
            let class = (i + k) % 3;
            let (email, password, expected) = match class {
                0 => (
                    format!("unknown{i}@bench.test"),
                    PASSWORD,
                    "INVALID_CREDENTIALS",
                ),
                1 => (
                    known.clone(),
                    "not the password at all",
                    "INVALID_CREDENTIALS",
                ),
                _ => (known.clone(), PASSWORD, ""),
            };
            let input =
                json!({ "input": { "email": email, "password": password, "delivery": "BEARER" } });
            let started = Instant::now();
            let answer = graphql(&client, &url, sign_in, input).await?;
            let took = started.elapsed();
            let code = answer["data"]["signIn"]["userErrors"][0]["code"]
                .as_str()
                .unwrap_or_default();
            if code != expected {
                bail!(
                    "{class}: unexpected answer {answer}",
                    class = classes[class]
                );
            }
            samples[class].push(took);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    print_medians("signIn", &classes, &mut samples, per_class);
    Ok(())
}

/// 128 characters built for zxcvbn's l33t matcher: each distinct character it maps to a letter
/// multiplies the substitutions it tries, and these sixteen give the most any sixteen can (576
/// sets), so the first sixteen, all that admit judges, cost as much as any.
const CRAFTED_PASSWORD: &str = "({[<1!|7+@4$569%({[<1!|7+@4$569%({[<1!|7+@4$569%({[<1!|7+@4$569%({[<1!|7+@4$569%({[<1!|7+@4$569%({[<1!|7+@4$569%({[<1!|7+@4$569%";

async fn crafted_password(binary: &Path, rounds: usize) -> anyhow::Result<()> {
    let rounds = rounds.max(1);
    // The default budget (120 costly requests a minute) allows the rounds' two per request.
    let admit = Admit::start(binary, &[]).await?;
    let client = client_from(Ipv4Addr::new(127, 0, 0, 2), Duration::from_secs(120))?;
    let url = format!("http://{}/graphql", admit.listen);
    let document = "mutation($i: RegisterInput!, $j: RegisterInput!) { a: register(input: $i) { accepted } b: register(input: $j) { accepted } }";
    let classes = ["ordinary passphrase", "crafted 128 characters"];
    let mut wall: [Vec<Duration>; 2] = Default::default();
    let mut cpu: [Vec<Duration>; 2] = Default::default();
    let mut accepted = [0usize; 2];
    for round in 0..rounds {
        for k in 0..2 {
            let class = (round + k) % 2;
            let password = [PASSWORD, CRAFTED_PASSWORD][class];
            let batch: Vec<Value> = (0..10)
                .map(|entry| {
                    let input = |alias: &str| json!({ "email": format!("c{class}r{round}e{entry}{alias}@bench.test"), "password": password });
                    json!({ "query": document, "variables": { "i": input("a"), "j": input("b") } })
                })
                .collect();
            let cpu_before = admit.cpu_time()?;
            let started = Instant::now();
            let answers: Vec<Value> = client.post(&url).json(&batch).send().await?.json().await?;
            wall[class].push(started.elapsed());
            cpu[class].push(admit.cpu_time()?.saturating_sub(cpu_before));
            accepted[class] += answers
                .iter()
                .flat_map(|answer| ["a", "b"].map(|alias| &answer["data"][alias]["accepted"]))
                .filter(|accepted| **accepted == true)
                .count();
        }
    }
    println!(
        "| password | admit's CPU per request: median / max | answered in: median / max | sign-ups accepted |"
    );
    println!("|---|---|---|---|");
    for class in 0..2 {
        let max = |samples: &[Duration]| samples.iter().max().copied().unwrap_or_default();
        println!(
            "| {} | {:.1} / {:.1} ms | {:.1} / {:.1} ms | {} of {} |",
            classes[class],
            median(&mut cpu[class]).as_secs_f64() * 1000.0,
            max(&cpu[class]).as_secs_f64() * 1000.0,
            median(&mut wall[class]).as_secs_f64() * 1000.0,
            max(&wall[class]).as_secs_f64() * 1000.0,
            accepted[class],
            rounds * 20,
        );
    }
    println!(
        "(one request: ten batched documents of two aliased sign-ups, from 127.0.0.2; at most two costly operations run per request)"
    );
    Ok(())
}

/// A placeholder for the stored password hashes of seeded accounts: confirming copies it
/// around but never checks it.
const SEEDED_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2VlZGVkc2VlZGVk$c2VlZGVkc2VlZGVkc2VlZGVkc2VlZGVkc2VlZGVkc2U";

/// Writes `count` unconfirmed accounts, each with one pending confirmation link, straight into
/// admit's database (signing up thousands through the API would spend minutes hashing), and
/// returns the links' tokens in clear.
async fn seed_pending(
    db: &sea_orm::DatabaseConnection,
    label: &str,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    seed_pending_at(db, label, count, admit::db::now()).await
}

/// [`seed_pending`] as if the sign-ups had happened at `now`.
async fn seed_pending_at(
    db: &sea_orm::DatabaseConnection,
    label: &str,
    count: usize,
    now: sea_orm::prelude::DateTimeWithTimeZone,
) -> anyhow::Result<Vec<String>> {
    use entity::{users, verification_tokens};
    use sea_orm::{ActiveValue::Set, EntityTrait as _, TransactionTrait as _};
    let mut tokens = Vec::with_capacity(count);
    let mut start = 0;
    while start < count {
        let batch = (count - start).min(1000);
        let (mut accounts, mut links) = (Vec::with_capacity(batch), Vec::with_capacity(batch));
        for i in start..start + batch {
            let id = uuid::Uuid::now_v7();
            let email = format!("{label}{i}@bench.test");
            accounts.push(users::ActiveModel {
                id: Set(id),
                email: Set(email.clone()),
                email_key: Set(email),
                password_hash: Set(SEEDED_HASH.to_owned()),
                display_name: Set(None),
                created_at: Set(now),
                confirmed_at: Set(None),
            });
            let token = admit::domain::ConfirmationToken::generate()?;
            links.push(verification_tokens::ActiveModel {
                id: Set(uuid::Uuid::now_v7()),
                user_id: Set(id),
                purpose: Set(admit::services::accounts::PURPOSE_ACCOUNT_CONFIRMATION.to_owned()),
                token_hash: Set(token.hash().as_str().to_owned()),
                created_at: Set(now),
                expires_at: Set(now + chrono::TimeDelta::days(1)),
                consumed_at: Set(None),
                superseded_at: Set(None),
                signup_id: Set(Some(uuid::Uuid::now_v7())),
                password_hash: Set(Some(SEEDED_HASH.to_owned())),
                display_name: Set(None),
                email: Set(None),
            });
            tokens.push(token.expose().to_owned());
        }
        let txn = db.begin().await?;
        users::Entity::insert_many(accounts)
            .exec_without_returning(&txn)
            .await?;
        verification_tokens::Entity::insert_many(links)
            .exec_without_returning(&txn)
            .await?;
        txn.commit().await?;
        start += batch;
    }
    Ok(tokens)
}

/// Where a throughput run's concurrent clients come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Networks {
    /// All from 127.0.0.1.
    One,
    /// Each from a network of its own (127.0.1.1, 127.0.1.2, …), as many visitors would: each
    /// takes from a budget of its own.
    Each,
}

/// The address concurrent client `lane` (from 0) comes from.
fn lane_address(lane: usize, networks: Networks) -> Ipv4Addr {
    match networks {
        Networks::One => Ipv4Addr::LOCALHOST,
        Networks::Each => {
            let lane = u32::try_from(lane % 65_000).unwrap_or_default() + 1;
            Ipv4Addr::from(0x7f01_0000 + lane)
        }
    }
}

/// How many turns the bound and admit take in a throughput run.
const SLICES: usize = 10;

/// Confirms `token` with admit's own confirmation statements, without HTTP or GraphQL, taking
/// from `budget` as admit would: the bound of what the API can reach.
async fn confirmed_directly(
    db: &sea_orm::DatabaseConnection,
    token: String,
    budget: admit::services::client_budget::Budget,
) -> bool {
    let Ok(token) = admit::domain::ConfirmationToken::parse(&token) else {
        return false;
    };
    let outcome =
        admit::services::confirmation::confirm(db, token.hash().as_str(), admit::db::now(), budget)
            .await;
    matches!(
        outcome,
        Ok(admit::services::confirmation::Outcome::Confirmed(_))
    )
}

/// Sends one confirmation over `lane` and answers whether it confirmed: the answer is searched,
/// not parsed.
async fn confirmed_by_api(lane: Option<&tokio::sync::Mutex<Lane>>, body: String) -> bool {
    let Some(lane) = lane else { return false };
    lane.lock().await.post_json(body).await.is_ok_and(|bytes| {
        bytes
            .windows(CONFIRMED.len())
            .any(|window| window == CONFIRMED)
    })
}

/// What a successful confirmation's answer holds.
const CONFIRMED: &[u8] = br#""confirmed":true"#;

/// What one phase of a throughput run measured.
struct Phase {
    latencies: hdrhistogram::Histogram<u64>,
    errors: u64,
    elapsed: Duration,
    /// CPU the benchmark's own process used meanwhile (the load generator, or the bound's
    /// database client).
    generator_cpu: Duration,
    /// CPU every PostgreSQL process on the machine used meanwhile.
    postgres_cpu: Duration,
    /// Time both cores sat idle meanwhile (summed over the cores).
    idle: Duration,
}

impl Phase {
    fn empty() -> anyhow::Result<Self> {
        Ok(Self {
            latencies: hdrhistogram::Histogram::new(3)?,
            errors: 0,
            elapsed: Duration::ZERO,
            generator_cpu: Duration::ZERO,
            postgres_cpu: Duration::ZERO,
            idle: Duration::ZERO,
        })
    }

    /// Adds another slice of the same kind of work.
    fn add(&mut self, slice: Self) -> anyhow::Result<()> {
        self.latencies.add(&slice.latencies)?;
        self.errors += slice.errors;
        self.elapsed += slice.elapsed;
        self.generator_cpu += slice.generator_cpu;
        self.postgres_cpu += slice.postgres_cpu;
        self.idle += slice.idle;
        Ok(())
    }

    fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn ms(&self, quantile: f64) -> f64 {
        ms_at(&self.latencies, quantile)
    }

    /// `total` spread over this phase's operations, in microseconds.
    fn per_operation(&self, total: Duration) -> f64 {
        total.as_secs_f64() * 1e6 / self.latencies.len().max(1) as f64
    }
}

/// Runs `operation` once for every token, `concurrency` at a time, timing each; an operation
/// is given its worker's number and answers whether it did what it should.
async fn drive<F, Fut>(concurrency: usize, tokens: &[String], operation: F) -> anyhow::Result<Phase>
where
    F: Fn(usize, String) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let next = std::sync::atomic::AtomicUsize::new(0);
    // Finding PostgreSQL's processes reads two files per process in `/proc`: outside the timing.
    let postgres_before = postgres_cpu()?;
    let (started, idle_before) = (Instant::now(), machine_idle()?);
    let own_cpu = cpu_time_of(std::process::id())?;
    let workers = (0..concurrency.max(1)).map(|worker| {
        let (next, operation) = (&next, &operation);
        async move {
            let mut latencies = hdrhistogram::Histogram::<u64>::new(3)?;
            let mut errors = 0u64;
            while let Some(token) =
                tokens.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
            {
                let sent = Instant::now();
                let done = operation(worker, token.clone()).await;
                latencies.record(micros_since(sent))?;
                errors += u64::from(!done);
            }
            anyhow::Ok((latencies, errors))
        }
    });
    let mut latencies = hdrhistogram::Histogram::<u64>::new(3)?;
    let mut errors = 0;
    for outcome in futures::future::join_all(workers).await {
        let (worker, worker_errors) = outcome?;
        latencies.add(&worker)?;
        errors += worker_errors;
    }
    let (elapsed, idle) = (
        started.elapsed(),
        machine_idle()?.saturating_sub(idle_before),
    );
    Ok(Phase {
        elapsed,
        idle,
        generator_cpu: cpu_time_of(std::process::id())?.saturating_sub(own_cpu),
        postgres_cpu: postgres_cpu()?.saturating_sub(postgres_before),
        latencies,
        errors,
    })
}

async fn confirm_throughput(
    binary: &Path,
    database_url: Option<&str>,
    accounts: usize,
    confirms: usize,
    concurrencies: &[usize],
    pool: Option<u32>,
    budget: u32,
) -> anyhow::Result<Summary> {
    let mut summary = Summary::new();
    let pool_size = pool.map(|size| size.to_string());
    let per_minute = budget.to_string();
    let mut env = vec![("ADMIT_IP_RATE_LIMIT", per_minute.as_str())];
    // With a budget, each client comes from a network of its own, and so does each of the
    // bound's workers, so that both take from the same budgets.
    let networks = if budget > 0 {
        Networks::Each
    } else {
        Networks::One
    };
    let budget_of = |worker: usize| admit::services::client_budget::Budget {
        client: admit::domain::ClientNetwork::of(IpAddr::V4(lane_address(worker, networks))),
        per_minute: budget,
    };
    env.extend(
        pool_size
            .as_deref()
            .map(|size| ("ADMIT_DB_CONNECTIONS", size)),
    );
    env.extend(database_url.map(|url| ("DATABASE_URL", url)));
    let admit = Admit::start(binary, &env).await?;
    let url = admit.database_url(database_url);
    // The same pool settings as admit's own, for the bound.
    let db = admit::db::connect(&url, Duration::from_secs(5), pool).await?;
    let seeding = Instant::now();
    seed_pending(&db, "resting", accounts).await?;
    let mut fresh = Vec::new();
    for (i, _) in concurrencies.iter().enumerate() {
        fresh.push((
            seed_pending(&db, &format!("bound{i}x"), confirms).await?,
            seed_pending(&db, &format!("landing{i}x"), confirms).await?,
        ));
    }
    let seeded = accounts + 2 * confirms * concurrencies.len();
    let seeding = seeding.elapsed();
    let confirm =
        "mutation($token: String!) { confirmAccount(token: $token) { user { confirmed } } }";
    // The load generator shares the cores with admit, so it does as little as it can: the
    // body is formatted, not built as JSON, and the answer is searched, not parsed.
    let body =
        |token: &str| format!(r#"{{"query":"{confirm}","variables":{{"token":"{token}"}}}}"#);

    println!(
        "| concurrency | bound: the statements alone | confirmAccount, first click | of the bound | p50 / p99 | admit's CPU per confirmation | the benchmark's own CPU per operation: bound / API | PostgreSQL's CPU per operation: bound / API | idle per operation: bound / API | again (a reload), p50 / p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (&concurrency, (for_bound, for_api)) in concurrencies.iter().zip(&fresh) {
        let lanes = Lane::open_many(&admit.listen, concurrency, networks).await?;
        // The bound and admit take turns, a slice each, so that a change in the machine's
        // speed during the run (this one's varies by a fifth) weighs on both alike.
        let (mut bound, mut first) = (Phase::empty()?, Phase::empty()?);
        let mut admit_cpu = Duration::ZERO;
        let slice = for_bound.len().div_ceil(SLICES).max(1);
        for (bound_slice, api_slice) in for_bound.chunks(slice).zip(for_api.chunks(slice)) {
            bound.add(
                drive(concurrency, bound_slice, |worker, token| {
                    confirmed_directly(&db, token, budget_of(worker))
                })
                .await?,
            )?;
            let cpu_before = admit.cpu_time()?;
            first.add(
                drive(concurrency, api_slice, |worker, token| {
                    confirmed_by_api(lanes.get(worker), body(&token))
                })
                .await?,
            )?;
            admit_cpu += admit.cpu_time()?.saturating_sub(cpu_before);
        }
        let cpu_per_confirm =
            admit_cpu / u32::try_from(first.latencies.len().max(1)).unwrap_or(u32::MAX);
        let again = drive(concurrency, for_api, |worker, token| {
            confirmed_by_api(lanes.get(worker), body(&token))
        })
        .await?;
        println!(
            "| {concurrency} | {:.0}/s, p50 {:.2} / p99 {:.2} ms | {:.0}/s | {:.0} % | {:.2} / {:.2} ms | {:.0} µs | {:.0} / {:.0} µs | {} | {:.0} / {:.0} µs | {:.0}/s, {:.2} / {:.2} ms |",
            bound.per_second(),
            bound.ms(0.5),
            bound.ms(0.99),
            first.per_second(),
            100.0 * first.per_second() / bound.per_second(),
            first.ms(0.5),
            first.ms(0.99),
            cpu_per_confirm.as_secs_f64() * 1e6,
            bound.per_operation(bound.generator_cpu),
            first.per_operation(first.generator_cpu),
            // On SQLite the database works inside admit and the benchmark: no process of its own.
            if database_url.is_some() {
                format!(
                    "{:.0} / {:.0} µs",
                    bound.per_operation(bound.postgres_cpu),
                    first.per_operation(first.postgres_cpu)
                )
            } else {
                "—".to_owned()
            },
            bound.per_operation(bound.idle),
            first.per_operation(first.idle),
            again.per_second(),
            again.ms(0.5),
            again.ms(0.99),
        );
        summary.push(row(
            format!("confirmAccount, concurrency {concurrency}"),
            format!(
                "{:.0}/s ({:.0} % of the bound), p50 {:.2} / p99 {:.2} ms",
                first.per_second(),
                100.0 * first.per_second() / bound.per_second(),
                first.ms(0.5),
                first.ms(0.99)
            ),
            format!(
                "its statements alone: {:.0}/s, p99 {:.2} ms",
                bound.per_second(),
                bound.ms(0.99)
            ),
        ));
        let errors = bound.errors + first.errors + again.errors;
        if errors > 0 {
            bail!("{errors} confirmations failed");
        }
    }
    println!(
        "({} confirmations per phase; {seeded} accounts seeded in {:.1} s, {accounts} of them never confirmed; one keep-alive HTTP/1.1 connection per concurrent client; the bound runs admit's confirmation statements through the same pool settings, without HTTP and GraphQL)",
        confirms,
        seeding.as_secs_f64(),
    );
    Ok(summary)
}

/// Sign-ups from a second client network in `flood-latency`, alone and during the flood.
const OTHER_SIGN_UPS: usize = 20;

async fn flood_latency(binary: &Path, duration: Duration) -> anyhow::Result<Summary> {
    let admit = Admit::start(binary, &[("ADMIT_IP_RATE_LIMIT", "0")]).await?;
    let client = reqwest::Client::new();
    let url = format!("http://{}/graphql", admit.listen);
    let emails: Vec<String> = (0..20).map(|i| format!("calm{i}@bench.test")).collect();
    sign_up(&admit, &client, &url, &emails, true).await?;
    let tokens: Vec<String> = mailed_tokens(&admit._dir.path().join("mail"))?
        .into_iter()
        .map(|(_, token)| token)
        .collect();
    let confirm =
        "mutation($token: String!) { confirmAccount(token: $token) { user { confirmed } } }";
    let policy = "{ passwordPolicy { minLength } }";
    // One request at a time, alternating the two operations, for `duration`.
    let probe = || async {
        let mut confirms = hdrhistogram::Histogram::<u64>::new(3)?;
        let mut policies = hdrhistogram::Histogram::<u64>::new(3)?;
        let deadline = Instant::now() + duration;
        let mut i = 0;
        while Instant::now() < deadline {
            let sent = Instant::now();
            let answer = graphql(
                &client,
                &url,
                confirm,
                json!({ "token": tokens[i % tokens.len()] }),
            )
            .await?;
            confirms.record(micros_since(sent))?;
            if answer["data"]["confirmAccount"]["user"]["confirmed"] != true {
                bail!("confirmation failed: {answer}");
            }
            let sent = Instant::now();
            graphql(&client, &url, policy, json!({})).await?;
            policies.record(micros_since(sent))?;
            i += 1;
        }
        anyhow::Ok((confirms, policies))
    };
    let (calm_confirm, calm_policy) = probe().await?;
    // Sign-ups from another client network, one at a time: how long one waits behind the
    // flood's queued hashes.
    let other = client_from(Ipv4Addr::new(127, 0, 0, 3), Duration::from_secs(60))?;
    let late_comer = |round: &'static str| {
        let (other, url) = (&other, &url);
        async move {
            let mut latency = hdrhistogram::Histogram::<u64>::new(3)?;
            let mut accepted = 0;
            for i in 0..OTHER_SIGN_UPS {
                let input = json!({ "input": { "email": format!("{round}{i}@other.test"), "password": PASSWORD } });
                let sent = Instant::now();
                let answer = graphql(other, url, REGISTER, input).await;
                latency.record(micros_since(sent))?;
                if SignUpAnswer::of(&answer) == SignUpAnswer::Accepted {
                    accepted += 1;
                }
            }
            anyhow::Ok((latency, accepted))
        }
    };
    let (calm_other, _) = late_comer("calm").await?;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood_started = Instant::now();
    let flooders: Vec<_> = (0..256)
        .map(|worker| {
            let (url, stop) = (url.clone(), stop.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let (mut n, mut accepted, mut busy) = (0u64, 0u64, 0u64);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let input = json!({ "input": { "email": format!("flood{worker}x{n}@bench.test"), "password": PASSWORD } });
                    let answer = graphql(&client, &url, REGISTER, input).await;
                    n += 1;
                    match SignUpAnswer::of(&answer) {
                        SignUpAnswer::Accepted => accepted += 1,
                        SignUpAnswer::Busy(_) => busy += 1,
                        SignUpAnswer::Other => {}
                    }
                }
                (n, accepted, busy)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (flood_confirm, flood_policy) = probe().await?;
    let (flood_other, other_accepted) = late_comer("flood").await?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flood_lasted = flood_started.elapsed();
    let (mut signups, mut accepted, mut busy) = (0, 0, 0);
    for flooder in flooders {
        let (answered, taken, refused) = flooder.await?;
        signups += answered;
        accepted += taken;
        busy += refused;
    }
    let mut summary = Summary::new();
    println!("| operation | p50 / p99 alone | p50 / p99 during 256 sign-ups in flight |");
    println!("|---|---|---|");
    for (name, calm, flood) in [
        ("confirmAccount", &calm_confirm, &flood_confirm),
        ("passwordPolicy", &calm_policy, &flood_policy),
    ] {
        println!("| {name} | {} | {} |", p50_p99(calm), p50_p99(flood));
        summary.push(row(
            format!("{name} p50 / p99 while 256 sign-ups run"),
            p50_p99(flood),
            format!("alone: {}", p50_p99(calm)),
        ));
    }
    let p50_max = |histogram: &hdrhistogram::Histogram<u64>| {
        format!(
            "{:.0} / {:.0} ms",
            ms_at(histogram, 0.5),
            histogram.max() as f64 / 1000.0
        )
    };
    println!(
        "| register from another network ({OTHER_SIGN_UPS} in turn), p50 / max | {} | {}, {other_accepted} accepted |",
        p50_max(&calm_other),
        p50_max(&flood_other)
    );
    summary.push(row(
        "register from another network, p50 / max, while 256 connections sign up",
        format!(
            "{}, {other_accepted} of {OTHER_SIGN_UPS} accepted",
            p50_max(&flood_other)
        ),
        format!("alone: {}", p50_max(&calm_other)),
    ));
    println!(
        "({} s each; in the flood's {:.1} s, {signups} sign-ups were answered: {accepted} accepted ({:.1}/s), {busy} busy, {} other)",
        duration.as_secs(),
        flood_lasted.as_secs_f64(),
        accepted as f64 / flood_lasted.as_secs_f64(),
        signups - accepted - busy
    );
    Ok(summary)
}

/// What the loopback SMTP sink has taken: each message's Message-ID and when its final `.`
/// arrived.
#[derive(Default)]
struct Sink {
    received: Vec<(Instant, String)>,
}

/// A minimal SMTP server on loopback that accepts everything, as fast as it can: the far end
/// of `mail-drain`. It answers each command with one write on a `TCP_NODELAY` socket, so that
/// any waiting measured is the client's.
async fn smtp_sink() -> anyhow::Result<(u16, std::sync::Arc<std::sync::Mutex<Sink>>)> {
    use tokio::io::AsyncWriteExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let sink = std::sync::Arc::new(std::sync::Mutex::new(Sink::default()));
    let shared = sink.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let sink = shared.clone();
            tokio::spawn(async move {
                stream.set_nodelay(true)?;
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 sink ESMTP\r\n").await?;
                let (mut in_data, mut message_id) = (false, String::new());
                while let Some(line) = lines.next_line().await? {
                    if in_data {
                        if line == "." {
                            in_data = false;
                            let id = std::mem::take(&mut message_id);
                            if let Ok(mut sink) = sink.lock() {
                                sink.received.push((Instant::now(), id));
                            }
                            write.write_all(b"250 2.0.0 queued\r\n").await?;
                        } else if let Some(id) = line.strip_prefix("Message-ID: ") {
                            message_id = id.trim().to_owned();
                        }
                        continue;
                    }
                    let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" => b"250-sink\r\n250 8BITMIME\r\n",
                        "DATA" => {
                            in_data = true;
                            b"354 go on\r\n"
                        }
                        "QUIT" => {
                            write.write_all(b"221 bye\r\n").await?;
                            break;
                        }
                        _ => b"250 ok\r\n",
                    };
                    write.write_all(reply).await?;
                }
                anyhow::Ok(())
            });
        }
    });
    Ok((port, sink))
}

/// An outbox key for the benchmark's admit, so that the benchmark can queue mail itself.
const BENCH_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// Queues `count` messages straight into admit's outbox (in transactions of 500, as a burst of
/// sign-ups leaves it), times their delivery to the loopback sink, and counts duplicates. For
/// scale, the same sink also takes 100 messages from lettre's own pooled transport, one at a
/// time, in the same run.
async fn mail_drain(
    binary: &Path,
    database_url: Option<&str>,
    count: usize,
) -> anyhow::Result<Summary> {
    use sea_orm::{
        ColumnTrait as _, EntityTrait as _, PaginatorTrait as _, QueryFilter as _,
        TransactionTrait as _,
    };
    let (port, sink) = smtp_sink().await?;
    let smtp_url = format!("smtp://127.0.0.1:{port}");
    let mut env = vec![
        ("ADMIT_SMTP_URL", smtp_url.as_str()),
        ("ADMIT_SECRET_KEY", BENCH_KEY),
        ("ADMIT_MAIL_FROM", "bench <no-reply@bench.test>"),
    ];
    env.extend(database_url.map(|url| ("DATABASE_URL", url)));
    let admit = Admit::start(binary, &env).await?;
    let url = admit.database_url(database_url);
    let db = admit::db::connect(&url, Duration::from_secs(5), None).await?;
    let keys = admit::secrets::SecretKeys::parse(BENCH_KEY)?;
    let queuing = Instant::now();
    for chunk in (0..count).collect::<Vec<_>>().chunks(500) {
        let txn = db.begin().await?;
        for &i in chunk {
            let email = admit::mail::OutgoingEmail {
                subject: format!("Confirm your account ({i})"),
                text: format!("Open https://bench.test/confirm#token={i:0>43} to confirm."),
                html: format!(
                    "<p><a href=\"https://bench.test/confirm#token={i:0>43}\">Confirm</a></p>"
                ),
            };
            admit::mail::enqueue(&txn, &keys, &format!("drain{i}@bench.test"), email).await?;
        }
        txn.commit().await?;
    }
    let queued = queuing.elapsed();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let unsent = entity::outbox_messages::Entity::find()
            .filter(entity::outbox_messages::Column::SentAt.is_null())
            .count(&db)
            .await?;
        if unsent == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("{unsent} messages still unsent after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hwm = admit.status_kib("VmHWM:")?;
    let (drain, received, unique) = {
        let sink = sink.lock().map_err(|_| anyhow::anyhow!("sink poisoned"))?;
        let first = sink.received.first().map(|(at, _)| *at);
        let last = sink.received.last().map(|(at, _)| *at);
        let unique: std::collections::HashSet<&String> =
            sink.received.iter().map(|(_, id)| id).collect();
        let span = first.zip(last).map_or(Duration::ZERO, |(a, b)| b - a);
        (span, sink.received.len(), unique.len())
    };
    drop(admit);

    // lettre's own pooled transport to the same sink, one message at a time.
    let lettre = {
        use lettre::AsyncTransport as _;
        let transport =
            lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous("127.0.0.1")
                .port(port)
                .build();
        let started = Instant::now();
        for i in 0..100 {
            let message = lettre::Message::builder()
                .from("bench <no-reply@bench.test>".parse()?)
                .to(format!("lettre{i}@bench.test").parse()?)
                .subject("Confirm your account")
                .body(format!(
                    "Open https://bench.test/confirm#token={i:0>43} to confirm."
                ))?;
            transport.send(message).await?;
        }
        100.0 / started.elapsed().as_secs_f64()
    };

    println!("| measure | admit | lettre's pooled transport, same sink, same run |");
    println!("|---|---|---|");
    println!(
        "| outbox drain to a loopback SMTP server | {:.0} mails/s ({received} received in {:.2} s, {} duplicate Message-IDs, {} not delivered) | {lettre:.0} mails/s (one at a time) |",
        received.saturating_sub(1) as f64 / drain.as_secs_f64().max(1e-9),
        drain.as_secs_f64(),
        received - unique,
        count.saturating_sub(unique),
    );
    println!(
        "({count} messages queued in {:.2} s; admit's peak RSS (VmHWM) {} MiB)",
        queued.as_secs_f64(),
        hwm / 1024
    );
    if received != count || unique != count {
        bail!("{received} received, {unique} distinct, {count} queued");
    }
    Ok(vec![row(
        format!("outbox drain, {count} queued"),
        format!(
            "{:.0} mails/s, {} duplicate Message-IDs",
            received.saturating_sub(1) as f64 / drain.as_secs_f64().max(1e-9),
            received - unique
        ),
        format!("lettre's pooled transport, one at a time: {lettre:.0} mails/s"),
    )])
}

/// Seeds `count` stale accounts and purges them while another client keeps writing.
async fn purge_stale(
    binary: &Path,
    database_url: Option<&str>,
    count: usize,
) -> anyhow::Result<()> {
    let mut env = vec![];
    env.extend(database_url.map(|url| ("DATABASE_URL", url)));
    let mut admit = Admit::start(binary, &env).await?;
    let url = admit.database_url(database_url);
    let db = admit::db::connect(&url, Duration::from_secs(30), None).await?;
    let seeding = Instant::now();
    let month_ago = admit::db::now() - chrono::TimeDelta::days(30);
    seed_pending_at(&db, "stale", count, month_ago).await?;
    let seeded = seeding.elapsed();
    // admit's own purge job must not run meanwhile; its database (in its folder) stays.
    admit.stop().await?;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (db, stop) = (db.clone(), stop.clone());
        tokio::spawn(async move {
            let mut waits = hdrhistogram::Histogram::<u64>::new(3)?;
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let client = admit::domain::ClientNetwork::of(IpAddr::V4(Ipv4Addr::from(
                    0x0a00_0000 + (n % 65_536) * 256,
                )));
                let sent = Instant::now();
                if admit::services::client_budget::take(
                    &db,
                    admit::services::client_budget::Budget {
                        client,
                        per_minute: 1_000_000,
                    },
                )
                .await?
                .is_err()
                {
                    bail!("the writer's budget ran out");
                }
                waits.record(micros_since(sent))?;
                n += 1;
            }
            anyhow::Ok(waits)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let purging = Instant::now();
    let report = admit::services::purge::purge(
        &db,
        admit::services::purge::Retention {
            unconfirmed: chrono::TimeDelta::days(7),
            cooldown: chrono::TimeDelta::minutes(1),
            mail: chrono::TimeDelta::days(7),
            session_idle: chrono::TimeDelta::days(7),
        },
    )
    .await?;
    let purged = purging.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let waits = writer.await??;
    println!(
        "| stale accounts | purged in | rows/s | longest purge statement | concurrent writes during the purge: p50 / p99 / max |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| {} (+ {} links) | {:.1} s | {:.0} | {:.1} ms | {} writes: {:.2} / {:.2} / {:.2} ms |",
        report.users,
        report.tokens,
        purged.as_secs_f64(),
        report.users as f64 / purged.as_secs_f64(),
        report.longest_statement.as_secs_f64() * 1000.0,
        waits.len(),
        ms_at(&waits, 0.5),
        ms_at(&waits, 0.99),
        ms_at(&waits, 1.0),
    );
    println!(
        "(seeded in {:.1} s; the links, expired for weeks, are purged first, then the accounts)",
        seeded.as_secs_f64()
    );
    if report.users != count as u64 {
        bail!("{} of {count} stale accounts purged", report.users);
    }
    Ok(())
}

/// Hashes per second of `threads` threads doing nothing but Argon2id (m = 19 MiB, t = 2, p = 1,
/// admit's parameters) for `duration`.
fn hash_rate(threads: usize, duration: Duration) -> anyhow::Result<f64> {
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let argon2 = argon2::Argon2::default();
                let mut out = [0u8; 32];
                let mut done = 0u64;
                while started.elapsed() < duration {
                    argon2
                        .hash_password_into(PASSWORD.as_bytes(), b"sixteen byte salt", &mut out)
                        .map_err(|err| anyhow::anyhow!("argon2: {err}"))?;
                    done += 1;
                }
                anyhow::Ok(done)
            })
        })
        .collect();
    let mut total = 0;
    for handle in handles {
        total += handle
            .join()
            .map_err(|_| anyhow::anyhow!("a hashing thread panicked"))??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// Sign-ups per second at each concurrency, against the two-thread hashing rate.
async fn register_throughput(
    binary: &Path,
    database_url: Option<&str>,
    duration: Duration,
    concurrencies: &[usize],
) -> anyhow::Result<Summary> {
    let mut summary = Summary::new();
    // The hashing rate is measured before every round and after the last (admit idle then),
    // and each round is set against the mean of the two around it: this machine's speed
    // drifts by up to a fifth over a minute.
    let hashing = move || async move {
        // Let admit's queue drain and its mail go out first.
        tokio::time::sleep(Duration::from_secs(2)).await;
        tokio::task::spawn_blocking(move || hash_rate(2, duration)).await?
    };
    let mut before = hashing().await?;
    // Mail goes out over SMTP, as in production, not into files: creating tens of thousands of
    // files cost admit about a fifth of its CPU beside the hash here, in the file system.
    let (port, sink) = smtp_sink().await?;
    let smtp_url = format!("smtp://127.0.0.1:{port}");
    let mut env = vec![
        ("ADMIT_IP_RATE_LIMIT", "0"),
        ("ADMIT_SMTP_URL", smtp_url.as_str()),
        ("ADMIT_MAIL_FROM", "bench <no-reply@bench.test>"),
    ];
    env.extend(database_url.map(|url| ("DATABASE_URL", url)));
    let admit = Admit::start(binary, &env).await?;
    let url = format!("http://{}/graphql", admit.listen);
    println!(
        "| concurrency | register: accepted/s | two threads only hashing, before / after | of their mean | p50 / p99 | busy answers | other | admit's CPU per sign-up: hashing / the rest |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (round, &concurrency) in concurrencies.iter().enumerate() {
        let (cpu_before, hashing_before) = (admit.cpu_time()?, admit.hashing_cpu()?);
        let deadline = Instant::now() + duration;
        let started = Instant::now();
        let workers = (0..concurrency.max(1)).map(|worker| {
            let url = &url;
            async move {
                let client = reqwest::Client::new();
                let mut latencies = hdrhistogram::Histogram::<u64>::new(3)?;
                let (mut accepted, mut busy, mut other, mut n) = (0u64, 0u64, 0u64, 0u64);
                while Instant::now() < deadline {
                    let input = json!({ "input": { "email": format!("r{round}w{worker}n{n}@bench.test"), "password": PASSWORD } });
                    n += 1;
                    let sent = Instant::now();
                    let answer = graphql(&client, url, REGISTER, input).await;
                    match SignUpAnswer::of(&answer) {
                        SignUpAnswer::Accepted => {
                            latencies.record(micros_since(sent))?;
                            accepted += 1;
                        }
                        SignUpAnswer::Busy(hint) => {
                            busy += 1;
                            // As a well-behaved client would.
                            if let Some(wait) = hint {
                                let left = deadline.saturating_duration_since(Instant::now());
                                tokio::time::sleep(wait.min(left)).await;
                            }
                        }
                        SignUpAnswer::Other => other += 1,
                    }
                }
                anyhow::Ok((latencies, accepted, busy, other))
            }
        });
        let mut latencies = hdrhistogram::Histogram::<u64>::new(3)?;
        let (mut accepted, mut busy, mut other) = (0, 0, 0);
        for outcome in futures::future::join_all(workers).await {
            let (worker, a, b, o) = outcome?;
            latencies.add(&worker)?;
            (accepted, busy, other) = (accepted + a, busy + b, other + o);
        }
        let rate = accepted as f64 / started.elapsed().as_secs_f64();
        let hashing_cpu = admit.hashing_cpu()?.saturating_sub(hashing_before);
        let rest_cpu = admit
            .cpu_time()?
            .saturating_sub(cpu_before)
            .saturating_sub(hashing_cpu);
        let per_signup = |cpu: Duration| cpu.as_secs_f64() * 1000.0 / accepted.max(1) as f64;
        let after = hashing().await?;
        let bound = f64::midpoint(before, after);
        println!(
            "| {concurrency} | {rate:.1} | {before:.1} / {after:.1}/s | {:.0} % | {:.1} / {:.1} ms | {busy} | {other} | {:.1} / {:.1} ms |",
            100.0 * rate / bound,
            ms_at(&latencies, 0.5),
            ms_at(&latencies, 0.99),
            per_signup(hashing_cpu),
            per_signup(rest_cpu),
        );
        summary.push(row(
            format!("register, concurrency {concurrency}"),
            format!(
                "{rate:.1}/s ({:.0} % of the bound), {busy} busy answers",
                100.0 * rate / bound
            ),
            format!("two threads only hashing: {before:.1}/s before, {after:.1}/s after"),
        ));
        before = after;
    }
    let mailed = sink.lock().map_or(0, |sink| sink.received.len());
    println!(
        "({} s per round, one client per connection; the bound: two threads hashing for {} s in the benchmark's own process, admit idle, before and after each round; {mailed} mails reached the loopback SMTP sink)",
        duration.as_secs(),
        duration.as_secs()
    );
    Ok(summary)
}
