//! `Interleaved`: a group of vectors of one level that runs the arithmetic the math kernels are
//! written in (`Arithmetic`, in `simd.rs`) on all of them in lockstep.
//!
//! Why groups: one sigmoid is a chain of about 50 operations, nearly all dependent on the one
//! before, and a core's out-of-order window holds only a few such chains when vectors follow
//! one another: on an AMD Zen 2 core a loop of sigmoids ran at ~40 cycles per vector of 8
//! floats. With every operation applied to four vectors before the next, the window sees four
//! independent chains side by side (BENCHMARKS.md, "Zen 2").

use super::simd::{Arithmetic, Element, Simd};

/// `N` vectors of level `S` as one value: each operation runs on all `N` (one instruction each,
/// back to back) before the next operation starts, so independent dependency chains sit next
/// to each other in the instruction stream. Every lane gets exactly the operations, in the
/// same order, that a single vector would: the results are bit-identical.
#[derive(Clone, Copy)]
pub struct Interleaved<S, const N: usize>(pub S);

/// `[f(0), f(1), ..., f(N - 1)]` for an expression in `i`. A loop, not `std::array::from_fn`:
/// a closure would be compiled outside the caller's target features.
macro_rules! each {
    ($group:expr, |$i:ident| $value:expr) => {{
        let mut out = [Arithmetic::splat($group.0, <S::Elem as Element>::ZERO); N];
        for $i in 0..N {
            out[$i] = $value;
        }
        out
    }};
}

impl<S: Simd, const N: usize> Arithmetic for Interleaved<S, N> {
    type Elem = S::Elem;
    type V = [S::V; N];
    const FUSED_MUL_ADD: bool = S::FUSED_MUL_ADD;
    #[inline(always)]
    fn splat(self, x: S::Elem) -> Self::V {
        [Arithmetic::splat(self.0, x); N]
    }
    #[inline(always)]
    fn add(self, a: Self::V, b: Self::V) -> Self::V {
        each!(self, |i| Arithmetic::add(self.0, a[i], b[i]))
    }
    #[inline(always)]
    fn sub(self, a: Self::V, b: Self::V) -> Self::V {
        each!(self, |i| Arithmetic::sub(self.0, a[i], b[i]))
    }
    #[inline(always)]
    fn mul(self, a: Self::V, b: Self::V) -> Self::V {
        each!(self, |i| Arithmetic::mul(self.0, a[i], b[i]))
    }
    #[inline(always)]
    fn div(self, a: Self::V, b: Self::V) -> Self::V {
        each!(self, |i| Arithmetic::div(self.0, a[i], b[i]))
    }
    #[inline(always)]
    fn mul_add(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        each!(self, |i| Arithmetic::mul_add(self.0, a[i], b[i], c[i]))
    }
    #[inline(always)]
    fn max(self, a: Self::V, b: Self::V) -> Self::V {
        each!(self, |i| Arithmetic::max(self.0, a[i], b[i]))
    }
    #[inline(always)]
    fn abs(self, a: Self::V) -> Self::V {
        each!(self, |i| Arithmetic::abs(self.0, a[i]))
    }
    #[inline(always)]
    fn round(self, a: Self::V) -> Self::V {
        each!(self, |i| Arithmetic::round(self.0, a[i]))
    }
    #[inline(always)]
    fn ldexp(self, a: Self::V, n: Self::V) -> Self::V {
        each!(self, |i| Arithmetic::ldexp(self.0, a[i], n[i]))
    }
    #[inline(always)]
    fn select_nonneg(self, mask: Self::V, a: Self::V, b: Self::V) -> Self::V {
        each!(self, |i| Arithmetic::select_nonneg(
            self.0, mask[i], a[i], b[i]
        ))
    }
    #[inline(always)]
    fn flush_below(self, a: Self::V, floor: Self::V) -> Self::V {
        each!(self, |i| Arithmetic::flush_below(self.0, a[i], floor[i]))
    }
    #[inline(always)]
    fn neg_magnitude_normal(self, a: Self::V) -> Self::V {
        each!(self, |i| Arithmetic::neg_magnitude_normal(self.0, a[i]))
    }
    #[inline(always)]
    fn select_by_sign(self, sign: Self::V, a: Self::V, b: Self::V) -> Self::V {
        each!(self, |i| Arithmetic::select_by_sign(
            self.0, sign[i], a[i], b[i]
        ))
    }
    #[inline(always)]
    fn zero_below_nonneg(self, a: Self::V, floor: Self::V) -> Self::V {
        each!(self, |i| Arithmetic::zero_below_nonneg(
            self.0, a[i], floor[i]
        ))
    }
    #[inline(always)]
    fn settle_nan(self, a: Self::V) -> Self::V {
        each!(self, |i| Arithmetic::settle_nan(self.0, a[i]))
    }
}
