//! Per-thread scratch buffers the kernels reuse from call to call instead of allocating.

use super::prefetch::Prefetch;

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

/// The part of `buffer` from its first element on a cache-line boundary: a buffer of one line
/// more than needed (`LINE_SLACK` bytes) always has one. Large buffers come from mmap 16 bytes
/// past a page boundary, and in them every vector load and store of a 64-byte vector straddles
/// two cache lines (3-4% of a 10,000-row pass, most of it in packing's stores).
pub fn from_cache_line<E>(buffer: &mut [E]) -> &mut [E] {
    let skip = buffer
        .as_ptr()
        .align_offset(Prefetch::CACHE_LINE)
        .min(buffer.len());
    &mut buffer[skip..]
}

/// Bytes of slack `from_cache_line` may skip: one cache line.
pub const LINE_SLACK: usize = Prefetch::CACHE_LINE;

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

#[cfg(test)]
mod tests {
    use super::{from_cache_line, LINE_SLACK};

    #[test]
    fn from_cache_line_starts_on_a_line_and_leaves_all_but_the_slack() {
        let mut backing = vec![0f32; 1000];
        for offset in 0..32 {
            let buffer = &mut backing[offset..offset + 900];
            let aligned = from_cache_line(buffer);
            assert_eq!(aligned.as_ptr() as usize % LINE_SLACK, 0, "offset {offset}");
            assert!(aligned.len() + LINE_SLACK / 4 >= 900, "offset {offset}");
        }
        let mut doubles = vec![0f64; 40];
        assert_eq!(
            from_cache_line(&mut doubles[1..]).as_ptr() as usize % LINE_SLACK,
            0
        );
    }
}
