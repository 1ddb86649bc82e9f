//! Packing: weights laid out once per model for the micro-kernel and the single-row path, and each
//! chunk of input rows transposed into the rows-in-lanes layout, converted and scaled on the way.

use std::ops::Range;

use ndarray::ArrayView2;

use super::math::Activation;
use super::simd::{Element, InputElement, Simd};

/// The widest vector any level uses (AVX-512 f32): single-row weights are padded to it.
pub const MAX_LANES: usize = 16;

/// One register tile of output columns `first_col .. first_col + width` of a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColumnTile {
    pub first_col: usize,
    pub width: usize,
    /// Where this tile's `[inputs][width]` block starts in `PackedLayer::tiled_weights`.
    pub offset: usize,
}

/// One dense layer, packed for both compute paths.
#[derive(Clone, Debug)]
pub struct PackedLayer<E> {
    pub inputs: usize,
    pub outputs: usize,
    pub activation: Activation,
    pub tiles: Vec<ColumnTile>,
    /// For the batched micro-kernel: per tile, `[k][width]` so one k-step reads `width`
    /// consecutive weights to broadcast.
    pub tiled_weights: Vec<E>,
    pub bias: Vec<E>,
    /// For the single-row path: `[k][row_width]`. `row_width` is `outputs`, or `MAX_LANES`
    /// (zero-padded) for narrower layers: a single row streams every weight from L2 once per
    /// call, so padding 50 outputs to 64 would cost it a quarter more time.
    pub row_major_weights: Vec<E>,
    /// `bias` padded to `row_width`, with ones (see `new`).
    pub padded_bias: Vec<E>,
    pub row_width: usize,
    /// Whether every weight is finite: only then is a zero input's every product a zero, which
    /// the single-row path may skip.
    pub finite_weights: bool,
}

/// Splits `outputs` columns into as few tiles of at most `max_width` as possible, of nearly
/// equal width (50 -> 5 x 10 at width 12, not 12+12+12+12+2), so no tile runs mostly empty.
pub fn column_tiles(outputs: usize, max_width: usize) -> Vec<(usize, usize)> {
    if outputs == 0 {
        return Vec::new();
    }
    let count = outputs.div_ceil(max_width);
    let base = outputs / count;
    let wider = outputs % count;
    let mut first = 0;
    (0..count)
        .map(|t| {
            let width = base + usize::from(t < wider);
            let tile = (first, width);
            first += width;
            tile
        })
        .collect()
}

impl<E: Element> PackedLayer<E> {
    /// `weights` is `(inputs, outputs)`, any strides; `bias` has `outputs` elements.
    pub fn new(
        weights: ArrayView2<'_, E>,
        bias: &[E],
        activation: Activation,
        max_tile_cols: usize,
    ) -> Self {
        let (inputs, outputs) = weights.dim();
        assert_eq!(
            bias.len(),
            outputs,
            "bias length must equal the layer's outputs"
        );
        // Subnormal weights and biases are read as zero, as subnormal inputs are: a multiply-add
        // reading one takes a microcode assist on Intel cores. (Reading them here, once, is not
        // a hot loop.)
        let weights = weights.mapv(Element::flush_subnormal);
        let bias: Vec<E> = bias.iter().map(|&b| b.flush_subnormal()).collect();
        let mut tiles = Vec::new();
        let mut tiled_weights = Vec::with_capacity(inputs * outputs);
        for (first_col, width) in column_tiles(outputs, max_tile_cols) {
            tiles.push(ColumnTile {
                first_col,
                width,
                offset: tiled_weights.len(),
            });
            for k in 0..inputs {
                for c in first_col..first_col + width {
                    tiled_weights.push(weights[[k, c]]);
                }
            }
        }
        let row_width = outputs.max(MAX_LANES);
        let mut row_major_weights = vec![E::ZERO; inputs * row_width];
        for k in 0..inputs {
            for c in 0..outputs {
                row_major_weights[k * row_width + c] = weights[[k, c]];
            }
        }
        // 0 * w, the product a skipped step would add, is NaN exactly when w is not finite.
        let finite_weights = weights.iter().all(|&w| !(E::ZERO * w).is_nan());
        // Padding columns start from one, not zero, so their sums never end at zero: a zero
        // sum makes the single-row path redo a layer that skipped zero inputs. (Their weights
        // are zeros, so a NaN or infinite input makes them NaN, as it makes the real outputs.)
        let mut padded_bias = vec![E::ONE; row_width];
        padded_bias[..outputs].copy_from_slice(&bias);
        PackedLayer {
            inputs,
            outputs,
            activation,
            tiles,
            tiled_weights,
            bias,
            row_major_weights,
            padded_bias,
            row_width,
            finite_weights,
        }
    }
}

/// Writes `dst[k * 2L + r] = scale * src[r * features + k]` (L = `S::LANES`) for the `rows`
/// rows in `src`, and zero for lanes `rows..2L`, so padded lanes compute harmless finite values.
/// Whole `L x L` blocks are converted, scaled and transposed in registers; the last
/// `features % L` columns one value at a time, rounding exactly as the vector path does.
#[inline(always)]
pub fn pack_input_chunk<S: Simd, X: InputElement>(
    s: S,
    src: &[X],
    rows: usize,
    features: usize,
    scale: S::Elem,
    dst: &mut [S::Elem],
) {
    pack_input_columns(s, src, rows, features, 0..features, scale, dst);
}

/// `pack_input_chunk` for the feature columns `columns` only: `dst[(k - columns.start) * 2L +
/// r]` for k in `columns`, which starts at a multiple of L. A first layer blocked over its
/// inputs packs one block at a time, into a buffer small enough to stay in L1 while every
/// column tile reads it.
#[inline(always)]
pub fn pack_input_columns<S: Simd, X: InputElement>(
    s: S,
    src: &[X],
    rows: usize,
    features: usize,
    columns: Range<usize>,
    scale: S::Elem,
    dst: &mut [S::Elem],
) {
    let lanes = S::LANES;
    let chunk = 2 * lanes;
    assert!(rows <= chunk && src.len() >= rows * features);
    assert!(columns.start.is_multiple_of(lanes) && columns.start <= columns.end);
    assert!(columns.end <= features);
    assert!(dst.len() >= columns.len() * chunk);
    assert!(lanes <= MAX_LANES);
    let first_column = columns.start;
    let full = columns.end - columns.len() % lanes;
    let zero = s.splat(S::Elem::ZERO);
    let scale_v = s.splat(scale);
    let min_normal = s.splat(S::Elem::MIN_NORMAL);
    let scaling = Scaling::of::<X, S::Elem>(scale);
    let mut block = [zero; MAX_LANES];
    for first_row in [0, lanes] {
        let live = rows.saturating_sub(first_row).min(lanes);
        for k0 in (first_column..full).step_by(lanes) {
            // Blocks of only live rows (all but the last chunk's) are loaded without a per-row
            // test (perf showed it costing 15%), by `load_transposed`, which a level may fold
            // part of the transpose into. The scaling is applied to the whole block after the
            // loads: matched per row, it kept LLVM from unrolling them, and the block went
            // through the stack. (A macro rather than a closure: a closure would be compiled
            // outside the caller's target features.)
            macro_rules! load_row {
                ($i:expr) => {{
                    // SAFETY: $i < live, so row first_row + $i < rows, and k0 + lanes <= full
                    // <= features: the LANES values lie inside `src` (length checked above).
                    let v = unsafe {
                        X::load_vector(s, src.as_ptr().add((first_row + $i) * features + k0))
                    };
                    if X::HAS_SUBNORMALS {
                        s.flush_below(v, min_normal)
                    } else {
                        v
                    }
                }};
            }
            if live == lanes {
                // SAFETY: rows first_row..first_row + lanes, all below `rows`, are each readable
                // at columns k0..k0 + lanes <= full <= features (the length checked above).
                unsafe {
                    X::load_transposed(
                        s,
                        src.as_ptr().add(first_row * features + k0),
                        features,
                        &mut block[..lanes],
                    )
                };
                // Flushing and scaling act on each value alone, so after the transpose they
                // round every value exactly as before it.
                if X::HAS_SUBNORMALS {
                    for slot in block.iter_mut().take(lanes) {
                        *slot = s.flush_below(*slot, min_normal);
                    }
                }
                if scaling != Scaling::None {
                    for slot in block.iter_mut().take(lanes) {
                        *slot = scaling.apply(s, *slot, scale_v, min_normal);
                    }
                }
            } else {
                for (i, slot) in block.iter_mut().enumerate().take(lanes) {
                    *slot = if i < live { load_row!(i) } else { zero };
                }
                if scaling != Scaling::None {
                    for slot in block.iter_mut().take(lanes) {
                        *slot = scaling.apply(s, *slot, scale_v, min_normal);
                    }
                }
                s.transpose(&mut block[..lanes]);
            }
            let packed_row = (k0 - first_column) * chunk + first_row;
            for (j, &column) in block.iter().enumerate().take(lanes) {
                // SAFETY: packed_row + j * chunk + lanes <= (full - first_column) * chunk <=
                // columns.len() * chunk, dst's checked minimum length.
                unsafe { s.store(dst.as_mut_ptr().add(packed_row + j * chunk), column) };
            }
        }
        for k in full..columns.end {
            for i in 0..lanes {
                dst[(k - first_column) * chunk + first_row + i] = if i < live {
                    (src[(first_row + i) * features + k].to_element::<S::Elem>() * scale)
                        .flush_subnormal()
                } else {
                    S::Elem::ZERO
                };
            }
        }
    }
}

/// How packing scales input values already converted (and flushed): the same value as
/// `flush_below(value * scale)` in every case, with the steps that cannot change it left out.
/// Multiplying by one changes no number (a signalling NaN is quieted by the first multiply-add
/// either way), and whole numbers (uint8 pixels) times a normal scale are zero or normal.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scaling {
    None,
    Multiply,
    MultiplyAndFlush,
}

impl Scaling {
    fn of<X: InputElement, E: Element>(scale: E) -> Scaling {
        if scale == E::ONE {
            Scaling::None
        } else if !X::HAS_SUBNORMALS && scale.to_f64().abs() >= E::MIN_NORMAL.to_f64() {
            Scaling::Multiply
        } else {
            Scaling::MultiplyAndFlush
        }
    }

    #[inline(always)]
    fn apply<S: Simd>(self, s: S, value: S::V, scale: S::V, min_normal: S::V) -> S::V {
        match self {
            Scaling::None => value,
            Scaling::Multiply => s.mul(value, scale),
            Scaling::MultiplyAndFlush => s.flush_below(s.mul(value, scale), min_normal),
        }
    }
}

/// Writes `dst[k] = scale * src[k]` for one row, rounding exactly as `pack_input_chunk`, and
/// returns how many of the results are not zero (NaN included): the single-row path needs
/// that count to choose between its dense and zero-skipping passes, and taking it here spares
/// the first layer a second pass over the row.
#[inline(always)]
pub fn pack_input_row<S: Simd, X: InputElement>(
    s: S,
    src: &[X],
    scale: S::Elem,
    dst: &mut [S::Elem],
) -> usize {
    let lanes = S::LANES;
    assert!(dst.len() >= src.len());
    let full = src.len() - src.len() % lanes;
    let scale_v = s.splat(scale);
    let min_normal = s.splat(S::Elem::MIN_NORMAL);
    let scaling = Scaling::of::<X, S::Elem>(scale);
    let mut nonzero = 0;
    for first in (0..full).step_by(lanes) {
        // SAFETY: first + lanes <= full <= src.len() <= dst.len().
        unsafe {
            let v = X::load_vector(s, src.as_ptr().add(first));
            let v = if X::HAS_SUBNORMALS {
                s.flush_below(v, min_normal)
            } else {
                v
            };
            let v = scaling.apply(s, v, scale_v, min_normal);
            s.store(dst.as_mut_ptr().add(first), v);
            nonzero += s.nonzero_mask(v).count_ones() as usize;
        }
    }
    for (d, &x) in dst[full..src.len()].iter_mut().zip(&src[full..]) {
        *d = (x.to_element::<S::Elem>() * scale).flush_subnormal();
        nonzero += usize::from(*d != S::Elem::ZERO);
    }
    nonzero
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::dispatch::{DispatchElement, Level, SimdTask};

    #[test]
    fn column_tiles_cover_every_column_once_with_balanced_widths() {
        for outputs in 1..200 {
            for max_width in 1..14 {
                let tiles = column_tiles(outputs, max_width);
                assert_eq!(tiles.len(), outputs.div_ceil(max_width));
                let mut next = 0;
                for &(first, width) in &tiles {
                    assert_eq!(first, next);
                    assert!(width >= 1 && width <= max_width);
                    next += width;
                }
                assert_eq!(next, outputs);
                let widest = tiles.iter().map(|t| t.1).max().unwrap();
                let narrowest = tiles.iter().map(|t| t.1).min().unwrap();
                assert!(widest - narrowest <= 1);
            }
        }
    }

    struct PackTask<'a, X> {
        src: &'a [X],
        rows: usize,
        features: usize,
        scale: f32,
    }

    impl<X: InputElement> SimdTask<f32> for PackTask<'_, X> {
        type Output = (usize, Vec<f32>);
        fn run<S: Simd<Elem = f32>>(self, s: S) -> (usize, Vec<f32>) {
            let chunk = 2 * S::LANES;
            if self.rows > chunk {
                return (chunk, Vec::new());
            }
            let mut dst = vec![f32::NAN; self.features * chunk];
            pack_input_chunk(s, self.src, self.rows, self.features, self.scale, &mut dst);
            // Packed in blocks of columns, as a blocked first layer packs, every block is the
            // same bits as its part of the whole, and nothing is written past it.
            for block in [S::LANES, 3 * S::LANES] {
                for first in (0..self.features).step_by(block) {
                    let columns = first..(first + block).min(self.features);
                    let mut part = vec![f32::NAN; columns.len() * chunk + 1];
                    let (rows, features) = (self.rows, self.features);
                    let range = columns.clone();
                    pack_input_columns(s, self.src, rows, features, range, self.scale, &mut part);
                    let whole = &dst[columns.start * chunk..columns.end * chunk];
                    let same = part[..whole.len()]
                        .iter()
                        .zip(whole)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "columns {columns:?} in blocks of {block}");
                    assert!(
                        part[whole.len()].is_nan(),
                        "columns {columns:?}: wrote past"
                    );
                }
            }
            (chunk, dst)
        }
    }

    fn check_pack<X: InputElement + Copy>(src: &[X], features: usize) {
        for level in Level::ALL.into_iter().filter(|l| l.is_supported()) {
            // Scales that take each `Scaling` step, for every input type.
            for (rows, scale) in [1, 3, 8, 15, 16, 17, 31, 32]
                .into_iter()
                .flat_map(|rows| [0.5, 1.0, 1.0 / 255.0, 1e-45].map(|scale| (rows, scale)))
            {
                let task = PackTask {
                    src,
                    rows,
                    features,
                    scale,
                };
                let (chunk, dst) = f32::dispatch(level, task);
                if rows > chunk {
                    continue;
                }
                for k in 0..features {
                    for r in 0..chunk {
                        let expected = if r < rows {
                            (src[r * features + k].to_element::<f32>() * scale).flush_subnormal()
                        } else {
                            0.0
                        };
                        assert_eq!(
                            dst[k * chunk + r].to_bits(),
                            expected.to_bits(),
                            "{level:?} rows={rows} scale={scale} k={k} r={r}"
                        );
                    }
                }
            }
        }
    }

    struct PackRowTask<'a, X, E> {
        src: &'a [X],
        scale: E,
    }

    impl<X: InputElement, E: DispatchElement> SimdTask<E> for PackRowTask<'_, X, E> {
        type Output = (usize, Vec<E>);
        fn run<S: Simd<Elem = E>>(self, s: S) -> (usize, Vec<E>) {
            let mut dst = vec![E::from_f64(f64::NAN); self.src.len() + 1];
            let nonzero = pack_input_row(s, self.src, self.scale, &mut dst);
            (nonzero, dst)
        }
    }

    /// The same value, bit for bit (through f64, which keeps every sign and NaN-ness).
    fn same_bits<E: Element>(a: E, b: E) -> bool {
        (a.is_nan() && b.is_nan()) || a.to_f64().to_bits() == b.to_f64().to_bits()
    }

    fn check_pack_row<X: InputElement + Copy, E: DispatchElement>(src: &[X], scale: f64) {
        let scale = E::from_f64(scale);
        for level in Level::ALL.into_iter().filter(|l| l.is_supported()) {
            for len in 0..=src.len() {
                let row = &src[..len];
                let (nonzero, dst) = E::dispatch(level, PackRowTask { src: row, scale });
                let expected: Vec<E> = row
                    .iter()
                    .map(|x| (x.to_element::<E>() * scale).flush_subnormal())
                    .collect();
                let all_same = dst[..len]
                    .iter()
                    .zip(&expected)
                    .all(|(&a, &b)| same_bits(a, b));
                assert!(
                    all_same,
                    "{} {level:?} len={len}: {:?} != {expected:?}",
                    E::NAME,
                    &dst[..len]
                );
                assert!(dst[len].is_nan(), "{level:?} len={len}: wrote past the row");
                let expected_nonzero = expected.iter().filter(|&&v| v != E::ZERO).count();
                assert_eq!(nonzero, expected_nonzero, "{} {level:?} len={len}", E::NAME);
            }
        }
    }

    #[test]
    fn pack_input_row_converts_scales_and_counts_nonzero_results_at_every_level() {
        // Zeros in every lane position and in the tail, -0, NaN and infinity.
        let bytes: Vec<u8> = (0..70)
            .map(|i| if i % 3 == 0 { 0 } else { (i * 7 % 251) as u8 })
            .collect();
        let mut floats: Vec<f32> = (0..70)
            .map(|i| if i % 4 == 1 { 0.0 } else { i as f32 - 30.0 })
            .collect();
        floats[5] = -0.0;
        floats[33] = f32::NAN;
        floats[69] = f32::INFINITY;
        // Subnormal float32 values, in vector lanes and in the tail: read as zero of their sign
        // by a float32 model and, before the conversion, by a float64 one.
        floats[9] = 1e-40;
        floats[26] = -f32::from_bits(1);
        floats[67] = 1e-39;
        // Nonzero values whose product with the smallest subnormal rounds to zero (those
        // below 1/2) and those that stay nonzero: the count is of results, not of inputs.
        let tiny: Vec<f64> = (0..70)
            .map(|i| [0.0, 0.25, 0.5, 0.75, 3.0][i % 5] * if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        // Float64 values below float32's normal range, for a float32 model.
        let below_f32: Vec<f64> = (0..70)
            .map(|i| [0.0, 1e-39, -1e-40, 1.0, 1e-300][i % 5])
            .collect();
        check_pack_row::<_, f32>(&below_f32, 1.0);
        check_pack_row::<_, f64>(&below_f32, 1.0);
        for scale in [0.5, 1.0, 0.0, 1.0 / 255.0] {
            check_pack_row::<_, f32>(&bytes, scale);
            check_pack_row::<_, f64>(&bytes, scale);
            check_pack_row::<_, f32>(&floats, scale);
            check_pack_row::<_, f64>(&floats, scale);
            check_pack_row::<_, f32>(&tiny, scale);
            check_pack_row::<_, f64>(&tiny, scale);
        }
        check_pack_row::<_, f32>(&tiny, f64::from(f32::from_bits(1)));
        check_pack_row::<_, f64>(&tiny, f64::from_bits(1));
        check_pack_row::<_, f32>(&floats, f64::from(f32::from_bits(1)));
    }

    #[test]
    fn pack_input_chunk_transposes_converts_scales_and_zero_pads_at_every_level() {
        for features in [1, 7, 16, 37, 70] {
            let bytes: Vec<u8> = (0..32 * features).map(|i| (i * 7 % 251) as u8).collect();
            check_pack(&bytes, features);
            // Every 11th value subnormal (float32) or below float32's normal range (float64).
            let floats: Vec<f32> = (0..32 * features)
                .map(|i| {
                    if i % 11 == 3 {
                        -1e-40
                    } else {
                        i as f32 * 0.37 - 5.0
                    }
                })
                .collect();
            check_pack(&floats, features);
            let doubles: Vec<f64> = (0..32 * features)
                .map(|i| {
                    if i % 11 == 5 {
                        1e-39
                    } else {
                        i as f64 * 0.1 + 1e-9
                    }
                })
                .collect();
            check_pack(&doubles, features);
        }
    }
}
