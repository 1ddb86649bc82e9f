//! Per-thread scratch buffers the kernels reuse from call to call instead of allocating.

macro_rules! thread_scratch {
    ($vis:vis $name:ident, $e:ty) => {
        thread_local! {
            $vis static $name: std::cell::Cell<Vec<$e>> = const { std::cell::Cell::new(Vec::new()) };
        }
    };
}
thread_scratch!(pub(super) SCRATCH_F32, f32);
thread_scratch!(pub(super) SCRATCH_F64, f64);
thread_scratch!(SCRATCH_INDICES, u32);

/// The calling thread's index buffer of at least `len` entries; give it back with
/// `return_index_scratch`.
pub fn take_index_scratch(len: usize) -> Vec<u32> {
    take_thread_scratch(&SCRATCH_INDICES, len)
}

/// Gives the buffer from `take_index_scratch` back for the thread's next call.
pub fn return_index_scratch(buffer: Vec<u32>) {
    SCRATCH_INDICES.with(|cell| cell.set(buffer));
}

/// Takes the thread's buffer (a nested taker finds it empty and allocates its own) and grows it
/// to `len` if needed.
pub(super) fn take_thread_scratch<E: Copy + Default>(
    slot: &'static std::thread::LocalKey<std::cell::Cell<Vec<E>>>,
    len: usize,
) -> Vec<E> {
    let mut buffer = slot.with(|cell| cell.take());
    if buffer.len() < len {
        buffer.resize(len, E::default());
    }
    buffer
}
