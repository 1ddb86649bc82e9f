//! The register-tiled micro-kernels: a `2*LANES rows x C columns` tile for batches (rows in SIMD
//! lanes) and a vectors-along-outputs GEMV for single rows, both accumulating every output in
//! the same order (bias, then k = 0, 1, ...) so a row's result does not depend on the path.

use super::math::{
    apply_elementwise, apply_elementwise_to, softmax_vertical, Activation, ExpConstants,
};
use super::pack::PackedLayer;
use std::ops::Range;

use super::prefetch::{prefetch_line_to_l2, Prefetch};
use super::simd::{Element, Simd};

/// Rows one batched chunk holds: two vectors' worth, so each broadcast weight feeds two FMAs.
#[inline(always)]
pub fn chunk_rows<S: Simd>() -> usize {
    2 * S::LANES
}

/// One column tile over one chunk: `dst[c * R + r] = bias[c] + sum_k inp[k * R + r] * w[k * C +
/// c]` for `r < R = 2 * LANES`, with `C` accumulator pairs held in registers; the activation is
/// the caller's, once every tile of the layer has run (`chunk_tile_range`). The `prefetch`
/// lines are requested evenly spread over the k loop.
///
/// The sum may run in blocks of k, `steps` per call: with `from_bias` false it continues from
/// the partial sums in `dst`. Whether or not `from_bias`, each sum's additions run in the same
/// order, so the result is bit-identical to a single block.
///
/// With `nonzero`, only those steps k run (ascending), as in `gemv_block`: the others' inputs
/// are zero in every row, and with finite weights their products change no sum but a zero one
/// (its sign) or a NaN one (a signalling NaN is quieted). Whenever `last_block`, listed steps
/// or not, the result says whether any sum (any lane) ended at zero or NaN (false otherwise):
/// an earlier block of the same sums may have skipped steps where this last one skips none.
///
/// # Safety
/// `inp` must be readable for `steps * R` elements, `w` for `steps * C`, `bias` for `C`,
/// and `dst` readable and writable for `C * R` elements; every `nonzero` index is below
/// `steps`.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // the micro-kernel's operands, passed as raw parts
unsafe fn column_tile<S: Simd, const C: usize>(
    s: S,
    steps: usize,
    nonzero: Option<&[u32]>,
    inp: *const S::Elem,
    w: *const S::Elem,
    bias: *const S::Elem,
    from_bias: bool,
    last_block: bool,
    dst: *mut S::Elem,
    prefetch: Prefetch,
) -> bool {
    let lanes = S::LANES;
    let rows = 2 * lanes;
    // A countdown, not `k % every`: a division per k-step costs more than the prefetch saves.
    // At most one line per k-step (more, or a k loop split into blocks between requests,
    // measured 2-3% slower): a layer with fewer k-steps than lines prefetches only some.
    let every = match prefetch.lines() {
        0 => usize::MAX,
        lines => (nonzero.map_or(steps, <[u32]>::len) / lines).max(1),
    };
    let mut countdown = 0;
    let mut next_line = 0;
    let zero = s.splat(S::Elem::ZERO);
    let mut low = [zero; C];
    let mut high = [zero; C];
    // SAFETY: (whole body) all offsets stay within the extents the caller guarantees:
    // k < steps (the `nonzero` indices included), c < C, and vector loads/stores of LANES
    // elements at 0 and LANES within a row block of R = 2 * LANES.
    unsafe {
        for c in 0..C {
            if from_bias {
                low[c] = s.splat(*bias.add(c));
                high[c] = low[c];
            } else {
                low[c] = s.load(dst.add(c * rows));
                high[c] = s.load(dst.add(c * rows + lanes));
            }
        }
        // A macro, not a closure: a closure would be compiled outside the caller's target
        // features.
        macro_rules! step {
            ($k:expr) => {{
                let k = $k;
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
            }};
        }
        match nonzero {
            None => {
                // Two steps per iteration: beside one step's 2C multiply-adds, its share of
                // the loop's own work (the counter, the prefetch countdown, two branches) kept
                // the 6-column tiles below the FMA ports' rate on Zen 2 (3.5% of a 10,000-row
                // pass). Four per iteration measured no faster, nor did pairs of listed steps.
                let pairs = steps / 2;
                for pair in 0..pairs {
                    step!(2 * pair);
                    step!(2 * pair + 1);
                }
                for k in 2 * pairs..steps {
                    step!(k);
                }
            }
            Some(listed) => {
                for &k in listed {
                    step!(k as usize);
                }
            }
        }
        for c in 0..C {
            if last_block {
                low[c] = s.settle_nan(low[c]);
                high[c] = s.settle_nan(high[c]);
            }
            s.store(dst.add(c * rows), low[c]);
            s.store(dst.add(c * rows + lanes), high[c]);
        }
        let mut zero_or_nan = false;
        if last_block {
            for c in 0..C {
                zero_or_nan |= s.any_zero_or_nan(low[c]) | s.any_zero_or_nan(high[c]);
            }
        }
        zero_or_nan
    }
}

/// Tiles `tiles` of one layer over one chunk, for the steps `k` of its k loop (all of them, or a
/// block: see `column_tile`): `inp` is `[k.len()][R]`, and each tile writes its columns' rows of
/// `out` (`[outputs][R]`); after the block that ends the k loop, the element-wise activation
/// runs over all these columns at once (its flush of tiny values also before a row-wise one,
/// which the caller applies). With `nonzero` (indices into the block), only those steps run;
/// the result says whether the block ending the k loop left any sum at zero or NaN (see
/// `column_tile`). The tiles share out the `prefetch` lines by their index among all the
/// layer's tiles.
///
/// # Safety
/// `out` must be readable and writable for `outputs * R` elements, and no other thread may
/// access these tiles' columns of it meanwhile; unless `k` starts at 0, those columns hold the
/// partial sums of the steps before it. Every `nonzero` index is below `k.len()`.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // a layer, the chunk's buffers and the part to compute
pub unsafe fn chunk_tile_range<S: Simd>(
    s: S,
    layer: &PackedLayer<S::Elem>,
    activation: Activation,
    floor: S::Elem,
    inp: &[S::Elem],
    out: *mut S::Elem,
    tiles: Range<usize>,
    k: Range<usize>,
    nonzero: Option<&[u32]>,
    prefetch: Prefetch,
) -> bool
where
    S::Elem: ExpConstants,
{
    let rows = chunk_rows::<S>();
    assert!(k.start <= k.end && k.end <= layer.inputs);
    assert!(inp.len() >= k.len() * rows && tiles.end <= layer.tiles.len());
    debug_assert!(nonzero.is_none_or(|listed| listed.iter().all(|&step| (step as usize) < k.len())));
    let from_bias = k.start == 0;
    let last_block = k.end == layer.inputs;
    let mut zero_or_nan = false;
    let these_tiles = &layer.tiles[tiles.clone()];
    let columns = match (these_tiles.first(), these_tiles.last()) {
        (Some(first), Some(last)) => first.first_col..last.first_col + last.width,
        _ => 0..0,
    };
    for index in tiles {
        let tile = &layer.tiles[index];
        let tile_prefetch = prefetch.share(index, layer.tiles.len());
        let block = tile.offset + k.start * tile.width..tile.offset + k.end * tile.width;
        let weights = &layer.tiled_weights[block];
        let bias = &layer.bias[tile.first_col..tile.first_col + tile.width];
        // SAFETY: the tile's columns lie within `outputs` (`column_tiles`), so its `width * R`
        // outputs lie within the `outputs * R` the caller gives.
        let dst = unsafe { out.add(tile.first_col * rows) };
        macro_rules! run_tile {
            ($($width:literal)*) => {
                match tile.width {
                    $($width => {
                        // SAFETY: the slices above hold exactly `k.len() * width` weights and
                        // `width` biases, `dst` has `width * R` outputs (with the partial sums
                        // of the steps before `k`, as the caller guarantees), `inp` holds
                        // `k.len() * R` (asserted), and every listed step is below `k.len()`, as
                        // the caller guarantees (`layer_chunk` asserts it).
                        zero_or_nan |= unsafe {
                            column_tile::<S, $width>(
                                s,
                                k.len(),
                                nonzero,
                                inp.as_ptr(),
                                weights.as_ptr(),
                                bias.as_ptr(),
                                from_bias,
                                last_block,
                                dst,
                                tile_prefetch,
                            )
                        }
                    })*
                    width => unreachable!("tile width {width} exceeds the widest kernel"),
                }
            };
        }
        run_tile!(1 2 3 4 5 6 7 8 9 10 11 12 13);
    }
    if last_block {
        // SAFETY: the tiles' columns are consecutive (`column_tiles`) and lie within `outputs`,
        // so their `columns.len() * R` values (2 vectors per column) lie within `out`, which
        // the caller lets this call alone access.
        unsafe {
            let first = out.add(columns.start * rows);
            apply_elementwise_to(s, activation, first, first, 2 * columns.len(), floor)
        };
    }
    zero_or_nan
}

/// A chunk's row-wise activation (softmax, log-softmax) over `out` (`[outputs][R]`) once every
/// tile is computed; nothing for other activations.
#[inline(always)]
pub fn finish_chunk<S: Simd>(
    s: S,
    layer: &PackedLayer<S::Elem>,
    activation: Activation,
    floor: S::Elem,
    out: &mut [S::Elem],
) where
    S::Elem: ExpConstants,
{
    let rows = chunk_rows::<S>();
    assert!(out.len() >= layer.outputs * rows);
    if activation.is_row_wise() && layer.outputs > 0 {
        let log = activation == Activation::LogSoftmax;
        for half in [0, S::LANES] {
            let base = out[half..].as_mut_ptr();
            // SAFETY: `out` holds `outputs * R` elements, so vector `j` of this half, at
            // `half + j * R`, lies inside it for every `j < outputs`.
            unsafe { softmax_vertical(s, base, base, layer.outputs, rows, log, floor) };
        }
    }
}

/// One layer over one chunk on the calling thread, for the steps `k` of its k loop: `inp` is
/// `[k.len()][R]`, `out` becomes `[outputs][R]` once the block ending at `inputs` has run (the
/// blocks before it leave partial sums there; see `column_tile`). `activation` is the layer's
/// own, or log-softmax in place of its softmax; results below `floor` are zero
/// (`activation_floor`). With `nonzero` (from `nonzero_steps`), only those steps of the block
/// run, and the result says whether the last block left any sum at zero or NaN, which a skipped
/// step could have changed. The tiles share out the `prefetch` lines.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // a layer, the chunk's buffers and the block to compute
pub fn layer_chunk<S: Simd>(
    s: S,
    layer: &PackedLayer<S::Elem>,
    activation: Activation,
    floor: S::Elem,
    inp: &[S::Elem],
    out: &mut [S::Elem],
    k: Range<usize>,
    nonzero: Option<&[u32]>,
    prefetch: Prefetch,
) -> bool
where
    S::Elem: ExpConstants,
{
    assert!(out.len() >= layer.outputs * chunk_rows::<S>());
    assert!(nonzero.is_none_or(|listed| listed.iter().all(|&step| (step as usize) < k.len())));
    let last_block = k.end == layer.inputs;
    // SAFETY: `out` holds `outputs * R` elements (asserted) and is borrowed by this call alone;
    // every listed step lies in the block (asserted).
    let zero_or_nan = unsafe {
        chunk_tile_range(
            s,
            layer,
            activation,
            floor,
            inp,
            out.as_mut_ptr(),
            0..layer.tiles.len(),
            k,
            nonzero,
            prefetch,
        )
    };
    if last_block {
        finish_chunk(s, layer, activation, floor, out);
    }
    zero_or_nan
}

/// Lists, in `indices`, the steps k of a packed block (`[steps][R]`) whose inputs are not all
/// zero (NaN counts as not zero), ascending, and returns how many there are. Image rows leave
/// many such steps: in 32-row chunks of MNIST's test images, 44% of the pixel positions are
/// zero in every row.
#[inline(always)]
pub fn nonzero_steps<S: Simd>(
    s: S,
    packed: &[S::Elem],
    steps: usize,
    indices: &mut [u32],
) -> usize {
    let rows = chunk_rows::<S>();
    assert!(packed.len() >= steps * rows && indices.len() >= steps && steps <= u32::MAX as usize);
    let mut count = 0;
    for k in 0..steps {
        // SAFETY: (k + 1) * R <= steps * R <= packed.len(), and count <= k < indices.len().
        unsafe {
            let low = s.nonzero_mask(s.load(packed.as_ptr().add(k * rows)));
            let high = s.nonzero_mask(s.load(packed.as_ptr().add(k * rows + S::LANES)));
            *indices.get_unchecked_mut(count) = k as u32;
            count += usize::from(low | high != 0);
        }
    }
    count
}

/// `B` vectors of outputs for each of `R` rows (a single row, or the few rows a batch leaves
/// after its last whole chunk), vector `b` at element offset `b * LANES` of `w`'s rows, `bias`
/// and each row's `dst`, except the last, at `last` (the last vector of a layer is shifted back
/// to end at its last output; overlapping lanes compute identical values, so the overlapping
/// stores agree). Independent FMA chains over k, one per vector and row, then the element-wise
/// activation in registers. All offsets but `last` are constants, so the loop keeps no
/// register per vector for them. The rows share each step's weight vectors: one row's GEMV is
/// bound by streaming the weights from L2, so `R` rows take little longer than one. Each row's
/// sums run exactly as they would alone, so a row's result does not depend on its neighbours.
///
/// With `nonzero`, only those steps k run (ascending): the others have a zero input in every
/// row, and with finite weights their products are zeros, which change no sum but a zero one
/// (its sign) or a NaN one (a signalling NaN bias is quieted by the first step run, and which
/// NaN wins depends on the order NaNs meet). The result then says whether any sum ended at zero
/// or NaN, where the full sum might have set other bits.
///
/// With `stream`, each step also asks for its row's next `B` vectors (the next block's) to be
/// brought into L2: a weight matrix too large for the caches is otherwise read one short
/// strided piece per step, and the hardware prefetchers, which follow runs within a page, do
/// not fetch ahead across rows that far apart.
///
/// # Safety
/// `w` must be readable at `k * stride + offset .. + LANES` for every `k < inputs[r].len()`
/// and offset; `bias` and every `dst` at `offset .. + LANES`; all `inputs` have the same length,
/// and every `nonzero` index is below it.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // the micro-kernel's operands, passed as raw parts
#[allow(clippy::needless_range_loop)] // see the accumulators' loops
unsafe fn gemv_block<S: Simd, const B: usize, const R: usize>(
    s: S,
    inputs: [&[S::Elem]; R],
    nonzero: Option<&[u32]>,
    w: *const S::Elem,
    stride: usize,
    bias: *const S::Elem,
    last: usize,
    activation: Activation,
    floor: S::Elem,
    dst: [*mut S::Elem; R],
    stream: bool,
) -> bool
where
    S::Elem: ExpConstants,
{
    let offset = |b: usize| if b + 1 == B { last } else { b * S::LANES };
    let step_count = inputs.first().map_or(0, |input| input.len());
    // SAFETY: (whole body) offsets are within the extents the caller guarantees, and so are
    // the steps k read with `get_unchecked`: below `step_count`, every row's length.
    unsafe {
        // Indices, not iterators, over the accumulators: through references to them
        // (`iter().flatten()` and the like), LLVM kept a copy of every accumulator in memory,
        // storing each one after each multiply-add, which made 4 rows twice as slow as 2.
        let mut acc = [[s.splat(S::Elem::ZERO); B]; R];
        for r in 0..R {
            for b in 0..B {
                acc[r][b] = s.load(bias.add(offset(b)));
            }
        }
        // A macro, not a closure: a closure would be compiled outside the caller's target
        // features.
        macro_rules! step {
            ($k:expr) => {{
                let k = $k;
                // A loop, not `array::from_fn`: a closure would be compiled outside the
                // caller's target features.
                let mut xk = [s.splat(S::Elem::ZERO); R];
                for r in 0..R {
                    xk[r] = s.splat(*inputs[r].get_unchecked(k));
                }
                let wk = w.add(k * stride);
                for b in 0..B {
                    let weights = s.load(wk.add(offset(b)));
                    for r in 0..R {
                        acc[r][b] = s.mul_add(xk[r], weights, acc[r][b]);
                    }
                }
                if stream {
                    for b in 0..B {
                        prefetch_line_to_l2(wk.wrapping_add(b * S::LANES + B * S::LANES));
                    }
                }
            }};
        }
        let mut needs_full_sum = false;
        match nonzero {
            None => {
                for k in 0..step_count {
                    step!(k);
                }
            }
            Some(listed) => {
                for &k in listed {
                    step!(k as usize);
                }
                for r in 0..R {
                    for b in 0..B {
                        needs_full_sum |= s.any_zero_or_nan(acc[r][b]);
                    }
                }
            }
        }
        // Unrolled, unlike the tiles' `apply_elementwise_to`: a block has at most 8 vectors, and
        // a single row's latency measured a few percent slower through the rolled loop.
        let floor = s.splat(floor);
        for r in 0..R {
            for b in 0..B {
                let sum = s.settle_nan(acc[r][b]);
                s.store(
                    dst[r].add(offset(b)),
                    apply_elementwise(s, activation, sum, floor),
                );
            }
        }
        needs_full_sum
    }
}

/// How many of `input`'s values are not zero (NaN included).
#[inline(always)]
fn count_nonzero<S: Simd>(s: S, input: &[S::Elem]) -> usize {
    let lanes = S::LANES;
    let full = input.len() - input.len() % lanes;
    let mut count = 0;
    for first in (0..full).step_by(lanes) {
        // SAFETY: first + LANES <= input.len().
        let values = unsafe { s.load(input.as_ptr().add(first)) };
        count += s.nonzero_mask(values).count_ones() as usize;
    }
    count
        + input[full..]
            .iter()
            .filter(|&&x| x != S::Elem::ZERO)
            .count()
}

/// Writes the indices of `input`'s nonzero values (NaN included) to the front of `indices`, in
/// ascending order, and returns how many there are.
#[inline(always)]
fn collect_nonzero<S: Simd>(s: S, input: &[S::Elem], indices: &mut [u32]) -> usize {
    assert!(indices.len() >= input.len() && input.len() <= u32::MAX as usize);
    let lanes = S::LANES;
    let full = input.len() - input.len() % lanes;
    let mut count = 0;
    for first in (0..full).step_by(lanes) {
        // SAFETY: first + LANES <= input.len(); count <= first, so the LANES entries written
        // from `count` end at most at first + LANES <= indices.len().
        count += unsafe {
            s.store_nonzero_lanes(
                s.load(input.as_ptr().add(first)),
                first as u32,
                indices.as_mut_ptr().add(count),
            )
        };
    }
    for (index, &x) in input.iter().enumerate().skip(full) {
        indices[count] = index as u32;
        count += usize::from(x != S::Elem::ZERO);
    }
    count
}

/// Weight matrices larger than this are streamed from memory by a single row's GEMV, which then
/// prefetches ahead (see `gemv_block`); smaller ones stay in L2 between calls, where the hints
/// would only cost issue slots.
const STREAMED_WEIGHT_BYTES: usize = 1 << 20;

/// The steps k a single row's GEMV runs: all of them (`None`), or only those listed, the k whose
/// input is not zero, written to `indices`. Skipping needs finite weights (see `gemv_block`).
/// Listing the nonzero steps costs about a twentieth of a step per input, and counting the
/// zeros first less: only inputs with at least an eighth of zeros take the list, so a dense row
/// pays only the count (1-3% of a row on Zen 4). `known_nonzero`, when given, is how many of
/// `input`'s values are not zero, as `pack_input_row` counts them while converting a row.
#[inline(always)]
pub fn single_row_steps<'a, S: Simd>(
    s: S,
    layer: &PackedLayer<S::Elem>,
    input: &[S::Elem],
    indices: &'a mut [u32],
    known_nonzero: Option<usize>,
) -> Option<&'a [u32]> {
    let nonzero_count = match known_nonzero {
        _ if !layer.finite_weights => None,
        Some(count) => Some(count),
        None => Some(count_nonzero(s, input)),
    };
    if nonzero_count.is_some_and(|count| count * 8 <= input.len() * 7) {
        let count = collect_nonzero(s, input, indices);
        Some(&indices[..count])
    } else {
        None
    }
}

/// `single_row_steps` for `R` rows run together (`gemv_block`): the steps whose input is zero
/// in every row can be skipped, listed when they are at least an eighth of the steps. A row
/// known to have fewer zeros than that (`known_nonzero`) leaves too few for any to be skipped.
#[inline(always)]
pub fn row_group_steps<'a, S: Simd, const R: usize>(
    s: S,
    layer: &PackedLayer<S::Elem>,
    inputs: [&[S::Elem]; R],
    indices: &'a mut [u32],
    known_nonzero: [Option<usize>; R],
) -> Option<&'a [u32]> {
    if let ([input], [known]) = (&inputs[..], &known_nonzero[..]) {
        return single_row_steps(s, layer, input, indices, *known);
    }
    let step_count = inputs.first().map_or(0, |input| input.len());
    let sparse = |count: usize| count * 8 <= step_count * 7;
    if !layer.finite_weights || known_nonzero.iter().flatten().any(|&count| !sparse(count)) {
        return None;
    }
    if !sparse(nonzero_in_any_row(s, inputs, None)) {
        return None;
    }
    let count = nonzero_in_any_row(s, inputs, Some(&mut *indices));
    Some(&indices[..count])
}

/// How many steps k have a nonzero input (NaN included) in at least one of `inputs` (all of
/// one length); with `indices`, also writes those k there, ascending.
#[inline(always)]
fn nonzero_in_any_row<S: Simd, const R: usize>(
    s: S,
    inputs: [&[S::Elem]; R],
    mut indices: Option<&mut [u32]>,
) -> usize {
    let step_count = inputs.first().map_or(0, |input| input.len());
    assert!(
        inputs.iter().all(|input| input.len() == step_count) && step_count <= u32::MAX as usize
    );
    assert!(indices
        .as_ref()
        .is_none_or(|indices| indices.len() >= step_count));
    let lanes = S::LANES;
    let full = step_count - step_count % lanes;
    let mut count = 0;
    for first in (0..full).step_by(lanes) {
        let mut mask = 0;
        for input in inputs {
            // SAFETY: first + LANES <= full <= input.len().
            mask |= s.nonzero_mask(unsafe { s.load(input.as_ptr().add(first)) });
        }
        if let Some(indices) = indices.as_deref_mut() {
            // Without a branch per lane, as `store_nonzero_lanes`: which lanes are zero is
            // data. Each lane's index is written at `count`, which only the nonzero ones pass.
            for lane in 0..lanes {
                indices[count] = (first + lane) as u32;
                count += ((mask >> lane) & 1) as usize;
            }
        } else {
            count += mask.count_ones() as usize;
        }
    }
    for k in full..step_count {
        if let Some(indices) = indices.as_deref_mut() {
            indices[count] = k as u32;
        }
        count += usize::from(inputs.iter().any(|input| input[k] != S::Elem::ZERO));
    }
    count
}

/// How many vectors a single row's output of `layer` takes (the last one may overlap the one
/// before it, ending exactly at `row_width`).
pub fn single_row_vectors<S: Simd>(layer: &PackedLayer<S::Elem>) -> usize {
    layer.row_width.div_ceil(S::LANES)
}

/// Vectors `vectors` of one row's layer output, with the element-wise activation applied (a
/// row-wise one is left to `finish_single_row`). Each vector's sum runs over `steps` (see
/// `single_row_steps`), and the whole range again over every k if any sum ended at zero or NaN,
/// whose bits a skipped step could have set: every value is bit-identical to the full sum,
/// whatever the range, so a row split into ranges on several threads is too.
///
/// # Safety
/// `dst` must be writable for `layer.row_width` elements, and no other thread may access the
/// lanes of these vectors meanwhile: vector `v` covers `min(v * LANES, row_width - LANES)
/// .. + LANES`, so a range that holds the last vector must also hold the one before it. Every
/// step must be below `input.len()` (as `single_row_steps` lists them).
#[inline(always)]
#[allow(clippy::too_many_arguments)] // a layer, its row's buffers and the part to compute
pub unsafe fn single_row_vector_range<S: Simd>(
    s: S,
    layer: &PackedLayer<S::Elem>,
    activation: Activation,
    floor: S::Elem,
    input: &[S::Elem],
    steps: Option<&[u32]>,
    dst: *mut S::Elem,
    vectors: Range<usize>,
) where
    S::Elem: ExpConstants,
{
    // SAFETY: as this function's own contract.
    unsafe { row_group_vector_range(s, layer, activation, floor, [input], steps, [dst], vectors) }
}

/// `single_row_vector_range` for `R` rows at once (`gemv_block`), with `steps` as
/// `row_group_steps` lists them: each row's values are bit-identical to its own pass.
///
/// # Safety
/// As `single_row_vector_range`, for every row's `dst`; every input has `layer.inputs` values.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // a layer, its rows' buffers and the part to compute
unsafe fn row_group_vector_range<S: Simd, const R: usize>(
    s: S,
    layer: &PackedLayer<S::Elem>,
    activation: Activation,
    floor: S::Elem,
    inputs: [&[S::Elem]; R],
    steps: Option<&[u32]>,
    dst: [*mut S::Elem; R],
    vectors: Range<usize>,
) where
    S::Elem: ExpConstants,
{
    let lanes = S::LANES;
    let width = layer.row_width;
    assert!(inputs.iter().all(|input| input.len() == layer.inputs) && width >= lanes);
    assert!(layer.row_major_weights.len() == layer.inputs * width);
    assert!(vectors.end <= width.div_ceil(lanes));
    debug_assert!(steps.is_none_or(|steps| steps.iter().all(|&k| (k as usize) < layer.inputs)));
    let offset_of = |v: usize| (v * lanes).min(width - lanes);
    // Row-wise activations see raw values here and are applied by `finish_single_row`.
    let in_registers = if activation.is_row_wise() {
        Activation::Identity
    } else {
        activation
    };
    let stream = std::mem::size_of_val(layer.row_major_weights.as_slice()) > STREAMED_WEIGHT_BYTES;
    let w = layer.row_major_weights.as_ptr();
    let bias = layer.padded_bias.as_ptr();
    // Every vector of every row is its own FMA chain over k: up to 8 run interleaved for one
    // row; for several, up to 4 vectors of each, as many as keep the accumulators, the rows'
    // broadcast inputs and a weight vector within the registers the column tiles already
    // count on (`MAX_TILE_COLS`): 4 at AVX-512, 4, 3 and 2 for 2, 3 and 4 rows at AVX2.
    let registers = 2 * S::MAX_TILE_COLS + 3;
    let widest_block = if R == 1 {
        8
    } else {
        (registers.saturating_sub(R + 1) / R).clamp(1, 4)
    };
    // A loop, not a closure: a closure would be compiled outside the caller's target features.
    let mut steps = steps;
    loop {
        let mut needs_full_sum = false;
        let mut v = vectors.start;
        while v < vectors.end {
            let block = (vectors.end - v).min(widest_block);
            let first = offset_of(v);
            let last = offset_of(v + block - 1) - first;
            let row_dst: [*mut S::Elem; R] = std::array::from_fn(|r| dst[r].wrapping_add(first));
            macro_rules! run_block {
                ($($count:literal)*) => {
                    match block {
                        $($count => {
                            // SAFETY: every offset + LANES <= width, the row length of
                            // `row_major_weights` (asserted) and of `padded_bias`; the caller
                            // gives each `dst` for `width` elements and these lanes alone, and
                            // steps below `layer.inputs`, every input's length (asserted).
                            needs_full_sum |= unsafe {
                                gemv_block::<S, $count, R>(
                                    s,
                                    inputs,
                                    steps,
                                    w.add(first),
                                    width,
                                    bias.add(first),
                                    last,
                                    in_registers,
                                    floor,
                                    row_dst,
                                    stream,
                                )
                            };
                        })*
                        _ => unreachable!("blocks hold 1 to 8 vectors, 1 to 4 for several rows"),
                    }
                };
            }
            if R == 1 {
                run_block!(1 2 3 4 5 6 7 8);
            } else {
                run_block!(1 2 3 4);
            }
            v += block;
        }
        if !(needs_full_sum && steps.is_some()) {
            break;
        }
        steps = None;
    }
}

/// A single row's row-wise activation (softmax, log-softmax) over `out`'s first `outputs`
/// values, once every vector is computed; nothing for other activations. `scratch` holds
/// `outputs * LANES` elements.
#[inline(always)]
pub fn finish_single_row<S: Simd>(
    s: S,
    layer: &PackedLayer<S::Elem>,
    activation: Activation,
    floor: S::Elem,
    out: &mut [S::Elem],
    scratch: &mut [S::Elem],
) where
    S::Elem: ExpConstants,
{
    if !activation.is_row_wise() || layer.outputs == 0 {
        return;
    }
    let lanes = S::LANES;
    // Each value goes through the very same vertical softmax as in a batch (broadcast to all
    // lanes), so a single row is bit-identical to the same row inside a batch.
    let count = layer.outputs;
    assert!(scratch.len() >= count * lanes && out.len() >= count);
    for j in 0..count {
        // SAFETY: `scratch` holds `count * lanes` elements (asserted).
        unsafe { s.store(scratch[j * lanes..].as_mut_ptr(), s.splat(out[j])) };
    }
    let log = activation == Activation::LogSoftmax;
    let base = scratch.as_mut_ptr();
    // SAFETY: vector j at `j * lanes` lies inside `scratch` for every j < count.
    unsafe { softmax_vertical(s, base, base, count, lanes, log, floor) };
    for j in 0..count {
        out[j] = scratch[j * lanes];
    }
}

/// One layer for `R` rows on the calling thread (one row, or the few rows a batch leaves after
/// its last whole chunk, which would otherwise each stream the layer's weights from L2 on their
/// own): each input has `inputs` values, `outs[r]` gets row `r`'s `row_width` values (the first
/// `outputs` meaningful, those below `floor` zero as in `layer_chunk`). `scratch` holds
/// `outputs * LANES` elements for softmax layers, `indices` at least `inputs` entries;
/// `known_nonzero[r]` as in `single_row_steps`.
///
/// Steps whose input is zero in every row are skipped when every weight is finite: a single row
/// streams the whole weight matrix from L2, so MNIST's four-fifths of zero pixels are
/// four-fifths of layer 1's time. Every row's values stay bit-identical to the full sum (and to
/// the row in a batch).
#[inline(always)]
#[allow(clippy::too_many_arguments)] // a layer, its rows' buffers and what is known of them
pub fn layer_row_group<S: Simd, const R: usize>(
    s: S,
    layer: &PackedLayer<S::Elem>,
    activation: Activation,
    floor: S::Elem,
    inputs: [&[S::Elem]; R],
    outs: [&mut [S::Elem]; R],
    scratch: &mut [S::Elem],
    indices: &mut [u32],
    known_nonzero: [Option<usize>; R],
) where
    S::Elem: ExpConstants,
{
    assert!(outs.iter().all(|out| out.len() >= layer.row_width));
    let steps = row_group_steps(s, layer, inputs, indices, known_nonzero);
    let vectors = single_row_vectors::<S>(layer);
    let mut outs = outs;
    let dst: [*mut S::Elem; R] = std::array::from_fn(|r| outs[r].as_mut_ptr());
    // SAFETY: every `out` holds `row_width` elements (asserted), each borrowed mutably by this
    // call alone (so no two alias); `row_group_steps` lists only steps below the inputs' length.
    unsafe { row_group_vector_range(s, layer, activation, floor, inputs, steps, dst, 0..vectors) };
    for out in outs.iter_mut() {
        finish_single_row(s, layer, activation, floor, out, scratch);
    }
}
