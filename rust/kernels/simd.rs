//! The SIMD vocabulary every kernel is written in: the `Simd` trait (built on `Arithmetic`, its
//! element-wise arithmetic), one zero-sized token per (ISA, element type).
//!
//! Kernels are generic over `S: Simd` and marked `#[inline(always)]`; `dispatch.rs` calls them from
//! a `#[target_feature]` entry point, so each instantiation is compiled for its own instruction set.
//! A token can only be obtained after runtime detection of its features (or, for the portable
//! level, always), which is what makes the safe methods below sound.

use std::fmt::Debug;

use super::scratch::{take_thread_scratch, SCRATCH_F32, SCRATCH_F64};

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
    /// floating-point operation reads the subnormal (see `Arithmetic::flush_below`).
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
    /// Loads the `LANES x LANES` block at `p` (rows `stride` values apart) converted as
    /// `load_vector` converts, transposed into `columns`.
    ///
    /// # Safety
    /// `p.add(i * stride)` must be valid for reading `S::LANES` values for every `i < LANES`.
    #[inline(always)]
    unsafe fn load_transposed<S: Simd>(s: S, p: *const Self, stride: usize, columns: &mut [S::V]) {
        assert_eq!(columns.len(), S::LANES);
        for (i, column) in columns.iter_mut().enumerate() {
            // SAFETY: row i < LANES is readable for LANES values, as the caller guarantees.
            *column = unsafe { Self::load_vector(s, p.add(i * stride)) };
        }
        s.transpose(columns);
    }
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
    unsafe fn load_transposed<S: Simd>(s: S, p: *const Self, stride: usize, columns: &mut [S::V]) {
        // SAFETY: the caller guarantees the block's rows are readable.
        unsafe { s.load_f32_transposed(p, stride, columns) }
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

/// The element-wise arithmetic of one vector: the part of the vocabulary that the
/// transcendental functions in `math.rs` are written in. A trait of its own so that they also
/// run on `Interleaved` groups of vectors (`simd_interleaved.rs`), which have this arithmetic
/// but not the loads, stores and transposes of `Simd`. Every `Simd` level implements it (`Simd`
/// builds on it), so a function bounded by `S: Simd` calls these methods without importing
/// this trait; code that calls them on a concrete type imports it.
pub trait Arithmetic: Copy {
    type Elem: Element;
    type V: Copy;
    /// Whether `mul_add` rounds once (the level has FMA): then its product, however small,
    /// underflows nothing unless the sum does.
    const FUSED_MUL_ADD: bool;
    fn splat(self, x: Self::Elem) -> Self::V;
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
    /// `a * 2^n` for integral `n` with `2^n` a normal number (`exp`'s reduction keeps `n` in
    /// [-126, 0] for float32, [-1022, 0] for float64), where the result is normal too (`exp`
    /// clamps so that it never is subnormal): one exact scaling.
    fn ldexp(self, a: Self::V, n: Self::V) -> Self::V;
    /// `mask >= 0 ? a : b` lane-wise (a NaN mask selects `b`).
    fn select_nonneg(self, mask: Self::V, a: Self::V, b: Self::V) -> Self::V;
    /// Lanes whose magnitude is below `floor`'s (a vector of positive numbers) become zero
    /// of their own sign; NaN and larger lanes pass unchanged. The bits are compared as
    /// integers, so no floating-point operation reads the lane: a subnormal raises no flag and
    /// costs no microcode assist (tens of times an FMA on Intel cores).
    fn flush_below(self, a: Self::V, floor: Self::V) -> Self::V;
    /// `-max(|a|, MIN_NORMAL)`: minus the magnitude, a zero or subnormal one read as the
    /// smallest normal number; NaN stays NaN (with its sign bit set). On the bits: with the
    /// sign bit set in both, the larger unsigned bits are the larger magnitude (NaN above
    /// infinity), so no floating-point operation reads a subnormal lane.
    fn neg_magnitude_normal(self, a: Self::V) -> Self::V;
    /// `a` where `sign`'s sign bit is clear, `b` where it is set (-0 and NaN included): read
    /// from the bit, so no floating-point operation reads `sign`.
    fn select_by_sign(self, sign: Self::V, a: Self::V, b: Self::V) -> Self::V;
    /// Lanes whose bits, as unsigned integers, are below `floor`'s (a positive number) become
    /// +0: for lanes of +0 or more, exactly those below `floor`; lanes with the sign bit set,
    /// NaN included, pass unchanged. Cheaper than `flush_below` where the sign is known.
    fn zero_below_nonneg(self, a: Self::V, floor: Self::V) -> Self::V;
    /// A finished sum, its NaN lanes made one fixed NaN where the level's additions do not
    /// say which of two NaNs they keep; `a` itself elsewhere. The FMA levels' kernels compile
    /// to instructions whose first operand is the accumulator (x86's VFMADD231, Arm's FMLA),
    /// and an FMA keeps the first NaN operand's, so their sums agree bit for bit (the tests
    /// check every path against the others); a separate addition is commutative to the
    /// compiler, which may keep either NaN, and differently in two kernels.
    #[inline(always)]
    fn settle_nan(self, a: Self::V) -> Self::V {
        a
    }
}

/// One instruction set at one element width: `Arithmetic`, plus the loads, stores, lane tests
/// and transposes. Every method of both is `#[inline(always)]` so it is compiled inside the
/// `#[target_feature]` function that (transitively) calls it.
pub trait Simd: Arithmetic + Send + Sync + 'static {
    const LANES: usize;
    /// Widest register tile (output columns) the micro-kernel may use at this level:
    /// 2 x cols accumulators + 2 row loads + 1 broadcast must fit the register file.
    const MAX_TILE_COLS: usize;
    /// Packed bytes per block of a first layer run in blocks of its inputs (`forward.rs`), or
    /// `None` for one block over the whole packed chunk: whichever measured faster at the level.
    const FIRST_LAYER_BLOCK_BYTES: Option<usize>;
    const NAME: &'static str;

    /// # Safety
    /// `p` must be valid for reading `LANES` elements.
    unsafe fn load(self, p: *const Self::Elem) -> Self::V;
    /// # Safety
    /// `p` must be valid for writing `LANES` elements.
    unsafe fn store(self, p: *mut Self::Elem, v: Self::V);
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
    /// Loads the `LANES x LANES` block of float32 values at `p` (`stride` values from one row to
    /// the next) converted as `load_f32` converts, and transposed: `columns[j]` holds column
    /// `j`. This default loads whole rows and transposes them in registers; a level whose
    /// shuffles share one port can move part of the transpose into its loads instead.
    ///
    /// # Safety
    /// `p.add(i * stride)` must be valid for reading `LANES` values for every `i < LANES`.
    #[inline(always)]
    unsafe fn load_f32_transposed(self, p: *const f32, stride: usize, columns: &mut [Self::V]) {
        assert_eq!(columns.len(), Self::LANES);
        for (i, column) in columns.iter_mut().enumerate() {
            // SAFETY: row i < LANES is readable for LANES values, as the caller guarantees.
            *column = unsafe { self.load_f32(p.add(i * stride)) };
        }
        self.transpose(columns);
    }
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
