//! Which array memory running fastmlp calls read and write: a call refuses memory another call
//! is writing (or writes memory another call reads), instead of reading it half-written.
//!
//! fastmlp keeps this table itself rather than using rust-numpy's shared borrow table, because
//! a process forked while other threads held borrows there keeps them forever in the child
//! (its threads are gone, so nothing releases them), and its lock can be left held. This table
//! is emptied in a forked child (`crate::fork`). Only fastmlp's own calls register here; as
//! before, native code of other libraries writing without the GIL is not seen.

use std::ops::Range;
use std::sync::{Mutex, MutexGuard};

use numpy::npyffi::NPY_ARRAY_WRITEABLE;
use numpy::{Element, PyArray, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::prelude::*;

/// The byte ranges borrowed by running calls, with who may write them.
pub struct Registry {
    next_id: u64,
    entries: Vec<Entry>,
}

struct Entry {
    id: u64,
    bytes: Range<usize>,
    write: bool,
}

pub static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    next_id: 0,
    entries: Vec::new(),
});

/// The registry, locked (a panic while it was held cannot leave it inconsistent: every
/// change is one push or one retain).
pub fn lock() -> MutexGuard<'static, Registry> {
    REGISTRY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Registry {
    /// Forgets every borrow: in a forked child, the calls that held them do not exist.
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

/// One registered borrow; dropping it ends the borrow.
pub struct Borrow {
    id: Option<u64>,
}

impl Drop for Borrow {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            lock().entries.retain(|entry| entry.id != id);
        }
    }
}

/// Registers `bytes` for reading (or writing), unless it overlaps memory another borrow writes
/// (or, for writing, any borrowed memory). An empty range conflicts with nothing.
fn register(bytes: Range<usize>, write: bool) -> Option<Borrow> {
    if bytes.is_empty() {
        return Some(Borrow { id: None });
    }
    let mut registry = lock();
    let conflict = registry.entries.iter().any(|entry| {
        (write || entry.write) && entry.bytes.start < bytes.end && bytes.start < entry.bytes.end
    });
    if conflict {
        return None;
    }
    let id = registry.next_id;
    registry.next_id += 1;
    registry.entries.push(Entry { id, bytes, write });
    Some(Borrow { id: Some(id) })
}

/// Why an array cannot be borrowed.
pub enum Refusal {
    NotContiguous,
    ReadOnly,
    InUse,
}

fn byte_range<T: Element, D>(array: &Bound<'_, PyArray<T, D>>) -> Range<usize> {
    let start = array.data() as usize;
    start..start + array.len() * std::mem::size_of::<T>()
}

/// `array`'s elements for reading while the returned borrow lives.
///
/// # Safety
/// The slice must not be used after the returned `Borrow` is dropped (its lifetime is tied to
/// `array`, not to the borrow).
pub unsafe fn read<'a, T: Element, D: ndarray::Dimension>(
    array: &'a Bound<'_, PyArray<T, D>>,
) -> Result<(Borrow, &'a [T]), Refusal> {
    if !array.is_c_contiguous() {
        return Err(Refusal::NotContiguous);
    }
    let borrow = register(byte_range(array), false).ok_or(Refusal::InUse)?;
    // SAFETY: the array is C-contiguous (checked), so its `len()` elements lie at `data()`; no
    // fastmlp call writes them while `borrow` lives (the registry refused any that would, and
    // the caller keeps `borrow` for as long as it uses the slice). Python code on this thread
    // (a signal handler between slices of a long call) or native code of other libraries could
    // still write them, as under any NumPy extension; the README says so.
    let slice = unsafe { array.as_slice() }.map_err(|_| Refusal::NotContiguous)?;
    Ok((borrow, slice))
}

/// `array`'s elements for writing while the returned borrow lives.
///
/// # Safety
/// As for `read`: the slice must not be used after the returned `Borrow` is dropped.
// The registry, not the borrow checker, makes the slice the only one (as rust-numpy's own
// `as_slice_mut(&self)`), which is why this is an `unsafe fn`.
#[allow(clippy::mut_from_ref)]
pub unsafe fn write<'a, T: Element, D: ndarray::Dimension>(
    array: &'a Bound<'_, PyArray<T, D>>,
) -> Result<(Borrow, &'a mut [T]), Refusal> {
    if !array.is_c_contiguous() {
        return Err(Refusal::NotContiguous);
    }
    // SAFETY: `as_array_ptr` points at the live array object `array` holds a reference to, and
    // the thread is attached to the interpreter (`array` is a `Bound`).
    let flags = unsafe { (*array.as_array_ptr()).fields.flags };
    if flags & NPY_ARRAY_WRITEABLE == 0 {
        return Err(Refusal::ReadOnly);
    }
    let borrow = register(byte_range(array), true).ok_or(Refusal::InUse)?;
    // SAFETY: as in `read`, and no other fastmlp call reads or writes these bytes while
    // `borrow` lives, so this is the only reference to them from Rust.
    let slice = unsafe { array.as_slice_mut() }.map_err(|_| Refusal::NotContiguous)?;
    Ok((borrow, slice))
}
