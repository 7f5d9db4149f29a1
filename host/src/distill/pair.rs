//! A second training thread that waits for work by spinning.
//!
//! Training splits each batch in two halves, one per core. Handing a half to
//! a sleeping thread-pool worker costs tens of microseconds on virtual
//! machines (the wake-up goes through the kernel; `rayon::join` of two
//! small closures measured ~40 µs on a 2-core VM), a large share of a
//! batch that takes a few hundred. This helper instead polls for its next
//! job while training runs, so a hand-off costs a cache-line transfer. It
//! yields its core while it waits, and naps after a millisecond without work
//! (validation between epochs), so it does not hold a core the rest of the
//! program needs for long.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

/// What the helper and the trainer exchange.
struct Slot<J, R> {
    job: Mutex<Option<J>>,
    result: Mutex<Option<Result<R, String>>>,
    has_job: AtomicBool,
    has_result: AtomicBool,
    stop: AtomicBool,
}

/// The helper thread: [`Pair::submit`] a job, do the other half, then
/// [`Pair::wait`] for its result. Dropping the pair stops the thread.
pub struct Pair<'scope, J, R> {
    slot: Arc<Slot<J, R>>,
    handle: Option<ScopedJoinHandle<'scope, ()>>,
}

/// Waits until `ready` holds: spins briefly, then yields, then naps.
fn wait_until(ready: impl Fn() -> bool) {
    let start = Instant::now();
    let mut spins = 0u32;
    while !ready() {
        if spins < 2_000 {
            std::hint::spin_loop();
            spins += 1;
        } else if start.elapsed() < Duration::from_millis(1) {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

impl<'scope, J: Send + 'scope, R: Send + 'scope> Pair<'scope, J, R> {
    /// Starts the helper in `scope`; it runs `work` on every submitted job.
    pub fn new<'env>(scope: &'scope Scope<'scope, 'env>, work: impl Fn(J) -> R + Send + 'scope) -> Pair<'scope, J, R> {
        let slot = Arc::new(Slot {
            job: Mutex::new(None),
            result: Mutex::new(None),
            has_job: AtomicBool::new(false),
            has_result: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let theirs = Arc::clone(&slot);
        let handle = scope.spawn(move || {
            let slot = &*theirs;
            loop {
                wait_until(|| slot.has_job.load(Ordering::Acquire) || slot.stop.load(Ordering::Acquire));
                if !slot.has_job.load(Ordering::Acquire) {
                    return;
                }
                let job = slot.job.lock().map(|mut j| j.take()).unwrap_or(None);
                slot.has_job.store(false, Ordering::Release);
                let result = match job {
                    Some(job) => catch_unwind(AssertUnwindSafe(|| work(job))).map_err(|e| panic_message(&e)),
                    None => Err("the job slot was empty".into()),
                };
                if let Ok(mut r) = slot.result.lock() {
                    *r = Some(result);
                }
                slot.has_result.store(true, Ordering::Release);
            }
        });
        Pair { slot, handle: Some(handle) }
    }

    /// Hands `job` to the helper.
    pub fn submit(&self, job: J) {
        if let Ok(mut j) = self.slot.job.lock() {
            *j = Some(job);
        }
        self.slot.has_job.store(true, Ordering::Release);
    }

    /// The result of the last submitted job. A panic in the helper is
    /// raised here, in the trainer's thread.
    pub fn wait(&self) -> R {
        // A helper that is gone (it never is while the pair lives, but a
        // bug must not hang training) ends the wait too.
        let gone = || self.handle.as_ref().is_none_or(|h| h.is_finished());
        wait_until(|| self.slot.has_result.load(Ordering::Acquire) || gone());
        if !self.slot.has_result.load(Ordering::Acquire) {
            panic!("training helper thread stopped without a result");
        }
        self.slot.has_result.store(false, Ordering::Release);
        let result = self.slot.result.lock().map(|mut r| r.take()).unwrap_or(None);
        match result {
            Some(Ok(r)) => r,
            Some(Err(message)) => panic!("training helper thread panicked: {message}"),
            None => panic!("training helper thread returned nothing"),
        }
    }
}

impl<J, R> Drop for Pair<'_, J, R> {
    fn drop(&mut self) {
        self.slot.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn panic_message(e: &Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| e.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_jobs_in_order_and_stops_when_dropped() {
        let data: Vec<u64> = (0..100).collect();
        let total = std::thread::scope(|s| {
            let pair = Pair::new(s, |range: std::ops::Range<usize>| data[range].iter().sum::<u64>());
            let mut total = 0;
            for k in 0..10 {
                pair.submit(k * 10..k * 10 + 5);
                let mine: u64 = data[k * 10 + 5..k * 10 + 10].iter().sum();
                total += mine + pair.wait();
            }
            total
        });
        assert_eq!(total, 4950);
    }

    #[test]
    fn a_panic_in_the_helper_reaches_the_caller() {
        let caught = std::panic::catch_unwind(|| {
            std::thread::scope(|s| {
                let pair = Pair::new(s, |x: u32| if x == 3 { panic!("bad job {x}") } else { x });
                assert_eq!(pair.wait_for(1), 1);
                pair.wait_for(3)
            })
        });
        let message = panic_message(&caught.unwrap_err());
        assert!(message.contains("bad job 3"), "{message}");
    }

    impl<'scope, J: Send + 'scope, R: Send + 'scope> Pair<'scope, J, R> {
        fn wait_for(&self, job: J) -> R {
            self.submit(job);
            self.wait()
        }
    }
}
