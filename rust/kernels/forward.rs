//! The loops around the micro-kernels: a model's forward pass over row chunks that run through
//! every layer while their activations stay in cache, split over threads.

use std::sync::Mutex;

use super::dispatch::{DispatchElement, Level, SimdTask};
use super::math::{activation_floor, Activation};
use super::microkernel::{chunk_rows, layer_chunk, layer_single_row};
use super::pack::{pack_input_chunk, pack_input_row, PackedLayer, MAX_LANES};
use super::simd::{
    return_index_scratch, take_index_scratch, Element, InputElement, Prefetch, Simd,
};
use crate::threads;

/// A model packed for one instruction-set level.
#[derive(Clone, Debug)]
pub struct PackedModel<E> {
    pub layers: Vec<PackedLayer<E>>,
    pub input_scale: E,
    pub level: Level,
}

/// Where a forward pass writes: every output value, or only each row's argmax.
pub enum Sink<'a, E> {
    Values(&'a mut [E]),
    Labels(&'a mut [i64]),
}

impl<'a, E> Sink<'a, E> {
    /// The first `rows` rows' outputs, and the rest.
    pub fn split_rows(self, rows: usize, outputs: usize) -> (Sink<'a, E>, Sink<'a, E>) {
        match self {
            Sink::Values(values) => {
                let (head, tail) = values.split_at_mut((rows * outputs).min(values.len()));
                (Sink::Values(head), Sink::Values(tail))
            }
            Sink::Labels(labels) => {
                let (head, tail) = labels.split_at_mut(rows.min(labels.len()));
                (Sink::Labels(head), Sink::Labels(tail))
            }
        }
    }
}

/// Chunks with fewer live rows than this go through the single-row path, row by row: below it,
/// a mostly empty tile costs more than the GEMV. Both give bit-identical rows.
const MIN_TILED_ROWS_DIVISOR: usize = 4;

/// A thread is only worth waking for at least this many multiply-adds (tens of microseconds):
/// a cross-thread wake-up costs microseconds.
pub const MIN_MACS_PER_TASK: usize = 1 << 20;

impl<E: DispatchElement> PackedModel<E> {
    pub fn new(layers: Vec<PackedLayer<E>>, input_scale: E, level: Level) -> Self {
        PackedModel {
            layers,
            input_scale,
            level,
        }
    }

    pub fn features(&self) -> usize {
        self.layers.first().map_or(0, |l| l.inputs)
    }

    pub fn outputs(&self) -> usize {
        self.layers.last().map_or(0, |l| l.outputs)
    }

    pub fn macs_per_row(&self) -> usize {
        self.layers.iter().map(|l| l.inputs * l.outputs).sum()
    }

    /// The most values any layer writes per row (padded to whole vectors).
    fn widest_output(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.row_width.max(l.outputs))
            .max()
            .unwrap_or(0)
    }

    /// How many tasks `rows` rows are split into with at most `threads` threads.
    pub fn plan_tasks(&self, rows: usize, threads: usize) -> usize {
        let by_work = rows.saturating_mul(self.macs_per_row().max(1)) / MIN_MACS_PER_TASK;
        threads.min(by_work).max(1)
    }

    /// Runs the model over `rows` rows of `x` (row-major, `features()` wide). With `log`, a final
    /// softmax becomes log-softmax. Each row's result depends only on that row and the model.
    pub fn forward<X: InputElement>(
        &self,
        x: &[X],
        rows: usize,
        sink: Sink<'_, E>,
        threads: usize,
        log: bool,
    ) {
        let features = self.features();
        let outputs = self.outputs();
        assert!(x.len() >= rows * features);
        let tasks = self.plan_tasks(rows, threads);
        if tasks <= 1 {
            E::dispatch(
                self.level,
                RowsTask {
                    model: self,
                    x,
                    rows,
                    sink,
                    log,
                },
            );
            return;
        }
        // Several parts per thread let the others take over when one core is busy elsewhere.
        // Parts are whole chunks at every level (chunks are at most 2 * MAX_LANES rows), so no
        // part ends in a mostly empty tile; rows are independent, so no split changes a bit.
        let per_task = rows.div_ceil(tasks * 4).next_multiple_of(MAX_LANES * 2);
        let x_parts = x[..rows * features].chunks(per_task * features.max(1));
        let sinks: Vec<Sink<'_, E>> = match sink {
            Sink::Values(out) => out[..rows * outputs]
                .chunks_mut(per_task * outputs.max(1))
                .map(Sink::Values)
                .collect(),
            Sink::Labels(out) => out[..rows].chunks_mut(per_task).map(Sink::Labels).collect(),
        };
        let work: Vec<ClaimablePart<'_, E, X>> = x_parts
            .zip(sinks)
            .map(|part| Mutex::new(Some(part)))
            .collect();
        threads::run_parts(tasks, work.len(), |index| {
            let part = work[index].lock().ok().and_then(|mut slot| slot.take());
            if let Some((x_part, sink)) = part {
                let part_rows = match &sink {
                    Sink::Values(v) => v.len() / outputs.max(1),
                    Sink::Labels(l) => l.len(),
                };
                E::dispatch(
                    self.level,
                    RowsTask {
                        model: self,
                        x: x_part,
                        rows: part_rows,
                        sink,
                        log,
                    },
                );
            }
        });
    }
}

/// One thread's share of a forward pass, taken exactly once by whichever thread claims it.
type ClaimablePart<'a, E, X> = Mutex<Option<(&'a [X], Sink<'a, E>)>>;

/// Runs rows serially on the calling thread, at one level.
struct RowsTask<'a, E, X> {
    model: &'a PackedModel<E>,
    x: &'a [X],
    rows: usize,
    sink: Sink<'a, E>,
    log: bool,
}

impl<E: DispatchElement, X: InputElement> SimdTask<E> for RowsTask<'_, E, X> {
    type Output = ();

    #[inline(always)]
    fn run<S: Simd<Elem = E>>(self, s: S) {
        let RowsTask {
            model,
            x,
            rows,
            mut sink,
            log,
        } = self;
        let features = model.features();
        let outputs = model.outputs();
        let last = model.layers.len().saturating_sub(1);
        let activation_of = |index: usize, layer: &PackedLayer<E>| {
            if log && index == last && layer.activation == Activation::Softmax {
                Activation::LogSoftmax
            } else {
                layer.activation
            }
        };

        let chunk = chunk_rows::<S>();
        let widest = model.widest_output();
        let tiled_len = (features + 2 * widest) * chunk;
        let row_len = features + 2 * widest + widest * S::LANES;
        let mut scratch = E::take_scratch(tiled_len + row_len);
        // Room for any layer's list of nonzero inputs: its inputs are the features or an
        // earlier layer's outputs.
        let mut indices = take_index_scratch(features.max(widest));
        {
            let (tiled, row) = scratch.split_at_mut(tiled_len);
            let (packed_input, tiled) = tiled.split_at_mut(features * chunk);
            let (chunk_even, chunk_odd) = tiled.split_at_mut(widest * chunk);
            let (input_row, row) = row.split_at_mut(features);
            let (row_even, row) = row.split_at_mut(widest);
            let (row_odd, softmax_scratch) = row.split_at_mut(widest);

            let mut start = 0;
            while start < rows {
                let live = (rows - start).min(chunk);
                let x_chunk = &x[start * features..(start + live) * features];
                if live * MIN_TILED_ROWS_DIVISOR >= chunk {
                    pack_input_chunk(s, x_chunk, live, features, model.input_scale, packed_input);
                    // The first layer, the longest, pulls in the next chunk's rows as it goes.
                    let next_end = (start + live + chunk).min(rows);
                    let next_rows =
                        Prefetch::of(&x[(start + live) * features..next_end * features]);
                    // Layer i writes buffer i % 2 and reads the other (or the packed input).
                    for (index, layer) in model.layers.iter().enumerate() {
                        let (input, output, prefetch): (&[E], &mut [E], _) = match index {
                            0 => (packed_input, chunk_even, next_rows),
                            i if i % 2 == 1 => (chunk_even, chunk_odd, Prefetch::NONE),
                            _ => (chunk_odd, chunk_even, Prefetch::NONE),
                        };
                        let activation = activation_of(index, layer);
                        let floor = activation_floor(activation, index != last);
                        layer_chunk(s, layer, activation, floor, input, output, prefetch);
                    }
                    let result = if last % 2 == 0 {
                        &*chunk_even
                    } else {
                        &*chunk_odd
                    };
                    emit_chunk(result, chunk, live, outputs, start, &mut sink);
                } else {
                    for r in 0..live {
                        let row = &x_chunk[r * features..(r + 1) * features];
                        // Always through a copy, even for a row already of the model's type:
                        // the copy is where subnormal inputs are read as zero (by their bits),
                        // as the batch's packing reads them, and it counts the nonzero values
                        // on the way.
                        let nonzero = pack_input_row(s, row, model.input_scale, input_row);
                        let (first_input, first_nonzero) = (&*input_row, Some(nonzero));
                        for (index, layer) in model.layers.iter().enumerate() {
                            let (input, output): (&[E], &mut [E]) = match index {
                                0 => (first_input, row_even),
                                i if i % 2 == 1 => (row_even, row_odd),
                                _ => (row_odd, row_even),
                            };
                            let activation = activation_of(index, layer);
                            let floor = activation_floor(activation, index != last);
                            let input = &input[..layer.inputs];
                            let known_nonzero = if index == 0 { first_nonzero } else { None };
                            layer_single_row(
                                s,
                                layer,
                                activation,
                                floor,
                                input,
                                output,
                                softmax_scratch,
                                &mut indices,
                                known_nonzero,
                            );
                        }
                        let result = if last % 2 == 0 { &*row_even } else { &*row_odd };
                        emit_row(&result[..outputs], start + r, &mut sink);
                    }
                }
                start += live;
            }
        }
        E::return_scratch(scratch);
        return_index_scratch(indices);
    }
}

/// Index of the largest value, the first NaN if any (as `np.argmax`), 0 for an empty row.
fn argmax<E: Element>(values: impl Iterator<Item = E>) -> i64 {
    let mut best_index = 0;
    let mut best: Option<E> = None;
    for (index, value) in values.enumerate() {
        if value.is_nan() {
            return index as i64;
        }
        if best.is_none_or(|b| value > b) {
            best = Some(value);
            best_index = index;
        }
    }
    best_index as i64
}

fn emit_chunk<E: Element>(
    transposed: &[E],
    chunk: usize,
    live: usize,
    outputs: usize,
    first_row: usize,
    sink: &mut Sink<'_, E>,
) {
    for r in 0..live {
        let column = (0..outputs).map(|j| transposed[j * chunk + r]);
        match sink {
            Sink::Values(out) => {
                let row = &mut out[(first_row + r) * outputs..(first_row + r + 1) * outputs];
                for (dst, value) in row.iter_mut().zip(column) {
                    *dst = value;
                }
            }
            Sink::Labels(labels) => labels[first_row + r] = argmax(column),
        }
    }
}

fn emit_row<E: Element>(values: &[E], row: usize, sink: &mut Sink<'_, E>) {
    match sink {
        Sink::Values(out) => {
            let outputs = values.len();
            out[row * outputs..(row + 1) * outputs].copy_from_slice(values);
        }
        Sink::Labels(labels) => labels[row] = argmax(values.iter().copied()),
    }
}
