//! `admit-bench`: runs the release `admit` binary on loopback and measures it.
//!
//! `memory`: resident memory while many clients sign up at once. Each figure is set against a
//! bound measured in the same run: the idle process plus one Argon2 memory block per hashing
//! thread, which is what bounded hashing should cost at most.
//!
//! ```sh
//! cargo build --release -p admit -p admit-bench
//! target/release/admit-bench memory --signups 500
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

/// Argon2id's memory per hash with admit's parameters (m = 19,456 KiB).
const ARGON2_KIB: u64 = 19_456;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let scenario = args.next().unwrap_or_default();
    let mut signups = 500usize;
    let mut admit = sibling("admit")?;
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--signups" => signups = args.next().context("--signups N")?.parse()?,
            "--admit" => admit = PathBuf::from(args.next().context("--admit PATH")?),
            other => bail!("unknown argument {other:?}"),
        }
    }
    match scenario.as_str() {
        "memory" => memory(&admit, signups).await,
        _ => bail!("usage: admit-bench memory [--signups N] [--admit PATH]"),
    }
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
    _dir: tempfile::TempDir,
}

impl Admit {
    async fn start(binary: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut child = Command::new(binary)
            .current_dir(dir.path())
            .env_clear()
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
        // Keep draining the log so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            child,
            listen,
            _dir: dir,
        })
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

    /// Threads named like admit's hashing workers.
    fn hash_threads(&self) -> anyhow::Result<u64> {
        let pid = self.child.id().context("admit exited")?;
        let mut count = 0;
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let name = std::fs::read_to_string(task?.path().join("comm")).unwrap_or_default();
            count += u64::from(name.starts_with("admit-hash"));
        }
        Ok(count)
    }
}

async fn memory(binary: &Path, signups: usize) -> anyhow::Result<()> {
    let admit = Admit::start(binary).await?;
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
            reqwest::Client::builder()
                .local_address(IpAddr::V4(ip))
                .timeout(Duration::from_secs(60))
                .build()
        })
        .collect::<Result<_, _>>()?;
    let url = format!("http://{}/graphql", admit.listen);
    let started = Instant::now();
    let answers = futures::future::join_all((0..signups).map(|i| {
        let client = &clients[i / 2];
        let url = &url;
        async move {
            let body = json!({
                "query": "mutation($input: RegisterInput!) { register(input: $input) { accepted userErrors { code } } }",
                "variables": { "input": { "email": format!("flood{i}@example.com"), "password": "correct horse battery staple" } },
            });
            let answer: Value = client.post(url).json(&body).send().await?.json().await?;
            anyhow::Ok(answer)
        }
    }))
    .await;
    let elapsed = started.elapsed();
    let peak_kib = admit.status_kib("VmHWM:")?;
    let workers = admit.hash_threads()?;
    // Past the hashing threads' idle release (5 s).
    tokio::time::sleep(Duration::from_secs(8)).await;
    let after_kib = admit.status_kib("VmRSS:")?;

    let (mut accepted, mut unavailable, mut other) = (0, 0, 0);
    for answer in &answers {
        match answer {
            Ok(body) if body["data"]["register"]["accepted"] == true => accepted += 1,
            Ok(body) if body["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE" => {
                unavailable += 1;
            }
            _ => other += 1,
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
    Ok(())
}
