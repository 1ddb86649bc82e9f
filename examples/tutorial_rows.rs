//! Runs the tutorial's network (784-50-100-10, sigmoid, sigmoid, softmax, float32) over ROWS
//! MNIST-like uint8 rows at one level, single-threaded, and prints a checksum of the
//! probabilities: `tutorial_rows LEVEL ROWS [REPEATS]`. For counting instructions under an
//! emulator (`.ci/arm64-count`), where time means nothing: the difference between REPEATS 2
//! and 1 is one warm forward pass alone, as start-up, packing and the rows are the same in both.

use _core::kernels::dispatch::{DispatchElement, Level, SimdTask};
use _core::kernels::forward::{PackedModel, Sink};
use _core::kernels::math::Activation;
use _core::kernels::pack::PackedLayer;
use _core::kernels::simd::Simd;

const SIZES: [usize; 4] = [784, 50, 100, 10];
const ACTIVATIONS: [Activation; 3] = [
    Activation::Sigmoid,
    Activation::Sigmoid,
    Activation::Softmax,
];

/// A fixed pseudo-random sequence (64-bit LCG, high bits), so every run packs the same model.
struct Lcg(u64);

impl Lcg {
    fn next_unit(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct TileCols;

impl SimdTask<f32> for TileCols {
    type Output = usize;
    fn run<S: Simd<Elem = f32>>(self, _simd: S) -> usize {
        S::MAX_TILE_COLS
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: tutorial_rows LEVEL ROWS [REPEATS]";
    let level =
        Level::parse(args.get(1).expect(usage)).expect("LEVEL: avx512, avx2, neon or portable");
    assert!(level.is_supported(), "this CPU cannot run {level:?}");
    let rows: usize = args.get(2).expect(usage).parse().expect("ROWS: a count");
    let repeats: usize = args
        .get(3)
        .map_or(1, |r| r.parse().expect("REPEATS: a count"));

    let mut random = Lcg(20);
    let tile_cols = f32::dispatch(level, TileCols);
    let layers = (0..3)
        .map(|i| {
            let (inputs, outputs) = (SIZES[i], SIZES[i + 1]);
            let weights: Vec<f32> = (0..inputs * outputs)
                .map(|_| (random.next_unit() * 0.2 - 0.1) as f32)
                .collect();
            let bias: Vec<f32> = (0..outputs)
                .map(|_| (random.next_unit() * 0.2 - 0.1) as f32)
                .collect();
            let view = ndarray::ArrayView2::from_shape((inputs, outputs), &weights).unwrap();
            PackedLayer::new(view, &bias, ACTIVATIONS[i], tile_cols)
        })
        .collect();
    let model = PackedModel::new(layers, 1.0 / 255.0, level);

    // About a fifth of MNIST's pixels are not zero; the single-row path skips the others.
    let pixels: Vec<u8> = (0..rows * SIZES[0])
        .map(|_| {
            let u = random.next_unit();
            if u < 0.19 {
                (u * 1342.0) as u8
            } else {
                0
            }
        })
        .collect();
    let mut probabilities = vec![0.0f32; rows * SIZES[3]];
    for _ in 0..repeats {
        model.forward(&pixels, rows, Sink::Values(&mut probabilities), 1, false);
    }
    let checksum: f64 = probabilities.iter().map(|&p| f64::from(p)).sum();
    println!(
        "{} rows at {}: probabilities sum to {checksum:.4}",
        rows,
        level.name()
    );
}
