//! Fork handlers: a child made by `fork()` while other threads ran fastmlp calls (a
//! `multiprocessing` pool, gunicorn, Dask's process workers) gets a usable thread pool and an
//! empty borrow table, instead of locks held forever by threads it does not have.
//!
//! As in tokenizers, `pthread_atfork` handlers run around every `fork()`: the forking thread
//! takes fastmlp's two locks before the fork (waiting for any call holding them, which
//! holds them only for microseconds), so the child starts with both tables consistent and
//! releases them itself; the parent releases them as before.

use std::cell::RefCell;
use std::sync::{MutexGuard, Once};

use crate::borrows;
use crate::threads;

type Held = (threads::PoolGuard, MutexGuard<'static, borrows::Registry>);

thread_local! {
    /// The locks the forking thread holds from `prepare` until `parent` or `child`.
    static HELD_ACROSS_FORK: RefCell<Option<Held>> = const { RefCell::new(None) };
}

extern "C" fn prepare() {
    // Always in this order (pool, then registry); no other code holds both.
    let held = (threads::lock_pool(), borrows::lock());
    HELD_ACROSS_FORK.with(|cell| *cell.borrow_mut() = Some(held));
}

extern "C" fn parent() {
    HELD_ACROSS_FORK.with(|cell| drop(cell.borrow_mut().take()));
}

extern "C" fn child() {
    HELD_ACROSS_FORK.with(|cell| {
        if let Some((mut pool, mut registry)) = cell.borrow_mut().take() {
            // The borrows belonged to calls running on threads the child does not have.
            registry.clear();
            threads::forget_inherited_pool(&mut pool);
        }
        crate::detached::reset_after_fork();
    });
}

/// Installs the handlers, once per process (a child inherits them).
pub fn install() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        #[cfg(unix)]
        {
            extern "C" {
                fn pthread_atfork(
                    prepare: Option<extern "C" fn()>,
                    parent: Option<extern "C" fn()>,
                    child: Option<extern "C" fn()>,
                ) -> std::ffi::c_int;
            }
            // SAFETY: the three handlers are plain `extern "C"` functions that live as long as
            // the process (this library is never unloaded: CPython does not unload extension
            // modules), and they take only fastmlp's own locks, which no handler of another
            // library can be holding.
            let status = unsafe { pthread_atfork(Some(prepare), Some(parent), Some(child)) };
            debug_assert_eq!(status, 0, "pthread_atfork failed");
        }
    });
}
