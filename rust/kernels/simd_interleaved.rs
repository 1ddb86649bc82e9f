//! The arithmetic the math kernels are written in (`Arithmetic`), for one vector of a level or
//! for `Interleaved` groups of vectors that run through it in lockstep.
//!
//! Why groups: one sigmoid is a chain of about 50 operations, nearly all dependent on the one
//! before, and a core's out-of-order window holds only a few such chains when vectors follow
//! one another: on an AMD Zen 2 core a loop of sigmoids ran at ~40 cycles per vector of 8
//! floats. With every operation applied to four vectors before the next, the window sees four
//! independent chains side by side (BENCHMARKS.md, "Zen 2").

use super::simd::{Element, Simd};

/// The element-wise arithmetic of `Simd` (same names and meanings), as a trait of its own so
/// that the transcendental functions in `math.rs` also run on `Interleaved` groups. Every
/// `Simd` level has it, forwarded unchanged. Where a function is bounded by `S: Simd`, calls
/// resolve to `Simd`'s own methods (a bound's methods come before a trait in scope), so the
/// two never clash in generic code; on a concrete level type with both traits imported they
/// would, which is why only `math.rs`, whose functions are all generic, imports this one.
pub trait Arithmetic: Copy {
    type Elem: Element;
    type V: Copy;
    const FUSED_MUL_ADD: bool;
    fn splat(self, x: Self::Elem) -> Self::V;
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    fn div(self, a: Self::V, b: Self::V) -> Self::V;
    fn mul_add(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    fn max(self, a: Self::V, b: Self::V) -> Self::V;
    fn abs(self, a: Self::V) -> Self::V;
    fn round(self, a: Self::V) -> Self::V;
    fn ldexp(self, a: Self::V, n: Self::V) -> Self::V;
    fn select_nonneg(self, mask: Self::V, a: Self::V, b: Self::V) -> Self::V;
    fn flush_below(self, a: Self::V, floor: Self::V) -> Self::V;
}

impl<S: Simd> Arithmetic for S {
    type Elem = S::Elem;
    type V = S::V;
    const FUSED_MUL_ADD: bool = S::FUSED_MUL_ADD;
    #[inline(always)]
    fn splat(self, x: S::Elem) -> S::V {
        Simd::splat(self, x)
    }
    #[inline(always)]
    fn add(self, a: S::V, b: S::V) -> S::V {
        Simd::add(self, a, b)
    }
    #[inline(always)]
    fn sub(self, a: S::V, b: S::V) -> S::V {
        Simd::sub(self, a, b)
    }
    #[inline(always)]
    fn mul(self, a: S::V, b: S::V) -> S::V {
        Simd::mul(self, a, b)
    }
    #[inline(always)]
    fn div(self, a: S::V, b: S::V) -> S::V {
        Simd::div(self, a, b)
    }
    #[inline(always)]
    fn mul_add(self, a: S::V, b: S::V, c: S::V) -> S::V {
        Simd::mul_add(self, a, b, c)
    }
    #[inline(always)]
    fn max(self, a: S::V, b: S::V) -> S::V {
        Simd::max(self, a, b)
    }
    #[inline(always)]
    fn abs(self, a: S::V) -> S::V {
        Simd::abs(self, a)
    }
    #[inline(always)]
    fn round(self, a: S::V) -> S::V {
        Simd::round(self, a)
    }
    #[inline(always)]
    fn ldexp(self, a: S::V, n: S::V) -> S::V {
        Simd::ldexp(self, a, n)
    }
    #[inline(always)]
    fn select_nonneg(self, mask: S::V, a: S::V, b: S::V) -> S::V {
        Simd::select_nonneg(self, mask, a, b)
    }
    #[inline(always)]
    fn flush_below(self, a: S::V, floor: S::V) -> S::V {
        Simd::flush_below(self, a, floor)
    }
}

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
        let mut out = [Simd::splat($group.0, <S::Elem as Element>::ZERO); N];
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
        [Simd::splat(self.0, x); N]
    }
    #[inline(always)]
    fn add(self, a: Self::V, b: Self::V) -> Self::V {
        each!(self, |i| Simd::add(self.0, a[i], b[i]))
    }
    #[inline(always)]
    fn sub(self, a: Self::V, b: Self::V) -> Self::V {
        each!(self, |i| Simd::sub(self.0, a[i], b[i]))
    }
    #[inline(always)]
    fn mul(self, a: Self::V, b: Self::V) -> Self::V {
        each!(self, |i| Simd::mul(self.0, a[i], b[i]))
    }
    #[inline(always)]
    fn div(self, a: Self::V, b: Self::V) -> Self::V {
        each!(self, |i| Simd::div(self.0, a[i], b[i]))
    }
    #[inline(always)]
    fn mul_add(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        each!(self, |i| Simd::mul_add(self.0, a[i], b[i], c[i]))
    }
    #[inline(always)]
    fn max(self, a: Self::V, b: Self::V) -> Self::V {
        each!(self, |i| Simd::max(self.0, a[i], b[i]))
    }
    #[inline(always)]
    fn abs(self, a: Self::V) -> Self::V {
        each!(self, |i| Simd::abs(self.0, a[i]))
    }
    #[inline(always)]
    fn round(self, a: Self::V) -> Self::V {
        each!(self, |i| Simd::round(self.0, a[i]))
    }
    #[inline(always)]
    fn ldexp(self, a: Self::V, n: Self::V) -> Self::V {
        each!(self, |i| Simd::ldexp(self.0, a[i], n[i]))
    }
    #[inline(always)]
    fn select_nonneg(self, mask: Self::V, a: Self::V, b: Self::V) -> Self::V {
        each!(self, |i| Simd::select_nonneg(self.0, mask[i], a[i], b[i]))
    }
    #[inline(always)]
    fn flush_below(self, a: Self::V, floor: Self::V) -> Self::V {
        each!(self, |i| Simd::flush_below(self.0, a[i], floor[i]))
    }
}
