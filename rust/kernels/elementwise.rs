//! Array kernels outside a model: element-wise activations over flat buffers, and softmax /
//! log-softmax along one axis of a C-contiguous array viewed as `[outer][len][inner]`.

use std::sync::Mutex;

use super::dispatch::{DispatchElement, Level, SimdTask};
use super::math::{
    apply_elementwise, apply_elementwise_to, exp_nonpositive, softmax_vertical, Activation,
    CompensatedSum, ExpConstants, RENORMALIZE_EVERY,
};
use super::simd::{Element, Simd};
use crate::threads;

/// Elements per parallel task of an element-wise activation: large enough (hundreds of
/// microseconds) to amortise a wake-up.
pub const ELEMENTS_PER_TASK: usize = 1 << 18;

/// Elements per parallel task of a softmax, whose element costs several times a sigmoid's (a
/// max, an exp, a sum and a division; short rows also gather and scatter through scratch): a
/// (10000, 10) float32 softmax, 100k elements, took about 230 us on one Zen 3 core, so a task
/// of 2^15 elements is some 75 us, and a helper that wakes late no longer delays the call
/// (`threads::run_parts`).
pub const SOFTMAX_ELEMENTS_PER_TASK: usize = 1 << 15;

/// Source of a kernel: a separate input, or the output buffer itself (in place).
#[derive(Clone, Copy)]
pub enum Source<'a, E> {
    Slice(&'a [E]),
    InPlace,
}

/// `dst = act(src)` element-wise (`src` defaults to `dst` itself).
pub fn map_elementwise<E: DispatchElement>(
    level: Level,
    activation: Activation,
    src: Source<'_, E>,
    dst: &mut [E],
    threads: usize,
) {
    if let Source::Slice(src) = src {
        assert_eq!(src.len(), dst.len());
    }
    let tasks = threads.min(dst.len() / ELEMENTS_PER_TASK).max(1);
    if tasks == 1 {
        E::dispatch(
            level,
            ElementwiseTask {
                activation,
                src,
                dst,
            },
        );
        return;
    }
    let per_task = dst.len().div_ceil(tasks * 4);
    let parts = split_parts(dst, per_task);
    threads::run_parts(tasks, parts.len(), |index| {
        if let Some((first, part)) = take_part(&parts, index) {
            let src = match src {
                Source::Slice(s) => Source::Slice(&s[first..first + part.len()]),
                Source::InPlace => Source::InPlace,
            };
            let task = ElementwiseTask {
                activation,
                src,
                dst: part,
            };
            E::dispatch(level, task);
        }
    });
}

struct ElementwiseTask<'a, E> {
    activation: Activation,
    src: Source<'a, E>,
    dst: &'a mut [E],
}

impl<E: DispatchElement> SimdTask<E> for ElementwiseTask<'_, E> {
    type Output = ();

    #[inline(always)]
    fn run<S: Simd<Elem = E>>(self, s: S) {
        let lanes = S::LANES;
        let n = self.dst.len();
        let full = n - n % lanes;
        let dst = self.dst.as_mut_ptr();
        let src: *const E = match self.src {
            Source::Slice(src) => src.as_ptr(),
            Source::InPlace => dst,
        };
        // SAFETY: `dst` has n >= full elements, and a separate `src` has n too (asserted by
        // `map_elementwise`) and cannot overlap `dst` (a shared borrow beside a mutable one);
        // in place, `src` is `dst`, which `apply_elementwise_to` allows.
        unsafe { apply_elementwise_to(s, self.activation, src, dst, full / lanes, E::MIN_NORMAL) };
        let floor = s.splat(E::MIN_NORMAL);
        if full < n {
            let mut tail = [E::ZERO; 16];
            // SAFETY: elements full..n exist in both buffers.
            unsafe { std::ptr::copy(src.add(full), tail.as_mut_ptr(), n - full) };
            // SAFETY: `tail` holds 16 >= LANES elements.
            unsafe {
                s.store(
                    tail.as_mut_ptr(),
                    apply_elementwise(s, self.activation, s.load(tail.as_ptr()), floor),
                )
            };
            self.dst[full..].copy_from_slice(&tail[..n - full]);
        }
    }
}

/// Softmax (or log-softmax) along the middle axis of a C-contiguous `[outer][len][inner]` array.
#[allow(clippy::too_many_arguments)]
pub fn softmax_axis<E: DispatchElement>(
    level: Level,
    src: Source<'_, E>,
    dst: &mut [E],
    outer: usize,
    len: usize,
    inner: usize,
    log: bool,
    threads: usize,
) {
    assert_eq!(dst.len(), outer * len * inner);
    if let Source::Slice(src) = src {
        assert_eq!(src.len(), dst.len());
    }
    let block = len * inner;
    let tasks = threads
        .min(dst.len() / SOFTMAX_ELEMENTS_PER_TASK)
        .min(outer)
        .max(1);
    if tasks == 1 || block == 0 {
        E::dispatch(
            level,
            SoftmaxTask {
                src,
                dst,
                outer,
                len,
                inner,
                log,
            },
        );
        return;
    }
    let outer_per_task = outer.div_ceil(tasks * 4);
    let parts = split_parts(dst, outer_per_task * block);
    threads::run_parts(tasks, parts.len(), |index| {
        if let Some((first, part)) = take_part(&parts, index) {
            let src = match src {
                Source::Slice(s) => Source::Slice(&s[first..first + part.len()]),
                Source::InPlace => Source::InPlace,
            };
            let outer = part.len() / block;
            let task = SoftmaxTask {
                src,
                dst: part,
                outer,
                len,
                inner,
                log,
            };
            E::dispatch(level, task);
        }
    });
}

type Parts<'a, E> = Vec<Mutex<Option<(usize, &'a mut [E])>>>;

/// `dst` cut into pieces of `size` elements, each with its offset, claimable once.
fn split_parts<E>(dst: &mut [E], size: usize) -> Parts<'_, E> {
    dst.chunks_mut(size.max(1))
        .enumerate()
        .map(|(index, part)| Mutex::new(Some((index * size.max(1), part))))
        .collect()
}

fn take_part<'a, E>(parts: &Parts<'a, E>, index: usize) -> Option<(usize, &'a mut [E])> {
    parts[index].lock().ok().and_then(|mut slot| slot.take())
}

/// Rows at most this long are transposed a vector of rows at a time and reduced vertically;
/// longer rows are reduced along their length, a vector at a time.
const SHORT_ROW: usize = 32;

struct SoftmaxTask<'a, E> {
    src: Source<'a, E>,
    dst: &'a mut [E],
    outer: usize,
    len: usize,
    inner: usize,
    log: bool,
}

impl<E: DispatchElement> SimdTask<E> for SoftmaxTask<'_, E> {
    type Output = ();

    #[inline(always)]
    fn run<S: Simd<Elem = E>>(self, s: S) {
        let SoftmaxTask {
            src,
            dst,
            outer,
            len,
            inner,
            log,
        } = self;
        if len == 0 || dst.is_empty() {
            return;
        }
        let lanes = S::LANES;
        let dst_ptr = dst.as_mut_ptr();
        let src_ptr: *const E = match src {
            Source::Slice(src) => src.as_ptr(),
            Source::InPlace => dst_ptr,
        };
        let mut scratch = vec![E::ZERO; len * lanes];
        if inner == 1 {
            if len <= SHORT_ROW {
                let mut starts = Vec::with_capacity(lanes);
                for first in (0..outer).step_by(lanes) {
                    starts.clear();
                    starts.extend((first..(first + lanes).min(outer)).map(|row| row * len));
                    // SAFETY: each start is a row of this array, whose `len` elements are at step 1.
                    unsafe {
                        softmax_through_scratch(
                            s,
                            src_ptr,
                            dst_ptr,
                            &starts,
                            1,
                            len,
                            &mut scratch,
                            log,
                        )
                    };
                }
            } else {
                for row in 0..outer {
                    // SAFETY: row < outer, so `row * len .. + len` lies inside both buffers.
                    unsafe {
                        softmax_row(s, src_ptr.add(row * len), dst_ptr.add(row * len), len, log)
                    };
                }
            }
            return;
        }
        let full = inner - inner % lanes;
        let mut starts = Vec::with_capacity(lanes);
        for o in 0..outer {
            let plane = o * len * inner;
            for v in (0..full).step_by(lanes) {
                // SAFETY: vector j of this column block is at `plane + v + j * inner`, with
                // v + lanes <= inner and j < len: inside the `[outer][len][inner]` array.
                unsafe {
                    softmax_vertical(
                        s,
                        src_ptr.add(plane + v),
                        dst_ptr.add(plane + v),
                        len,
                        inner,
                        log,
                        E::MIN_NORMAL,
                    )
                };
            }
            if full < inner {
                starts.clear();
                starts.extend((full..inner).map(|i| plane + i));
                // SAFETY: each start is a column of this plane, its `len` elements `inner` apart.
                unsafe {
                    softmax_through_scratch(
                        s,
                        src_ptr,
                        dst_ptr,
                        &starts,
                        inner,
                        len,
                        &mut scratch,
                        log,
                    )
                };
            }
        }
    }
}

/// Gathers up to `LANES` strided lines (one per lane) into `scratch`, runs the vertical softmax
/// there, and scatters them back. A named `inline(always)` function, not a closure: a closure
/// would be compiled outside the caller's target features (perf found this path 20x slower).
///
/// # Safety
/// For every `start` in `starts` and `j < len`, `start + j * step` must index an element of
/// both `src` and `dst`; `scratch` must hold `len * LANES` elements; `starts.len() <= LANES`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn softmax_through_scratch<S: Simd>(
    s: S,
    src: *const S::Elem,
    dst: *mut S::Elem,
    starts: &[usize],
    step: usize,
    len: usize,
    scratch: &mut [S::Elem],
    log: bool,
) where
    S::Elem: ExpConstants,
{
    let lanes = S::LANES;
    assert!(starts.len() <= lanes && scratch.len() >= len * lanes);
    for j in 0..len {
        for (lane, &start) in starts.iter().enumerate() {
            // SAFETY: the caller guarantees this element exists.
            scratch[j * lanes + lane] = unsafe { *src.add(start + j * step) };
        }
    }
    let base = scratch.as_mut_ptr();
    // SAFETY: `scratch` holds `len * lanes` elements, vector j at `j * lanes`.
    unsafe { softmax_vertical(s, base, base, len, lanes, log, S::Elem::MIN_NORMAL) };
    for j in 0..len {
        for (lane, &start) in starts.iter().enumerate() {
            // SAFETY: as for the gather above.
            unsafe { *dst.add(start + j * step) = scratch[j * lanes + lane] };
        }
    }
}

/// The lanes of `v` folded with `combine`, in lane order.
#[inline(always)]
fn fold_lanes<S: Simd>(s: S, v: S::V, combine: impl Fn(S::Elem, S::Elem) -> S::Elem) -> S::Elem {
    let mut lane_values = [S::Elem::ZERO; 16];
    // SAFETY: `lane_values` holds 16 >= LANES elements.
    unsafe { s.store(lane_values.as_mut_ptr(), v) };
    lane_values[1..S::LANES]
        .iter()
        .fold(lane_values[0], |a, &b| combine(a, b))
}

/// The lanes of a compensated sum added up in lane order, their rounding errors carried as the
/// lanes carried theirs (a plain fold of 16 lanes could lose 8 ulp again).
#[inline(always)]
fn fold_compensated<S: Simd>(s: S, terms: CompensatedSum<S::V>) -> S::Elem {
    debug_assert!(S::LANES <= 16);
    let mut sums = [S::Elem::ZERO; 16];
    let mut errors = [S::Elem::ZERO; 16];
    // SAFETY: both arrays hold 16 >= LANES elements.
    unsafe {
        s.store(sums.as_mut_ptr(), terms.sum);
        s.store(errors.as_mut_ptr(), terms.error);
    }
    let mut total = S::Elem::ZERO;
    let mut error = S::Elem::ZERO;
    for (&x, &lane_error) in sums.iter().zip(&errors).take(S::LANES) {
        let next = total + x;
        let x_part = next - total;
        error = error + ((total - (next - x_part)) + (x - x_part)) + lane_error;
        total = next;
    }
    total + error
}

/// Softmax of one contiguous row, reduced along its length.
///
/// # Safety
/// `src` and `dst` must be valid for `len` elements (they may be equal).
#[inline(always)]
unsafe fn softmax_row<S: Simd>(s: S, src: *const S::Elem, dst: *mut S::Elem, len: usize, log: bool)
where
    S::Elem: ExpConstants,
{
    let lanes = S::LANES;
    let full = len - len % lanes;
    let neg_inf = S::Elem::NEG_INFINITY;
    // The tail goes through a vector padded with -inf, whose exp adds exactly 0 to the sum.
    let mut tail = [neg_inf; 16];
    // SAFETY: elements full..len exist; `tail` holds 16 >= LANES elements.
    unsafe { std::ptr::copy(src.add(full), tail.as_mut_ptr(), len - full) };
    let max_of = |a: S::Elem, b: S::Elem| if a > b { a } else { b };

    let min_normal = s.splat(S::Elem::MIN_NORMAL);
    let negligible = s.splat(S::Elem::NEGLIGIBLE);
    // SAFETY: (whole body) vector loads/stores at i < full with i + lanes <= full <= len.
    unsafe {
        // Subnormal inputs are read as zero, as in `softmax_vertical`. A macro, not a closure:
        // a closure would be compiled outside the caller's target features.
        macro_rules! load {
            ($p:expr) => {
                s.flush_below(s.load($p), min_normal)
            };
        }
        let mut max_v = load!(tail.as_ptr());
        for i in (0..full).step_by(lanes) {
            max_v = s.max(max_v, load!(src.add(i)));
        }
        let max = fold_lanes(s, max_v, max_of);
        let max_s = s.splat(max);
        macro_rules! shifted {
            ($p:expr) => {
                s.flush_below(s.sub(load!($p), max_s), min_normal)
            };
        }
        let mut terms = CompensatedSum::zero(s);
        let tail_e = exp_nonpositive(s, shifted!(tail.as_ptr()));
        terms.add(s, s.flush_below(tail_e, negligible));
        // Blocks of a few vectors are summed plainly and each block's sum added with
        // compensation: a block loses at most 1.5 ulp of itself, and the compensated adds
        // cost a quarter of what they would per vector (a long row's softmax was 24% slower).
        // Terms below NEGLIGIBLE stay out of the sum (at least 1), as in `softmax_vertical`.
        let block_len = 4 * lanes;
        for (block, block_start) in (0..full).step_by(block_len).enumerate() {
            let mut block_sum = s.splat(S::Elem::ZERO);
            for i in (block_start..(block_start + block_len).min(full)).step_by(lanes) {
                let e = exp_nonpositive(s, shifted!(src.add(i)));
                if !log {
                    s.store(dst.add(i), e);
                }
                block_sum = s.add(block_sum, s.flush_below(e, negligible));
            }
            terms.add(s, block_sum);
            if block % RENORMALIZE_EVERY == RENORMALIZE_EVERY - 1 {
                terms.renormalize(s);
            }
        }
        let sum = fold_compensated(s, terms);
        if log {
            let log_sum = s.splat(sum.ln());
            for i in (0..full).step_by(lanes) {
                s.store(dst.add(i), s.sub(shifted!(src.add(i)), log_sum));
            }
            s.store(tail.as_mut_ptr(), s.sub(shifted!(tail.as_ptr()), log_sum));
        } else {
            let sum_s = s.splat(sum);
            // Probabilities below the smallest normal number are 0, chosen before the division
            // that would underflow: `MIN_NORMAL * sum` is exact, sum being at least 1.
            let smallest_term = s.mul(min_normal, sum_s);
            for i in (0..full).step_by(lanes) {
                let e = s.flush_below(s.load(dst.add(i)), smallest_term);
                s.store(dst.add(i), s.div(e, sum_s));
            }
            s.store(
                tail.as_mut_ptr(),
                s.div(s.flush_below(tail_e, smallest_term), sum_s),
            );
        }
        std::ptr::copy(tail.as_ptr(), dst.add(full), len - full);
    }
}
