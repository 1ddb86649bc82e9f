//! The register-tiled micro-kernels: a `2*LANES rows x C columns` tile for batches (rows in SIMD
//! lanes) and a vectors-along-outputs GEMV for single rows, both accumulating every output in
//! the same order (bias, then k = 0, 1, ...) so a row's result does not depend on the path.

use super::math::{apply_elementwise, softmax_vertical, Activation, ExpConstants};
use super::pack::PackedLayer;
use super::simd::{Element, Simd};

/// Rows one batched chunk holds: two vectors' worth, so each broadcast weight feeds two FMAs.
#[inline(always)]
pub fn chunk_rows<S: Simd>() -> usize {
    2 * S::LANES
}

/// One column tile over one chunk: `dst[(first + c) * R + r] = act(bias[c] + sum_k inp[k * R + r] *
/// w[k * C + c])` for `r < R = 2 * LANES`, with `C` accumulator pairs held in registers.
///
/// # Safety
/// `inp` must be readable for `inputs * R` elements, `w` for `inputs * C`, `bias` for `C`,
/// and `dst` writable for `C * R` elements.
#[inline(always)]
unsafe fn column_tile<S: Simd, const C: usize>(
    s: S,
    inputs: usize,
    inp: *const S::Elem,
    w: *const S::Elem,
    bias: *const S::Elem,
    activation: Activation,
    dst: *mut S::Elem,
) where
    S::Elem: ExpConstants,
{
    let lanes = S::LANES;
    let rows = 2 * lanes;
    let zero = s.splat(S::Elem::ZERO);
    let mut low = [zero; C];
    let mut high = [zero; C];
    // SAFETY: (whole body) all offsets stay within the extents the caller guarantees:
    // k < inputs, c < C, and vector loads/stores of LANES elements at 0 and LANES within a row
    // block of R = 2 * LANES.
    unsafe {
        for c in 0..C {
            low[c] = s.splat(*bias.add(c));
            high[c] = low[c];
        }
        for k in 0..inputs {
            let a_low = s.load(inp.add(k * rows));
            let a_high = s.load(inp.add(k * rows + lanes));
            let wk = w.add(k * C);
            for c in 0..C {
                let weight = s.splat(*wk.add(c));
                low[c] = s.mul_add(a_low, weight, low[c]);
                high[c] = s.mul_add(a_high, weight, high[c]);
            }
        }
        for c in 0..C {
            s.store(dst.add(c * rows), apply_elementwise(s, activation, low[c]));
            s.store(
                dst.add(c * rows + lanes),
                apply_elementwise(s, activation, high[c]),
            );
        }
    }
}

/// One layer over one chunk: `inp` is `[inputs][R]`, `out` becomes `[outputs][R]`.
/// `activation` is the layer's own, or log-softmax in place of its softmax.
#[inline(always)]
pub fn layer_chunk<S: Simd>(
    s: S,
    layer: &PackedLayer<S::Elem>,
    activation: Activation,
    inp: &[S::Elem],
    out: &mut [S::Elem],
) where
    S::Elem: ExpConstants,
{
    let rows = chunk_rows::<S>();
    assert!(inp.len() >= layer.inputs * rows && out.len() >= layer.outputs * rows);
    for tile in &layer.tiles {
        let weights = &layer.tiled_weights[tile.offset..tile.offset + layer.inputs * tile.width];
        let bias = &layer.bias[tile.first_col..tile.first_col + tile.width];
        let dst = out[tile.first_col * rows..(tile.first_col + tile.width) * rows].as_mut_ptr();
        macro_rules! run_tile {
            ($($width:literal)*) => {
                match tile.width {
                    $($width => {
                        // SAFETY: the slices above hold exactly `inputs * width` weights, `width`
                        // biases and `width * R` outputs, and `inp` holds `inputs * R` (asserted).
                        unsafe {
                            column_tile::<S, $width>(
                                s,
                                layer.inputs,
                                inp.as_ptr(),
                                weights.as_ptr(),
                                bias.as_ptr(),
                                activation,
                                dst,
                            )
                        }
                    })*
                    width => unreachable!("tile width {width} exceeds the widest kernel"),
                }
            };
        }
        run_tile!(1 2 3 4 5 6 7 8 9 10 11 12);
    }
    if activation.is_row_wise() && layer.outputs > 0 {
        let log = activation == Activation::LogSoftmax;
        for half in [0, S::LANES] {
            let base = out[half..].as_mut_ptr();
            // SAFETY: `out` holds `outputs * R` elements, so vector `j` of this half, at
            // `half + j * R`, lies inside it for every `j < outputs`.
            unsafe { softmax_vertical(s, base, base, layer.outputs, rows, log) };
        }
    }
}

/// `B` vectors of outputs for one row: independent FMA chains over k, one per vector.
///
/// # Safety
/// `w` must be readable at `k * stride + b * LANES .. + LANES` for `k < input.len()`, `b < B`;
/// `bias` and `dst` for `B * LANES` elements.
#[inline(always)]
unsafe fn gemv_block<S: Simd, const B: usize>(
    s: S,
    input: &[S::Elem],
    w: *const S::Elem,
    stride: usize,
    bias: *const S::Elem,
    dst: *mut S::Elem,
) {
    let lanes = S::LANES;
    // SAFETY: (whole body) offsets are within the extents the caller guarantees.
    unsafe {
        let mut acc = [s.splat(S::Elem::ZERO); B];
        for (b, a) in acc.iter_mut().enumerate() {
            *a = s.load(bias.add(b * lanes));
        }
        for (k, &x) in input.iter().enumerate() {
            let xk = s.splat(x);
            let wk = w.add(k * stride);
            for (b, a) in acc.iter_mut().enumerate() {
                *a = s.mul_add(xk, s.load(wk.add(b * lanes)), *a);
            }
        }
        for (b, a) in acc.iter().enumerate() {
            s.store(dst.add(b * lanes), *a);
        }
    }
}

/// One layer for one row: `input` has `inputs` values, `out` gets `padded_outputs` (the first
/// `outputs` meaningful). `scratch` holds `outputs * LANES` elements for softmax layers.
#[inline(always)]
pub fn layer_single_row<S: Simd>(
    s: S,
    layer: &PackedLayer<S::Elem>,
    activation: Activation,
    input: &[S::Elem],
    out: &mut [S::Elem],
    scratch: &mut [S::Elem],
) where
    S::Elem: ExpConstants,
{
    let lanes = S::LANES;
    let stride = layer.padded_outputs;
    assert!(input.len() == layer.inputs && out.len() >= stride);
    assert!(layer.row_major_weights.len() == layer.inputs * stride && stride % lanes == 0);
    let vectors = stride / lanes;
    let mut v = 0;
    while v < vectors {
        // Every vector is its own FMA chain over k, latency-bound for a single row: up to 8
        // chains run interleaved so their latencies overlap (2 FMAs/cycle x 4 cycles).
        let block = (vectors - v).min(8);
        let w = layer.row_major_weights[v * lanes..].as_ptr();
        let bias = layer.padded_bias[v * lanes..].as_ptr();
        let dst = out[v * lanes..].as_mut_ptr();
        // SAFETY: vectors v..v+block lie inside every row of `row_major_weights` (stride
        // `padded_outputs`, asserted to be whole vectors), inside `padded_bias` and inside `out`.
        unsafe {
            match block {
                1 => gemv_block::<S, 1>(s, input, w, stride, bias, dst),
                2 => gemv_block::<S, 2>(s, input, w, stride, bias, dst),
                3 => gemv_block::<S, 3>(s, input, w, stride, bias, dst),
                4 => gemv_block::<S, 4>(s, input, w, stride, bias, dst),
                5 => gemv_block::<S, 5>(s, input, w, stride, bias, dst),
                6 => gemv_block::<S, 6>(s, input, w, stride, bias, dst),
                7 => gemv_block::<S, 7>(s, input, w, stride, bias, dst),
                _ => gemv_block::<S, 8>(s, input, w, stride, bias, dst),
            }
        }
        v += block;
    }
    if activation.is_row_wise() {
        if layer.outputs == 0 {
            return;
        }
        // Each value goes through the very same vertical softmax as in a batch (broadcast to all
        // lanes), so a single row is bit-identical to the same row inside a batch.
        let count = layer.outputs;
        assert!(scratch.len() >= count * lanes);
        for j in 0..count {
            // SAFETY: `scratch` holds `count * lanes` elements (asserted).
            unsafe { s.store(scratch[j * lanes..].as_mut_ptr(), s.splat(out[j])) };
        }
        let log = activation == Activation::LogSoftmax;
        let base = scratch.as_mut_ptr();
        // SAFETY: vector j at `j * lanes` lies inside `scratch` for every j < count.
        unsafe { softmax_vertical(s, base, base, count, lanes, log) };
        for j in 0..count {
            out[j] = scratch[j * lanes];
        }
    } else {
        for v in 0..vectors {
            let p = out[v * lanes..].as_mut_ptr();
            // SAFETY: `out` holds `vectors * lanes` elements (asserted above).
            unsafe { s.store(p, apply_elementwise(s, activation, s.load(p))) };
        }
    }
}
