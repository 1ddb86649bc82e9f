//! The register-tiled micro-kernels: a `2*LANES rows x C columns` tile for batches (rows in SIMD
//! lanes) and a vectors-along-outputs GEMV for single rows, both accumulating every output in
//! the same order (bias, then k = 0, 1, ...) so a row's result does not depend on the path.

use super::math::{apply_elementwise, softmax_vertical, Activation, ExpConstants};
use super::pack::PackedLayer;
use super::simd::{Element, Prefetch, Simd};

/// Rows one batched chunk holds: two vectors' worth, so each broadcast weight feeds two FMAs.
#[inline(always)]
pub fn chunk_rows<S: Simd>() -> usize {
    2 * S::LANES
}

/// One column tile over one chunk: `dst[(first + c) * R + r] = act(bias[c] + sum_k inp[k * R + r] *
/// w[k * C + c])` for `r < R = 2 * LANES`, with `C` accumulator pairs held in registers. The
/// `prefetch` lines are requested evenly spread over the k loop.
///
/// # Safety
/// `inp` must be readable for `inputs * R` elements, `w` for `inputs * C`, `bias` for `C`,
/// and `dst` writable for `C * R` elements.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // the micro-kernel's operands, passed as raw parts
unsafe fn column_tile<S: Simd, const C: usize>(
    s: S,
    inputs: usize,
    inp: *const S::Elem,
    w: *const S::Elem,
    bias: *const S::Elem,
    activation: Activation,
    dst: *mut S::Elem,
    prefetch: Prefetch,
) where
    S::Elem: ExpConstants,
{
    let lanes = S::LANES;
    let rows = 2 * lanes;
    // A countdown, not `k % every`: a division per k-step costs more than the prefetch saves.
    // At most one line per k-step (more, or a k loop split into blocks between requests,
    // measured 2-3% slower): a layer with fewer k-steps than lines prefetches only some.
    let every = match prefetch.lines() {
        0 => usize::MAX,
        lines => (inputs / lines).max(1),
    };
    let mut countdown = 0;
    let mut next_line = 0;
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
            if countdown == 0 {
                countdown = every;
                prefetch.request(next_line);
                next_line += 1;
            }
            countdown -= 1;
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
/// `activation` is the layer's own, or log-softmax in place of its softmax. The tiles share
/// out the `prefetch` lines.
#[inline(always)]
pub fn layer_chunk<S: Simd>(
    s: S,
    layer: &PackedLayer<S::Elem>,
    activation: Activation,
    inp: &[S::Elem],
    out: &mut [S::Elem],
    prefetch: Prefetch,
) where
    S::Elem: ExpConstants,
{
    let rows = chunk_rows::<S>();
    assert!(inp.len() >= layer.inputs * rows && out.len() >= layer.outputs * rows);
    for (index, tile) in layer.tiles.iter().enumerate() {
        let tile_prefetch = prefetch.share(index, layer.tiles.len());
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
                                tile_prefetch,
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

/// `B` vectors of outputs for one row, at element offsets `offsets`: independent FMA chains
/// over k, one per vector, then the element-wise activation in registers. Offsets may overlap
/// (the last vector of a layer is shifted back to end at its last output); overlapping lanes
/// compute identical values, so the overlapping stores agree.
///
/// # Safety
/// `w` must be readable at `k * stride + offset .. + LANES` for every `k < input.len()` and
/// offset; `bias` and `dst` at `offset .. + LANES`.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // the micro-kernel's operands, passed as raw parts
unsafe fn gemv_block<S: Simd, const B: usize>(
    s: S,
    input: &[S::Elem],
    w: *const S::Elem,
    stride: usize,
    bias: *const S::Elem,
    offsets: [usize; B],
    activation: Activation,
    dst: *mut S::Elem,
) where
    S::Elem: ExpConstants,
{
    // SAFETY: (whole body) offsets are within the extents the caller guarantees.
    unsafe {
        let mut acc = [s.splat(S::Elem::ZERO); B];
        for b in 0..B {
            acc[b] = s.load(bias.add(offsets[b]));
        }
        for (k, &x) in input.iter().enumerate() {
            let xk = s.splat(x);
            let wk = w.add(k * stride);
            for b in 0..B {
                acc[b] = s.mul_add(xk, s.load(wk.add(offsets[b])), acc[b]);
            }
        }
        for b in 0..B {
            s.store(
                dst.add(offsets[b]),
                apply_elementwise(s, activation, acc[b]),
            );
        }
    }
}

/// One layer for one row: `input` has `inputs` values, `out` gets `row_width` values (the first
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
    let width = layer.row_width;
    assert!(input.len() == layer.inputs && out.len() >= width && width >= lanes);
    assert!(layer.row_major_weights.len() == layer.inputs * width);
    // Whole vectors from the start, then one ending exactly at `width` if a tail remains.
    let vectors = width.div_ceil(lanes);
    let offset_of = |v: usize| (v * lanes).min(width - lanes);
    // Row-wise activations see raw values here and are applied below.
    let in_registers = if activation.is_row_wise() {
        Activation::Identity
    } else {
        activation
    };
    let w = layer.row_major_weights.as_ptr();
    let bias = layer.padded_bias.as_ptr();
    let dst = out.as_mut_ptr();
    let mut v = 0;
    while v < vectors {
        // Every vector is its own FMA chain over k: up to 8 run interleaved.
        let block = (vectors - v).min(8);
        macro_rules! run_block {
            ($($count:literal)*) => {
                match block {
                    $($count => {
                        let offsets: [usize; $count] = std::array::from_fn(|b| offset_of(v + b));
                        // SAFETY: every offset + LANES <= width, the row length of
                        // `row_major_weights` (asserted), of `padded_bias` and within `out`.
                        unsafe {
                            gemv_block::<S, $count>(s, input, w, width, bias, offsets, in_registers, dst)
                        }
                    })*
                    _ => unreachable!("blocks hold 1 to 8 vectors"),
                }
            };
        }
        run_block!(1 2 3 4 5 6 7 8);
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
    }
}
