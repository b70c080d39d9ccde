//! Password hashing with Argon2id on a fixed set of threads, each reusing its own memory.
//!
//! Every Argon2id hash fills 19 MiB. Allocating that per hash on the blocking pool let glibc keep
//! the freed memory of every thread that ever hashed (over a gigabyte after a burst of sign-ups),
//! so instead each worker allocates its blocks once and hashes into them for its whole life, and
//! a bounded queue in front of the workers answers "busy" at once rather than letting waiting
//! requests pile up. Client networks take turns in that queue (see [`queue`]). A job that
//! waited too long to finish within its request's deadline is answered "busy" when its turn
//! comes, unhashed: hashes go only to requests that can still use them.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use argon2::{
    Algorithm, Argon2, Block, Params, Version,
    password_hash::phc::{Output, ParamsString, PasswordHash, Salt},
};
use tokio::sync::oneshot;

use self::queue::{FairQueue, Next, Pushed};
use crate::domain::{ClientNetwork, NewPassword, Password, PasswordError};

mod queue;

/// Bytes of salt per hash (the PHC string format's recommendation).
const SALT_BYTES: usize = 16;
/// The least wait suggested to a requester turned away.
const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);
/// The most: a backlog longer than this is not worth estimating.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// A worker idle this long gives its memory back; the next hash allocates it again (a few
/// milliseconds), so a burst's memory does not stay with the process for good.
const IDLE_RELEASE: Duration = Duration::from_secs(5);

/// Why no hash came back.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Every worker is busy and the queue is full, or the job waited too long for its turn:
    /// the caller should answer "try again" rather than wait. `retry_after` is how long the
    /// jobs waiting now take at the recent pace (at least [`MIN_RETRY_AFTER`]): a requester
    /// that comes back sooner most likely meets the same queue.
    #[error("password hashing is at capacity")]
    Busy {
        /// When the queue may have room again.
        retry_after: Duration,
    },
    /// Argon2 or the random source failed, or the workers are gone.
    #[error("password hashing failed: {0}")]
    Failed(String),
}

struct Job {
    queued_at: std::time::Instant,
    task: Task,
}

/// A new password's hash, or the rule it broke.
type Judged = Result<String, PasswordError>;

/// What a worker is asked to do with a password.
enum Task {
    /// A fresh hash of a password already judged: its PHC string.
    Hash(Password, oneshot::Sender<Result<String, HashError>>),
    /// A new password: judged, then, if it passes, hashed.
    JudgeAndHash(NewPassword, oneshot::Sender<Result<Judged, HashError>>),
    /// A check against a stored PHC string, or against nothing (an unknown account), which
    /// costs the same and never matches.
    Verify(
        Password,
        Option<String>,
        oneshot::Sender<Result<Verification, HashError>>,
    ),
}

impl Task {
    /// Whether the requester stopped waiting for the answer.
    fn abandoned(&self) -> bool {
        match self {
            Self::Hash(_, reply) => reply.is_closed(),
            Self::JudgeAndHash(_, reply) => reply.is_closed(),
            Self::Verify(_, _, reply) => reply.is_closed(),
        }
    }

    /// Answers `busy` without hashing. A requester that has gone since gets nothing.
    fn refuse(self, busy: HashError) {
        match self {
            Self::Hash(_, reply) => drop(reply.send(Err(busy))),
            Self::JudgeAndHash(_, reply) => drop(reply.send(Err(busy))),
            Self::Verify(_, _, reply) => drop(reply.send(Err(busy))),
        }
    }
}

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The password is not the one the hash was made from (or there was no hash).
    Mismatch,
    /// The password is right. `rehash` is true when the stored hash was made with other
    /// parameters than the current ones, so it should be replaced by a fresh hash.
    Match {
        /// The stored hash is out of date.
        rehash: bool,
    },
}

/// Computes Argon2id hashes (the argon2 crate's defaults: OWASP's m = 19 MiB, t = 2, p = 1) on
/// `workers` dedicated threads behind a queue of `queue` waiting jobs, in which client networks
/// take turns. Memory is bounded by the worker count, and the runtime's threads never hash.
#[derive(Clone)]
pub struct PasswordHasher {
    jobs: Arc<Jobs>,
    pace: Arc<Pace>,
}

/// What the workers have done, shared with the hasher.
struct Pace {
    workers: u32,
    /// Hashes computed since start.
    completed: AtomicU64,
    /// Recent wall time per hash, in microseconds: a moving average, 0 before the first.
    micros_per_hash: AtomicU64,
}

impl Pace {
    fn new(workers: usize) -> Self {
        Self {
            workers: u32::try_from(workers).unwrap_or(u32::MAX).max(1),
            completed: AtomicU64::new(0),
            micros_per_hash: AtomicU64::new(0),
        }
    }

    /// Counts a hash that took `took`, from its start to its answer.
    fn record(&self, took: Duration) {
        self.completed.fetch_add(1, Ordering::Relaxed);
        let sample = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        // One worker's read and write may interleave with another's: an average off by one
        // sample is as good a hint.
        let average = match self.micros_per_hash.load(Ordering::Relaxed) {
            0 => sample,
            average => average - average / 8 + sample / 8,
        };
        self.micros_per_hash.store(average, Ordering::Relaxed);
    }

    /// How long `waiting` jobs take to clear at the recent pace, within [`MIN_RETRY_AFTER`]
    /// and [`MAX_RETRY_AFTER`].
    fn backlog(&self, waiting: usize) -> Duration {
        let per_hash = Duration::from_micros(self.micros_per_hash.load(Ordering::Relaxed));
        let jobs = u32::try_from(waiting).unwrap_or(u32::MAX);
        (per_hash.saturating_mul(jobs) / self.workers).clamp(MIN_RETRY_AFTER, MAX_RETRY_AFTER)
    }

    /// A job turned away while `waiting` others wait: counted, and told the backlog.
    fn busy(&self, waiting: usize) -> HashError {
        metrics::counter!(crate::metrics::HASH_REJECTED).increment(1);
        HashError::Busy {
            retry_after: self.backlog(waiting),
        }
    }
}

/// The hasher's end of the queue: when the last clone of the hasher is dropped, the workers
/// finish what waits and end.
struct Jobs(Arc<FairQueue<ClientNetwork, Job>>);

impl Drop for Jobs {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl PasswordHasher {
    /// Starts `workers` hashing threads (at least one) with room for `queue` waiting jobs. A
    /// job that waited longer than `max_wait` is answered `Busy` when its turn comes. The
    /// threads end when the last clone of the hasher is dropped.
    pub fn new(workers: usize, queue: usize, max_wait: Duration) -> std::io::Result<Self> {
        let inbox = Arc::new(FairQueue::new(queue));
        let jobs = Arc::new(Jobs(Arc::clone(&inbox)));
        let workers = workers.max(1);
        let pace = Arc::new(Pace::new(workers));
        for index in 0..workers {
            let inbox = Arc::clone(&inbox);
            let pace = Arc::clone(&pace);
            std::thread::Builder::new()
                .name(format!("admit-hash-{index}"))
                .spawn(move || work(&inbox, &pace, max_wait))?;
        }
        Ok(Self { jobs, pace })
    }

    /// The PHC string of a fresh Argon2id hash of `password`, with a random salt, hashed in
    /// `client`'s turn; `Busy` at once when the queue is full (see [`queue`]).
    pub async fn hash(
        &self,
        client: ClientNetwork,
        password: Password,
    ) -> Result<String, HashError> {
        self.ask(client, |reply| Task::Hash(password, reply)).await
    }

    /// A new password judged ([`NewPassword::judge`]) and, if it passes, hashed as by
    /// [`hash`](Self::hash), in `client`'s turn. The judgment runs on the hashing threads
    /// because, like the hash, it can cost tens of milliseconds: queued, it is bounded by the
    /// queue and the client's turn, and never holds up a request thread.
    pub async fn judge_and_hash(
        &self,
        client: ClientNetwork,
        password: NewPassword,
    ) -> Result<Judged, HashError> {
        self.ask(client, |reply| Task::JudgeAndHash(password, reply))
            .await
    }

    /// Checks `password` against the PHC string `stored`. With `None` (no such account) the
    /// same work is done against a dummy, so that the time taken does not tell whether an
    /// account exists. A stored string that does not parse never matches. Queued in `client`'s
    /// turn, as [`hash`](Self::hash) is.
    pub async fn verify(
        &self,
        client: ClientNetwork,
        password: Password,
        stored: Option<String>,
    ) -> Result<Verification, HashError> {
        self.ask(client, |reply| Task::Verify(password, stored, reply))
            .await
    }

    /// Queues the task `make` builds around its reply channel, and waits for a worker's
    /// answer; a worker that stopped without one (it cannot, short of a panic) is a failure.
    async fn ask<T>(
        &self,
        client: ClientNetwork,
        make: impl FnOnce(oneshot::Sender<Result<T, HashError>>) -> Task,
    ) -> Result<T, HashError> {
        let (reply, answer) = oneshot::channel();
        self.submit(client, make(reply))?;
        answer
            .await
            .map_err(|_| HashError::Failed("a hashing thread stopped".to_owned()))?
    }

    /// Queues a job, or answers `Busy` at once when the queue is full and `client` has the
    /// most jobs waiting. A job of a busier network that gave way is answered `Busy`.
    fn submit(&self, client: ClientNetwork, task: Task) -> Result<(), HashError> {
        let job = Job {
            queued_at: std::time::Instant::now(),
            task,
        };
        match self.jobs.0.push(client, job) {
            Pushed::Queued => Ok(()),
            Pushed::Displaced(other) => {
                other.task.refuse(self.pace.busy(self.waiting()));
                Ok(())
            }
            Pushed::Full(_) => Err(self.pace.busy(self.waiting())),
        }
    }

    /// How many jobs wait for a thread.
    pub fn waiting(&self) -> usize {
        self.jobs.0.len()
    }

    /// How many hashes have been computed since start: lets tests and metrics see that a
    /// refused request did no hashing.
    pub fn completed(&self) -> u64 {
        self.pace.completed.load(Ordering::Relaxed)
    }
}

/// One worker: its memory is allocated at the first job, reused for every later one, and given
/// back after [`IDLE_RELEASE`] without work.
fn work(inbox: &FairQueue<ClientNetwork, Job>, pace: &Pace, max_wait: Duration) {
    yield_to_requests();
    let params = Params::default();
    let mut memory: Vec<Block> = Vec::new();
    loop {
        let job = match inbox.pop(IDLE_RELEASE) {
            Next::Job(job) => job,
            Next::Idle => {
                if !memory.is_empty() {
                    memory = Vec::new();
                    return_free_memory();
                }
                continue;
            }
            Next::Closed => return,
        };
        let waited = job.queued_at.elapsed();
        metrics::histogram!(crate::metrics::HASH_QUEUE_WAIT).record(waited.as_secs_f64());
        // A requester that gave up (its deadline passed, its client went away) no longer
        // wants the answer: hashing for it anyway kept the workers busy with dead jobs, so
        // under a backlog longer than the deadline every later job timed out too, and
        // accepted sign-ups fell to a quarter of the hashing rate.
        if job.task.abandoned() {
            metrics::counter!(crate::metrics::HASH_ABANDONED).increment(1);
            continue;
        }
        // One whose wait already ate most of its deadline would expire during its hash.
        if waited > max_wait {
            job.task.refuse(pace.busy(inbox.len()));
            continue;
        }
        if memory.is_empty() {
            memory = vec![Block::default(); params.block_count()];
        }
        let started = std::time::Instant::now();
        match job.task {
            Task::Hash(password, reply) => {
                let result = hash_into(&params, &password, &mut memory);
                pace.record(started.elapsed());
                let _ = reply.send(result);
            }
            Task::JudgeAndHash(password, reply) => {
                // A password that breaks the rule is answered unhashed, and not counted as a
                // hash.
                let result = match password.judge() {
                    Ok(password) => {
                        let hashed = hash_into(&params, &password, &mut memory).map(Ok);
                        pace.record(started.elapsed());
                        hashed
                    }
                    Err(broken) => Ok(Err(broken)),
                };
                let _ = reply.send(result);
            }
            Task::Verify(password, stored, reply) => {
                let result = verify_into(&params, &password, stored.as_deref(), &mut memory);
                pace.record(started.elapsed());
                let _ = reply.send(result);
            }
        }
    }
}

/// How much lower than the rest of the process the hashing threads run: nice 10 against 0
/// gives them a weight of 110 against 1024, so a request thread or the database that wakes up
/// takes the CPU from a hash, yet a hash still gets about a tenth of a core from a busy
/// neighbour. Linux's `SCHED_IDLE` class (weight 3), used before, gave them nothing: while any
/// other process kept the cores busy (a compile, a backup, a heavy query), every sign-up and
/// sign-in waited out its deadline and was answered busy.
#[cfg(target_os = "linux")]
const HASHING_NICENESS: libc::c_int = 10;

/// Lowers the calling thread's priority by [`HASHING_NICENESS`] (at most to nice 19): without
/// this, 256 sign-ups in flight put `confirmAccount`'s p99 at 150 ms. Elsewhere, or if the
/// kernel refuses, hashing keeps the process's priority (and the log says so).
fn yield_to_requests() {
    #[cfg(target_os = "linux")]
    {
        // Linux keeps a niceness per thread; `gettid` names this one alone.
        // SAFETY: gettid takes nothing and cannot fail.
        let thread = unsafe { libc::gettid() } as libc::id_t;
        // SAFETY: plain calls on the calling thread's own id. getpriority returns the niceness
        // itself, which may be -1, so errno is cleared first to tell that from a failure.
        let status = unsafe {
            *libc::__errno_location() = 0;
            let current = libc::getpriority(libc::PRIO_PROCESS, thread);
            if current == -1 && *libc::__errno_location() != 0 {
                -1
            } else {
                libc::setpriority(
                    libc::PRIO_PROCESS,
                    thread,
                    (current + HASHING_NICENESS).min(19),
                )
            }
        };
        if status != 0 {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "hashing threads keep the process's scheduling priority"
            );
        }
    }
}

/// Asks the allocator to hand freed memory back to the system. glibc keeps freed heap memory in
/// each thread's arena for reuse; after a burst of requests that is tens of megabytes the
/// process holds for good.
fn return_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no pointer and
    // is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn hash_into(
    params: &Params,
    password: &Password,
    memory: &mut [Block],
) -> Result<String, HashError> {
    let failed = |err: &dyn std::fmt::Display| HashError::Failed(err.to_string());
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut salt = [0u8; SALT_BYTES];
    getrandom::fill(&mut salt).map_err(|err| failed(&err))?;
    let mut output = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2
        .hash_password_into_with_memory(password.expose().as_bytes(), &salt, &mut output, memory)
        .map_err(|err| failed(&err))?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|err| failed(&err))?,
        salt: Some(Salt::new(&salt).map_err(|err| failed(&err))?),
        hash: Some(Output::new(&output).map_err(|err| failed(&err))?),
    };
    Ok(hash.to_string())
}

/// A stored hash taken apart: what recomputing it needs.
struct Stored {
    algorithm: Algorithm,
    version: Version,
    params: Params,
    salt: Vec<u8>,
    output: Output,
}

impl Stored {
    fn parse(phc: &str) -> Option<Self> {
        let hash = PasswordHash::new(phc).ok()?;
        let algorithm = Algorithm::try_from(hash.algorithm.as_str()).ok()?;
        let version = hash
            .version
            .map_or(Ok(Version::V0x10), Version::try_from)
            .ok()?;
        let params = Params::try_from(&hash).ok()?;
        let salt = hash.salt?.as_ref().to_vec();
        let output = hash.hash?;
        Some(Self {
            algorithm,
            version,
            params,
            salt,
            output,
        })
    }
}

/// Recomputes the stored hash from `password` and compares in constant time. Without a usable
/// stored hash the same computation runs with the current parameters and a fixed salt, and the
/// answer is a mismatch.
fn verify_into(
    current: &Params,
    password: &Password,
    stored: Option<&str>,
    memory: &mut Vec<Block>,
) -> Result<Verification, HashError> {
    let failed = |err: &dyn std::fmt::Display| HashError::Failed(err.to_string());
    let Some(stored) = stored.and_then(Stored::parse) else {
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, current.clone());
        let mut output = [0u8; Params::DEFAULT_OUTPUT_LEN];
        argon2
            .hash_password_into_with_memory(
                password.expose().as_bytes(),
                &[0u8; SALT_BYTES],
                &mut output,
                &mut memory[..],
            )
            .map_err(|err| failed(&err))?;
        return Ok(Verification::Mismatch);
    };
    if memory.len() < stored.params.block_count() {
        // An older, costlier hash: grow this worker's memory to it (given back when idle).
        memory.resize(stored.params.block_count(), Block::default());
    }
    let argon2 = Argon2::new(stored.algorithm, stored.version, stored.params.clone());
    let mut output = vec![0u8; stored.output.len()];
    argon2
        .hash_password_into_with_memory(
            password.expose().as_bytes(),
            &stored.salt,
            &mut output,
            &mut memory[..],
        )
        .map_err(|err| failed(&err))?;
    // `Output`'s equality is constant-time.
    if Output::new(&output).map_err(|err| failed(&err))? != stored.output {
        return Ok(Verification::Mismatch);
    }
    let rehash = stored.algorithm != Algorithm::Argon2id
        || stored.version != Version::V0x13
        || (
            stored.params.m_cost(),
            stored.params.t_cost(),
            stored.params.p_cost(),
        ) != (current.m_cost(), current.t_cost(), current.p_cost())
        || stored.output.len() != Params::DEFAULT_OUTPUT_LEN;
    Ok(Verification::Match { rehash })
}

#[cfg(test)]
mod tests {
    use argon2::{PasswordVerifier, password_hash::phc::PasswordHash};

    use super::*;
    use crate::domain::PasswordPolicy;

    /// Longer than any test waits.
    const WAIT: Duration = Duration::from_secs(60);

    fn client() -> ClientNetwork {
        ClientNetwork::anonymous()
    }

    fn password() -> Password {
        Password::attempt("correct horse battery staple").unwrap()
    }

    #[tokio::test]
    async fn a_new_password_is_judged_by_a_worker_and_hashed_only_when_it_passes() {
        let hasher = PasswordHasher::new(1, 4, WAIT).unwrap();
        let new = |raw: &str| NewPassword::parse(raw, PasswordPolicy::default(), &[]).unwrap();
        let weak = hasher
            .judge_and_hash(client(), new("password12345"))
            .await
            .unwrap();
        assert_eq!(weak, Err(PasswordError::TooCommon));
        assert_eq!(hasher.completed(), 0, "a refused password is not hashed");
        let phc = hasher
            .judge_and_hash(client(), new("correct horse battery staple"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(hasher.completed(), 1);
        let parsed = PasswordHash::new(&phc).unwrap();
        Argon2::default()
            .verify_password(b"correct horse battery staple", &parsed)
            .unwrap();
    }

    #[tokio::test]
    async fn judgments_wait_in_the_same_bounded_queue_as_hashes() {
        let hasher = PasswordHasher::new(1, 1, WAIT).unwrap();
        let new = |raw: &str| NewPassword::parse(raw, PasswordPolicy::default(), &[]).unwrap();
        // The worker hashes this one while the judgments below arrive.
        let strong = hasher.judge_and_hash(client(), new("correct horse battery staple"));
        let weak: Vec<_> = (0..7)
            .map(|_| hasher.judge_and_hash(client(), new("password12345")))
            .collect();
        let (strong, weak) = tokio::join!(strong, futures::future::join_all(weak));
        assert!(strong.unwrap().is_ok());
        let busy = weak
            .iter()
            .filter(|answer| matches!(answer, Err(HashError::Busy { .. })))
            .count();
        let judged = weak
            .iter()
            .filter(|answer| matches!(answer, Ok(Err(PasswordError::TooCommon))))
            .count();
        // One slot waits behind the worker: of seven judgments at once, six or all seven are
        // turned away unjudged, as hashes would be.
        assert!(busy >= 6, "busy {busy}, judged {judged}");
        assert_eq!(busy + judged, 7);
    }

    #[tokio::test]
    async fn hashes_from_reused_memory_verify_and_differ_by_salt() {
        let hasher = PasswordHasher::new(1, 4, WAIT).unwrap();
        let password = password();
        let first = hasher.hash(client(), password.clone()).await.unwrap();
        let second = hasher.hash(client(), password).await.unwrap();
        assert_ne!(first, second);
        assert!(
            first.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{first}"
        );
        for phc in [&first, &second] {
            let parsed = PasswordHash::new(phc).unwrap();
            Argon2::default()
                .verify_password(b"correct horse battery staple", &parsed)
                .unwrap();
            assert!(
                Argon2::default()
                    .verify_password(b"correct horse battery stapler", &parsed)
                    .is_err()
            );
        }
        assert_eq!(hasher.completed(), 2);
    }

    #[tokio::test]
    async fn verification_matches_only_the_right_password_and_flags_old_parameters() {
        let hasher = PasswordHasher::new(1, 4, WAIT).unwrap();
        let parse = |raw: &str| Password::attempt(raw).unwrap();
        let stored = hasher
            .hash(client(), parse("correct horse battery staple"))
            .await
            .unwrap();
        let right = hasher
            .verify(
                client(),
                parse("correct horse battery staple"),
                Some(stored.clone()),
            )
            .await
            .unwrap();
        assert_eq!(right, Verification::Match { rehash: false });
        let wrong = hasher
            .verify(
                client(),
                parse("correct horse battery stapler"),
                Some(stored),
            )
            .await
            .unwrap();
        assert_eq!(wrong, Verification::Mismatch);
        let nothing = hasher
            .verify(client(), parse("correct horse battery staple"), None)
            .await
            .unwrap();
        assert_eq!(nothing, Verification::Mismatch);
        let garbage = hasher
            .verify(
                client(),
                parse("correct horse battery staple"),
                Some("$2b$10$x".to_owned()),
            )
            .await
            .unwrap();
        assert_eq!(garbage, Verification::Mismatch);

        // A hash made with other (here: cheaper and costlier) parameters still verifies, and
        // asks to be replaced.
        for params in [
            Params::new(8 * 1024, 3, 1, None).unwrap(),
            Params::new(32 * 1024, 2, 1, None).unwrap(),
        ] {
            let old = argon2::PasswordHasher::hash_password_with_salt(
                &Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
                b"correct horse battery staple",
                b"0123456789abcdef",
            )
            .unwrap()
            .to_string();
            let outcome = hasher
                .verify(client(), parse("correct horse battery staple"), Some(old))
                .await
                .unwrap();
            assert_eq!(outcome, Verification::Match { rehash: true });
        }
        assert_eq!(hasher.completed(), 7);
    }

    #[tokio::test]
    async fn a_full_queue_answers_busy_at_once() {
        let hasher = PasswordHasher::new(1, 1, WAIT).unwrap();
        let password = password();
        let pending: Vec<_> = (0..8)
            .map(|_| {
                let hasher = hasher.clone();
                let password = password.clone();
                tokio::spawn(async move { hasher.hash(client(), password).await })
            })
            .collect();
        let mut busy = 0;
        let mut hashed = 0;
        for task in pending {
            match task.await.unwrap() {
                Ok(_) => hashed += 1,
                Err(HashError::Busy { retry_after }) => {
                    assert!(retry_after >= MIN_RETRY_AFTER, "{retry_after:?}");
                    busy += 1;
                }
                Err(err) => panic!("{err}"),
            }
        }
        // One hashing, one waiting: of eight at once, at least six are turned away.
        assert!(busy >= 6, "busy {busy}, hashed {hashed}");
        assert!(hashed >= 1);
    }

    #[test]
    fn jobs_whose_requester_gave_up_or_that_waited_too_long_are_not_hashed() {
        let inbox = FairQueue::new(8);
        let send = |job| assert!(matches!(inbox.push(client(), job), Pushed::Queued));
        let job = |task| Job {
            queued_at: std::time::Instant::now(),
            task,
        };
        let (late, late_answer) = oneshot::channel();
        let (late_check, late_check_answer) = oneshot::channel();
        for task in [
            Task::Hash(password(), late),
            Task::Verify(password(), None, late_check),
        ] {
            send(Job {
                queued_at: std::time::Instant::now() - WAIT - Duration::from_secs(1),
                ..job(task)
            });
        }
        let (gave_up, dropped) = oneshot::channel();
        drop(dropped);
        let (verify_gave_up, dropped) = oneshot::channel();
        drop(dropped);
        let (waits, answer) = oneshot::channel();
        send(job(Task::Hash(password(), gave_up)));
        send(job(Task::Verify(password(), None, verify_gave_up)));
        send(job(Task::Hash(password(), waits)));
        inbox.close();
        let pace = Arc::new(Pace::new(1));
        let counted = Arc::clone(&pace);
        // Its own thread: a worker lowers its thread's priority. It returns once the
        // queue is empty and closed.
        std::thread::spawn(move || work(&inbox, &counted, WAIT))
            .join()
            .unwrap();
        assert!(matches!(
            late_answer.blocking_recv(),
            Ok(Err(HashError::Busy { .. }))
        ));
        assert!(matches!(
            late_check_answer.blocking_recv(),
            Ok(Err(HashError::Busy { .. }))
        ));
        assert!(answer.blocking_recv().unwrap().is_ok());
        assert_eq!(pace.completed.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_refused_requester_is_told_how_long_the_waiting_jobs_take() {
        let pace = Pace::new(2);
        // Before any hash there is no pace to go by: the least wait.
        assert_eq!(pace.backlog(500), MIN_RETRY_AFTER);
        for _ in 0..8 {
            pace.record(Duration::from_millis(40));
        }
        // 100 jobs of 40 ms on two threads.
        assert_eq!(pace.backlog(100), Duration::from_secs(2));
        assert_eq!(pace.backlog(0), MIN_RETRY_AFTER);
        assert_eq!(pace.backlog(100_000), MAX_RETRY_AFTER);
        // Slower hashes move the average, an eighth at a time.
        pace.record(Duration::from_millis(120));
        assert_eq!(pace.backlog(100), Duration::from_millis(2_500));
        assert_eq!(pace.completed.load(Ordering::Relaxed), 9);
    }

    /// Field `number` (as proc_pid_stat(5) counts them) of a `/proc/.../stat` line.
    #[cfg(target_os = "linux")]
    fn stat_field(stat: &str, number: usize) -> i32 {
        // The fields after the parenthesised name start at number 3.
        let after_name = stat.rsplit_once(')').unwrap().1;
        after_name
            .split_whitespace()
            .nth(number - 3)
            .unwrap()
            .parse()
            .unwrap()
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_threads_run_ten_nice_levels_below_the_process_in_the_normal_class() {
        let hasher = PasswordHasher::new(1, 1, WAIT).unwrap();
        let password = password();
        // Once a hash is back, its thread has set its priority.
        hasher.hash(client(), password).await.unwrap();
        let process_nice = stat_field(&std::fs::read_to_string("/proc/self/stat").unwrap(), 19);
        let mut hashing = 0;
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let task = task.unwrap().path();
            let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
            if !name.starts_with("admit-hash") {
                continue;
            }
            let stat = std::fs::read_to_string(task.join("stat")).unwrap();
            assert_eq!(stat_field(&stat, 41), libc::SCHED_OTHER, "{name}");
            assert_eq!(stat_field(&stat, 19), (process_nice + 10).min(19), "{name}");
            hashing += 1;
        }
        assert!(hashing >= 1);
    }
}
