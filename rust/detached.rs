//! Calls that run with the GIL released, counted, so that a call holding the GIL can tell when no
//! other fastmlp call can be writing to memory while it reads.

use std::sync::atomic::{AtomicUsize, Ordering};

use pyo3::prelude::*;

use crate::error::{catch_panic, FastmlpError};

/// fastmlp calls currently running with the GIL released.
static DETACHED_CALLS: AtomicUsize = AtomicUsize::new(0);

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
/// code of this library that can be running: the interpreter is built with a GIL, which
/// serialises Python threads, and no fastmlp call is running with the GIL released. Always
/// false on a free-threaded build: its GIL, even when switched on, can go off again (CPython
/// turns it on transiently around extension imports), so holding it proves nothing.
pub fn no_other_call_running(_py: Python<'_>) -> bool {
    !cfg!(Py_GIL_DISABLED) && DETACHED_CALLS.load(Ordering::Acquire) == 0
}

/// In a forked child: no detached call is running there (the forking thread is not inside
/// one, and the others do not exist), whatever the parent's count said.
pub fn reset_after_fork() {
    DETACHED_CALLS.store(0, Ordering::Release);
}

/// Runs `work` with the GIL released when `heavy`, catching any panic.
pub fn run_released<T: Send>(
    py: Python<'_>,
    heavy: bool,
    work: impl FnOnce() -> T + Send,
) -> Result<T, FastmlpError> {
    if heavy {
        run_detached(py, || catch_panic(work))
    } else {
        catch_panic(work)
    }
}
