//! The queue in front of the hashing threads: first come, first served within one client
//! network, and networks take turns. With a single first-come line, one network could put its
//! whole budget of sign-ups (120 a minute by default, seconds of hashing) ahead of everybody
//! else's; taking turns, a sign-up from another network waits for at most one job per network
//! that has jobs waiting.
//!
//! When the queue is full, a job from a network with fewer jobs waiting than the busiest network
//! takes the place of that network's newest job, which is handed back to be refused. So a flood
//! from one network cannot keep the others out either.

use std::{
    collections::{HashMap, VecDeque},
    hash::Hash,
    sync::{Condvar, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

/// A bounded queue of `T` with one line per key `K`, taken from in turn.
pub(super) struct FairQueue<K, T> {
    lines: Mutex<Lines<K, T>>,
    ready: Condvar,
}

struct Lines<K, T> {
    waiting: HashMap<K, VecDeque<T>>,
    /// The keys with jobs waiting, in the order they are served.
    turns: VecDeque<K>,
    len: usize,
    capacity: usize,
    closed: bool,
}

/// What [`FairQueue::push`] did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Pushed<T> {
    /// The job waits for its turn.
    Queued,
    /// The job waits for its turn in place of this one, the newest job of the network with the
    /// most jobs waiting, which is not going to be done.
    Displaced(T),
    /// The queue is full and the job's own network has the most jobs waiting: here it is back.
    Full(T),
}

/// What [`FairQueue::pop`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next<T> {
    /// The next job.
    Job(T),
    /// Nothing came for the whole idle time.
    Idle,
    /// The queue is closed and empty.
    Closed,
}

impl<K: Copy + Eq + Hash, T> FairQueue<K, T> {
    /// An empty queue with room for `capacity` jobs (at least one).
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            lines: Mutex::new(Lines {
                waiting: HashMap::new(),
                turns: VecDeque::new(),
                len: 0,
                capacity: capacity.max(1),
                closed: false,
            }),
            ready: Condvar::new(),
        }
    }

    /// Puts `job` at the end of `key`'s line. See [`Pushed`].
    pub(super) fn push(&self, key: K, job: T) -> Pushed<T> {
        let mut lines = self.lock();
        let mut displaced = None;
        if lines.len >= lines.capacity {
            let own = lines.waiting.get(&key).map_or(0, VecDeque::len);
            let busiest = lines
                .waiting
                .iter()
                .max_by_key(|(_, line)| line.len())
                .map(|(busiest, line)| (*busiest, line.len()));
            // Only a line at least two longer gives way: between two equal lines, the newest
            // job would just change places with another one of the same network's size.
            match busiest {
                Some((busiest, len)) if len > own + 1 => {
                    displaced = lines.pop_newest(busiest);
                }
                _ => return Pushed::Full(job),
            }
        }
        let line = lines.waiting.entry(key).or_default();
        let first = line.is_empty();
        line.push_back(job);
        if first {
            lines.turns.push_back(key);
        }
        lines.len += 1;
        drop(lines);
        self.ready.notify_one();
        displaced.map_or(Pushed::Queued, Pushed::Displaced)
    }

    /// The next job in turn, waiting up to `idle` for one. Jobs still waiting when the queue is
    /// closed are handed out before [`Next::Closed`].
    pub(super) fn pop(&self, idle: Duration) -> Next<T> {
        let until = Instant::now() + idle;
        let mut lines = self.lock();
        loop {
            if let Some(job) = lines.take() {
                return Next::Job(job);
            }
            if lines.closed {
                return Next::Closed;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Next::Idle;
            }
            lines = self
                .ready
                .wait_timeout(lines, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Tells the workers that no job will come any more.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// How many jobs are waiting.
    pub(super) fn len(&self) -> usize {
        self.lock().len
    }

    /// Nothing in the queue panics while holding the lock; a poisoned lock still guards
    /// consistent lines.
    fn lock(&self) -> MutexGuard<'_, Lines<K, T>> {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K: Copy + Eq + Hash, T> Lines<K, T> {
    /// The first job of the line whose turn it is; that line goes to the back of the turns.
    fn take(&mut self) -> Option<T> {
        let key = self.turns.pop_front()?;
        let line = self.waiting.get_mut(&key)?;
        let job = line.pop_front()?;
        if line.is_empty() {
            self.waiting.remove(&key);
        } else {
            self.turns.push_back(key);
        }
        self.len -= 1;
        Some(job)
    }

    /// The last job of `key`'s line. Only a line of two or more gives way, so the line keeps
    /// a job and its turn.
    fn pop_newest(&mut self, key: K) -> Option<T> {
        let job = self.waiting.get_mut(&key)?.pop_back()?;
        self.len -= 1;
        Some(job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_WAIT: Duration = Duration::ZERO;

    fn drain(queue: &FairQueue<char, &'static str>) -> Vec<&'static str> {
        let mut jobs = Vec::new();
        while let Next::Job(job) = queue.pop(NO_WAIT) {
            jobs.push(job);
        }
        jobs
    }

    #[test]
    fn networks_take_turns_and_each_keeps_its_own_order() {
        let queue = FairQueue::new(16);
        for job in ["a1", "a2", "a3", "a4"] {
            assert_eq!(queue.push('a', job), Pushed::Queued);
        }
        assert_eq!(queue.pop(NO_WAIT), Next::Job("a1"));
        // Late comers wait for one more of the flood, not for all of it.
        assert_eq!(queue.push('b', "b1"), Pushed::Queued);
        assert_eq!(queue.push('c', "c1"), Pushed::Queued);
        assert_eq!(queue.push('b', "b2"), Pushed::Queued);
        assert_eq!(queue.len(), 6);
        assert_eq!(drain(&queue), ["a2", "b1", "c1", "a3", "b2", "a4"]);
        assert_eq!(queue.len(), 0);
        // A network whose line emptied joins the turns again at the back.
        assert_eq!(queue.push('c', "c2"), Pushed::Queued);
        assert_eq!(drain(&queue), ["c2"]);
    }

    #[test]
    fn a_full_queue_makes_the_busiest_network_give_way_and_refuses_it_alone() {
        let queue = FairQueue::new(4);
        for job in ["a1", "a2", "a3"] {
            assert_eq!(queue.push('a', job), Pushed::Queued);
        }
        assert_eq!(queue.push('b', "b1"), Pushed::Queued);
        // Full: the flooding network gets no more in...
        assert_eq!(queue.push('a', "a4"), Pushed::Full("a4"));
        // ...and its newest job gives way to another network's.
        assert_eq!(queue.push('c', "c1"), Pushed::Displaced("a3"));
        assert_eq!(queue.len(), 4);
        // Now a has two, b and c one each: nobody is two ahead of c, so c is refused too.
        assert_eq!(queue.push('c', "c2"), Pushed::Full("c2"));
        assert_eq!(queue.push('d', "d1"), Pushed::Displaced("a2"));
        assert_eq!(drain(&queue), ["a1", "b1", "c1", "d1"]);
    }

    #[test]
    fn an_empty_queue_waits_for_a_job_then_reports_idle_or_closed() {
        let queue = std::sync::Arc::new(FairQueue::<char, &str>::new(2));
        assert_eq!(queue.pop(Duration::from_millis(10)), Next::Idle);
        let pusher = std::sync::Arc::clone(&queue);
        let worker = std::thread::spawn(move || queue.pop(Duration::from_secs(60)));
        // The worker is woken by the push, long before its idle time is over.
        assert_eq!(pusher.push('a', "a1"), Pushed::Queued);
        assert_eq!(worker.join().unwrap(), Next::Job("a1"));
        assert_eq!(pusher.push('a', "a2"), Pushed::Queued);
        pusher.close();
        assert_eq!(pusher.pop(NO_WAIT), Next::Job("a2"));
        assert_eq!(pusher.pop(Duration::from_secs(60)), Next::Closed);
    }
}
