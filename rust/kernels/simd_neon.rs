//! The Arm NEON level of the `Simd` vocabulary: each vector is two 128-bit q-registers.
//
// Why two registers per vector: the micro-kernel holds `2 x MAX_TILE_COLS` accumulator vectors,
// two row loads and one broadcast. With one q-register per vector (4 f32 lanes) a k-step would
// broadcast 12 weights for 24 FMAs; with two it broadcasts 6 for the same 24, and 4 x 6
// accumulator registers + 4 for the rows + 1 broadcast = 29 of NEON's 32. It also gives f32 the
// same 8 lanes as the AVX2 and portable levels.
//
// Layout: `NeonRegister` holds what differs between `float32x4_t` and `float64x2_t` (one
// intrinsic per method, a few for the conversions), and the one generic `Arithmetic` impl and
// the one generic `Simd` impl apply it to both halves. A new method of either trait is one
// generic method here plus, where the element type matters, one `NeonRegister` method per
// register type.
//
// NEON is part of every aarch64 CPU (the `neon` target feature is on for every aarch64 target),
// so the token needs no run-time detection.

use std::arch::aarch64::*;
use std::marker::PhantomData;

use super::simd::{Arithmetic, Element, Simd};

// The arithmetic intrinsics are `#[target_feature(enable = "neon")]` functions, unsafe to call
// from code that does not itself list the feature, although the target always has it.
macro_rules! neon {
    ($e:expr) => {
        // SAFETY: NEON is part of the aarch64 baseline (the `neon` target feature is on for
        // every aarch64 target), so the intrinsic's feature is present on every CPU this runs on.
        unsafe { $e }
    };
}

/// The NEON level's token. Holding one proves nothing beyond the target, which always has NEON.
#[derive(Clone, Copy, Debug)]
pub struct Neon<E>(PhantomData<E>);

impl<E> Neon<E> {
    pub fn new() -> Self {
        Neon(PhantomData)
    }
}

impl<E> Default for Neon<E> {
    fn default() -> Self {
        Self::new()
    }
}

/// One logical vector: `low` holds lanes `0..R`, `high` lanes `R..2R` (R lanes per register).
#[derive(Clone, Copy, Debug)]
pub struct Pair<R> {
    low: R,
    high: R,
}

/// What one q-register of element type `Elem` does. Masks come back as the register's own
/// integer lanes, all ones or all zeros.
pub trait NeonRegister: Copy + Send + Sync + 'static {
    type Elem: Element;
    type Mask: Copy;
    /// Lanes in one register.
    const LANES: usize;
    fn splat(x: Self::Elem) -> Self;
    /// # Safety
    /// `p` must be valid for reading `LANES` elements.
    unsafe fn load(p: *const Self::Elem) -> Self;
    /// # Safety
    /// `p` must be valid for writing `LANES` elements.
    unsafe fn store(p: *mut Self::Elem, v: Self);
    fn add(a: Self, b: Self) -> Self;
    fn sub(a: Self, b: Self) -> Self;
    fn mul(a: Self, b: Self) -> Self;
    fn div(a: Self, b: Self) -> Self;
    /// `a * b + c` with one rounding (FMLA).
    fn mul_add(a: Self, b: Self, c: Self) -> Self;
    fn abs(a: Self) -> Self;
    /// Ties to even (FRINTN).
    fn round(a: Self) -> Self;
    /// `a > b` (false where either is NaN).
    fn greater(a: Self, b: Self) -> Self::Mask;
    /// `a >= 0` (false for NaN, true for -0).
    fn nonneg(a: Self) -> Self::Mask;
    /// `|a| > 0`: false exactly for zeros of either sign and NaN.
    fn nonzero_ordered(a: Self) -> Self::Mask;
    /// Lane-wise `mask ? a : b` (BSL).
    fn select(mask: Self::Mask, a: Self, b: Self) -> Self;
    /// Whether any lane of `mask` is clear, in either register.
    fn any_clear(a: Self::Mask, b: Self::Mask) -> bool;
    /// Bit `i` set where lane `i` is exactly zero (either sign; NaN is not zero).
    fn zero_bits(a: Self) -> u32;
    /// Lanes whose magnitude is below `floor`'s become zero of their sign, compared as
    /// integers on the bits (see `Arithmetic::flush_below`).
    fn flush_below(a: Self, floor: Self) -> Self;
    /// `-max(|a|, MIN_NORMAL)` on the bits (see `Arithmetic::neg_magnitude_normal`).
    fn neg_magnitude_normal(a: Self) -> Self;
    /// Lanes whose sign bit is set (-0 and NaN included), read from the bit.
    fn sign_set(a: Self) -> Self::Mask;
    /// Lanes whose bits are below `floor`'s, as unsigned integers, become +0 (see
    /// `Arithmetic::zero_below_nonneg`).
    fn zero_below_nonneg(a: Self, floor: Self) -> Self;
    /// `2^n` for integral `n` whose result is a normal number: the exponent field built directly.
    fn exp2_integral(n: Self) -> Self;
    /// Transposes the `LANES x LANES` block `rows` (exactly `LANES` registers).
    fn transpose_square(rows: &mut [Self]);
    /// # Safety
    /// `p` must be valid for reading `2 * LANES` bytes.
    unsafe fn load_u8_pair(p: *const u8) -> (Self, Self);
    /// Converts as `f32::to_element`: a float32 subnormal becomes zero of its sign before
    /// any conversion reads it.
    ///
    /// # Safety
    /// `p` must be valid for reading `2 * LANES` f32 values.
    unsafe fn load_f32_pair(p: *const f32) -> (Self, Self);
    /// Converts as `f64::to_element`: a float64 whose float32 would be subnormal (magnitude
    /// below 2^-126) becomes zero of its sign before the conversion, which would round it to a
    /// float32 subnormal (or up to the smallest normal).
    ///
    /// # Safety
    /// `p` must be valid for reading `2 * LANES` f64 values.
    unsafe fn load_f64_pair(p: *const f64) -> (Self, Self);
}

impl NeonRegister for float32x4_t {
    type Elem = f32;
    type Mask = uint32x4_t;
    const LANES: usize = 4;

    #[inline(always)]
    fn splat(x: f32) -> Self {
        neon!(vdupq_n_f32(x))
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller guarantees `p` is readable for 4 floats; LD1 needs no alignment.
        unsafe { vld1q_f32(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self) {
        // SAFETY: the caller guarantees `p` is writable for 4 floats; ST1 needs no alignment.
        unsafe { vst1q_f32(p, v) }
    }
    #[inline(always)]
    fn add(a: Self, b: Self) -> Self {
        neon!(vaddq_f32(a, b))
    }
    #[inline(always)]
    fn sub(a: Self, b: Self) -> Self {
        neon!(vsubq_f32(a, b))
    }
    #[inline(always)]
    fn mul(a: Self, b: Self) -> Self {
        neon!(vmulq_f32(a, b))
    }
    #[inline(always)]
    fn div(a: Self, b: Self) -> Self {
        neon!(vdivq_f32(a, b))
    }
    #[inline(always)]
    fn mul_add(a: Self, b: Self, c: Self) -> Self {
        neon!(vfmaq_f32(c, a, b))
    }
    #[inline(always)]
    fn abs(a: Self) -> Self {
        neon!(vabsq_f32(a))
    }
    #[inline(always)]
    fn round(a: Self) -> Self {
        neon!(vrndnq_f32(a))
    }
    #[inline(always)]
    fn greater(a: Self, b: Self) -> uint32x4_t {
        neon!(vcgtq_f32(a, b))
    }
    #[inline(always)]
    fn nonneg(a: Self) -> uint32x4_t {
        neon!(vcgezq_f32(a))
    }
    #[inline(always)]
    fn nonzero_ordered(a: Self) -> uint32x4_t {
        neon!(vcagtq_f32(a, vdupq_n_f32(0.0)))
    }
    #[inline(always)]
    fn select(mask: uint32x4_t, a: Self, b: Self) -> Self {
        neon!(vbslq_f32(mask, a, b))
    }
    #[inline(always)]
    fn any_clear(a: uint32x4_t, b: uint32x4_t) -> bool {
        neon!(vminvq_u32(vandq_u32(a, b))) == 0
    }
    #[inline(always)]
    fn zero_bits(a: Self) -> u32 {
        const BITS: [u32; 4] = [1, 2, 4, 8];
        // SAFETY: `BITS` holds the 4 values LD1 reads.
        let bits = unsafe { vld1q_u32(BITS.as_ptr()) };
        neon!(vaddvq_u32(vandq_u32(vceqzq_f32(a), bits)))
    }
    #[inline(always)]
    fn flush_below(a: Self, floor: Self) -> Self {
        // Magnitudes (sign cleared) order as unsigned integers exactly as the floats do, NaN
        // above every finite floor; BIC then clears all but the sign of the tiny lanes.
        neon!({
            let magnitude = vdupq_n_u32(i32::MAX as u32);
            let bits = vreinterpretq_u32_f32(a);
            let floor = vandq_u32(vreinterpretq_u32_f32(floor), magnitude);
            let tiny = vcltq_u32(vandq_u32(bits, magnitude), floor);
            vreinterpretq_f32_u32(vbicq_u32(bits, vandq_u32(tiny, magnitude)))
        })
    }
    #[inline(always)]
    fn neg_magnitude_normal(a: Self) -> Self {
        neon!({
            let negative = vorrq_u32(vreinterpretq_u32_f32(a), vdupq_n_u32(1 << 31));
            let nearest = vdupq_n_u32((-f32::MIN_POSITIVE).to_bits());
            vreinterpretq_f32_u32(vmaxq_u32(negative, nearest))
        })
    }
    #[inline(always)]
    fn sign_set(a: Self) -> uint32x4_t {
        neon!(vcltzq_s32(vreinterpretq_s32_f32(a)))
    }
    #[inline(always)]
    fn zero_below_nonneg(a: Self, floor: Self) -> Self {
        neon!({
            let bits = vreinterpretq_u32_f32(a);
            let kept = vcgeq_u32(bits, vreinterpretq_u32_f32(floor));
            vreinterpretq_f32_u32(vandq_u32(bits, kept))
        })
    }
    #[inline(always)]
    fn exp2_integral(n: Self) -> Self {
        // FCVTZS is exact on integral values; the biased exponent shifted into place is 2^n.
        neon!({
            let biased = vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127));
            vreinterpretq_f32_s32(vshlq_n_s32::<23>(biased))
        })
    }
    #[inline(always)]
    fn transpose_square(rows: &mut [Self]) {
        assert_eq!(rows.len(), 4);
        // TRN1/TRN2 on 32-bit lanes pair up rows 0,1 and 2,3; the same on 64-bit lanes then
        // joins the pairs: the classic 4x4 transpose in 8 instructions.
        neon!({
            let t0 = vreinterpretq_f64_f32(vtrn1q_f32(rows[0], rows[1]));
            let t1 = vreinterpretq_f64_f32(vtrn2q_f32(rows[0], rows[1]));
            let t2 = vreinterpretq_f64_f32(vtrn1q_f32(rows[2], rows[3]));
            let t3 = vreinterpretq_f64_f32(vtrn2q_f32(rows[2], rows[3]));
            rows[0] = vreinterpretq_f32_f64(vtrn1q_f64(t0, t2));
            rows[1] = vreinterpretq_f32_f64(vtrn1q_f64(t1, t3));
            rows[2] = vreinterpretq_f32_f64(vtrn2q_f64(t0, t2));
            rows[3] = vreinterpretq_f32_f64(vtrn2q_f64(t1, t3));
        })
    }
    #[inline(always)]
    unsafe fn load_u8_pair(p: *const u8) -> (Self, Self) {
        // SAFETY: the caller guarantees 8 readable bytes; NEON is baseline on aarch64.
        unsafe {
            let bytes = vmovl_u8(vld1_u8(p));
            (
                vcvtq_f32_u32(vmovl_u16(vget_low_u16(bytes))),
                vcvtq_f32_u32(vmovl_high_u16(bytes)),
            )
        }
    }
    #[inline(always)]
    unsafe fn load_f32_pair(p: *const f32) -> (Self, Self) {
        // SAFETY: the caller guarantees 8 readable floats.
        unsafe { (vld1q_f32(p), vld1q_f32(p.add(4))) }
    }
    #[inline(always)]
    unsafe fn load_f64_pair(p: *const f64) -> (Self, Self) {
        // FCVTN/FCVTN2 round to nearest even under the default FPCR, as `x as f32` does.
        let floor = float64x2_t::splat(f32::MIN_POSITIVE as f64);
        // SAFETY: the caller guarantees 8 readable doubles; each load reads 2 of them.
        let load = |i: usize| float64x2_t::flush_below(unsafe { vld1q_f64(p.add(i)) }, floor);
        neon!({
            let low = vcvt_high_f32_f64(vcvt_f32_f64(load(0)), load(2));
            let high = vcvt_high_f32_f64(vcvt_f32_f64(load(4)), load(6));
            (low, high)
        })
    }
}

impl NeonRegister for float64x2_t {
    type Elem = f64;
    type Mask = uint64x2_t;
    const LANES: usize = 2;

    #[inline(always)]
    fn splat(x: f64) -> Self {
        neon!(vdupq_n_f64(x))
    }
    #[inline(always)]
    unsafe fn load(p: *const f64) -> Self {
        // SAFETY: the caller guarantees `p` is readable for 2 doubles; LD1 needs no alignment.
        unsafe { vld1q_f64(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f64, v: Self) {
        // SAFETY: the caller guarantees `p` is writable for 2 doubles; ST1 needs no alignment.
        unsafe { vst1q_f64(p, v) }
    }
    #[inline(always)]
    fn add(a: Self, b: Self) -> Self {
        neon!(vaddq_f64(a, b))
    }
    #[inline(always)]
    fn sub(a: Self, b: Self) -> Self {
        neon!(vsubq_f64(a, b))
    }
    #[inline(always)]
    fn mul(a: Self, b: Self) -> Self {
        neon!(vmulq_f64(a, b))
    }
    #[inline(always)]
    fn div(a: Self, b: Self) -> Self {
        neon!(vdivq_f64(a, b))
    }
    #[inline(always)]
    fn mul_add(a: Self, b: Self, c: Self) -> Self {
        neon!(vfmaq_f64(c, a, b))
    }
    #[inline(always)]
    fn abs(a: Self) -> Self {
        neon!(vabsq_f64(a))
    }
    #[inline(always)]
    fn round(a: Self) -> Self {
        neon!(vrndnq_f64(a))
    }
    #[inline(always)]
    fn greater(a: Self, b: Self) -> uint64x2_t {
        neon!(vcgtq_f64(a, b))
    }
    #[inline(always)]
    fn nonneg(a: Self) -> uint64x2_t {
        neon!(vcgezq_f64(a))
    }
    #[inline(always)]
    fn nonzero_ordered(a: Self) -> uint64x2_t {
        neon!(vcagtq_f64(a, vdupq_n_f64(0.0)))
    }
    #[inline(always)]
    fn select(mask: uint64x2_t, a: Self, b: Self) -> Self {
        neon!(vbslq_f64(mask, a, b))
    }
    #[inline(always)]
    fn any_clear(a: uint64x2_t, b: uint64x2_t) -> bool {
        // No UMINV on 64-bit lanes; narrowing keeps one 32-bit half of each all-or-nothing lane.
        neon!(vminv_u32(vmovn_u64(vandq_u64(a, b)))) == 0
    }
    #[inline(always)]
    fn zero_bits(a: Self) -> u32 {
        const BITS: [u64; 2] = [1, 2];
        // SAFETY: `BITS` holds the 2 values LD1 reads.
        let bits = unsafe { vld1q_u64(BITS.as_ptr()) };
        neon!(vaddvq_u64(vandq_u64(vceqzq_f64(a), bits))) as u32
    }
    #[inline(always)]
    fn flush_below(a: Self, floor: Self) -> Self {
        neon!({
            let magnitude = vdupq_n_u64(i64::MAX as u64);
            let bits = vreinterpretq_u64_f64(a);
            let floor = vandq_u64(vreinterpretq_u64_f64(floor), magnitude);
            let tiny = vcltq_u64(vandq_u64(bits, magnitude), floor);
            vreinterpretq_f64_u64(vbicq_u64(bits, vandq_u64(tiny, magnitude)))
        })
    }
    #[inline(always)]
    fn neg_magnitude_normal(a: Self) -> Self {
        // No 64-bit UMAX: a compare and a select.
        neon!({
            let negative = vorrq_u64(vreinterpretq_u64_f64(a), vdupq_n_u64(1 << 63));
            let nearest = vdupq_n_u64((-f64::MIN_POSITIVE).to_bits());
            let raise = vcgtq_u64(nearest, negative);
            vreinterpretq_f64_u64(vbslq_u64(raise, nearest, negative))
        })
    }
    #[inline(always)]
    fn sign_set(a: Self) -> uint64x2_t {
        neon!(vcltzq_s64(vreinterpretq_s64_f64(a)))
    }
    #[inline(always)]
    fn zero_below_nonneg(a: Self, floor: Self) -> Self {
        neon!({
            let bits = vreinterpretq_u64_f64(a);
            let kept = vcgeq_u64(bits, vreinterpretq_u64_f64(floor));
            vreinterpretq_f64_u64(vandq_u64(bits, kept))
        })
    }
    #[inline(always)]
    fn exp2_integral(n: Self) -> Self {
        neon!({
            let biased = vaddq_s64(vcvtq_s64_f64(n), vdupq_n_s64(1023));
            vreinterpretq_f64_s64(vshlq_n_s64::<52>(biased))
        })
    }
    #[inline(always)]
    fn transpose_square(rows: &mut [Self]) {
        assert_eq!(rows.len(), 2);
        let (first, second) = (rows[0], rows[1]);
        rows[0] = neon!(vtrn1q_f64(first, second));
        rows[1] = neon!(vtrn2q_f64(first, second));
    }
    #[inline(always)]
    unsafe fn load_u8_pair(p: *const u8) -> (Self, Self) {
        // SAFETY: the caller guarantees 4 readable bytes, read as one unaligned u32.
        let word = unsafe { std::ptr::read_unaligned(p.cast::<u32>()) };
        neon!({
            let words = vmovl_u16(vget_low_u16(vmovl_u8(vcreate_u8(u64::from(word)))));
            (
                vcvtq_f64_u64(vmovl_u32(vget_low_u32(words))),
                vcvtq_f64_u64(vmovl_high_u32(words)),
            )
        })
    }
    #[inline(always)]
    unsafe fn load_f32_pair(p: *const f32) -> (Self, Self) {
        // FCVTL would widen a float32 subnormal exactly, to a normal float64 that packing's
        // flush would keep; `to_element` reads it as zero, so it is flushed in its own bits.
        // SAFETY: the caller guarantees 4 readable floats.
        let floats = unsafe { vld1q_f32(p) };
        let floats = float32x4_t::flush_below(floats, float32x4_t::splat(f32::MIN_POSITIVE));
        neon!((
            vcvt_f64_f32(vget_low_f32(floats)),
            vcvt_high_f64_f32(floats),
        ))
    }
    #[inline(always)]
    unsafe fn load_f64_pair(p: *const f64) -> (Self, Self) {
        // SAFETY: the caller guarantees 4 readable doubles.
        unsafe { (vld1q_f64(p), vld1q_f64(p.add(2))) }
    }
}

/// The element types with a NEON register type.
pub trait NeonElement: Element {
    type Register: NeonRegister<Elem = Self>;
}

impl NeonElement for f32 {
    type Register = float32x4_t;
}

impl NeonElement for f64 {
    type Register = float64x2_t;
}

/// Applies a register operation to both halves of one or more pairs.
macro_rules! halves {
    ($op:ident($($v:expr),+)) => {
        Pair {
            low: <E::Register as NeonRegister>::$op($($v.low),+),
            high: <E::Register as NeonRegister>::$op($($v.high),+),
        }
    };
}

impl<E: NeonElement> Arithmetic for Neon<E> {
    type Elem = E;
    type V = Pair<E::Register>;
    /// FMLA (`vfmaq`).
    const FUSED_MUL_ADD: bool = true;

    #[inline(always)]
    fn splat(self, x: E) -> Self::V {
        let v = E::Register::splat(x);
        Pair { low: v, high: v }
    }
    #[inline(always)]
    fn add(self, a: Self::V, b: Self::V) -> Self::V {
        halves!(add(a, b))
    }
    #[inline(always)]
    fn sub(self, a: Self::V, b: Self::V) -> Self::V {
        halves!(sub(a, b))
    }
    #[inline(always)]
    fn mul(self, a: Self::V, b: Self::V) -> Self::V {
        halves!(mul(a, b))
    }
    #[inline(always)]
    fn div(self, a: Self::V, b: Self::V) -> Self::V {
        halves!(div(a, b))
    }
    #[inline(always)]
    fn mul_add(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        halves!(mul_add(a, b, c))
    }
    #[inline(always)]
    fn max(self, a: Self::V, b: Self::V) -> Self::V {
        // Not FMAX, which returns NaN for a NaN in either operand: the vocabulary promises
        // x86's `a > b ? a : b`, so a NaN in `a` yields `b` (exp's clamp relies on it).
        let pick =
            |a: E::Register, b: E::Register| E::Register::select(E::Register::greater(a, b), a, b);
        Pair {
            low: pick(a.low, b.low),
            high: pick(a.high, b.high),
        }
    }
    #[inline(always)]
    fn abs(self, a: Self::V) -> Self::V {
        halves!(abs(a))
    }
    #[inline(always)]
    fn round(self, a: Self::V) -> Self::V {
        halves!(round(a))
    }
    #[inline(always)]
    fn ldexp(self, a: Self::V, n: Self::V) -> Self::V {
        // 2^n from its bits: with 2^n and the result normal, one multiplication is exact, as
        // at AVX2 (two factors, as the portable level scales, cost six more operations per
        // register and change no normal result).
        Pair {
            low: E::Register::mul(a.low, E::Register::exp2_integral(n.low)),
            high: E::Register::mul(a.high, E::Register::exp2_integral(n.high)),
        }
    }
    #[inline(always)]
    fn select_nonneg(self, mask: Self::V, a: Self::V, b: Self::V) -> Self::V {
        Pair {
            low: E::Register::select(E::Register::nonneg(mask.low), a.low, b.low),
            high: E::Register::select(E::Register::nonneg(mask.high), a.high, b.high),
        }
    }
    #[inline(always)]
    fn flush_below(self, a: Self::V, floor: Self::V) -> Self::V {
        halves!(flush_below(a, floor))
    }
    #[inline(always)]
    fn neg_magnitude_normal(self, a: Self::V) -> Self::V {
        halves!(neg_magnitude_normal(a))
    }
    #[inline(always)]
    fn select_by_sign(self, sign: Self::V, a: Self::V, b: Self::V) -> Self::V {
        Pair {
            low: E::Register::select(E::Register::sign_set(sign.low), b.low, a.low),
            high: E::Register::select(E::Register::sign_set(sign.high), b.high, a.high),
        }
    }
    #[inline(always)]
    fn zero_below_nonneg(self, a: Self::V, floor: Self::V) -> Self::V {
        halves!(zero_below_nonneg(a, floor))
    }
}

impl<E: NeonElement> Simd for Neon<E> {
    const LANES: usize = 2 * <E::Register as NeonRegister>::LANES;
    /// 4 x 6 accumulator registers + 4 for the two row loads + 1 broadcast = 29 of 32.
    const MAX_TILE_COLS: usize = 6;
    /// As at AVX2, whose chunks have the same shape (not measured on Arm).
    const FIRST_LAYER_BLOCK_BYTES: Option<usize> = None;
    const NAME: &'static str = "neon";

    #[inline(always)]
    unsafe fn load(self, p: *const E) -> Self::V {
        // SAFETY: the caller guarantees `p` is readable for LANES elements: both halves.
        unsafe {
            Pair {
                low: E::Register::load(p),
                high: E::Register::load(p.add(E::Register::LANES)),
            }
        }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut E, v: Self::V) {
        // SAFETY: the caller guarantees `p` is writable for LANES elements: both halves.
        unsafe {
            E::Register::store(p, v.low);
            E::Register::store(p.add(E::Register::LANES), v.high);
        }
    }
    #[inline(always)]
    fn any_zero_or_nan(self, a: Self::V) -> bool {
        E::Register::any_clear(
            E::Register::nonzero_ordered(a.low),
            E::Register::nonzero_ordered(a.high),
        )
    }
    #[inline(always)]
    fn nonzero_mask(self, a: Self::V) -> u32 {
        let lanes = E::Register::LANES;
        let zeros = E::Register::zero_bits(a.low) | (E::Register::zero_bits(a.high) << lanes);
        !zeros & ((1 << (2 * lanes)) - 1)
    }
    #[inline(always)]
    fn transpose(self, rows: &mut [Self::V]) {
        // The 2R x 2R block is four R x R register blocks [A B; C D] (A: rows 0..R, low
        // halves); its transpose is [A' C'; B' D'], each block transposed in registers.
        let r = E::Register::LANES;
        assert_eq!(rows.len(), 2 * r);
        let mut blocks = [[E::Register::splat(E::ZERO); 4]; 4];
        for i in 0..r {
            blocks[0][i] = rows[i].low;
            blocks[1][i] = rows[i].high;
            blocks[2][i] = rows[r + i].low;
            blocks[3][i] = rows[r + i].high;
        }
        for block in &mut blocks {
            E::Register::transpose_square(&mut block[..r]);
        }
        for i in 0..r {
            rows[i] = Pair {
                low: blocks[0][i],
                high: blocks[2][i],
            };
            rows[r + i] = Pair {
                low: blocks[1][i],
                high: blocks[3][i],
            };
        }
    }
    #[inline(always)]
    unsafe fn load_u8(self, p: *const u8) -> Self::V {
        // SAFETY: the caller guarantees `p` is readable for LANES bytes.
        let (low, high) = unsafe { E::Register::load_u8_pair(p) };
        Pair { low, high }
    }
    #[inline(always)]
    unsafe fn load_f32(self, p: *const f32) -> Self::V {
        // SAFETY: the caller guarantees `p` is readable for LANES floats.
        let (low, high) = unsafe { E::Register::load_f32_pair(p) };
        Pair { low, high }
    }
    #[inline(always)]
    unsafe fn load_f64(self, p: *const f64) -> Self::V {
        // SAFETY: the caller guarantees `p` is readable for LANES doubles.
        let (low, high) = unsafe { E::Register::load_f64_pair(p) };
        Pair { low, high }
    }
}
