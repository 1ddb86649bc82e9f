//! Thread control: how many threads a call may use, and the fork-safe pool they run on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

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

static POOL: Mutex<Option<(u32, Arc<ThreadPool>)>> = Mutex::new(None);

/// Runs `work(part)` for every part in `0..parts` on up to `threads` threads: the calling thread
/// and `threads - 1` pool workers each take the next unclaimed part until none is left. The
/// caller works instead of sleeping (one wake-up fewer per call), and parts are claimed
/// dynamically, so a worker that starts late finds less to do. The call still returns only
/// once every spawned helper job has run (if only to find nothing left), so under many
/// concurrent callers it can wait for the pool to reach its jobs. A panic in any part reaches
/// the caller once every part has stopped.
pub fn run_parts(threads: usize, parts: usize, work: impl Fn(usize) + Sync) {
    if threads <= 1 || parts <= 1 {
        (0..parts).for_each(work);
        return;
    }
    let next = AtomicUsize::new(0);
    let take_parts = || loop {
        let part = next.fetch_add(1, Ordering::Relaxed);
        if part >= parts {
            break;
        }
        work(part);
    };
    pool().in_place_scope(|scope| {
        for _ in 1..threads.min(parts) {
            scope.spawn(|_| take_parts());
        }
        take_parts();
    });
}

/// The worker pool, one per process, with one thread fewer than the cores: the calling
/// thread is the last worker. A child made by `fork()` inherits the parent's pool object
/// but none of its threads, so a pool created by another process id is abandoned (leaked: its
/// threads do not exist here to be joined) and a fresh one built: multiprocessing users do not
/// deadlock. rayon's idle workers sleep after a brief spin rather than burning a core.
pub fn pool() -> Arc<ThreadPool> {
    let mut guard = POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let pid = std::process::id();
    if let Some((owner, pool)) = guard.as_ref() {
        if *owner == pid {
            return Arc::clone(pool);
        }
    }
    if let Some((_, inherited)) = guard.take() {
        std::mem::forget(inherited);
    }
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
