//! Packing: weights laid out once per model for the micro-kernel and the single-row path, and each
//! chunk of input rows transposed into the rows-in-lanes layout, converted and scaled on the way.

use ndarray::ArrayView2;

use super::math::Activation;
use super::simd::{Element, InputElement};

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
    /// For the single-row path: `[k][padded_outputs]`, zero-padded to whole vectors.
    pub row_major_weights: Vec<E>,
    pub padded_bias: Vec<E>,
    pub padded_outputs: usize,
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
        let padded_outputs = outputs.div_ceil(MAX_LANES).max(1) * MAX_LANES;
        let mut row_major_weights = vec![E::ZERO; inputs * padded_outputs];
        for k in 0..inputs {
            for c in 0..outputs {
                row_major_weights[k * padded_outputs + c] = weights[[k, c]];
            }
        }
        let mut padded_bias = vec![E::ZERO; padded_outputs];
        padded_bias[..outputs].copy_from_slice(bias);
        PackedLayer {
            inputs,
            outputs,
            activation,
            tiles,
            tiled_weights,
            bias: bias.to_vec(),
            row_major_weights,
            padded_bias,
            padded_outputs,
        }
    }
}

/// How many input columns are transposed together: a block of `rows x TRANSPOSE_BLOCK` reads
/// whole cache lines of each row while its writes stay within a few lines per k.
const TRANSPOSE_BLOCK: usize = 64;

/// Writes `dst[k * lanes + r] = scale * src[r * features + k]` for the `rows` rows in `src`,
/// and zero for lanes `rows..lanes`, so padded lanes compute harmless finite values.
pub fn pack_input_chunk<X: InputElement, E: Element>(
    src: &[X],
    rows: usize,
    features: usize,
    lanes: usize,
    scale: E,
    dst: &mut [E],
) {
    assert!(rows <= lanes && src.len() >= rows * features && dst.len() >= features * lanes);
    for block_start in (0..features).step_by(TRANSPOSE_BLOCK) {
        let block_end = (block_start + TRANSPOSE_BLOCK).min(features);
        for r in 0..rows {
            let row = &src[r * features + block_start..r * features + block_end];
            for (k, &value) in (block_start..block_end).zip(row) {
                dst[k * lanes + r] = value.to_element::<E>() * scale;
            }
        }
    }
    if rows < lanes {
        for k in 0..features {
            dst[k * lanes + rows..(k + 1) * lanes].fill(E::ZERO);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn pack_input_chunk_transposes_scales_and_zero_pads() {
        let features = 70;
        let rows = 3;
        let src: Vec<u8> = (0..rows * features).map(|i| (i % 251) as u8).collect();
        let mut dst = vec![f32::NAN; features * 8];
        pack_input_chunk(&src, rows, features, 8, 0.5f32, &mut dst);
        for k in 0..features {
            for r in 0..8 {
                let expected = if r < rows {
                    src[r * features + k] as f32 * 0.5
                } else {
                    0.0
                };
                assert_eq!(dst[k * 8 + r], expected);
            }
        }
    }
}
