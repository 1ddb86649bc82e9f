//! Calls that run with the GIL released, counted, so that a call holding the GIL can tell when no
//! other fastmlp call can be writing to memory while it reads.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use pyo3::prelude::*;

/// fastmlp calls currently running with the GIL released.
static DETACHED_CALLS: AtomicUsize = AtomicUsize::new(0);

/// Whether this interpreter runs Python threads one at a time (it has a GIL and uses it). Set
/// once at import; false until then, which only costs the faster path.
static GIL_SERIALISES: AtomicBool = AtomicBool::new(false);

/// Records whether the GIL serialises Python threads. `sys._is_gil_enabled` exists from 3.13 on;
/// before it, there is always a GIL. A free-threaded build may turn its GIL on later (when an
/// extension without free-threading support is imported) but never off again, so an answer of
/// true stays true.
pub fn record_gil_state(py: Python<'_>) -> PyResult<()> {
    let sys = py.import("sys")?;
    let enabled = match sys.getattr("_is_gil_enabled") {
        Ok(is_gil_enabled) => is_gil_enabled.call0()?.is_truthy()?,
        Err(_) => true,
    };
    GIL_SERIALISES.store(enabled, Ordering::Release);
    Ok(())
}

/// Runs `work` with the GIL released, counted as detached for as long as it runs.
pub fn run_detached<T: Send>(py: Python<'_>, work: impl FnOnce() -> T + Send) -> T {
    struct Count;
    impl Drop for Count {
        fn drop(&mut self) {
            DETACHED_CALLS.fetch_sub(1, Ordering::Release);
        }
    }
    // Counted while the GIL is still held: a caller that holds the GIL and sees zero knows no
    // detached call can start until it lets the GIL go.
    DETACHED_CALLS.fetch_add(1, Ordering::AcqRel);
    let _count = Count;
    py.detach(work)
}

/// True when the caller, which holds the GIL (`_py`) and keeps it until it is done, is the only
/// code of this library that can be running: the GIL serialises Python threads here, and no
/// fastmlp call is running with the GIL released.
pub fn no_other_call_running(_py: Python<'_>) -> bool {
    GIL_SERIALISES.load(Ordering::Acquire) && DETACHED_CALLS.load(Ordering::Acquire) == 0
}
