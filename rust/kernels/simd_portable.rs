//! The portable level: plain IEEE arithmetic on small arrays, which LLVM vectorises to SSE2 or
//! NEON. Separate multiply and add (no FMA), so it stays fast on CPUs without FMA.

use super::simd::{Arithmetic, Element, Simd};

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
        impl Arithmetic for Portable<$e> {
            type Elem = $e;
            type V = [$e; PORTABLE_LANES];
            const FUSED_MUL_ADD: bool = false;

            #[inline(always)]
            fn splat(self, x: $e) -> Self::V {
                [x; PORTABLE_LANES]
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
            fn settle_nan(self, a: Self::V) -> Self::V {
                portable_lanewise!(a, |x| if x.is_nan() { <$e>::NAN } else { *x })
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
            fn neg_magnitude_normal(self, a: Self::V) -> Self::V {
                const SIGN: $bits = 1 << (<$bits>::BITS - 1);
                let nearest = (-<$e>::MIN_POSITIVE).to_bits();
                portable_lanewise!(a, |x| <$e>::from_bits((x.to_bits() | SIGN).max(nearest)))
            }
            #[inline(always)]
            fn select_by_sign(self, sign: Self::V, a: Self::V, b: Self::V) -> Self::V {
                let mut r = a;
                for i in 0..PORTABLE_LANES {
                    if sign[i].is_sign_negative() {
                        r[i] = b[i];
                    }
                }
                r
            }
            #[inline(always)]
            fn zero_below_nonneg(self, a: Self::V, floor: Self::V) -> Self::V {
                portable_zip!(a, floor, |x, f| if x.to_bits() < f.to_bits() {
                    0.0
                } else {
                    x
                })
            }
        }

        impl Simd for Portable<$e> {
            const LANES: usize = PORTABLE_LANES;
            const MAX_TILE_COLS: usize = 4;
            /// As at AVX2, whose chunks have the same shape.
            const FIRST_LAYER_BLOCK_BYTES: Option<usize> = None;
            const NAME: &'static str = "portable";

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
