//! This machine's own multiply-add peak at a level: a register-only FMA loop, for benchmarks.
//!
//! `fastmlp bench` reports the network's FLOP rate as a share of it, beside the share of a
//! large sgemm: the sgemm is what a tuned library reaches through memory, this is what the
//! cores can do at all.

use std::hint::black_box;
use std::time::Instant;

use super::dispatch::{active_level, DispatchElement, SimdTask};
use super::simd::Simd;

/// Independent accumulator chains: enough to cover the FMA latency (4 cycles) on two pipes
/// (8 in flight) with room to spare, few enough to stay in registers at every level.
const CHAINS: usize = 12;

/// Iterations between clock readings.
const ITERATIONS_PER_BLOCK: usize = 1 << 14;

struct FmaLoop {
    blocks: usize,
}

impl SimdTask<f32> for FmaLoop {
    type Output = (f32, u64);

    #[inline(always)]
    fn run<S: Simd<Elem = f32>>(self, s: S) -> (f32, u64) {
        // x -> x * a + b has the fixed point 1, so every value stays normal: no subnormal
        // assist can slow the loop on any CPU.
        let a = s.splat(black_box(0.999_9));
        let b = s.splat(black_box(0.000_1));
        let mut chains = [s.splat(black_box(0.5)); CHAINS];
        for _ in 0..self.blocks * ITERATIONS_PER_BLOCK {
            for chain in chains.iter_mut() {
                *chain = s.mul_add(*chain, a, b);
            }
        }
        let mut lane_values = [0.0f32; 16];
        let mut total = 0.0;
        for chain in chains {
            // SAFETY: `lane_values` holds 16 >= LANES elements.
            unsafe { s.store(lane_values.as_mut_ptr(), chain) };
            total += lane_values[..S::LANES].iter().sum::<f32>();
        }
        let flops = (self.blocks * ITERATIONS_PER_BLOCK * CHAINS * S::LANES * 2) as u64;
        (total, flops)
    }
}

/// The float32 multiply-add rate of one core at the active level, in GFLOP/s: the best of
/// `repeats` timed runs of about `seconds` each (after one untimed run that sizes them).
pub fn fma_peak_gflops(seconds: f64, repeats: usize) -> f64 {
    let level = active_level();
    let time = |blocks: usize| {
        let start = Instant::now();
        let (checksum, flops) = f32::dispatch(level, FmaLoop { blocks });
        black_box(checksum);
        (start.elapsed().as_secs_f64(), flops)
    };
    let (probe_seconds, _) = time(1);
    let blocks = ((seconds / probe_seconds.max(1e-9)) as usize).clamp(1, 1 << 20);
    (0..repeats.max(1))
        .map(|_| {
            let (elapsed, flops) = time(blocks);
            flops as f64 / elapsed.max(1e-12) / 1e9
        })
        .fold(0.0, f64::max)
}
