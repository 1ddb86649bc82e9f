//! The SIMD vocabulary every kernel is written in: one `Simd` trait, one zero-sized token per (ISA, element type).
//!
//! Kernels are generic over `S: Simd` and marked `#[inline(always)]`; `dispatch.rs` calls them from
//! a `#[target_feature]` entry point, so each instantiation is compiled for its own instruction set.
//! A token can only be obtained after runtime detection of its features (or, for the portable
//! level, always), which is what makes the safe methods below sound.

use std::fmt::Debug;

/// A scalar element type the kernels compute in (f32 or f64).
pub trait Element:
    Copy
    + Debug
    + Default
    + PartialOrd
    + Send
    + Sync
    + 'static
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
{
    /// The NumPy name of the type, for error messages.
    const NAME: &'static str;
    const ZERO: Self;
    const ONE: Self;
    const NEG_INFINITY: Self;
    /// The smallest positive normal number.
    const MIN_NORMAL: Self;
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    fn ln(self) -> Self;
    fn is_nan(self) -> bool;
    /// Zero of the same sign for a subnormal, else `self`: decided on the bits, so no
    /// floating-point operation reads the subnormal (see `Simd::flush_below`).
    fn flush_subnormal(self) -> Self;
    /// `x` converted, zero of its sign where the result would be subnormal (decided on `x`'s
    /// bits before the conversion, which would otherwise underflow).
    fn from_f64_flushed(x: f64) -> Self;
    /// This thread's scratch buffer, at least `len` long (contents are stale: callers write
    /// before they read). Give it back with `return_scratch` so the next call reuses it: a single
    /// row's forward pass would otherwise spend a third of its time in the allocator. (No
    /// closure-taking API: a closure would be compiled outside the caller's target features.)
    fn take_scratch(len: usize) -> Vec<Self>;
    fn return_scratch(buffer: Vec<Self>);
}

macro_rules! thread_scratch {
    ($name:ident, $e:ty) => {
        thread_local! {
            static $name: std::cell::Cell<Vec<$e>> = const { std::cell::Cell::new(Vec::new()) };
        }
    };
}
thread_scratch!(SCRATCH_F32, f32);
thread_scratch!(SCRATCH_F64, f64);
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
fn take_thread_scratch<E: Copy + Default>(
    slot: &'static std::thread::LocalKey<std::cell::Cell<Vec<E>>>,
    len: usize,
) -> Vec<E> {
    let mut buffer = slot.with(|cell| cell.take());
    if buffer.len() < len {
        buffer.resize(len, E::default());
    }
    buffer
}

/// `$x` (an `$e` with bits `$bits`) with a subnormal magnitude replaced by zero of its sign.
macro_rules! flush_subnormal_bits {
    ($e:ty, $bits:ty, $x:expr) => {{
        const SIGN: $bits = 1 << (<$bits>::BITS - 1);
        let bits = $x.to_bits();
        if bits & !SIGN < <$e>::MIN_POSITIVE.to_bits() {
            <$e>::from_bits(bits & SIGN)
        } else {
            $x
        }
    }};
}

impl Element for f32 {
    const NAME: &'static str = "float32";
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const NEG_INFINITY: Self = f32::NEG_INFINITY;
    const MIN_NORMAL: Self = f32::MIN_POSITIVE;
    #[inline(always)]
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn ln(self) -> Self {
        f32::ln(self)
    }
    #[inline(always)]
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
    #[inline(always)]
    fn flush_subnormal(self) -> Self {
        flush_subnormal_bits!(f32, u32, self)
    }
    #[inline(always)]
    fn from_f64_flushed(x: f64) -> Self {
        const SIGN: u64 = 1 << 63;
        if x.to_bits() & !SIGN < (f32::MIN_POSITIVE as f64).to_bits() {
            if x.to_bits() & SIGN == 0 {
                0.0
            } else {
                -0.0
            }
        } else {
            x as f32
        }
    }
    fn take_scratch(len: usize) -> Vec<Self> {
        take_thread_scratch(&SCRATCH_F32, len)
    }
    fn return_scratch(buffer: Vec<Self>) {
        SCRATCH_F32.with(|cell| cell.set(buffer));
    }
}

impl Element for f64 {
    const NAME: &'static str = "float64";
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const NEG_INFINITY: Self = f64::NEG_INFINITY;
    const MIN_NORMAL: Self = f64::MIN_POSITIVE;
    #[inline(always)]
    fn from_f64(x: f64) -> Self {
        x
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn ln(self) -> Self {
        f64::ln(self)
    }
    #[inline(always)]
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
    #[inline(always)]
    fn flush_subnormal(self) -> Self {
        flush_subnormal_bits!(f64, u64, self)
    }
    #[inline(always)]
    fn from_f64_flushed(x: f64) -> Self {
        x.flush_subnormal()
    }
    fn take_scratch(len: usize) -> Vec<Self> {
        take_thread_scratch(&SCRATCH_F64, len)
    }
    fn return_scratch(buffer: Vec<Self>) {
        SCRATCH_F64.with(|cell| cell.set(buffer));
    }
}

/// Input element types a model accepts and converts on the fly while packing (never by a full copy).
pub trait InputElement: Copy + Send + Sync + 'static {
    /// Whether a value of this type can be subnormal (so packing must flush it).
    const HAS_SUBNORMALS: bool;
    /// Converts to `E`, a subnormal input read as zero of its sign (as packing reads it).
    fn to_element<E: Element>(self) -> E;
    /// Loads `LANES` consecutive inputs converted to `S::Elem`, rounding exactly as `to_element`.
    ///
    /// # Safety
    /// `p` must be valid for reading `S::LANES` values.
    unsafe fn load_vector<S: Simd>(s: S, p: *const Self) -> S::V;
}

impl InputElement for u8 {
    const HAS_SUBNORMALS: bool = false;
    #[inline(always)]
    unsafe fn load_vector<S: Simd>(s: S, p: *const Self) -> S::V {
        // SAFETY: the caller guarantees `p` is readable for LANES values.
        unsafe { s.load_u8(p) }
    }
    #[inline(always)]
    fn to_element<E: Element>(self) -> E {
        E::from_f64(self as f64)
    }
}

impl InputElement for f32 {
    const HAS_SUBNORMALS: bool = true;
    #[inline(always)]
    unsafe fn load_vector<S: Simd>(s: S, p: *const Self) -> S::V {
        // SAFETY: the caller guarantees `p` is readable for LANES values.
        unsafe { s.load_f32(p) }
    }
    #[inline(always)]
    fn to_element<E: Element>(self) -> E {
        E::from_f64_flushed(self.flush_subnormal() as f64)
    }
}

impl InputElement for f64 {
    const HAS_SUBNORMALS: bool = true;
    #[inline(always)]
    unsafe fn load_vector<S: Simd>(s: S, p: *const Self) -> S::V {
        // SAFETY: the caller guarantees `p` is readable for LANES values.
        unsafe { s.load_f64(p) }
    }
    #[inline(always)]
    fn to_element<E: Element>(self) -> E {
        // A normal f64 below f32's normal range would round to a float32 subnormal.
        E::from_f64_flushed(self)
    }
}

/// One instruction set at one element width. Every method is `#[inline(always)]` so it is
/// compiled inside the `#[target_feature]` function that (transitively) calls it.
pub trait Simd: Copy + Send + Sync + 'static {
    type Elem: Element;
    type V: Copy;
    const LANES: usize;
    /// Widest register tile (output columns) the micro-kernel may use at this level:
    /// 2 x cols accumulators + 2 row loads + 1 broadcast must fit the register file.
    const MAX_TILE_COLS: usize;
    const NAME: &'static str;

    fn splat(self, x: Self::Elem) -> Self::V;
    /// # Safety
    /// `p` must be valid for reading `LANES` elements.
    unsafe fn load(self, p: *const Self::Elem) -> Self::V;
    /// # Safety
    /// `p` must be valid for writing `LANES` elements.
    unsafe fn store(self, p: *mut Self::Elem, v: Self::V);
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    fn div(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a * b + c`; fused (one rounding) where the level has FMA.
    fn mul_add(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `a > b ? a : b` lane-wise: x86 MAXPS semantics, so a NaN in `b` is returned.
    fn max(self, a: Self::V, b: Self::V) -> Self::V;
    fn abs(self, a: Self::V) -> Self::V;
    /// Round to nearest, ties to even.
    fn round(self, a: Self::V) -> Self::V;
    /// `a * 2^n` for integral `n` in the exponent range of `exp`'s reduction, without
    /// overflow on the way (`exp` clamps so that the result is never subnormal).
    fn ldexp(self, a: Self::V, n: Self::V) -> Self::V;
    /// `mask >= 0 ? a : b` lane-wise (a NaN mask selects `b`).
    fn select_nonneg(self, mask: Self::V, a: Self::V, b: Self::V) -> Self::V;
    /// Lanes whose magnitude is below `floor`'s (a vector of positive numbers) become zero
    /// of their own sign; NaN and larger lanes pass unchanged. The bits are compared as
    /// integers, so no floating-point operation reads the lane: a subnormal raises no flag and
    /// costs no microcode assist (tens of times an FMA on Intel cores).
    fn flush_below(self, a: Self::V, floor: Self::V) -> Self::V;
    /// Whether any lane of `a` is zero (either sign) or NaN.
    fn any_zero_or_nan(self, a: Self::V) -> bool;
    /// Bit `i` set where lane `i` of `a` is not zero (NaN included).
    fn nonzero_mask(self, a: Self::V) -> u32;
    /// Writes `first + i` for each lane `i` of `a` that is not zero (NaN included), ascending,
    /// to the front of `dst`, and returns how many it wrote. Without a branch per lane: which
    /// lanes are zero is data, and a mispredicted branch costs more than the step it skips.
    ///
    /// # Safety
    /// `dst` must be writable for `LANES` entries.
    #[inline(always)]
    unsafe fn store_nonzero_lanes(self, a: Self::V, first: u32, dst: *mut u32) -> usize {
        let mask = self.nonzero_mask(a);
        let mut count = 0;
        for lane in 0..Self::LANES {
            // SAFETY: count <= lane < LANES, inside `dst` as the caller guarantees.
            unsafe { *dst.add(count) = first + lane as u32 };
            count += ((mask >> lane) & 1) as usize;
        }
        count
    }
    /// Transposes the `LANES x LANES` block `rows` (exactly `LANES` vectors) in registers.
    fn transpose(self, rows: &mut [Self::V]);
    /// # Safety
    /// `p` must be valid for reading `LANES` bytes.
    unsafe fn load_u8(self, p: *const u8) -> Self::V;
    /// # Safety
    /// `p` must be valid for reading `LANES` f32 values.
    unsafe fn load_f32(self, p: *const f32) -> Self::V;
    /// # Safety
    /// `p` must be valid for reading `LANES` f64 values.
    unsafe fn load_f64(self, p: *const f64) -> Self::V;
}

/// Cache lines a kernel asks the memory system for while it computes, one at a time so the
/// requests overlap the arithmetic instead of queueing behind each other. Without it the next
/// chunk's input rows arrive only when packing stalls on them (on a 2-core Zen 3, 15% of a
/// 10,000-row pass). A hint only: prefetching never faults and changes no result.
#[derive(Clone, Copy, Debug)]
pub struct Prefetch {
    first: *const u8,
    lines: usize,
}

// SAFETY: the pointer is never dereferenced, only handed to prefetch hints, which read nothing
// and never fault; any thread may issue them.
unsafe impl Send for Prefetch {}
// SAFETY: as above.
unsafe impl Sync for Prefetch {}

impl Prefetch {
    pub const CACHE_LINE: usize = 64;
    pub const NONE: Prefetch = Prefetch {
        first: std::ptr::null(),
        lines: 0,
    };

    /// Every cache line `data` touches (from the line holding its first byte).
    pub fn of<T>(data: &[T]) -> Prefetch {
        if data.is_empty() {
            return Prefetch::NONE;
        }
        let start = data.as_ptr() as usize;
        let misalignment = start % Self::CACHE_LINE;
        Prefetch {
            first: data.as_ptr().cast::<u8>().wrapping_sub(misalignment),
            lines: (misalignment + std::mem::size_of_val(data)).div_ceil(Self::CACHE_LINE),
        }
    }

    pub fn lines(self) -> usize {
        self.lines
    }

    /// Share `index` of `shares` consecutive shares whose sizes differ by at most one line.
    pub fn share(self, index: usize, shares: usize) -> Prefetch {
        let shares = shares.max(1);
        let start = index.min(shares) * self.lines / shares;
        let end = (index + 1).min(shares) * self.lines / shares;
        Prefetch {
            first: self.first.wrapping_add(start * Self::CACHE_LINE),
            lines: end - start,
        }
    }

    /// Requests line `line`, if it is one of this range's, into L2 rather than L1: the lines
    /// are next read a whole layer later, and a chunk of rows (50-100 KB) outsizes L1.
    #[inline(always)]
    pub fn request(self, line: usize) {
        if line < self.lines {
            prefetch_line_to_l2(self.first.wrapping_add(line * Self::CACHE_LINE));
        }
    }
}

/// Asks for the cache line holding `address` to be brought into L2. A hint: it never faults,
/// whatever the address (so callers may point past the end of their data), and is a no-op off
/// x86-64.
#[inline(always)]
pub fn prefetch_line_to_l2<T>(address: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT1 is baseline SSE on x86-64; it reads nothing and never faults.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        _mm_prefetch::<_MM_HINT_T1>(address.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

// ---------------------------------------------------------------------------------------------
// Portable level: plain IEEE arithmetic on small arrays, which LLVM vectorises to SSE2/NEON.
// It uses separate multiply and add (no FMA) so it stays fast on CPUs without FMA.
// ---------------------------------------------------------------------------------------------

pub const PORTABLE_LANES: usize = 8;

#[derive(Clone, Copy, Debug)]
pub struct Portable<E>(std::marker::PhantomData<E>);

impl<E> Portable<E> {
    pub fn new() -> Self {
        Portable(std::marker::PhantomData)
    }
}

impl<E> Default for Portable<E> {
    fn default() -> Self {
        Self::new()
    }
}

macro_rules! portable_lanewise {
    ($a:expr, |$x:ident| $body:expr) => {{
        let mut r = $a;
        for $x in r.iter_mut() {
            *$x = $body;
        }
        r
    }};
}

macro_rules! portable_zip {
    ($a:expr, $b:expr, |$x:ident, $y:ident| $body:expr) => {{
        let mut r = $a;
        for (rx, $y) in r.iter_mut().zip($b.iter().copied()) {
            let $x = *rx;
            *rx = $body;
        }
        r
    }};
}

macro_rules! impl_portable {
    ($e:ty, $bits:ty, $mant:expr, $bias:expr) => {
        impl Simd for Portable<$e> {
            type Elem = $e;
            type V = [$e; PORTABLE_LANES];
            const LANES: usize = PORTABLE_LANES;
            const MAX_TILE_COLS: usize = 4;
            const NAME: &'static str = "portable";

            #[inline(always)]
            fn splat(self, x: $e) -> Self::V {
                [x; PORTABLE_LANES]
            }
            #[inline(always)]
            unsafe fn load(self, p: *const $e) -> Self::V {
                // SAFETY: the caller guarantees `p` is readable for LANES elements.
                unsafe { std::ptr::read_unaligned(p as *const Self::V) }
            }
            #[inline(always)]
            unsafe fn store(self, p: *mut $e, v: Self::V) {
                // SAFETY: the caller guarantees `p` is writable for LANES elements.
                unsafe { std::ptr::write_unaligned(p as *mut Self::V, v) }
            }
            #[inline(always)]
            fn add(self, a: Self::V, b: Self::V) -> Self::V {
                portable_zip!(a, b, |x, y| x + y)
            }
            #[inline(always)]
            fn sub(self, a: Self::V, b: Self::V) -> Self::V {
                portable_zip!(a, b, |x, y| x - y)
            }
            #[inline(always)]
            fn mul(self, a: Self::V, b: Self::V) -> Self::V {
                portable_zip!(a, b, |x, y| x * y)
            }
            #[inline(always)]
            fn div(self, a: Self::V, b: Self::V) -> Self::V {
                portable_zip!(a, b, |x, y| x / y)
            }
            #[inline(always)]
            fn mul_add(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V {
                self.add(self.mul(a, b), c)
            }
            #[inline(always)]
            fn max(self, a: Self::V, b: Self::V) -> Self::V {
                portable_zip!(a, b, |x, y| if x > y { x } else { y })
            }
            #[inline(always)]
            fn abs(self, a: Self::V) -> Self::V {
                portable_lanewise!(a, |x| x.abs())
            }
            #[inline(always)]
            fn round(self, a: Self::V) -> Self::V {
                portable_lanewise!(a, |x| x.round_ties_even())
            }
            #[inline(always)]
            fn ldexp(self, a: Self::V, n: Self::V) -> Self::V {
                // Two factors 2^(n/2) * 2^(n - n/2), each a normal number, so that results
                // in the subnormal range are rounded once, as a single scaling would.
                portable_zip!(a, n, |x, m| {
                    let half = (m * 0.5).floor();
                    let rest = m - half;
                    let f1 = <$e>::from_bits(((half as i64 + $bias) as $bits) << $mant);
                    let f2 = <$e>::from_bits(((rest as i64 + $bias) as $bits) << $mant);
                    x * f1 * f2
                })
            }
            #[inline(always)]
            fn select_nonneg(self, mask: Self::V, a: Self::V, b: Self::V) -> Self::V {
                let mut r = b;
                for i in 0..PORTABLE_LANES {
                    if mask[i] >= 0.0 {
                        r[i] = a[i];
                    }
                }
                r
            }
            #[inline(always)]
            fn flush_below(self, a: Self::V, floor: Self::V) -> Self::V {
                const SIGN: $bits = 1 << (<$bits>::BITS - 1);
                portable_zip!(a, floor, |x, f| {
                    if x.to_bits() & !SIGN < f.to_bits() & !SIGN {
                        <$e>::from_bits(x.to_bits() & SIGN)
                    } else {
                        x
                    }
                })
            }
            #[inline(always)]
            fn any_zero_or_nan(self, a: Self::V) -> bool {
                a.iter().any(|&x| x == 0.0 || x.is_nan())
            }
            #[inline(always)]
            fn nonzero_mask(self, a: Self::V) -> u32 {
                a.iter()
                    .enumerate()
                    .fold(0, |mask, (lane, &x)| mask | (u32::from(x != 0.0) << lane))
            }
            #[inline(always)]
            fn transpose(self, rows: &mut [Self::V]) {
                assert_eq!(rows.len(), PORTABLE_LANES);
                for i in 0..PORTABLE_LANES {
                    for j in i + 1..PORTABLE_LANES {
                        let upper = rows[i][j];
                        rows[i][j] = rows[j][i];
                        rows[j][i] = upper;
                    }
                }
            }
            #[inline(always)]
            unsafe fn load_u8(self, p: *const u8) -> Self::V {
                // SAFETY: the caller guarantees `p` is readable for LANES bytes.
                let bytes: [u8; PORTABLE_LANES] = unsafe { std::ptr::read_unaligned(p as *const _) };
                bytes.map(|b| b as $e)
            }
            #[inline(always)]
            unsafe fn load_f32(self, p: *const f32) -> Self::V {
                // SAFETY: the caller guarantees `p` is readable for LANES values.
                let values: [f32; PORTABLE_LANES] = unsafe { std::ptr::read_unaligned(p as *const _) };
                values.map(|v| <$e>::from_f64_flushed(v.flush_subnormal() as f64))
            }
            #[inline(always)]
            unsafe fn load_f64(self, p: *const f64) -> Self::V {
                // SAFETY: the caller guarantees `p` is readable for LANES values.
                let values: [f64; PORTABLE_LANES] = unsafe { std::ptr::read_unaligned(p as *const _) };
                values.map(<$e>::from_f64_flushed)
            }
        }
    };
}

impl_portable!(f32, u32, 23, 127);
impl_portable!(f64, u64, 52, 1023);

// ---------------------------------------------------------------------------------------------
// x86-64 levels.
// ---------------------------------------------------------------------------------------------

#[cfg(target_arch = "x86_64")]
pub use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Element, Simd};
    use std::arch::x86_64::*;
    use std::marker::PhantomData;

    /// AVX2 + FMA (+ POPCNT). Constructed only by `Avx2::detect`, so holding one proves the CPU
    /// has them.
    #[derive(Clone, Copy, Debug)]
    pub struct Avx2<E>(PhantomData<E>);

    /// AVX-512F (with AVX2 and FMA). Constructed only by `Avx512::detect`, so holding one proves the
    /// CPU has them.
    #[derive(Clone, Copy, Debug)]
    pub struct Avx512<E>(PhantomData<E>);

    impl<E: Element> Avx2<E> {
        pub fn detect() -> Option<Self> {
            (is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("popcnt"))
            .then_some(Avx2(PhantomData))
        }
    }

    impl<E: Element> Avx512<E> {
        pub fn detect() -> Option<Self> {
            (is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("popcnt"))
            .then_some(Avx512(PhantomData))
        }
    }

    // A row of the other float type is flushed in its own bits before it is converted: the
    // conversion instruction would read a float32 subnormal (a normal float64), or make one
    // from a float64 below float32's range, so that the vector path rounds as `to_element`.

    /// Float32 lanes below the smallest normal float32, zero of their sign.
    ///
    /// # Safety
    /// SSE2 only (part of x86-64).
    #[inline(always)]
    unsafe fn flush_f32x4(v: __m128) -> __m128 {
        // SAFETY: SSE2 is part of every x86-64 CPU.
        unsafe {
            let magnitude = _mm_set1_epi32(i32::MAX);
            let bits = _mm_castps_si128(v);
            let tiny = _mm_cmpgt_epi32(
                _mm_set1_epi32(f32::MIN_POSITIVE.to_bits() as i32),
                _mm_and_si128(bits, magnitude),
            );
            _mm_castsi128_ps(_mm_andnot_si128(_mm_and_si128(tiny, magnitude), bits))
        }
    }

    /// As `flush_f32x4`, for eight lanes.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[inline(always)]
    unsafe fn flush_f32x8(v: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX2.
        unsafe {
            let magnitude = _mm256_set1_epi32(i32::MAX);
            let bits = _mm256_castps_si256(v);
            let tiny = _mm256_cmpgt_epi32(
                _mm256_set1_epi32(f32::MIN_POSITIVE.to_bits() as i32),
                _mm256_and_si256(bits, magnitude),
            );
            _mm256_castsi256_ps(_mm256_andnot_si256(_mm256_and_si256(tiny, magnitude), bits))
        }
    }

    /// Float64 lanes below the smallest normal float32 (2^-126), zero of their sign.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[inline(always)]
    unsafe fn flush_f64x4_below_f32_normal(v: __m256d) -> __m256d {
        // SAFETY: the caller guarantees AVX2.
        unsafe {
            let magnitude = _mm256_set1_epi64x(i64::MAX);
            let bits = _mm256_castpd_si256(v);
            let tiny = _mm256_cmpgt_epi64(
                _mm256_set1_epi64x((f32::MIN_POSITIVE as f64).to_bits() as i64),
                _mm256_and_si256(bits, magnitude),
            );
            _mm256_castsi256_pd(_mm256_andnot_si256(_mm256_and_si256(tiny, magnitude), bits))
        }
    }

    /// As `flush_f64x4_below_f32_normal`, for eight lanes.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[inline(always)]
    unsafe fn flush_f64x8_below_f32_normal(v: __m512d) -> __m512d {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe {
            let magnitude = _mm512_set1_epi64(i64::MAX);
            let bits = _mm512_castpd_si512(v);
            let tiny = _mm512_cmplt_epi64_mask(
                _mm512_and_si512(bits, magnitude),
                _mm512_set1_epi64((f32::MIN_POSITIVE as f64).to_bits() as i64),
            );
            let sign_only = _mm512_andnot_si512(magnitude, bits);
            _mm512_castsi512_pd(_mm512_mask_blend_epi64(tiny, bits, sign_only))
        }
    }

    // Every method body is one intrinsic call. They are `unsafe fn`s only because of the
    // `target_feature` they require; the token `self` proves that feature was detected.
    macro_rules! tok {
        ($e:expr) => {
            // SAFETY: `self` exists only after runtime detection of this level's features
            // (see `detect`), so the intrinsic's target features are available.
            unsafe { $e }
        };
    }

    impl Simd for Avx2<f32> {
        type Elem = f32;
        type V = __m256;
        const LANES: usize = 8;
        const MAX_TILE_COLS: usize = 6;
        const NAME: &'static str = "avx2";

        #[inline(always)]
        fn splat(self, x: f32) -> __m256 {
            tok!(_mm256_set1_ps(x))
        }
        #[inline(always)]
        unsafe fn load(self, p: *const f32) -> __m256 {
            // SAFETY: the caller guarantees `p` is readable for 8 floats; AVX2 is detected.
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32, v: __m256) {
            // SAFETY: the caller guarantees `p` is writable for 8 floats; AVX2 is detected.
            unsafe { _mm256_storeu_ps(p, v) }
        }
        #[inline(always)]
        fn add(self, a: __m256, b: __m256) -> __m256 {
            tok!(_mm256_add_ps(a, b))
        }
        #[inline(always)]
        fn sub(self, a: __m256, b: __m256) -> __m256 {
            tok!(_mm256_sub_ps(a, b))
        }
        #[inline(always)]
        fn mul(self, a: __m256, b: __m256) -> __m256 {
            tok!(_mm256_mul_ps(a, b))
        }
        #[inline(always)]
        fn div(self, a: __m256, b: __m256) -> __m256 {
            tok!(_mm256_div_ps(a, b))
        }
        #[inline(always)]
        fn mul_add(self, a: __m256, b: __m256, c: __m256) -> __m256 {
            tok!(_mm256_fmadd_ps(a, b, c))
        }
        #[inline(always)]
        fn max(self, a: __m256, b: __m256) -> __m256 {
            tok!(_mm256_max_ps(a, b))
        }
        #[inline(always)]
        fn abs(self, a: __m256) -> __m256 {
            tok!(_mm256_andnot_ps(_mm256_set1_ps(-0.0), a))
        }
        #[inline(always)]
        fn round(self, a: __m256) -> __m256 {
            tok!(_mm256_round_ps::<
                { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
            >(a))
        }
        #[inline(always)]
        fn ldexp(self, a: __m256, n: __m256) -> __m256 {
            tok!({
                let half = _mm256_floor_ps(_mm256_mul_ps(n, _mm256_set1_ps(0.5)));
                let rest = _mm256_sub_ps(n, half);
                let bias = _mm256_set1_epi32(127);
                let f1 = _mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(half), bias));
                let f2 = _mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(rest), bias));
                _mm256_mul_ps(
                    _mm256_mul_ps(a, _mm256_castsi256_ps(f1)),
                    _mm256_castsi256_ps(f2),
                )
            })
        }
        #[inline(always)]
        fn select_nonneg(self, mask: __m256, a: __m256, b: __m256) -> __m256 {
            tok!(_mm256_blendv_ps(
                b,
                a,
                _mm256_cmp_ps::<_CMP_GE_OQ>(mask, _mm256_setzero_ps())
            ))
        }
        #[inline(always)]
        fn flush_below(self, a: __m256, floor: __m256) -> __m256 {
            tok!({
                let magnitude = _mm256_set1_epi32(i32::MAX);
                let bits = _mm256_castps_si256(a);
                let floor = _mm256_and_si256(_mm256_castps_si256(floor), magnitude);
                let tiny = _mm256_cmpgt_epi32(floor, _mm256_and_si256(bits, magnitude));
                _mm256_castsi256_ps(_mm256_andnot_si256(_mm256_and_si256(tiny, magnitude), bits))
            })
        }
        #[inline(always)]
        fn any_zero_or_nan(self, a: __m256) -> bool {
            tok!(_mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_UQ>(a, _mm256_setzero_ps())) != 0)
        }
        #[inline(always)]
        fn nonzero_mask(self, a: __m256) -> u32 {
            tok!(_mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NEQ_UQ>(a, _mm256_setzero_ps())) as u32)
        }
        #[inline(always)]
        fn transpose(self, rows: &mut [__m256]) {
            assert_eq!(rows.len(), 8);
            tok!({
                let t0 = _mm256_unpacklo_ps(rows[0], rows[1]);
                let t1 = _mm256_unpackhi_ps(rows[0], rows[1]);
                let t2 = _mm256_unpacklo_ps(rows[2], rows[3]);
                let t3 = _mm256_unpackhi_ps(rows[2], rows[3]);
                let t4 = _mm256_unpacklo_ps(rows[4], rows[5]);
                let t5 = _mm256_unpackhi_ps(rows[4], rows[5]);
                let t6 = _mm256_unpacklo_ps(rows[6], rows[7]);
                let t7 = _mm256_unpackhi_ps(rows[6], rows[7]);
                let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                rows[0] = _mm256_permute2f128_ps::<0x20>(u0, u4);
                rows[1] = _mm256_permute2f128_ps::<0x20>(u1, u5);
                rows[2] = _mm256_permute2f128_ps::<0x20>(u2, u6);
                rows[3] = _mm256_permute2f128_ps::<0x20>(u3, u7);
                rows[4] = _mm256_permute2f128_ps::<0x31>(u0, u4);
                rows[5] = _mm256_permute2f128_ps::<0x31>(u1, u5);
                rows[6] = _mm256_permute2f128_ps::<0x31>(u2, u6);
                rows[7] = _mm256_permute2f128_ps::<0x31>(u3, u7);
            })
        }
        #[inline(always)]
        unsafe fn load_u8(self, p: *const u8) -> __m256 {
            // SAFETY: the caller guarantees 8 readable bytes; AVX2 is detected.
            unsafe {
                _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i)))
            }
        }
        #[inline(always)]
        unsafe fn load_f32(self, p: *const f32) -> __m256 {
            // SAFETY: the caller guarantees 8 readable floats; AVX2 is detected.
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn load_f64(self, p: *const f64) -> __m256 {
            // SAFETY: the caller guarantees 8 readable doubles; AVX2 is detected.
            unsafe {
                let low = _mm256_cvtpd_ps(flush_f64x4_below_f32_normal(_mm256_loadu_pd(p)));
                let high = _mm256_cvtpd_ps(flush_f64x4_below_f32_normal(_mm256_loadu_pd(p.add(4))));
                _mm256_set_m128(high, low)
            }
        }
    }

    impl Simd for Avx2<f64> {
        type Elem = f64;
        type V = __m256d;
        const LANES: usize = 4;
        const MAX_TILE_COLS: usize = 6;
        const NAME: &'static str = "avx2";

        #[inline(always)]
        fn splat(self, x: f64) -> __m256d {
            tok!(_mm256_set1_pd(x))
        }
        #[inline(always)]
        unsafe fn load(self, p: *const f64) -> __m256d {
            // SAFETY: the caller guarantees `p` is readable for 4 doubles; AVX2 is detected.
            unsafe { _mm256_loadu_pd(p) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f64, v: __m256d) {
            // SAFETY: the caller guarantees `p` is writable for 4 doubles; AVX2 is detected.
            unsafe { _mm256_storeu_pd(p, v) }
        }
        #[inline(always)]
        fn add(self, a: __m256d, b: __m256d) -> __m256d {
            tok!(_mm256_add_pd(a, b))
        }
        #[inline(always)]
        fn sub(self, a: __m256d, b: __m256d) -> __m256d {
            tok!(_mm256_sub_pd(a, b))
        }
        #[inline(always)]
        fn mul(self, a: __m256d, b: __m256d) -> __m256d {
            tok!(_mm256_mul_pd(a, b))
        }
        #[inline(always)]
        fn div(self, a: __m256d, b: __m256d) -> __m256d {
            tok!(_mm256_div_pd(a, b))
        }
        #[inline(always)]
        fn mul_add(self, a: __m256d, b: __m256d, c: __m256d) -> __m256d {
            tok!(_mm256_fmadd_pd(a, b, c))
        }
        #[inline(always)]
        fn max(self, a: __m256d, b: __m256d) -> __m256d {
            tok!(_mm256_max_pd(a, b))
        }
        #[inline(always)]
        fn abs(self, a: __m256d) -> __m256d {
            tok!(_mm256_andnot_pd(_mm256_set1_pd(-0.0), a))
        }
        #[inline(always)]
        fn round(self, a: __m256d) -> __m256d {
            tok!(_mm256_round_pd::<
                { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
            >(a))
        }
        #[inline(always)]
        fn ldexp(self, a: __m256d, n: __m256d) -> __m256d {
            tok!({
                // AVX2 has no f64 -> i64 conversion: adding 1.5 * 2^52 leaves the integer in the
                // low mantissa bits, and the shift by 52 discards the magic number's own bits.
                let magic = _mm256_set1_pd(6755399441055744.0 + 1023.0);
                let half = _mm256_floor_pd(_mm256_mul_pd(n, _mm256_set1_pd(0.5)));
                let rest = _mm256_sub_pd(n, half);
                let f1 = _mm256_slli_epi64::<52>(_mm256_castpd_si256(_mm256_add_pd(half, magic)));
                let f2 = _mm256_slli_epi64::<52>(_mm256_castpd_si256(_mm256_add_pd(rest, magic)));
                _mm256_mul_pd(
                    _mm256_mul_pd(a, _mm256_castsi256_pd(f1)),
                    _mm256_castsi256_pd(f2),
                )
            })
        }
        #[inline(always)]
        fn select_nonneg(self, mask: __m256d, a: __m256d, b: __m256d) -> __m256d {
            tok!(_mm256_blendv_pd(
                b,
                a,
                _mm256_cmp_pd::<_CMP_GE_OQ>(mask, _mm256_setzero_pd())
            ))
        }
        #[inline(always)]
        fn flush_below(self, a: __m256d, floor: __m256d) -> __m256d {
            tok!({
                let magnitude = _mm256_set1_epi64x(i64::MAX);
                let bits = _mm256_castpd_si256(a);
                let floor = _mm256_and_si256(_mm256_castpd_si256(floor), magnitude);
                let tiny = _mm256_cmpgt_epi64(floor, _mm256_and_si256(bits, magnitude));
                _mm256_castsi256_pd(_mm256_andnot_si256(_mm256_and_si256(tiny, magnitude), bits))
            })
        }
        #[inline(always)]
        fn any_zero_or_nan(self, a: __m256d) -> bool {
            tok!(_mm256_movemask_pd(_mm256_cmp_pd::<_CMP_EQ_UQ>(a, _mm256_setzero_pd())) != 0)
        }
        #[inline(always)]
        fn nonzero_mask(self, a: __m256d) -> u32 {
            tok!(_mm256_movemask_pd(_mm256_cmp_pd::<_CMP_NEQ_UQ>(a, _mm256_setzero_pd())) as u32)
        }
        #[inline(always)]
        fn transpose(self, rows: &mut [__m256d]) {
            assert_eq!(rows.len(), 4);
            tok!({
                let t0 = _mm256_unpacklo_pd(rows[0], rows[1]);
                let t1 = _mm256_unpackhi_pd(rows[0], rows[1]);
                let t2 = _mm256_unpacklo_pd(rows[2], rows[3]);
                let t3 = _mm256_unpackhi_pd(rows[2], rows[3]);
                rows[0] = _mm256_permute2f128_pd::<0x20>(t0, t2);
                rows[1] = _mm256_permute2f128_pd::<0x20>(t1, t3);
                rows[2] = _mm256_permute2f128_pd::<0x31>(t0, t2);
                rows[3] = _mm256_permute2f128_pd::<0x31>(t1, t3);
            })
        }
        #[inline(always)]
        unsafe fn load_u8(self, p: *const u8) -> __m256d {
            // SAFETY: the caller guarantees 4 readable bytes; AVX2 is detected.
            unsafe {
                let word = std::ptr::read_unaligned(p as *const i32);
                _mm256_cvtepi32_pd(_mm_cvtepu8_epi32(_mm_cvtsi32_si128(word)))
            }
        }
        #[inline(always)]
        unsafe fn load_f32(self, p: *const f32) -> __m256d {
            // SAFETY: the caller guarantees 4 readable floats; AVX2 is detected.
            unsafe { _mm256_cvtps_pd(flush_f32x4(_mm_loadu_ps(p))) }
        }
        #[inline(always)]
        unsafe fn load_f64(self, p: *const f64) -> __m256d {
            // SAFETY: the caller guarantees 4 readable doubles; AVX2 is detected.
            unsafe { _mm256_loadu_pd(p) }
        }
    }

    impl Simd for Avx512<f32> {
        type Elem = f32;
        type V = __m512;
        const LANES: usize = 16;
        const MAX_TILE_COLS: usize = 12;
        const NAME: &'static str = "avx512";

        #[inline(always)]
        fn splat(self, x: f32) -> __m512 {
            tok!(_mm512_set1_ps(x))
        }
        #[inline(always)]
        unsafe fn load(self, p: *const f32) -> __m512 {
            // SAFETY: the caller guarantees `p` is readable for 16 floats; AVX-512F is detected.
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32, v: __m512) {
            // SAFETY: the caller guarantees `p` is writable for 16 floats; AVX-512F is detected.
            unsafe { _mm512_storeu_ps(p, v) }
        }
        #[inline(always)]
        fn add(self, a: __m512, b: __m512) -> __m512 {
            tok!(_mm512_add_ps(a, b))
        }
        #[inline(always)]
        fn sub(self, a: __m512, b: __m512) -> __m512 {
            tok!(_mm512_sub_ps(a, b))
        }
        #[inline(always)]
        fn mul(self, a: __m512, b: __m512) -> __m512 {
            tok!(_mm512_mul_ps(a, b))
        }
        #[inline(always)]
        fn div(self, a: __m512, b: __m512) -> __m512 {
            tok!(_mm512_div_ps(a, b))
        }
        #[inline(always)]
        fn mul_add(self, a: __m512, b: __m512, c: __m512) -> __m512 {
            tok!(_mm512_fmadd_ps(a, b, c))
        }
        #[inline(always)]
        fn max(self, a: __m512, b: __m512) -> __m512 {
            tok!(_mm512_max_ps(a, b))
        }
        #[inline(always)]
        fn abs(self, a: __m512) -> __m512 {
            tok!(_mm512_abs_ps(a))
        }
        #[inline(always)]
        fn round(self, a: __m512) -> __m512 {
            tok!(_mm512_roundscale_ps::<
                { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
            >(a))
        }
        #[inline(always)]
        fn ldexp(self, a: __m512, n: __m512) -> __m512 {
            // vscalefps rounds once, into subnormals and zero where needed.
            tok!(_mm512_scalef_ps(a, n))
        }
        #[inline(always)]
        fn select_nonneg(self, mask: __m512, a: __m512, b: __m512) -> __m512 {
            tok!(_mm512_mask_blend_ps(
                _mm512_cmp_ps_mask::<_CMP_GE_OQ>(mask, _mm512_setzero_ps()),
                b,
                a
            ))
        }
        #[inline(always)]
        fn flush_below(self, a: __m512, floor: __m512) -> __m512 {
            tok!({
                let magnitude = _mm512_set1_epi32(i32::MAX);
                let bits = _mm512_castps_si512(a);
                let floor = _mm512_and_si512(_mm512_castps_si512(floor), magnitude);
                let tiny = _mm512_cmplt_epi32_mask(_mm512_and_si512(bits, magnitude), floor);
                let sign_only = _mm512_andnot_si512(magnitude, bits);
                _mm512_castsi512_ps(_mm512_mask_blend_epi32(tiny, bits, sign_only))
            })
        }
        #[inline(always)]
        fn any_zero_or_nan(self, a: __m512) -> bool {
            tok!(_mm512_cmp_ps_mask::<_CMP_EQ_UQ>(a, _mm512_setzero_ps()) != 0)
        }
        #[inline(always)]
        fn nonzero_mask(self, a: __m512) -> u32 {
            tok!(u32::from(_mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(
                a,
                _mm512_setzero_ps()
            )))
        }
        #[inline(always)]
        unsafe fn store_nonzero_lanes(self, a: __m512, first: u32, dst: *mut u32) -> usize {
            let mask = tok!(_mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(a, _mm512_setzero_ps()));
            let lanes = tok!(_mm512_add_epi32(
                _mm512_set1_epi32(first as i32),
                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            ));
            // SAFETY: the caller guarantees 16 writable entries at `dst`.
            tok!(_mm512_storeu_si512(
                dst.cast(),
                _mm512_maskz_compress_epi32(mask, lanes)
            ));
            mask.count_ones() as usize
        }
        #[inline(always)]
        fn transpose(self, rows: &mut [__m512]) {
            assert_eq!(rows.len(), 16);
            tok!({
                // Three rounds: interleave 32-bit pairs, then 64-bit pairs, then 128-bit lanes
                // (twice), the classic 16x16 in-register transpose.
                let mut t = [_mm512_setzero_ps(); 16];
                for i in 0..8 {
                    t[2 * i] = _mm512_unpacklo_ps(rows[2 * i], rows[2 * i + 1]);
                    t[2 * i + 1] = _mm512_unpackhi_ps(rows[2 * i], rows[2 * i + 1]);
                }
                let mut r = [_mm512_setzero_ps(); 16];
                for i in 0..4 {
                    let (a0, a1, b0, b1) = (t[4 * i], t[4 * i + 1], t[4 * i + 2], t[4 * i + 3]);
                    r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(
                        _mm512_castps_pd(a0),
                        _mm512_castps_pd(b0),
                    ));
                    r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(
                        _mm512_castps_pd(a0),
                        _mm512_castps_pd(b0),
                    ));
                    r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(
                        _mm512_castps_pd(a1),
                        _mm512_castps_pd(b1),
                    ));
                    r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(
                        _mm512_castps_pd(a1),
                        _mm512_castps_pd(b1),
                    ));
                }
                for i in 0..4 {
                    t[i] = _mm512_shuffle_f32x4::<0x88>(r[i], r[i + 4]);
                    t[i + 4] = _mm512_shuffle_f32x4::<0xDD>(r[i], r[i + 4]);
                    t[i + 8] = _mm512_shuffle_f32x4::<0x88>(r[i + 8], r[i + 12]);
                    t[i + 12] = _mm512_shuffle_f32x4::<0xDD>(r[i + 8], r[i + 12]);
                }
                for i in 0..8 {
                    rows[i] = _mm512_shuffle_f32x4::<0x88>(t[i], t[i + 8]);
                    rows[i + 8] = _mm512_shuffle_f32x4::<0xDD>(t[i], t[i + 8]);
                }
            })
        }
        #[inline(always)]
        unsafe fn load_u8(self, p: *const u8) -> __m512 {
            // SAFETY: the caller guarantees 16 readable bytes; AVX-512F is detected.
            unsafe {
                _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(p as *const __m128i)))
            }
        }
        #[inline(always)]
        unsafe fn load_f32(self, p: *const f32) -> __m512 {
            // SAFETY: the caller guarantees 16 readable floats; AVX-512F is detected.
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn load_f64(self, p: *const f64) -> __m512 {
            // SAFETY: the caller guarantees 16 readable doubles; AVX-512F is detected.
            unsafe {
                let low = _mm512_cvtpd_ps(flush_f64x8_below_f32_normal(_mm512_loadu_pd(p)));
                let high = _mm512_cvtpd_ps(flush_f64x8_below_f32_normal(_mm512_loadu_pd(p.add(8))));
                let joined = _mm512_insertf64x4::<1>(
                    _mm512_castpd256_pd512(_mm256_castps_pd(low)),
                    _mm256_castps_pd(high),
                );
                _mm512_castpd_ps(joined)
            }
        }
    }

    impl Simd for Avx512<f64> {
        type Elem = f64;
        type V = __m512d;
        const LANES: usize = 8;
        const MAX_TILE_COLS: usize = 12;
        const NAME: &'static str = "avx512";

        #[inline(always)]
        fn splat(self, x: f64) -> __m512d {
            tok!(_mm512_set1_pd(x))
        }
        #[inline(always)]
        unsafe fn load(self, p: *const f64) -> __m512d {
            // SAFETY: the caller guarantees `p` is readable for 8 doubles; AVX-512F is detected.
            unsafe { _mm512_loadu_pd(p) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f64, v: __m512d) {
            // SAFETY: the caller guarantees `p` is writable for 8 doubles; AVX-512F is detected.
            unsafe { _mm512_storeu_pd(p, v) }
        }
        #[inline(always)]
        fn add(self, a: __m512d, b: __m512d) -> __m512d {
            tok!(_mm512_add_pd(a, b))
        }
        #[inline(always)]
        fn sub(self, a: __m512d, b: __m512d) -> __m512d {
            tok!(_mm512_sub_pd(a, b))
        }
        #[inline(always)]
        fn mul(self, a: __m512d, b: __m512d) -> __m512d {
            tok!(_mm512_mul_pd(a, b))
        }
        #[inline(always)]
        fn div(self, a: __m512d, b: __m512d) -> __m512d {
            tok!(_mm512_div_pd(a, b))
        }
        #[inline(always)]
        fn mul_add(self, a: __m512d, b: __m512d, c: __m512d) -> __m512d {
            tok!(_mm512_fmadd_pd(a, b, c))
        }
        #[inline(always)]
        fn max(self, a: __m512d, b: __m512d) -> __m512d {
            tok!(_mm512_max_pd(a, b))
        }
        #[inline(always)]
        fn abs(self, a: __m512d) -> __m512d {
            tok!(_mm512_abs_pd(a))
        }
        #[inline(always)]
        fn round(self, a: __m512d) -> __m512d {
            tok!(_mm512_roundscale_pd::<
                { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
            >(a))
        }
        #[inline(always)]
        fn ldexp(self, a: __m512d, n: __m512d) -> __m512d {
            tok!(_mm512_scalef_pd(a, n))
        }
        #[inline(always)]
        fn select_nonneg(self, mask: __m512d, a: __m512d, b: __m512d) -> __m512d {
            tok!(_mm512_mask_blend_pd(
                _mm512_cmp_pd_mask::<_CMP_GE_OQ>(mask, _mm512_setzero_pd()),
                b,
                a
            ))
        }
        #[inline(always)]
        fn flush_below(self, a: __m512d, floor: __m512d) -> __m512d {
            tok!({
                let magnitude = _mm512_set1_epi64(i64::MAX);
                let bits = _mm512_castpd_si512(a);
                let floor = _mm512_and_si512(_mm512_castpd_si512(floor), magnitude);
                let tiny = _mm512_cmplt_epi64_mask(_mm512_and_si512(bits, magnitude), floor);
                let sign_only = _mm512_andnot_si512(magnitude, bits);
                _mm512_castsi512_pd(_mm512_mask_blend_epi64(tiny, bits, sign_only))
            })
        }
        #[inline(always)]
        fn any_zero_or_nan(self, a: __m512d) -> bool {
            tok!(_mm512_cmp_pd_mask::<_CMP_EQ_UQ>(a, _mm512_setzero_pd()) != 0)
        }
        #[inline(always)]
        fn nonzero_mask(self, a: __m512d) -> u32 {
            tok!(u32::from(_mm512_cmp_pd_mask::<_CMP_NEQ_UQ>(
                a,
                _mm512_setzero_pd()
            )))
        }
        #[inline(always)]
        fn transpose(self, rows: &mut [__m512d]) {
            assert_eq!(rows.len(), 8);
            tok!({
                let mut t = [_mm512_setzero_pd(); 8];
                for i in 0..4 {
                    t[2 * i] = _mm512_unpacklo_pd(rows[2 * i], rows[2 * i + 1]);
                    t[2 * i + 1] = _mm512_unpackhi_pd(rows[2 * i], rows[2 * i + 1]);
                }
                let mut r = [_mm512_setzero_pd(); 8];
                for i in 0..2 {
                    r[4 * i] = _mm512_shuffle_f64x2::<0x88>(t[4 * i], t[4 * i + 2]);
                    r[4 * i + 1] = _mm512_shuffle_f64x2::<0x88>(t[4 * i + 1], t[4 * i + 3]);
                    r[4 * i + 2] = _mm512_shuffle_f64x2::<0xDD>(t[4 * i], t[4 * i + 2]);
                    r[4 * i + 3] = _mm512_shuffle_f64x2::<0xDD>(t[4 * i + 1], t[4 * i + 3]);
                }
                for i in 0..4 {
                    rows[i] = _mm512_shuffle_f64x2::<0x88>(r[i], r[i + 4]);
                    rows[i + 4] = _mm512_shuffle_f64x2::<0xDD>(r[i], r[i + 4]);
                }
            })
        }
        #[inline(always)]
        unsafe fn load_u8(self, p: *const u8) -> __m512d {
            // SAFETY: the caller guarantees 8 readable bytes; AVX-512F is detected.
            unsafe {
                _mm512_cvtepi32_pd(_mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i)))
            }
        }
        #[inline(always)]
        unsafe fn load_f32(self, p: *const f32) -> __m512d {
            // SAFETY: the caller guarantees 8 readable floats; AVX-512F is detected.
            unsafe { _mm512_cvtps_pd(flush_f32x8(_mm256_loadu_ps(p))) }
        }
        #[inline(always)]
        unsafe fn load_f64(self, p: *const f64) -> __m512d {
            // SAFETY: the caller guarantees 8 readable doubles; AVX-512F is detected.
            unsafe { _mm512_loadu_pd(p) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Prefetch;

    #[test]
    fn prefetch_shares_cover_every_line_once_in_order() {
        let buffer = vec![0u8; 50_100];
        let offset = (Prefetch::CACHE_LINE - buffer.as_ptr() as usize % 64) % 64 + 16;
        let data = &buffer[offset..offset + 50_000]; // starts 16 bytes into a line
        let all = Prefetch::of(data);
        assert_eq!(all.first as usize % Prefetch::CACHE_LINE, 0);
        assert_eq!(all.first, data.as_ptr().wrapping_sub(16));
        assert_eq!(
            all.lines(),
            (16 + 50_000usize).div_ceil(Prefetch::CACHE_LINE)
        );
        for shares in [1, 2, 5, 9, 783, 784, 800] {
            let mut next = all.first;
            let mut total = 0;
            for index in 0..shares {
                let share = all.share(index, shares);
                let even = all.lines() / shares;
                assert!(share.lines() == even || share.lines() == even + 1);
                assert_eq!(
                    share.first, next,
                    "{shares} shares: share {index} not contiguous"
                );
                next = share
                    .first
                    .wrapping_add(share.lines() * Prefetch::CACHE_LINE);
                total += share.lines();
            }
            assert_eq!(total, all.lines(), "{shares} shares");
        }
        assert_eq!(Prefetch::of::<f32>(&[]).lines(), 0);
        Prefetch::NONE.request(0); // out of range: a no-op
    }
}
