//! The threads that forward connections, kept a while once done so that a
//! new connection does not pay for a new thread.

use super::relay::Job;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Threads that forward connections, kept a while once done so that a
/// new connection does not pay for a new thread.
pub(super) struct Workers {
    tx: Mutex<std::sync::mpsc::Sender<Job>>,
    rx: Arc<Mutex<std::sync::mpsc::Receiver<Job>>>,
    /// Workers waiting for a job and not yet promised one.
    idle: Arc<AtomicUsize>,
}

/// How long a worker waits for another connection before it ends.
const WORKER_IDLE: Duration = Duration::from_secs(30);

impl Workers {
    pub(super) fn new() -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        Workers {
            tx: Mutex::new(tx),
            rx: Arc::new(Mutex::new(rx)),
            idle: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Run `job` on a waiting worker, or on a new one; false when neither
    /// can be had.
    pub(super) fn run(&self, job: Job) -> bool {
        let take = |n: usize| n.checked_sub(1);
        if self
            .idle
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, take)
            .is_ok()
        {
            // A worker is promised: it takes the job from the channel.
            if let Ok(tx) = self.tx.lock() {
                if tx.send(job).is_ok() {
                    return true;
                }
            }
            return false;
        }
        let (rx, idle) = (self.rx.clone(), self.idle.clone());
        std::thread::Builder::new()
            .name("sbox-forward".into())
            .spawn(move || worker(job, &rx, &idle))
            .is_ok()
    }
}

fn worker(first: Job, rx: &Mutex<std::sync::mpsc::Receiver<Job>>, idle: &AtomicUsize) {
    use std::sync::mpsc::RecvTimeoutError;
    first();
    loop {
        idle.fetch_add(1, Ordering::SeqCst);
        loop {
            let got = match rx.lock() {
                Ok(r) => r.recv_timeout(WORKER_IDLE),
                Err(_) => return,
            };
            match got {
                Ok(job) => {
                    job();
                    break;
                }
                // Leave unless a job was promised to a waiting worker
                // meanwhile (then it is on its way: wait for it).
                Err(RecvTimeoutError::Timeout) => {
                    let take = |n: usize| n.checked_sub(1);
                    if idle
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, take)
                        .is_ok()
                    {
                        return;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}
