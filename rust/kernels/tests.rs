//! Kernel tests without Python: every level the CPU supports against a scalar f64 reference.

use proptest::prelude::*;

use super::dispatch::{DispatchElement, Level, SimdTask};
use super::elementwise::{map_elementwise, softmax_axis, Source};
use super::forward::{PackedModel, Sink};
use super::math::{apply_elementwise, apply_elementwise_to, exp_nonpositive, Activation};
use super::pack::PackedLayer;
use super::simd::{InputElement, Simd};

fn levels() -> Vec<Level> {
    Level::ALL
        .into_iter()
        .filter(|l| l.is_supported())
        .collect()
}

struct ExpTask<'a>(&'a [f32]);

impl SimdTask<f32> for ExpTask<'_> {
    type Output = Vec<f32>;
    fn run<S: Simd<Elem = f32>>(self, s: S) -> Vec<f32> {
        let mut out = Vec::new();
        for chunk in self.0.chunks(S::LANES) {
            let mut lanes = [0.0f32; 16];
            lanes[..chunk.len()].copy_from_slice(chunk);
            // SAFETY: `lanes` holds 16 >= LANES values.
            unsafe {
                s.store(
                    lanes.as_mut_ptr(),
                    exp_nonpositive(s, s.load(lanes.as_ptr())),
                )
            };
            out.extend_from_slice(&lanes[..chunk.len()]);
        }
        out
    }
}

#[test]
fn exp_is_within_a_few_ulp_down_to_zero_at_every_level() {
    let inputs: Vec<f32> = (0..200_000).map(|i| -(i as f32) * 0.000_52).collect();
    for level in levels() {
        let got = f32::dispatch(level, ExpTask(&inputs));
        for (&x, &y) in inputs.iter().zip(&got) {
            // At and below EXP_LOWEST the result is 0, never a subnormal; above it, within a
            // few ulp, and never below the smallest normal number.
            if x <= <f32 as super::math::ExpConstants>::EXP_LOWEST {
                assert_eq!(y, 0.0, "{level:?}: exp({x}) = {y}, expected 0");
                continue;
            }
            let exact = (x as f64).exp();
            let ulp = f32::EPSILON as f64 * exact;
            assert!(
                ((y as f64) - exact).abs() <= 4.0 * ulp && y >= f32::MIN_POSITIVE,
                "{level:?}: exp({x}) = {y}, expected {exact}"
            );
        }
        let special = f32::dispatch(level, ExpTask(&[f32::NEG_INFINITY, -1e30, -0.0, f32::NAN]));
        assert_eq!(&special[..3], &[0.0, 0.0, 1.0]);
        assert!(special[3].is_nan());
    }
}

fn sigmoid_reference(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        x.exp() / (1.0 + x.exp())
    }
}

#[test]
fn sigmoid_keeps_relative_accuracy_and_exact_limits_at_every_level() {
    let inputs: Vec<f64> = (-4000..4000).map(|i| i as f64 * 0.19 + 0.003).collect();
    for level in levels() {
        let mut out = vec![0.0f64; inputs.len()];
        map_elementwise(
            level,
            Activation::Sigmoid,
            Source::Slice(&inputs),
            &mut out,
            1,
        );
        for (&x, &y) in inputs.iter().zip(&out) {
            let exact = sigmoid_reference(x);
            // Below twice the smallest normal number the result is exactly 0, never subnormal.
            let tolerance = if exact < 2.0 * f64::MIN_POSITIVE {
                2.0 * f64::MIN_POSITIVE
            } else {
                8.0 * f64::EPSILON * exact
            };
            assert!(
                (y - exact).abs() <= tolerance && (y == 0.0 || y >= f64::MIN_POSITIVE),
                "{level:?} sigmoid({x}) = {y}, expected {exact}"
            );
        }
        let mut limits = [f64::NEG_INFINITY, f64::INFINITY, f64::NAN, -0.0];
        map_elementwise(level, Activation::Sigmoid, Source::InPlace, &mut limits, 1);
        assert_eq!(&limits[..2], &[0.0, 1.0]);
        assert!(limits[2].is_nan());
        assert_eq!(limits[3], 0.5);
    }
}

#[test]
fn tanh_keeps_relative_accuracy_near_zero_at_every_level() {
    let inputs: Vec<f64> = (-3000..3000)
        .map(|i| (i as f64 * 0.0123).powi(3) + 1e-9 * i as f64)
        .chain([1e-300, -1e-12, 1e-8, 0.3, 0.36, 0.35, 20.0, -40.0])
        .collect();
    for level in levels() {
        let mut out = vec![0.0f64; inputs.len()];
        map_elementwise(level, Activation::Tanh, Source::Slice(&inputs), &mut out, 1);
        for (&x, &y) in inputs.iter().zip(&out) {
            let exact = x.tanh();
            assert!(
                (y - exact).abs() <= 8.0 * f64::EPSILON * exact.abs() + 1e-300,
                "{level:?}: tanh({x}) = {y}, expected {exact}"
            );
        }
        let mut limits = [f64::NEG_INFINITY, f64::INFINITY, f64::NAN];
        map_elementwise(level, Activation::Tanh, Source::InPlace, &mut limits, 1);
        assert_eq!(&limits[..2], &[-1.0, 1.0]);
        assert!(limits[2].is_nan());
    }
}

fn softmax_reference(row: &[f64]) -> Vec<f64> {
    let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = row.iter().map(|v| (v - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

fn dense_reference(x: &[f64], w: &[f64], b: &[f64], inputs: usize, act: Activation) -> Vec<f64> {
    let outputs = b.len();
    let z: Vec<f64> = (0..outputs)
        .map(|j| b[j] + (0..inputs).map(|k| x[k] * w[k * outputs + j]).sum::<f64>())
        .collect();
    match act {
        Activation::Sigmoid => z.iter().map(|&v| sigmoid_reference(v)).collect(),
        Activation::Relu => z.iter().map(|&v| v.max(0.0)).collect(),
        Activation::Tanh => z.iter().map(|v| v.tanh()).collect(),
        Activation::Softmax => softmax_reference(&z),
        Activation::Identity | Activation::LogSoftmax => z,
    }
}

const ACTIVATIONS: [Activation; 5] = [
    Activation::Identity,
    Activation::Sigmoid,
    Activation::Relu,
    Activation::Tanh,
    Activation::Softmax,
];

/// A random network: per layer (weights `(in, out)` row-major, bias, activation).
fn network() -> impl Strategy<Value = (Vec<usize>, Vec<usize>, Vec<f64>)> {
    (
        prop::collection::vec(1usize..40, 2..5),
        prop::collection::vec(0usize..5, 4),
        1usize..80,
    )
        .prop_flat_map(|(sizes, acts, rows)| {
            let weights: usize = sizes.windows(2).map(|w| w[0] * w[1] + w[1]).sum();
            let values = weights + rows * sizes[0];
            let sizes_and_rows = {
                let mut v = sizes.clone();
                v.push(rows);
                v
            };
            (
                Just(sizes_and_rows),
                Just(acts),
                prop::collection::vec(-2.0f64..2.0, values),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The packed forward pass, at every level and for any thread count, equals a scalar f64
    /// reference; and a row's bits do not depend on how many rows are run with it.
    #[test]
    fn forward_matches_scalar_reference((sizes_rows, acts, values) in network()) {
        let rows = *sizes_rows.last().unwrap();
        let sizes = &sizes_rows[..sizes_rows.len() - 1];
        let mut offset = 0;
        let mut layers_f64 = Vec::new();
        for (index, pair) in sizes.windows(2).enumerate() {
            let (inputs, outputs) = (pair[0], pair[1]);
            let w = values[offset..offset + inputs * outputs].to_vec();
            offset += inputs * outputs;
            let b = values[offset..offset + outputs].to_vec();
            offset += outputs;
            layers_f64.push((inputs, w, b, ACTIVATIONS[acts[index % acts.len()]]));
        }
        // Odd rows are mostly zeros, as images' backgrounds are: the single-row path skips them.
        let x: Vec<f64> = values[offset..offset + rows * sizes[0]]
            .iter()
            .enumerate()
            .map(|(i, &v)| if (i / sizes[0]) % 2 == 1 && v.abs() < 1.5 { 0.0 } else { v })
            .collect();
        let x = &x[..];
        let outputs = *sizes.last().unwrap();
        let mut expected = Vec::new();
        for r in 0..rows {
            let mut h = x[r * sizes[0]..(r + 1) * sizes[0]].to_vec();
            for (inputs, w, b, act) in &layers_f64 {
                h = dense_reference(&h, w, b, *inputs, *act);
            }
            expected.extend(h);
        }
        for level in levels() {
            let layers = layers_f64
                .iter()
                .map(|(inputs, w, b, act)| {
                    let w = ndarray::ArrayView2::from_shape((*inputs, b.len()), w).unwrap();
                    PackedLayer::new(w, b, *act, level_tile_cols::<f64>(level))
                })
                .collect();
            let model = PackedModel::new(layers, 1.0, level);
            let mut all = vec![f64::NAN; rows * outputs];
            model.forward(x, rows, Sink::Values(&mut all), 2, false);
            for (got, want) in all.iter().zip(&expected) {
                prop_assert!((got - want).abs() <= 1e-12 * (1.0 + want.abs()), "{level:?}: {got} vs {want}");
            }
            for r in [0, 1.min(rows - 1), rows / 2, rows - 1] {
                let mut one = vec![f64::NAN; outputs];
                model.forward(&x[r * sizes[0]..(r + 1) * sizes[0]], 1, Sink::Values(&mut one), 1, false);
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                prop_assert_eq!(bits(&one), bits(&all[r * outputs..(r + 1) * outputs]));
            }
        }
    }

    #[test]
    fn softmax_axis_matches_reference(outer in 1usize..9, len in 1usize..70, inner in 1usize..21, seed in 0u64..1000) {
        let values: Vec<f64> = (0..outer * len * inner)
            .map(|i| ((i as u64 * 2654435761 + seed) % 2001) as f64 * 0.05 - 50.0)
            .collect();
        for level in levels() {
            let mut out = vec![f64::NAN; values.len()];
            softmax_axis(level, Source::Slice(&values), &mut out, outer, len, inner, false, 2);
            for o in 0..outer {
                for i in 0..inner {
                    let line: Vec<f64> = (0..len).map(|j| values[(o * len + j) * inner + i]).collect();
                    let expected = softmax_reference(&line);
                    for j in 0..len {
                        let got = out[(o * len + j) * inner + i];
                        prop_assert!((got - expected[j]).abs() <= 1e-14, "{level:?}");
                    }
                }
            }
        }
    }
}

/// The widest column tile of `level` for elements `E`, as the bindings build models with (the
/// widths differ: 13 for float32 at AVX-512, 12 for float64).
fn level_tile_cols<E: DispatchElement>(level: Level) -> usize {
    struct Cols;
    impl<E: DispatchElement> SimdTask<E> for Cols {
        type Output = usize;
        fn run<S: Simd<Elem = E>>(self, _s: S) -> usize {
            S::MAX_TILE_COLS
        }
    }
    E::dispatch(level, Cols)
}

/// The exact bits of a value (NaN payloads and zero signs included).
trait Bits: Copy {
    fn bits(self) -> u64;
}

impl Bits for f32 {
    fn bits(self) -> u64 {
        u64::from(self.to_bits())
    }
}

impl Bits for f64 {
    fn bits(self) -> u64 {
        self.to_bits()
    }
}

/// One row through a one-layer model alone and as the first row of a batch of 40 (a full
/// tiled chunk at every level), asserted bit-identical; returns the row's outputs.
fn alone_as_in_a_batch<E: DispatchElement + InputElement + Bits>(
    level: Level,
    x: &[E],
    w: &[E],
    b: &[E],
    activation: Activation,
) -> Vec<E> {
    let inputs = x.len();
    let w = ndarray::ArrayView2::from_shape((inputs, b.len()), w).unwrap();
    let layer = PackedLayer::new(w, b, activation, level_tile_cols::<E>(level));
    let bits = |v: &[E]| v.iter().map(|x| x.bits()).collect::<Vec<_>>();
    let batch: Vec<E> = x.iter().copied().cycle().take(40 * inputs).collect();
    // A scale of 1 reads the row in place; any other converts it first, counting its zeros on
    // the way (2 keeps every zero a zero and every sign).
    let mut alone = Vec::new();
    for scale in [E::ONE, E::from_f64(2.0)] {
        let model = PackedModel::new(vec![layer.clone()], scale, level);
        let mut one = vec![E::ZERO; b.len()];
        model.forward(x, 1, Sink::Values(&mut one), 1, false);
        let mut all = vec![E::ZERO; 40 * b.len()];
        model.forward(&batch, 40, Sink::Values(&mut all), 1, false);
        assert_eq!(
            bits(&one),
            bits(&all[..b.len()]),
            "{level:?} {} scale {scale:?}",
            E::NAME
        );
        alone.push(one);
    }
    alone.swap_remove(0)
}

/// The single row's zero-input skipping, for one element type, at every level.
fn check_zero_skipping<E: DispatchElement + InputElement + Bits>(signalling_nan: E) {
    let e = E::from_f64;
    for level in levels() {
        // The batch is the row 40 times, so its zero inputs are zero in every row of a chunk,
        // which the batch skips too. 300 inputs make several blocks of its first layer.
        for inputs in [20, 300] {
            let (zeros, ones) = (vec![e(0.0); inputs], vec![e(1.0); inputs]);
            // -0 + 0 * 1 is +0: a row that skipped its zero inputs would keep the bias's -0.
            let one = alone_as_in_a_batch(level, &zeros, &ones, &[e(-0.0)], Activation::Identity);
            assert_eq!(one[0].bits(), e(0.0).bits(), "{level:?} {inputs}");
            // ... but -0 + (-0) stays -0, and -0 inputs are zeros too.
            let negative_zeros = vec![e(-0.0); inputs];
            let bias = [e(-0.0)];
            let one =
                alone_as_in_a_batch(level, &negative_zeros, &ones, &bias, Activation::Identity);
            assert_eq!(one[0].bits(), e(-0.0).bits(), "{level:?} {inputs}");
        }
        // A signalling NaN bias comes out of the batch's first FMA quieted; alone, with every
        // step skipped, only the rerun quiets it.
        let one = alone_as_in_a_batch(
            level,
            &[e(0.0); 20],
            &[e(1.0); 20],
            &[signalling_nan],
            Activation::Identity,
        );
        assert!(one[0].is_nan(), "{level:?}");
        // An infinite weight meeting a zero input makes NaN: no skipping in that layer.
        let mut x = vec![e(0.0); 20];
        x[3] = e(1.0);
        let mut w = vec![e(1.0); 40];
        w[2 * 5] = E::from_f64(f64::INFINITY); // input 5 (zero) to output 0
        let one = alone_as_in_a_batch(level, &x, &w, &[e(0.5), e(0.25)], Activation::Identity);
        assert!(one[0].is_nan(), "{level:?}: {one:?}");
        assert_eq!(one[1].bits(), e(1.25).bits(), "{level:?}");
        // A NaN input among zeros, and mostly zero rows through every activation, with zero
        // and negative-zero biases so that sums do end at zero.
        let w: Vec<E> = (0..70 * 19)
            .map(|i| e(((i * 37 % 23) as f64 - 11.0) * 0.125))
            .collect();
        let b: Vec<E> = (0..19).map(|j| e([0.0, -0.0, 0.5][j % 3])).collect();
        // Four-fifths zeros, then a third (nonzero inputs in every lane position).
        for is_zero in [
            |i: usize| !i.is_multiple_of(5),
            |i: usize| i.is_multiple_of(3),
        ] {
            let mut x: Vec<E> = (0..70)
                .map(|i| {
                    e(if is_zero(i) {
                        0.0
                    } else {
                        i as f64 * 0.01 - 0.3
                    })
                })
                .collect();
            for activation in ACTIVATIONS.into_iter().chain([Activation::LogSoftmax]) {
                alone_as_in_a_batch(level, &x, &w, &b, activation);
                let kept = std::mem::replace(&mut x[35], e(f64::NAN));
                let one = alone_as_in_a_batch(level, &x, &w, &b, activation);
                assert!(one.iter().all(|v| v.is_nan()), "{level:?} {activation:?}");
                x[35] = kept;
            }
        }
    }
}

#[test]
fn skipped_zero_inputs_change_no_bit_in_float32() {
    check_zero_skipping::<f32>(f32::from_bits(0x7f80_0001));
}

#[test]
fn skipped_zero_inputs_change_no_bit_in_float64() {
    check_zero_skipping::<f64>(f64::from_bits(0x7ff0_0000_0000_0001));
}

/// A single row through layers wide enough to be split over threads (`forward`'s column parts):
/// the same bits with two threads as with one, and as the row inside a batch, at every level,
/// for an element-wise and a row-wise activation on the wide layer and mostly-zero inputs.
#[test]
fn a_wide_layer_split_over_threads_gives_the_same_bits_as_one_thread_and_the_batch() {
    fn check<E: DispatchElement + InputElement + From<f32>>(bits: impl Fn(E) -> u64) {
        let (inputs, wide, outputs) = (300, 7003, 13);
        let value = |i: usize| E::from(((i * 2654435761) % 2001) as f32 * 0.001 - 1.0);
        let w1: Vec<E> = (0..inputs * wide).map(value).collect();
        let b1: Vec<E> = (0..wide).map(|i| value(i + 7)).collect();
        let w2: Vec<E> = (0..wide * outputs).map(|i| value(i + 11)).collect();
        let b2: Vec<E> = (0..outputs).map(|i| value(i + 13)).collect();
        let rows = 40;
        let x: Vec<E> = (0..rows * inputs)
            .map(|i| {
                if i % 5 == 0 {
                    value(i + 17)
                } else {
                    E::from(0.0)
                }
            })
            .collect();
        for level in levels() {
            for (first, second) in [
                (Activation::Sigmoid, Some(Activation::Softmax)),
                (Activation::Softmax, None),
            ] {
                let view = |w: &[E], rows, cols| {
                    ndarray::ArrayView2::from_shape((rows, cols), w)
                        .unwrap()
                        .to_owned()
                };
                let mut layers = vec![PackedLayer::new(
                    view(&w1, inputs, wide).view(),
                    &b1,
                    first,
                    level_tile_cols::<E>(level),
                )];
                if let Some(act) = second {
                    layers.push(PackedLayer::new(
                        view(&w2, wide, outputs).view(),
                        &b2,
                        act,
                        level_tile_cols::<E>(level),
                    ));
                }
                let width = if second.is_some() { outputs } else { wide };
                let model = PackedModel::new(layers, E::from(1.0), level);
                let mut batch = vec![E::from(f32::NAN); rows * width];
                model.forward(&x, rows, Sink::Values(&mut batch), 1, false);
                for r in [0, 1, 17] {
                    let row = &x[r * inputs..(r + 1) * inputs];
                    let mut one_thread = vec![E::from(f32::NAN); width];
                    let mut two_threads = vec![E::from(f32::NAN); width];
                    model.forward(row, 1, Sink::Values(&mut one_thread), 1, false);
                    model.forward(row, 1, Sink::Values(&mut two_threads), 2, false);
                    let as_bits = |v: &[E]| v.iter().map(|&x| bits(x)).collect::<Vec<_>>();
                    let in_batch = &batch[r * width..(r + 1) * width];
                    assert_eq!(
                        as_bits(&two_threads),
                        as_bits(&one_thread),
                        "{level:?} {first:?} row {r}"
                    );
                    assert_eq!(
                        as_bits(&two_threads),
                        as_bits(in_batch),
                        "{level:?} {first:?} row {r}"
                    );
                }
                // A few rows in one chunk split the layer's column tiles over the threads.
                let (first_row, count) = (8, 12);
                let rows_x = &x[first_row * inputs..(first_row + count) * inputs];
                let mut two_threads = vec![E::from(f32::NAN); count * width];
                model.forward(rows_x, count, Sink::Values(&mut two_threads), 2, false);
                let as_bits = |v: &[E]| v.iter().map(|&x| bits(x)).collect::<Vec<_>>();
                let in_batch = &batch[first_row * width..(first_row + count) * width];
                assert_eq!(
                    as_bits(&two_threads),
                    as_bits(in_batch),
                    "{level:?} {first:?} 12 rows"
                );
            }
        }
    }
    check::<f32>(|x| x.to_bits() as u64);
    check::<f64>(|x| x.to_bits());
}

#[test]
fn each_target_runs_its_own_simd_level_and_keeps_the_portable_one() {
    let levels = levels();
    assert_eq!(levels.last(), Some(&Level::Portable));
    // NEON is baseline on aarch64: the best level there, with nothing to detect.
    assert_eq!(
        levels.first() == Some(&Level::Neon),
        cfg!(target_arch = "aarch64")
    );
    assert_eq!(levels.contains(&Level::Neon), cfg!(target_arch = "aarch64"));
    if !cfg!(target_arch = "x86_64") {
        assert!(!levels.contains(&Level::Avx2) && !levels.contains(&Level::Avx512));
    }
}

/// The same value to the bit, any NaN counting as the same as any other.
fn same_bits<E: super::simd::Element>(a: E, b: E) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_f64().to_bits() == b.to_f64().to_bits()
}

/// Values that tell the vocabulary's contracts apart: zeros of both signs, NaN, infinities,
/// ties for rounding, the smallest normal number and subnormals.
fn contract_values<E: super::simd::Element>() -> Vec<E> {
    let min_normal = E::MIN_NORMAL.to_f64();
    [
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        -0.5,
        1.5,
        2.5,
        -2.5,
        3.5,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        1e30,
        -7.0,
        0.25,
        min_normal,
        -min_normal,
        min_normal * 0.25,
        -min_normal * 0.75,
    ]
    .into_iter()
    .map(E::from_f64)
    .collect()
}

/// Every method of the `Simd` vocabulary against the scalar contract `simd.rs` states for it,
/// lane by lane, for every pair of `contract_values` in every lane position.
struct VocabularyTask;

impl<E: DispatchElement> SimdTask<E> for VocabularyTask {
    type Output = ();
    fn run<S: Simd<Elem = E>>(self, s: S) {
        let lanes = S::LANES;
        let values = contract_values::<S::Elem>();
        let n = values.len();
        let load = |lane_values: &[S::Elem]| {
            let mut buffer = [S::Elem::ZERO; 16];
            buffer[..lanes].copy_from_slice(&lane_values[..lanes]);
            // SAFETY: `buffer` holds 16 >= LANES values.
            unsafe { s.load(buffer.as_ptr()) }
        };
        let stored = |v: S::V| {
            let mut buffer = [S::Elem::ZERO; 16];
            // SAFETY: `buffer` holds 16 >= LANES values.
            unsafe { s.store(buffer.as_mut_ptr(), v) };
            buffer[..lanes].to_vec()
        };
        // Any NaN matches any NaN, except in `check_exact` (which NaN is the contract there).
        let check_with = |what: &str,
                          got: S::V,
                          expected: &dyn Fn(usize) -> S::Elem,
                          same: fn(S::Elem, S::Elem) -> bool| {
            for (lane, &g) in stored(got).iter().enumerate() {
                let e = expected(lane);
                assert!(
                    same(g, e),
                    "{}: {what}, lane {lane}: {g:?} != {e:?}",
                    S::NAME
                );
            }
        };
        let check = |what: &str, got: S::V, expected: &dyn Fn(usize) -> S::Elem| {
            check_with(what, got, expected, same_bits)
        };
        let check_exact = |what: &str, got: S::V, expected: &dyn Fn(usize) -> S::Elem| {
            check_with(what, got, expected, |a, b| {
                a.to_f64().to_bits() == b.to_f64().to_bits()
            })
        };
        let negative_nan = S::Elem::from_f64(-f64::NAN);
        check_exact(
            "settle_nan of -NaN",
            s.settle_nan(load(&vec![negative_nan; lanes])),
            &|_| {
                if S::FUSED_MUL_ADD {
                    negative_nan
                } else {
                    S::Elem::from_f64(f64::NAN)
                }
            },
        );
        for first_a in 0..n {
            for first_b in 0..n {
                let a: Vec<S::Elem> = (0..lanes).map(|i| values[(first_a + i) % n]).collect();
                let b: Vec<S::Elem> = (0..lanes).map(|i| values[(first_b + i) % n]).collect();
                // `flush_below` takes positive floors: b's magnitude where that is a finite
                // nonzero number, else the smallest normal.
                let floor: Vec<S::Elem> = b
                    .iter()
                    .map(|&x| {
                        let m = x.to_f64().abs();
                        S::Elem::from_f64(if m > 0.0 && m.is_finite() {
                            m
                        } else {
                            E::MIN_NORMAL.to_f64()
                        })
                    })
                    .collect();
                let (va, vb, vfloor) = (load(&a), load(&b), load(&floor));
                let ctx = format!("a from {first_a}, b from {first_b}");
                check(&format!("add {ctx}"), s.add(va, vb), &|i| a[i] + b[i]);
                check(&format!("sub {ctx}"), s.sub(va, vb), &|i| a[i] - b[i]);
                check(&format!("mul {ctx}"), s.mul(va, vb), &|i| a[i] * b[i]);
                check(&format!("div {ctx}"), s.div(va, vb), &|i| a[i] / b[i]);
                check(&format!("max {ctx}"), s.max(va, vb), &|i| {
                    if a[i] > b[i] {
                        a[i]
                    } else {
                        b[i]
                    }
                });
                check(
                    &format!("select_nonneg {ctx}"),
                    s.select_nonneg(va, vb, va),
                    &|i| if a[i] >= S::Elem::ZERO { b[i] } else { a[i] },
                );
                check(
                    &format!("select_by_sign {ctx}"),
                    s.select_by_sign(va, vb, va),
                    &|i| {
                        if a[i].to_f64().is_sign_negative() {
                            a[i]
                        } else {
                            b[i]
                        }
                    },
                );
                check(
                    &format!("zero_below_nonneg {ctx}"),
                    s.zero_below_nonneg(va, vfloor),
                    &|i| {
                        let x = a[i].to_f64();
                        if !x.is_sign_negative() && x < floor[i].to_f64() {
                            S::Elem::ZERO
                        } else {
                            a[i]
                        }
                    },
                );
                // NaN lanes stay NaN, all one NaN where additions do not say which they keep.
                check_exact(&format!("settle_nan {ctx}"), s.settle_nan(va), &|i| {
                    if a[i].to_f64().is_nan() && !S::FUSED_MUL_ADD {
                        S::Elem::from_f64(f64::NAN)
                    } else {
                        a[i]
                    }
                });
                check(
                    &format!("flush_below {ctx}"),
                    s.flush_below(va, vfloor),
                    &|i| {
                        if a[i].to_f64().abs() < floor[i].to_f64() {
                            S::Elem::from_f64(if a[i].to_f64().is_sign_negative() {
                                -0.0
                            } else {
                                0.0
                            })
                        } else {
                            a[i]
                        }
                    },
                );
            }
            let a: Vec<S::Elem> = (0..lanes).map(|i| values[(first_a + i) % n]).collect();
            let va = load(&a);
            check("neg_magnitude_normal", s.neg_magnitude_normal(va), &|i| {
                let magnitude = a[i].to_f64().abs().max(E::MIN_NORMAL.to_f64());
                S::Elem::from_f64(if a[i].is_nan() { f64::NAN } else { -magnitude })
            });
            check("abs", s.abs(va), &|i| {
                S::Elem::from_f64(a[i].to_f64().abs())
            });
            check("round", s.round(va), &|i| {
                S::Elem::from_f64(a[i].to_f64().round_ties_even())
            });
            let zero_or_nan = a.iter().any(|&x| x == S::Elem::ZERO || x.is_nan());
            assert_eq!(s.any_zero_or_nan(va), zero_or_nan, "{}: {a:?}", S::NAME);
            let mask = s.nonzero_mask(va);
            let mut lanes_written = [u32::MAX; 16];
            // SAFETY: `lanes_written` holds 16 >= LANES entries.
            let count = unsafe { s.store_nonzero_lanes(va, 100, lanes_written.as_mut_ptr()) };
            let nonzero: Vec<u32> = (0..lanes as u32)
                .filter(|&i| a[i as usize] != S::Elem::ZERO)
                .collect();
            let expected_mask = nonzero.iter().fold(0, |m, &i| m | 1 << i);
            assert_eq!(mask, expected_mask, "{}: nonzero_mask of {a:?}", S::NAME);
            let firsts: Vec<u32> = nonzero.iter().map(|i| 100 + i).collect();
            assert_eq!(&lanes_written[..count], &firsts[..], "{}: {a:?}", S::NAME);
        }
        // ldexp over every exponent exp's reduction produces (down to the smallest normal power
        // of two) and beyond, on normal results.
        let lowest_exponent = S::Elem::MIN_NORMAL.to_f64().log2() as i32;
        for n_exponent in lowest_exponent..=60 {
            let a: Vec<S::Elem> = (0..lanes)
                .map(|i| S::Elem::from_f64([1.0, -1.0, 1.5, 1.25, 2.5, -7.0, 1.75][i % 7]))
                .collect();
            let got = s.ldexp(load(&a), s.splat(S::Elem::from_f64(n_exponent as f64)));
            check(&format!("ldexp by {n_exponent}"), got, &|i| {
                S::Elem::from_f64(a[i].to_f64() * 2f64.powi(n_exponent))
            });
        }
        // transpose: row r, lane c holds r * LANES + c before, c * LANES + r after.
        let mut rows: Vec<S::V> = (0..lanes)
            .map(|r| {
                let row: Vec<S::Elem> = (0..lanes)
                    .map(|c| S::Elem::from_f64((r * lanes + c) as f64))
                    .collect();
                load(&row)
            })
            .collect();
        s.transpose(&mut rows);
        for (r, &row) in rows.iter().enumerate() {
            check(&format!("transpose, row {r}"), row, &|c| {
                S::Elem::from_f64((c * lanes + r) as f64)
            });
        }
        // load_f32_transposed: a block of float32 rows `stride` apart, each converted as
        // `load_f32` converts, arrives as columns, at offsets that start a row anywhere.
        let stride = lanes + 3;
        let block: Vec<f32> = (0..lanes * stride).map(|i| i as f32 - 7.5).collect();
        let mut columns = vec![s.splat(S::Elem::ZERO); lanes];
        for offset in [0, 1, 3] {
            // SAFETY: rows 0..LANES at `offset + r * stride` hold LANES values each, inside
            // `block` (offset + LANES <= stride).
            unsafe { s.load_f32_transposed(block.as_ptr().add(offset), stride, &mut columns) };
            for (c, &column) in columns.iter().enumerate() {
                check(&format!("load_f32_transposed, column {c}"), column, &|r| {
                    S::Elem::from_f64(f64::from(block[offset + r * stride + c]))
                });
            }
        }
    }
}

#[test]
fn the_vocabulary_keeps_its_scalar_contract_at_every_level() {
    for level in levels() {
        f32::dispatch(level, VocabularyTask);
        f64::dispatch(level, VocabularyTask);
    }
}

/// `apply_elementwise_to`, which runs four vectors at a time as an `Interleaved` group and the
/// rest one by one, against `apply_elementwise` on each vector alone: the same bits for every
/// activation, floor and input (the contract values, saturating ranges, NaN and infinities).
struct InterleavedTask;

impl<E: DispatchElement> SimdTask<E> for InterleavedTask {
    type Output = ();
    fn run<S: Simd<Elem = E>>(self, s: S) {
        let lanes = S::LANES;
        let mut inputs = contract_values::<E>();
        inputs.extend((-4000..4000).map(|i| E::from_f64(f64::from(i) * 0.25)));
        inputs.extend((0..200).map(|i| E::from_f64(-1000.0 + 10.0 * f64::from(i))));
        // 4 * k + 3 whole vectors, at every lane width: groups and a remainder.
        let whole = inputs.len() / lanes;
        let vectors = (whole - 3) / 4 * 4 + 3;
        inputs.truncate(vectors * lanes);
        assert_eq!(inputs.len(), vectors * lanes);
        let activations = [
            Activation::Sigmoid,
            Activation::Tanh,
            Activation::Relu,
            Activation::Identity,
            Activation::Softmax,
        ];
        for activation in activations {
            for floor in [E::MIN_NORMAL, <E as super::math::ExpConstants>::NEGLIGIBLE] {
                let mut grouped = vec![E::ZERO; inputs.len()];
                // SAFETY: both buffers hold `vectors * LANES` elements.
                unsafe {
                    apply_elementwise_to(
                        s,
                        activation,
                        inputs.as_ptr(),
                        grouped.as_mut_ptr(),
                        vectors,
                        floor,
                    )
                };
                // In place, as the tiles and the array kernels call it: the same bits.
                let mut in_place = inputs.clone();
                let data = in_place.as_mut_ptr();
                // SAFETY: `in_place` holds `vectors * LANES` elements, read and written as one.
                unsafe { apply_elementwise_to(s, activation, data, data, vectors, floor) };
                assert!(
                    in_place
                        .iter()
                        .zip(&grouped)
                        .all(|(&a, &b)| same_bits(a, b)),
                    "{} {activation:?}: in place differs from out of place",
                    S::NAME
                );
                for (v, chunk) in inputs.chunks(lanes).enumerate() {
                    let mut alone = [E::ZERO; 16];
                    // SAFETY: `chunk` holds LANES values and `alone` 16 >= LANES.
                    unsafe {
                        let y = apply_elementwise(
                            s,
                            activation,
                            s.load(chunk.as_ptr()),
                            s.splat(floor),
                        );
                        s.store(alone.as_mut_ptr(), y);
                    }
                    for lane in 0..lanes {
                        let (got, expected) = (grouped[v * lanes + lane], alone[lane]);
                        assert!(
                            same_bits(got, expected),
                            "{} {activation:?} of {:?}: {got:?} in a group, {expected:?} alone",
                            S::NAME,
                            chunk[lane],
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn interleaved_groups_give_the_bits_of_one_vector_at_a_time_at_every_level() {
    for level in levels() {
        f32::dispatch(level, InterleavedTask);
        f64::dispatch(level, InterleavedTask);
    }
}

struct RowGroupStepsTask<'a> {
    layer: &'a PackedLayer<f32>,
    rows: [&'a [f32]; 3],
    known_nonzero: [Option<usize>; 3],
}

impl SimdTask<f32> for RowGroupStepsTask<'_> {
    type Output = Option<Vec<u32>>;
    fn run<S: Simd<Elem = f32>>(self, s: S) -> Option<Vec<u32>> {
        let mut indices = vec![u32::MAX; self.rows[0].len()];
        super::microkernel::row_group_steps(
            s,
            self.layer,
            self.rows,
            &mut indices,
            self.known_nonzero,
        )
        .map(<[u32]>::to_vec)
    }
}

#[test]
fn row_group_steps_list_the_steps_nonzero_in_any_row_at_every_level() {
    // 37 steps: two whole vectors of 16 lanes (four of 8) and a tail. Zeros of both signs,
    // a NaN, and rows nonzero at different steps.
    let steps = 37;
    let mut rows = [
        vec![0.0f32; steps],
        vec![0.0f32; steps],
        vec![-0.0f32; steps],
    ];
    rows[0][3] = 1.0;
    rows[0][36] = -2.0;
    rows[1][3] = 5.0;
    rows[1][17] = f32::NAN;
    rows[1][30] = -0.0;
    rows[2][0] = 1e-30;
    rows[2][33] = f32::INFINITY;
    let union: Vec<u32> = (0..steps as u32)
        .filter(|&k| rows.iter().any(|row| row[k as usize] != 0.0))
        .collect();
    assert_eq!(union, [0, 3, 17, 33, 36]);
    let weights = vec![0.5f32; steps * 3];
    let w = ndarray::ArrayView2::from_shape((steps, 3), &weights).unwrap();
    let mut infinite = weights.clone();
    infinite[4] = f32::INFINITY;
    let w_inf = ndarray::ArrayView2::from_shape((steps, 3), &infinite).unwrap();
    let dense: Vec<f32> = (0..steps).map(|k| k as f32 + 1.0).collect();
    for level in levels() {
        let layer = PackedLayer::new(
            w,
            &[0.0; 3],
            Activation::Identity,
            level_tile_cols::<f32>(level),
        );
        let layer_inf = PackedLayer::new(
            w_inf,
            &[0.0; 3],
            Activation::Identity,
            level_tile_cols::<f32>(level),
        );
        let run = |layer: &PackedLayer<f32>, group: [&[f32]; 3], known| {
            f32::dispatch(
                level,
                RowGroupStepsTask {
                    layer,
                    rows: group,
                    known_nonzero: known,
                },
            )
        };
        let group = [&rows[0][..], &rows[1][..], &rows[2][..]];
        assert_eq!(
            run(&layer, group, [None; 3]).as_deref(),
            Some(&union[..]),
            "{level:?}"
        );
        // Known counts that leave room for skipping change nothing; one dense row, or one
        // infinite weight (0 * inf is NaN), leaves no step to skip.
        let known = [Some(2), Some(2), Some(2)];
        assert_eq!(
            run(&layer, group, known).as_deref(),
            Some(&union[..]),
            "{level:?}"
        );
        assert_eq!(
            run(&layer, group, [None, Some(steps), None]),
            None,
            "{level:?}"
        );
        assert_eq!(run(&layer_inf, group, [None; 3]), None, "{level:?}");
        let with_dense = [&rows[0][..], &dense[..], &rows[2][..]];
        assert_eq!(run(&layer, with_dense, [None; 3]), None, "{level:?}");
    }
}
