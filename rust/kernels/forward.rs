//! The loops around the micro-kernels: a model's forward pass over row chunks that run through
//! every layer while their activations stay in cache, split over threads.

use rayon::prelude::*;

use super::dispatch::{DispatchElement, Level, SimdTask};
use super::math::Activation;
use super::microkernel::{chunk_rows, layer_chunk, layer_single_row};
use super::pack::{pack_input_chunk, PackedLayer, MAX_LANES};
use super::simd::{Element, InputElement, Simd};
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

/// Chunks with fewer live rows than this go through the single-row path, row by row: below it,
/// a mostly empty tile costs more than the GEMV. Both give bit-identical rows.
const MIN_TILED_ROWS_DIVISOR: usize = 4;

/// A thread is only worth waking for at least this many multiply-adds (tens of microseconds):
/// a cross-thread wake-up costs microseconds.
const MIN_MACS_PER_TASK: usize = 1 << 20;

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
            .map(|l| l.padded_outputs)
            .max()
            .unwrap_or(0)
    }

    /// How many tasks `rows` rows are split into with at most `threads` threads.
    pub fn plan_tasks(&self, rows: usize, threads: usize) -> usize {
        let by_work = (rows * self.macs_per_row().max(1)) / MIN_MACS_PER_TASK;
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
        // Several tasks per thread let rayon rebalance when one core is busy with other work;
        // each task is a whole number of chunks, so chunking never changes any row's bits.
        let per_task = rows.div_ceil(tasks * 4).max(MAX_LANES * 2);
        let x_parts = x[..rows * features].chunks(per_task * features.max(1));
        let sinks: Vec<Sink<'_, E>> = match sink {
            Sink::Values(out) => out[..rows * outputs]
                .chunks_mut(per_task * outputs.max(1))
                .map(Sink::Values)
                .collect(),
            Sink::Labels(out) => out[..rows].chunks_mut(per_task).map(Sink::Labels).collect(),
        };
        let work: Vec<(&[X], Sink<'_, E>)> = x_parts.zip(sinks).collect();
        threads::pool().install(|| {
            work.into_par_iter().for_each(|(x_part, sink)| {
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
            })
        });
    }
}

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
        // Buffers are allocated for the path that runs: a single row must not pay for zeroing
        // a chunk's worth of packed input.
        let mut tiled_buffers: Option<(Vec<E>, [Vec<E>; 2])> = None;
        let mut row_buffers: Option<(Vec<E>, [Vec<E>; 2], Vec<E>)> = None;

        let mut start = 0;
        while start < rows {
            let live = (rows - start).min(chunk);
            let x_chunk = &x[start * features..(start + live) * features];
            if live * MIN_TILED_ROWS_DIVISOR >= chunk {
                let (packed_input, chunk_buffers) = tiled_buffers.get_or_insert_with(|| {
                    let buffer = || vec![E::ZERO; widest * chunk];
                    (vec![E::ZERO; features * chunk], [buffer(), buffer()])
                });
                pack_input_chunk(s, x_chunk, live, features, model.input_scale, packed_input);
                // Layer i writes buffer i % 2 and reads the other (or the packed input).
                for (index, layer) in model.layers.iter().enumerate() {
                    let (even, odd) = chunk_buffers.split_at_mut(1);
                    let (input, output): (&[E], &mut [E]) = match index {
                        0 => (packed_input, &mut even[0]),
                        i if i % 2 == 1 => (&even[0], &mut odd[0]),
                        _ => (&odd[0], &mut even[0]),
                    };
                    layer_chunk(s, layer, activation_of(index, layer), input, output);
                }
                emit_chunk(
                    &chunk_buffers[last % 2],
                    chunk,
                    live,
                    outputs,
                    start,
                    &mut sink,
                );
            } else {
                let (input_row, row_buffers, softmax_scratch) =
                    row_buffers.get_or_insert_with(|| {
                        let buffer = || vec![E::ZERO; widest];
                        (
                            vec![E::ZERO; features],
                            [buffer(), buffer()],
                            vec![E::ZERO; widest * S::LANES],
                        )
                    });
                for r in 0..live {
                    let row = &x_chunk[r * features..(r + 1) * features];
                    for (dst, &value) in input_row.iter_mut().zip(row) {
                        *dst = value.to_element::<E>() * model.input_scale;
                    }
                    for (index, layer) in model.layers.iter().enumerate() {
                        let (even, odd) = row_buffers.split_at_mut(1);
                        let (input, output): (&[E], &mut [E]) = match index {
                            0 => (input_row, &mut even[0]),
                            i if i % 2 == 1 => (&even[0], &mut odd[0]),
                            _ => (&odd[0], &mut even[0]),
                        };
                        let activation = activation_of(index, layer);
                        layer_single_row(
                            s,
                            layer,
                            activation,
                            &input[..layer.inputs],
                            output,
                            softmax_scratch,
                        );
                    }
                    emit_row(&row_buffers[last % 2][..outputs], start + r, &mut sink);
                }
            }
            start += live;
        }
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
