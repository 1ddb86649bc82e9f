//! Vectorised transcendental functions (exp, sigmoid, tanh) and the activations built on them.
//!
//! Every use of `exp` in fastmlp has an argument `<= 0` (sigmoid takes `exp(-|x|)`, softmax
//! `exp(x - max)`), so `exp_nonpositive` only guards the low end: it can never overflow. NaN
//! propagates.
//!
//! No function here makes or reads a subnormal number, whatever its input: a floating-point
//! operation that does takes a microcode assist on Intel cores (a hundred cycles or more per
//! vector), which made saturated inputs several times slower than moderate ones. Results
//! whose magnitude would fall below the smallest normal number are zero instead, selected by
//! comparing bits as integers (`Arithmetic::flush_below`), never produced by an operation that
//! underflows; subnormal inputs are read as zero of their sign.

use super::simd::{Arithmetic, Element, Simd};
use super::simd_interleaved::Interleaved;

/// What an activation does to a layer's pre-activation values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    Identity,
    Sigmoid,
    Relu,
    Tanh,
    Softmax,
    LogSoftmax,
}

impl Activation {
    pub const NAMES: [&'static str; 5] = ["identity", "sigmoid", "relu", "tanh", "softmax"];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "identity" => Some(Self::Identity),
            "sigmoid" => Some(Self::Sigmoid),
            "relu" => Some(Self::Relu),
            "tanh" => Some(Self::Tanh),
            "softmax" => Some(Self::Softmax),
            "log_softmax" => Some(Self::LogSoftmax),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Sigmoid => "sigmoid",
            Self::Relu => "relu",
            Self::Tanh => "tanh",
            Self::Softmax => "softmax",
            Self::LogSoftmax => "log_softmax",
        }
    }

    /// Softmax-like activations couple the outputs of one row; the others act on each value alone.
    pub fn is_row_wise(self) -> bool {
        matches!(self, Self::Softmax | Self::LogSoftmax)
    }
}

/// Constants of the Cody-Waite reduction and the Taylor polynomial for one element type.
pub trait ExpConstants: Element {
    /// At and below this, `exp_nonpositive` returns 0: just above ln(MIN_NORMAL), so every
    /// result it computes is at least the smallest normal number (`n >= -126` or `-1022`, with
    /// `r` clearly positive there so the polynomial's rounding cannot step below it).
    const EXP_LOWEST: Self;
    /// sqrt(MIN_NORMAL): the product of two numbers at least this large is normal, and next to
    /// 1 a value below it is far below the last bit (2^-63 against float32's 2^-24).
    const NEGLIGIBLE: Self;
    /// Below this `|r|`, every Horner step of the polynomial rounds to its constant, so the
    /// polynomial is evaluated at 0 instead where multiply-adds are not fused (the portable
    /// level): there `h * r` for a tiny normal `r` would otherwise underflow. A fused step
    /// rounds only its sum, which is near its constant, so the levels with FMA skip the flush
    /// and get the same bits.
    const POLYNOMIAL_FLOOR: Self;
    const LOG2_E: Self;
    /// ln 2 split so that `n * LN2_HI` is exact for every `n` the clamp allows.
    const LN2_HI: Self;
    const LN2_LO: Self;
    /// 1/k! for k = degree..=0, highest first (Horner order). Degree 7 (f32) and 13 (f64) keep
    /// the truncation error on |r| <= ln(2)/2 below half an ulp.
    const TAYLOR: &'static [Self];
}

impl ExpConstants for f32 {
    const EXP_LOWEST: f32 = -87.3365;
    const NEGLIGIBLE: f32 = f32::from_bits((127 - 63) << 23); // 2^-63
    const POLYNOMIAL_FLOOR: f32 = f32::from_bits((127 - 40) << 23); // 2^-40
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const TAYLOR: &'static [f32] = &[
        1.0 / 5040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ];
}

impl ExpConstants for f64 {
    const EXP_LOWEST: f64 = -708.3964;
    const NEGLIGIBLE: f64 = f64::from_bits((1023 - 511) << 52); // 2^-511
    const POLYNOMIAL_FLOOR: f64 = f64::from_bits((1023 - 60) << 52); // 2^-60
    const LOG2_E: f64 = std::f64::consts::LOG2_E;
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    const TAYLOR: &'static [f64] = &[
        1.0 / 6_227_020_800.0,
        1.0 / 479_001_600.0,
        1.0 / 39_916_800.0,
        1.0 / 3_628_800.0,
        1.0 / 362_880.0,
        1.0 / 40_320.0,
        1.0 / 5040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ];
}

/// The shared reduction of `exp` and `expm1` for `x <= 0` (or NaN): returns `(n, h, r)` with
/// `exp(x) = 2^n * (1 + h * r)`, `|r| <= ln(2)/2`.
#[inline(always)]
fn exp_reduce<S: Arithmetic>(s: S, x: S::V) -> (S::V, S::V, S::V)
where
    S::Elem: ExpConstants,
{
    // `max(lowest, x)` returns x when x is NaN, so NaN survives the clamp.
    let x = s.max(s.splat(S::Elem::EXP_LOWEST), x);
    let n = s.round(s.mul(x, s.splat(S::Elem::LOG2_E)));
    let r = s.mul_add(n, s.splat(S::Elem::ZERO - S::Elem::LN2_HI), x);
    let r = s.mul_add(n, s.splat(S::Elem::ZERO - S::Elem::LN2_LO), r);
    // Horner over the Taylor coefficients except the constant term; the caller multiplies
    // `h` by the real `r`.
    let coefficients = S::Elem::TAYLOR;
    let r_polynomial = if S::FUSED_MUL_ADD {
        r
    } else {
        s.flush_below(r, s.splat(S::Elem::POLYNOMIAL_FLOOR))
    };
    let mut h = s.splat(coefficients[0]);
    for &c in &coefficients[1..coefficients.len() - 1] {
        h = s.mul_add(h, r_polynomial, s.splat(c));
    }
    (n, h, r)
}

/// `exp(x)` for `x <= 0` (or NaN), to within a few ulp; exactly 0 at and below `EXP_LOWEST`,
/// where the true value is a subnormal number (or within 0.005% above the smallest normal).
#[inline(always)]
pub fn exp_nonpositive<S: Arithmetic>(s: S, x: S::V) -> S::V
where
    S::Elem: ExpConstants,
{
    let e = exp_of_clamped(s, x);
    // `lowest - x >= 0` selects the zero; a NaN `x` makes the mask NaN and keeps `e` (NaN).
    let at_or_below_lowest = s.sub(s.splat(S::Elem::EXP_LOWEST), x);
    s.select_nonneg(at_or_below_lowest, s.splat(S::Elem::ZERO), e)
}

/// `exp(max(x, EXP_LOWEST))` for `x <= 0` (or NaN): at and below `EXP_LOWEST` the smallest
/// normal number or just above it, which a caller that zeroes everything below twice that
/// (sigmoid) need not select away.
#[inline(always)]
fn exp_of_clamped<S: Arithmetic>(s: S, x: S::V) -> S::V
where
    S::Elem: ExpConstants,
{
    let (n, h, r) = exp_reduce(s, x);
    s.ldexp(s.mul_add(h, r, s.splat(S::Elem::ONE)), n)
}

/// `exp(x) - 1` for `x <= 0` (or NaN), with relative accuracy near 0: where `n = 0` the
/// result is the polynomial's tail `h * r` itself, so nothing cancels.
#[inline(always)]
pub fn expm1_nonpositive<S: Arithmetic>(s: S, x: S::V) -> S::V
where
    S::Elem: ExpConstants,
{
    let (n, h, r) = exp_reduce(s, x);
    let one = s.splat(S::Elem::ONE);
    let far = s.sub(s.ldexp(s.mul_add(h, r, one), n), one);
    // -|n| >= 0 exactly when n == 0.
    let n_is_zero = s.sub(s.splat(S::Elem::ZERO), s.abs(n));
    s.select_nonneg(n_is_zero, s.mul(h, r), far)
}

/// The logistic function, stable for every input: `exp(-|x|)` cannot overflow, and the two
/// branches keep relative accuracy on both tails. Exactly 0 at -inf and 1 at +inf. Results
/// below `floor` (at most `NEGLIGIBLE`) are zero. Reads `x` only through its bits, so it needs
/// no flush of subnormal inputs first: they give 1/2, as zero does.
#[inline(always)]
pub fn sigmoid<S: Arithmetic>(s: S, x: S::V, floor: S::V) -> S::V
where
    S::Elem: ExpConstants,
{
    // A zero or subnormal `|x|` is read as the smallest normal number, whose `exp` is exactly
    // 1 as zero's is (the reduction gives `n = 0`, and next to 1 the polynomial's terms round
    // away). Below `EXP_LOWEST`, `e` is about the smallest normal number rather than 0; both
    // give `1 + e = 1` and both are zeroed below, so the select `exp_nonpositive` adds would
    // change no bit here.
    let e = exp_of_clamped(s, s.neg_magnitude_normal(x));
    // `1 / (1 + e)` for `x >= 0`, `e / (1 + e)` below: one division with the numerator chosen
    // by `x`'s sign bit (-0 and negative subnormals take `e`, which is 1 there, also giving
    // 1/2), rounded once, and shorter than a reciprocal then a product on the chain a core's
    // out-of-order window has to hide. Where `e` is at most 2^-24 (2^-53), `1 + e` rounds to 1,
    // so the negative tail is `e` itself: zeroing `e` below `floor` zeroes exactly the results
    // below it, with no separate pass over them. Below twice the smallest normal number the
    // quotient would underflow, so `e` is zeroed there too. (`e` is positive or NaN, and a NaN
    // `e` makes the denominator NaN, whichever way the numerator's `e` is zeroed.)
    let one = s.splat(S::Elem::ONE);
    let twice_min_normal = s.splat(S::Elem::MIN_NORMAL + S::Elem::MIN_NORMAL);
    let tail = s.zero_below_nonneg(e, s.max(floor, twice_min_normal));
    s.div(s.select_by_sign(x, one, tail), s.add(one, e))
}

/// `tanh(x) = sign(x) * -m / (2 + m)` with `m = expm1(-2|x|)`: no overflow, and relative
/// accuracy of a few ulp also near 0, where `(1 - e) / (1 + e)` would cancel.
#[inline(always)]
pub fn tanh<S: Arithmetic>(s: S, x: S::V) -> S::V
where
    S::Elem: ExpConstants,
{
    let zero = s.splat(S::Elem::ZERO);
    let ax = s.abs(x);
    let m = expm1_nonpositive(s, s.sub(zero, s.add(ax, ax)));
    let two = s.splat(S::Elem::ONE + S::Elem::ONE);
    let magnitude = s.div(s.sub(zero, m), s.add(two, m));
    s.select_nonneg(x, magnitude, s.sub(zero, magnitude))
}

/// `max(x, 0)`, keeping NaN (as `np.maximum` does).
#[inline(always)]
pub fn relu<S: Arithmetic>(s: S, x: S::V) -> S::V {
    s.max(s.splat(S::Elem::ZERO), x)
}

/// The smallest magnitude an activation's result keeps; smaller ones become zero. Results a
/// caller sees keep everything down to the smallest normal number. Inside a network, the
/// bounded activations (sigmoid, softmax) also zero what is below `NEGLIGIBLE`: such a value
/// times any weight of at least `NEGLIGIBLE` would otherwise make a subnormal, in the next
/// layer's first multiply-add when its bias is 0 (the tutorial network on raw pixels, whose
/// saturated sigmoids land anywhere down to 1e-38, does exactly that). Next to the other terms
/// of the sum, which include the bias and the activations in (0, 1], such a value is 2^-40
/// (float32) below the last bit. Scale-free activations (identity, relu, tanh) keep every
/// normal value, so a network fed tiny inputs on purpose is not zeroed.
#[inline(always)]
pub fn activation_floor<E: ExpConstants>(activation: Activation, hidden: bool) -> E {
    match activation {
        Activation::Sigmoid | Activation::Softmax if hidden => E::NEGLIGIBLE,
        _ => E::MIN_NORMAL,
    }
}

/// Applies an element-wise activation; the row-wise ones (softmax) are applied by the caller.
/// Subnormal lanes of `x` are read as zero, and results below `floor` are zero.
#[inline(always)]
pub fn apply_elementwise<S: Arithmetic>(s: S, activation: Activation, x: S::V, floor: S::V) -> S::V
where
    S::Elem: ExpConstants,
{
    let min_normal = s.splat(S::Elem::MIN_NORMAL);
    let y = match activation {
        // sigmoid reads subnormal lanes as zero, and zeroes its results below `floor`, itself
        // and more cheaply.
        Activation::Sigmoid => return sigmoid(s, x, floor),
        Activation::Relu => relu(s, s.flush_below(x, min_normal)),
        Activation::Tanh => tanh(s, s.flush_below(x, min_normal)),
        Activation::Identity | Activation::Softmax | Activation::LogSoftmax => {
            s.flush_below(x, min_normal)
        }
    };
    s.flush_below(y, floor)
}

/// `apply_elementwise` over `vectors` consecutive vectors from `src` to `dst` (which may be the
/// same place), four at a time as an `Interleaved` group and the rest one by one: a sigmoid is
/// a long dependency chain, and one vector after another leaves a core's out-of-order window
/// mostly waiting (on Zen 2, four side by side made `fastmlp.sigmoid` 20% faster and a
/// 10,000-row forward pass 3.5%). In a loop LLVM keeps rolled (the count is opaque to it), so
/// each activation's code is compiled once per caller rather than once per tile width.
///
/// # Safety
/// `src` must be readable and `dst` writable for `vectors * LANES` elements; where they
/// overlap, `dst` must not start after `src`.
#[inline(always)]
pub unsafe fn apply_elementwise_to<S: Simd>(
    s: S,
    activation: Activation,
    src: *const S::Elem,
    dst: *mut S::Elem,
    vectors: usize,
    floor: S::Elem,
) where
    S::Elem: ExpConstants,
{
    const GROUP: usize = 4;
    let group = Interleaved::<S, GROUP>(s);
    let vectors = std::hint::black_box(vectors);
    let grouped = vectors - vectors % GROUP;
    for first in (0..grouped).step_by(GROUP) {
        let offset = |j: usize| (first + j) * S::LANES;
        // SAFETY: `first + GROUP <= vectors`, so the group lies inside both buffers as the
        // caller guarantees; it is read whole before any of it is written.
        unsafe {
            let mut x = group.splat(S::Elem::ZERO);
            for (j, v) in x.iter_mut().enumerate() {
                *v = s.load(src.add(offset(j)));
            }
            let y = apply_elementwise(group, activation, x, group.splat(floor));
            for (j, &v) in y.iter().enumerate() {
                s.store(dst.add(offset(j)), v);
            }
        }
    }
    for i in grouped..vectors {
        // SAFETY: `i < vectors`, inside both buffers as the caller guarantees.
        unsafe {
            let x = s.load(src.add(i * S::LANES));
            let y = apply_elementwise(s, activation, x, s.splat(floor));
            s.store(dst.add(i * S::LANES), y);
        }
    }
}

/// A running vector sum of non-negative terms that also carries what each addition's rounding
/// dropped (the cascaded summation Sum2 of Ogita, Rump and Oishi). A plain running sum loses
/// up to half an ulp of the total per term, which a softmax shows: a dominant 1 plus 9,999
/// terms of exp(-13.5) summed 300 ulp off in float32, and 17 of them already beyond 1e-6.
/// The dropped parts are summed plainly too, so their own sum would drift the same way over
/// hundreds of thousands of terms (33 ulp at 100,000): `renormalize` every
/// `RENORMALIZE_EVERY` additions moves them into the sum and keeps the total within a few
/// ulp at any length.
#[derive(Clone, Copy)]
pub struct CompensatedSum<V> {
    pub sum: V,
    pub error: V,
}

impl<V: Copy> CompensatedSum<V> {
    #[inline(always)]
    pub fn zero<S: Simd<V = V>>(s: S) -> Self {
        let zero = s.splat(S::Elem::ZERO);
        CompensatedSum {
            sum: zero,
            error: zero,
        }
    }

    /// Adds `x` lane by lane. The rounding error of each addition is recovered exactly
    /// (Knuth's TwoSum, valid whichever operand is larger) and summed on the side, off the
    /// dependency chain of the sum itself.
    #[inline(always)]
    pub fn add<S: Simd<V = V>>(&mut self, s: S, x: V) {
        let total = s.add(self.sum, x);
        let x_part = s.sub(total, self.sum);
        let sum_part = s.sub(total, x_part);
        let dropped = s.add(s.sub(self.sum, sum_part), s.sub(x, x_part));
        self.error = s.add(self.error, dropped);
        self.sum = total;
    }

    /// Moves the collected error into the sum, keeping in `error` exactly what that addition
    /// rounds off (Fast2Sum: exact because the terms are non-negative, so `sum` is at least
    /// as large as the dropped parts).
    #[inline(always)]
    pub fn renormalize<S: Simd<V = V>>(&mut self, s: S) {
        let total = s.add(self.sum, self.error);
        let moved = s.sub(total, self.sum);
        self.error = s.sub(self.error, moved);
        self.sum = total;
    }

    #[inline(always)]
    pub fn total<S: Simd<V = V>>(self, s: S) -> V {
        s.add(self.sum, self.error)
    }
}

/// How many additions a `CompensatedSum` takes between renormalisations: few enough that the
/// dropped parts never sum to more than a few ulp of the total, so their own rounding stays
/// negligible; many enough that the extra three operations cost nothing measurable.
pub const RENORMALIZE_EVERY: usize = 32;

/// Softmax (or log-softmax) over `count` vectors laid out `stride` elements apart, each lane an
/// independent row: the max and the sum run vertically, so no lane ever looks at another.
/// Summation is compensated and in vector order, which the single-row path reproduces exactly.
/// Probabilities below `floor` (at least `MIN_NORMAL`) are 0, chosen before the division that
/// would underflow; terms below `NEGLIGIBLE` are left out of the sum, which is at least 1, so
/// that no rounding error the compensation recovers is subnormal.
///
/// # Safety
/// `src + j * stride` and `dst + j * stride` must be valid for `S::LANES` elements for every
/// `j < count`, with `count >= 1`. `src` may equal `dst`.
#[inline(always)]
pub unsafe fn softmax_vertical<S: Simd>(
    s: S,
    src: *const S::Elem,
    dst: *mut S::Elem,
    count: usize,
    stride: usize,
    log: bool,
    floor: S::Elem,
) where
    S::Elem: ExpConstants,
{
    let min_normal = s.splat(S::Elem::MIN_NORMAL);
    let negligible = s.splat(S::Elem::NEGLIGIBLE);
    // SAFETY: (whole body) every pointer is `src`/`dst` plus `j * stride` with `j < count`,
    // which the caller guarantees is valid for one vector.
    unsafe {
        // Macros, not closures: a closure would be compiled outside the caller's target
        // features.
        macro_rules! load {
            ($j:expr) => {
                s.flush_below(s.load(src.add($j * stride)), min_normal)
            };
        }
        let mut max = load!(0);
        for j in 1..count {
            max = s.max(max, load!(j));
        }
        macro_rules! shifted {
            ($j:expr) => {
                s.flush_below(s.sub(load!($j), max), min_normal)
            };
        }
        let mut terms = CompensatedSum::zero(s);
        for j in 0..count {
            let e = exp_nonpositive(s, shifted!(j));
            if !log {
                s.store(dst.add(j * stride), e);
            }
            terms.add(s, s.flush_below(e, negligible));
            if j % RENORMALIZE_EVERY == RENORMALIZE_EVERY - 1 {
                terms.renormalize(s);
            }
        }
        let sum = terms.total(s);
        if log {
            let log_sum = lanewise_ln(s, sum);
            for j in 0..count {
                s.store(dst.add(j * stride), s.sub(shifted!(j), log_sum));
            }
        } else {
            // `floor * sum` is exact (a power of two times sum >= 1), and a term at least
            // that large divides to at least `floor`.
            let smallest_term = s.mul(s.splat(floor), sum);
            for j in 0..count {
                let p = dst.add(j * stride);
                s.store(p, s.div(s.flush_below(s.load(p), smallest_term), sum));
            }
        }
    }
}

/// Natural log of each lane. Used once per row (after a sum), so scalar `ln` is cheap enough.
#[inline(always)]
pub fn lanewise_ln<S: Simd>(s: S, v: S::V) -> S::V {
    let mut lanes = [S::Elem::ZERO; 16];
    debug_assert!(S::LANES <= lanes.len());
    // SAFETY: `lanes` holds 16 >= LANES elements.
    unsafe { s.store(lanes.as_mut_ptr(), v) };
    for lane in lanes.iter_mut().take(S::LANES) {
        *lane = lane.ln();
    }
    // SAFETY: as above.
    unsafe { s.load(lanes.as_ptr()) }
}
