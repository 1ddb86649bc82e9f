//! Thread control: how many threads a call may use, and the fork-safe pool they run on.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use rayon::{ThreadPool, ThreadPoolBuilder};

/// 0 means "not set": use `FASTMLP_NUM_THREADS` or the available cores.
static REQUESTED: AtomicUsize = AtomicUsize::new(0);

/// Cores this process may run on (respects affinity masks and cgroup quotas).
pub fn available_cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn env_threads() -> Option<usize> {
    static FROM_ENV: OnceLock<Option<usize>> = OnceLock::new();
    *FROM_ENV.get_or_init(|| {
        std::env::var("FASTMLP_NUM_THREADS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&n| n > 0)
    })
}

/// The default thread count for calls that do not pass `threads=`.
pub fn default_threads() -> usize {
    match REQUESTED.load(Ordering::Relaxed) {
        0 => env_threads().unwrap_or_else(available_cores),
        n => n,
    }
}

/// Sets the default thread count; 0 returns to `FASTMLP_NUM_THREADS` or the available cores.
pub fn set_default_threads(threads: usize) {
    REQUESTED.store(threads, Ordering::Relaxed);
}

/// Threads one call will use: what it asked for (or the default), never more than the pool has,
/// so concurrent callers share the pool's workers instead of oversubscribing the cores.
pub fn effective_threads(requested: Option<usize>) -> usize {
    requested
        .unwrap_or_else(default_threads)
        .clamp(1, available_cores())
}

/// The pool, with the id of the process that built it.
type PoolSlot = Option<(u32, Arc<ThreadPool>)>;

static POOL: Mutex<PoolSlot> = Mutex::new(None);

/// The pool's slot, locked; `crate::fork` holds it across `fork()`.
pub type PoolGuard = MutexGuard<'static, PoolSlot>;

/// Locks the pool's slot (a panic while it was held cannot leave it half-written: it is
/// replaced whole).
pub fn lock_pool() -> PoolGuard {
    POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// In a forked child: drops the parent's pool from the slot without running its destructor,
/// which would wait for worker threads that the child does not have. The next split call
/// builds a new pool.
pub fn forget_inherited_pool(slot: &mut PoolGuard) {
    if let Some((_, inherited)) = slot.take() {
        std::mem::forget(inherited);
    }
}

/// Runs `work(part)` for every part in `0..parts` on up to `threads` threads: the calling thread
/// and `threads - 1` pool helpers each take the next unclaimed part until none is left. The
/// caller works instead of sleeping, and parts are claimed dynamically, so a helper that wakes
/// late (a sleeping vCPU can take tens of microseconds) finds less to do. A helper that has not
/// started by the time the caller runs out of parts is cancelled rather than waited for, and
/// the caller waits for running helpers by spinning briefly before it sleeps, so a short call
/// pays no wake-up at its end. A panic in any part reaches the caller once every part has
/// stopped.
pub fn run_parts(threads: usize, parts: usize, work: impl Fn(usize) + Sync) {
    let helpers = threads.min(parts).saturating_sub(1);
    if helpers == 0 {
        (0..parts).for_each(work);
        return;
    }
    let work: *const (dyn Fn(usize) + Sync + '_) = &work;
    // SAFETY: only the pointer's lifetime bound changes (same layout); `SharedCall::work` says
    // when it may be called.
    let work = unsafe {
        std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), *const (dyn Fn(usize) + Sync)>(
            work,
        )
    };
    let call = Arc::new(SharedCall {
        work,
        parts,
        next_part: AtomicUsize::new(0),
        helper_states: (0..helpers).map(|_| AtomicU8::new(PENDING)).collect(),
        first_panic: Mutex::new(None),
        caller: std::thread::current(),
    });
    // Created before the first helper exists: however this function is left, the guard's drop
    // cancels every helper that has not started and waits for every one that has.
    let helpers_finished = FinishHelpers(&call);
    let pool = pool();
    for helper in 0..helpers {
        let call = Arc::clone(&call);
        pool.spawn(move || call.run_as_helper(helper));
    }
    call.take_parts();
    drop(helpers_finished);
    let panic = call
        .first_panic
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take();
    if let Some(payload) = panic {
        std::panic::resume_unwind(payload);
    }
}

const PENDING: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;
const CANCELLED: u8 = 3;

/// How long a caller that ran out of parts spins for a running helper before it sleeps: about
/// one part of a large call. Sleeping costs a wake-up of tens of microseconds on a VM.
const SPIN_BEFORE_SLEEP: Duration = Duration::from_micros(500);

/// One `run_parts` call, shared with its helper jobs.
struct SharedCall {
    /// The caller's closure, its lifetime erased so that pool jobs can hold it: only the caller
    /// and helpers that won `PENDING -> RUNNING` call it, and the caller does not leave
    /// `run_parts` while any helper is RUNNING (`FinishHelpers`).
    work: *const (dyn Fn(usize) + Sync),
    parts: usize,
    next_part: AtomicUsize,
    /// PENDING until a helper starts (RUNNING) or the caller cancels it; RUNNING until DONE.
    helper_states: Vec<AtomicU8>,
    first_panic: Mutex<Option<Box<dyn Any + Send>>>,
    caller: Thread,
}

// SAFETY: `work` points to a `Sync` closure and is only called under the protocol above; every
// other field is Send and Sync.
unsafe impl Send for SharedCall {}
// SAFETY: as for `Send`.
unsafe impl Sync for SharedCall {}

impl SharedCall {
    /// Runs parts until none is left, keeping the first panic for the caller. Must only be
    /// called by the caller of `run_parts` or by a helper in state RUNNING.
    fn take_parts(&self) {
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| loop {
            let part = self.next_part.fetch_add(1, Ordering::Relaxed);
            if part >= self.parts {
                break;
            }
            // SAFETY: the closure is alive: this is the caller, inside `run_parts`, or a RUNNING
            // helper, which `run_parts` waits for before it returns or unwinds.
            unsafe { (*self.work)(part) };
        }));
        if let Err(payload) = result {
            // Stop the others early: the call fails anyway.
            self.next_part.store(self.parts, Ordering::Relaxed);
            let mut first = self
                .first_panic
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if first.is_none() {
                *first = Some(payload);
            } else {
                // A later panic's payload is leaked, not dropped: its destructor could panic
                // in turn and unwind out of here.
                std::mem::forget(payload);
            }
        }
    }

    fn run_as_helper(&self, helper: usize) {
        let state = &self.helper_states[helper];
        if state
            .compare_exchange(PENDING, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return; // cancelled: the caller may have returned and `work` may be gone
        }
        self.take_parts();
        state.store(DONE, Ordering::Release);
        self.caller.unpark();
    }
}

/// Cancels, on drop, the helpers that have not started, then waits for the running ones.
struct FinishHelpers<'a>(&'a SharedCall);

impl Drop for FinishHelpers<'_> {
    fn drop(&mut self) {
        let states = &self.0.helper_states;
        let mut running = Vec::with_capacity(states.len());
        for state in states {
            if state
                .compare_exchange(PENDING, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                running.push(state);
            }
        }
        let start = Instant::now();
        for state in running {
            while state.load(Ordering::Acquire) != DONE {
                if start.elapsed() < SPIN_BEFORE_SLEEP {
                    for _ in 0..64 {
                        std::hint::spin_loop();
                    }
                } else {
                    // The helper stores DONE before it unparks us, and the state is read again
                    // after every wake-up, spurious or not.
                    std::thread::park();
                }
            }
        }
    }
}

/// The worker pool, one per process, with one thread fewer than the cores: the calling
/// thread is the last worker. A child made by `fork()` inherits the parent's pool object
/// but none of its threads, so a pool created by another process id is abandoned (leaked: its
/// threads do not exist here to be joined) and a fresh one built: multiprocessing users do not
/// deadlock. rayon's idle workers sleep after a brief spin rather than burning a core.
pub fn pool() -> Arc<ThreadPool> {
    let mut guard = lock_pool();
    let pid = std::process::id();
    if let Some((owner, pool)) = guard.as_ref() {
        if *owner == pid {
            return Arc::clone(pool);
        }
    }
    // A child forked without the fork handlers (the rlib used from Rust) still gets its own
    // pool; with them, the slot is already empty here.
    forget_inherited_pool(&mut guard);
    let pool = Arc::new(
        ThreadPoolBuilder::new()
            .num_threads(available_cores().saturating_sub(1).max(1))
            .thread_name(|index| format!("fastmlp-{index}"))
            .build()
            .unwrap_or_else(|_| {
                ThreadPoolBuilder::new()
                    .num_threads(1)
                    .build()
                    .expect("a one-thread pool can always be built")
            }),
    );
    *guard = Some((pid, Arc::clone(&pool)));
    pool
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn counts_after(threads: usize, parts: usize) -> Vec<u32> {
        let counts: Vec<AtomicU32> = (0..parts).map(|_| AtomicU32::new(0)).collect();
        run_parts(threads, parts, |part| {
            counts[part].fetch_add(1, Ordering::Relaxed);
        });
        counts.into_iter().map(AtomicU32::into_inner).collect()
    }

    #[test]
    fn every_part_runs_exactly_once() {
        for threads in [1, 2, 3, 8] {
            for parts in [0, 1, 2, 3, 7, 64] {
                assert!(
                    counts_after(threads, parts).iter().all(|&c| c == 1),
                    "threads {threads}, parts {parts}"
                );
            }
        }
    }

    #[test]
    fn slow_parts_finish_before_the_call_returns() {
        // Parts far longer than the spin budget: whoever runs them, all are done on return.
        let finished = AtomicU32::new(0);
        run_parts(2, 4, |_| {
            std::thread::sleep(Duration::from_millis(2));
            finished.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(finished.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn concurrent_callers_all_complete() {
        // More callers than pool workers: pending helpers get cancelled, nobody waits forever.
        std::thread::scope(|scope| {
            for _ in 0..6 {
                scope.spawn(|| {
                    for _ in 0..200 {
                        assert!(counts_after(2, 5).iter().all(|&c| c == 1));
                    }
                });
            }
        });
    }

    #[test]
    fn a_panicking_part_reaches_the_caller_after_the_others_stop() {
        let running = AtomicU32::new(0);
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            run_parts(2, 16, |part| {
                running.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_micros(200));
                running.fetch_sub(1, Ordering::SeqCst);
                if part == 3 {
                    panic!("part three failed");
                }
            })
        }));
        let payload = result.expect_err("the panic must reach the caller");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"part three failed"));
        assert_eq!(
            running.load(Ordering::SeqCst),
            0,
            "a part was still running"
        );
    }
}
