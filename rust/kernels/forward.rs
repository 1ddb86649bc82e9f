//! The loops around the micro-kernels: a model's forward pass over row chunks that run through
//! every layer while their activations stay in cache, split over threads.

use std::ops::Range;
use std::sync::Mutex;

use super::dispatch::{DispatchElement, Level, SimdTask};
use super::math::{activation_floor, Activation};
use super::microkernel::{
    chunk_rows, chunk_tile_range, finish_chunk, finish_single_row, layer_chunk, layer_row_group,
    nonzero_steps, single_row_steps, single_row_vector_range, single_row_vectors,
};
use super::pack::{pack_input_chunk, pack_input_columns, pack_input_row, PackedLayer, MAX_LANES};
use super::prefetch::Prefetch;
use super::scratch::{from_cache_line, return_index_scratch, take_index_scratch, LINE_SLACK};
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

/// Chunks with fewer live rows than `chunk / GROUPED_ROWS_DIVISOR` go through the single-row
/// path, up to `MAX_GROUPED_ROWS` rows together: there a mostly empty tile costs more than the
/// GEMV. (On the Xeon a 32-row tile took 19-20 us, and groups of 1 to 4 rows 3.5-4.5 us each,
/// so 8 rows 9.9 us and 15 rows 18 us; at AVX2, 16-row tiles 15.5 us, 4 rows 6 us, 7 rows 11
/// us.) Where threads split a large layer's columns, rows run one by one, each streaming the
/// weights, so only chunks below `chunk / SINGLE_ROWS_DIVISOR` do. Every path gives
/// bit-identical rows.
const GROUPED_ROWS_DIVISOR: usize = 2;
const SINGLE_ROWS_DIVISOR: usize = 4;

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
        // Several parts per thread let the others take over when one core is busy elsewhere.
        // Parts are whole chunks at every level (chunks are at most 2 * MAX_LANES rows), so no
        // part ends in a mostly empty tile; rows are independent, so no split changes a bit.
        let per_task = rows.div_ceil(tasks * 4).next_multiple_of(MAX_LANES * 2);
        if tasks <= 1 || rows <= per_task {
            // One part: the threads, if any, split the columns of each large layer instead.
            E::dispatch(
                self.level,
                RowsTask {
                    model: self,
                    x,
                    rows,
                    sink,
                    log,
                    threads: tasks,
                },
            );
            return;
        }
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
                        threads: 1,
                    },
                );
            }
        });
    }
}

/// One thread's share of a forward pass, taken exactly once by whichever thread claims it.
type ClaimablePart<'a, E, X> = Mutex<Option<(&'a [X], Sink<'a, E>)>>;

/// Runs rows serially on the calling thread, at one level; with `threads` above one, rows that
/// take the single-row path split each large layer's columns over that many threads.
struct RowsTask<'a, E, X> {
    model: &'a PackedModel<E>,
    x: &'a [X],
    rows: usize,
    sink: Sink<'a, E>,
    log: bool,
    threads: usize,
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
            threads,
        } = self;
        let features = model.features();
        let chunk = chunk_rows::<S>();
        let widest = model.widest_output();
        // Single rows and groups of rows use the chunk's buffers, a row per `features` or
        // `widest` elements, and the softmax scratch.
        let tiled_len = (features + 2 * widest) * chunk;
        let softmax_len = widest * S::LANES;
        let slack = LINE_SLACK / std::mem::size_of::<E>();
        let mut scratch = E::take_scratch(tiled_len + softmax_len + slack);
        // Room for any layer's list of nonzero inputs: its inputs are the features or an
        // earlier layer's outputs.
        let mut indices = take_index_scratch(features.max(widest));
        {
            let (tiled, softmax_scratch) = from_cache_line(&mut scratch).split_at_mut(tiled_len);
            let (packed_input, tiled) = tiled.split_at_mut(features * chunk);
            let (chunk_even, chunk_odd) = tiled.split_at_mut(widest * chunk);

            // Only the packing depends on the input's type: the layers run in tasks of their
            // own, dispatched again, so their code is compiled once per level and model type
            // instead of once per input type too (which tripled the crate's build time).
            //
            // Whether the last chunk's first layer found steps to skip: looking costs 3% of a
            // dense chunk, so the chunks after one without look only now and then.
            let mut last_chunk_skipped = false;
            let mut chunk_index = 0usize;
            // The same for every chunk: whether threads split the first layer's columns (the
            // blocked pass runs on one thread).
            let first_layer_split = chunk_layer_parts::<S>(&model.layers[0], threads).is_some();
            // The rows after the last whole chunk go through the single-row path together,
            // unless threads split a layer's columns (a layer too large for the caches, whose
            // rows are then each as fast as the threads' memory allows).
            let rows_grouped = model
                .layers
                .iter()
                .all(|layer| column_parts::<S>(layer, threads).is_none());
            let single_path_divisor = if rows_grouped {
                GROUPED_ROWS_DIVISOR
            } else {
                SINGLE_ROWS_DIVISOR
            };
            let mut start = 0;
            while start < rows {
                let live = (rows - start).min(chunk);
                let x_chunk = &x[start * features..(start + live) * features];
                if live * single_path_divisor >= chunk {
                    // The first layer, the longest, pulls in the next chunk's rows as it goes.
                    let next_end = (start + live + chunk).min(rows);
                    let next_rows =
                        Prefetch::of(&x[(start + live) * features..next_end * features]);
                    if !first_layer_split {
                        let look_for_zero_steps = last_chunk_skipped
                            || chunk_index.is_multiple_of(LOOK_FOR_ZERO_STEPS_EVERY);
                        last_chunk_skipped = first_layer_in_blocks(
                            s,
                            model,
                            log,
                            x_chunk,
                            live,
                            look_for_zero_steps,
                            packed_input,
                            chunk_even,
                            &mut indices,
                            next_rows,
                        );
                    } else {
                        pack_input_chunk(
                            s,
                            x_chunk,
                            live,
                            features,
                            model.input_scale,
                            packed_input,
                        );
                    }
                    E::dispatch(
                        model.level,
                        ChunkLayersTask {
                            model,
                            log,
                            threads,
                            first_layer_done: !first_layer_split,
                            packed_input,
                            even: chunk_even,
                            odd: chunk_odd,
                            next_rows,
                            live,
                            first_row: start,
                            sink: &mut sink,
                        },
                    );
                } else {
                    // Rows run one by one where threads split a layer's columns for each.
                    let most_grouped = if rows_grouped { MAX_GROUPED_ROWS } else { 1 };
                    let mut r = 0;
                    while r < live {
                        let group = (live - r).min(most_grouped);
                        let group_x = &x_chunk[r * features..(r + group) * features];
                        // Always through a copy, even for rows already of the model's type:
                        // the copy is where subnormal inputs are read as zero (by their bits),
                        // as the batch's packing reads them, and it counts the nonzero values
                        // on the way. (A loop, not `array::from_fn`: a closure would be
                        // compiled outside the caller's target features.)
                        let mut input_nonzero = [0; MAX_GROUPED_ROWS];
                        for (i, nonzero) in input_nonzero.iter_mut().enumerate().take(group) {
                            *nonzero = pack_input_row(
                                s,
                                &group_x[i * features..(i + 1) * features],
                                model.input_scale,
                                &mut packed_input[i * features..(i + 1) * features],
                            );
                        }
                        macro_rules! run_group {
                            ($($rows:literal)*) => {
                                match group {
                                    $($rows => E::dispatch(
                                        model.level,
                                        RowGroupLayersTask::<'_, '_, E, $rows> {
                                            model,
                                            log,
                                            threads,
                                            input_nonzero: input_nonzero[..$rows]
                                                .try_into()
                                                .expect("as many counts as rows"),
                                            inputs: &packed_input[..$rows * features],
                                            even: chunk_even,
                                            odd: chunk_odd,
                                            row_stride: widest,
                                            softmax_scratch,
                                            indices: &mut indices,
                                            first_row: start + r,
                                            sink: &mut sink,
                                        },
                                    ),)*
                                    _ => unreachable!("groups hold 1 to {MAX_GROUPED_ROWS} rows"),
                                }
                            };
                        }
                        run_group!(1 2 3 4);
                        r += group;
                    }
                }
                start += live;
                chunk_index += 1;
            }
        }
        E::return_scratch(scratch);
        return_index_scratch(indices);
    }
}

/// The first layer over one chunk (`live` rows of `x_chunk`) into `output`, in blocks of its
/// inputs (`first_layer_block`: at some levels one), each packed (into `packed`) just before
/// its multiply-adds. With `look_for_zero_steps`, steps whose inputs are zero in every row of
/// the chunk are skipped where that changes no bit: with finite weights, and unless a sum ends
/// at zero or NaN, when the chunk runs again in full. Returns whether the chunk had steps to
/// skip.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // a model, one chunk's rows and the buffers it runs in
fn first_layer_in_blocks<S: Simd, X: InputElement>(
    s: S,
    model: &PackedModel<S::Elem>,
    log: bool,
    x_chunk: &[X],
    live: usize,
    look_for_zero_steps: bool,
    packed: &mut [S::Elem],
    output: &mut [S::Elem],
    indices: &mut [u32],
    next_rows: Prefetch,
) -> bool
where
    S::Elem: DispatchElement,
{
    let features = model.features();
    let chunk = chunk_rows::<S>();
    let block = first_layer_block::<S>(features);
    // (A model without features still runs one block: its bias.)
    let blocks = features.div_ceil(block).max(1);
    let mut skip_zero_steps = model.layers[0].finite_weights && look_for_zero_steps;
    let mut had_zero_steps = false;
    loop {
        let mut outcome = BlockOutcome::default();
        for (index, k0) in (0..features.max(1)).step_by(block).enumerate() {
            let k = k0..(k0 + block).min(features);
            let packed_block = &mut packed[..k.len() * chunk];
            let range = k.clone();
            pack_input_columns(
                s,
                x_chunk,
                live,
                features,
                range,
                model.input_scale,
                packed_block,
            );
            let block_outcome = S::Elem::dispatch(
                model.level,
                FirstLayerBlockTask {
                    model,
                    log,
                    packed_block,
                    output: &mut *output,
                    k,
                    skip_zero_steps,
                    indices: &mut *indices,
                    prefetch: next_rows.share(index, blocks),
                },
            );
            outcome.skipped |= block_outcome.skipped;
            outcome.zero_or_nan = block_outcome.zero_or_nan;
        }
        had_zero_steps |= outcome.skipped;
        if !(outcome.skipped && outcome.zero_or_nan) {
            return had_zero_steps;
        }
        skip_zero_steps = false;
    }
}

impl<E: DispatchElement> PackedModel<E> {
    /// Layer `index`'s activation in a pass that, with `log`, turns a final softmax into
    /// log-softmax.
    fn activation_in_pass(&self, index: usize, log: bool) -> Activation {
        let activation = self.layers[index].activation;
        if log && index + 1 == self.layers.len() && activation == Activation::Softmax {
            Activation::LogSoftmax
        } else {
            activation
        }
    }
}

/// After a chunk whose first layer skipped no step (no input zero in every row, or too few
/// such inputs in every block to be worth a list), the chunks that look for them: one in this
/// many.
const LOOK_FOR_ZERO_STEPS_EVERY: usize = 16;

/// Features per block of a first layer run in blocks of its inputs: all of them where the level
/// runs one block (`Simd::FIRST_LAYER_BLOCK_BYTES`), else blocks of equal width of at most that
/// much packed chunk. Blocks keep the packed chunk in L1 while every column tile reads it, which
/// made the Xeon 4-5% faster (AVX-512: 32 rows, 100 KB for 784 float32 features; blocks of 8,
/// 16 and 32 KB the same within noise there); on Zen 2 (AVX2: 16 rows, 50 KB) one block ran
/// 5.5% faster than blocks of 16 KB, of which 2% was the last block's 16 steps and the rest each
/// block's own work: reloading every tile's partial sums, packing and dispatch.
fn first_layer_block<S: Simd>(features: usize) -> usize {
    let Some(block_bytes) = S::FIRST_LAYER_BLOCK_BYTES else {
        return features.max(1);
    };
    let per_feature = chunk_rows::<S>() * std::mem::size_of::<S::Elem>();
    let widest = (block_bytes / per_feature / S::LANES).max(1) * S::LANES;
    balanced_block(features, widest, S::LANES)
}

/// The width of `features.div_ceil(widest)` blocks of nearly equal width, a multiple of `lanes`
/// (`widest` is one): 784 features at most 128 wide are 7 x 112, not 6 x 128 and a last block
/// of 16 steps, for which every column tile would reload and store its partial sums (the Xeon
/// ran 10,000 rows 2-3% faster).
fn balanced_block(features: usize, widest: usize, lanes: usize) -> usize {
    let blocks = features.div_ceil(widest).max(1);
    (features.div_ceil(blocks).div_ceil(lanes) * lanes).max(lanes)
}

/// One block of the first layer's inputs over one chunk (`packed_block` is `[k.len()][R]`),
/// into `output`: partial sums until the block that ends at the layer's inputs, then the
/// layer's activated outputs. With `skip_zero_steps`, the steps whose inputs are zero in every
/// row are skipped where they are at least an eighth of the block (listed in `indices`).
struct FirstLayerBlockTask<'a, E> {
    model: &'a PackedModel<E>,
    log: bool,
    packed_block: &'a [E],
    output: &'a mut [E],
    k: Range<usize>,
    skip_zero_steps: bool,
    indices: &'a mut [u32],
    prefetch: Prefetch,
}

/// What a `FirstLayerBlockTask` did: whether it skipped any step, and whether, ending the k
/// loop, it left any sum at zero or NaN (whose bits a skipped step could have set).
#[derive(Clone, Copy, Default)]
struct BlockOutcome {
    skipped: bool,
    zero_or_nan: bool,
}

impl<E: DispatchElement> SimdTask<E> for FirstLayerBlockTask<'_, E> {
    type Output = BlockOutcome;

    #[inline(always)]
    fn run<S: Simd<Elem = E>>(self, s: S) -> BlockOutcome {
        let model = self.model;
        let activation = model.activation_in_pass(0, self.log);
        let floor = activation_floor(activation, model.layers.len() > 1);
        let steps = self.k.len();
        let nonzero = if self.skip_zero_steps {
            let count = nonzero_steps(s, self.packed_block, steps, self.indices);
            // A listed step costs a little more than a plain one: a few zero steps are not
            // worth the list (the single-row path's threshold).
            (count < steps && count * 8 <= steps * 7).then_some(&self.indices[..count])
        } else {
            None
        };
        let zero_or_nan = layer_chunk(
            s,
            &model.layers[0],
            activation,
            floor,
            self.packed_block,
            self.output,
            self.k,
            nonzero,
            self.prefetch,
        );
        BlockOutcome {
            skipped: nonzero.is_some(),
            zero_or_nan,
        }
    }
}

/// The column-tile parts one layer's pass over a chunk is split into for `threads` threads, or
/// None where it runs on one.
fn chunk_layer_parts<S: Simd>(
    layer: &PackedLayer<S::Elem>,
    threads: usize,
) -> Option<Vec<Range<usize>>> {
    let macs = layer.inputs * layer.outputs * chunk_rows::<S>();
    split_evenly(layer.tiles.len(), macs, threads)
}

/// Every layer over one packed chunk of rows (from the second, with `first_layer_done`, whose
/// result is then in `even`), then their results to the sink; with `threads` above one, large
/// layers split their column tiles over the threads.
struct ChunkLayersTask<'a, 's, E> {
    model: &'a PackedModel<E>,
    log: bool,
    threads: usize,
    first_layer_done: bool,
    packed_input: &'a [E],
    even: &'a mut [E],
    odd: &'a mut [E],
    next_rows: Prefetch,
    live: usize,
    first_row: usize,
    sink: &'a mut Sink<'s, E>,
}

impl<E: DispatchElement> SimdTask<E> for ChunkLayersTask<'_, '_, E> {
    type Output = ();

    #[inline(always)]
    fn run<S: Simd<Elem = E>>(self, s: S) {
        let ChunkLayersTask {
            model,
            log,
            threads,
            first_layer_done,
            packed_input,
            even,
            odd,
            next_rows,
            live,
            first_row,
            sink,
        } = self;
        let last = model.layers.len().saturating_sub(1);
        // Layer i writes buffer i % 2 and reads the other (or the packed input).
        let skip = usize::from(first_layer_done);
        for (index, layer) in model.layers.iter().enumerate().skip(skip) {
            let (input, output, prefetch): (&[E], &mut [E], _) = match index {
                0 => (packed_input, &mut *even, next_rows),
                i if i % 2 == 1 => (&*even, &mut *odd, Prefetch::NONE),
                _ => (&*odd, &mut *even, Prefetch::NONE),
            };
            let activation = model.activation_in_pass(index, log);
            let floor = activation_floor(activation, index != last);
            match chunk_layer_parts::<S>(layer, threads) {
                Some(parts) => {
                    let output_buffer = SharedOutput(output.as_mut_ptr());
                    threads::run_parts(threads, parts.len(), |part| {
                        E::dispatch(
                            model.level,
                            ChunkTilesTask {
                                layer,
                                activation,
                                floor,
                                input,
                                output: output_buffer,
                                tiles: parts[part].clone(),
                                prefetch,
                            },
                        );
                    });
                    finish_chunk(s, layer, activation, floor, output);
                }
                None => {
                    layer_chunk(
                        s,
                        layer,
                        activation,
                        floor,
                        input,
                        output,
                        0..layer.inputs,
                        None,
                        prefetch,
                    );
                }
            }
        }
        let result = if last % 2 == 0 { &*even } else { &*odd };
        emit_chunk(
            result,
            chunk_rows::<S>(),
            live,
            model.outputs(),
            first_row,
            sink,
        );
    }
}

/// At most this many rows left after a batch's last whole chunk run through the single-row path
/// together (`layer_row_group`): 4 vectors of each of 4 rows, their broadcast inputs and a
/// weight vector take 21 of AVX-512's 32 registers (AVX2 runs 4, 3 and 2 vectors per block for
/// 2, 3 and 4 rows). Groups of 5 and 6 ran slower than 4 and 1, or 4 and 2.
const MAX_GROUPED_ROWS: usize = 4;

/// Every layer for one row or `R` rows together (`inputs`, already converted, `R` rows of the
/// model's features, with `input_nonzero[r]` values not zero in row `r`), then their results
/// to the sink. Each row's values are bit-identical to its pass alone and in a batch. With
/// `threads` above one, a single row's large layers split their columns over the threads.
struct RowGroupLayersTask<'a, 's, E, const R: usize> {
    model: &'a PackedModel<E>,
    log: bool,
    threads: usize,
    inputs: &'a [E],
    input_nonzero: [usize; R],
    even: &'a mut [E],
    odd: &'a mut [E],
    /// Where each row starts in `even` and `odd`: the model's widest output.
    row_stride: usize,
    softmax_scratch: &'a mut [E],
    indices: &'a mut [u32],
    first_row: usize,
    sink: &'a mut Sink<'s, E>,
}

impl<E: DispatchElement, const R: usize> SimdTask<E> for RowGroupLayersTask<'_, '_, E, R> {
    type Output = ();

    #[inline(always)]
    fn run<S: Simd<Elem = E>>(self, s: S) {
        let RowGroupLayersTask {
            model,
            log,
            threads,
            inputs: first_inputs,
            input_nonzero,
            even,
            odd,
            row_stride,
            softmax_scratch,
            indices,
            first_row,
            sink,
        } = self;
        let features = model.features();
        assert!(first_inputs.len() >= R * features);
        assert!(row_stride > 0 && even.len() >= R * row_stride && odd.len() >= R * row_stride);
        let last = model.layers.len().saturating_sub(1);
        for (index, layer) in model.layers.iter().enumerate() {
            let (input, input_stride, output): (&[E], usize, &mut [E]) = match index {
                0 => (first_inputs, features, &mut *even),
                i if i % 2 == 1 => (&*even, row_stride, &mut *odd),
                _ => (&*odd, row_stride, &mut *even),
            };
            let activation = model.activation_in_pass(index, log);
            let floor = activation_floor(activation, index != last);
            let inputs: [&[E]; R] =
                std::array::from_fn(|r| &input[r * input_stride..r * input_stride + layer.inputs]);
            let mut rows = output.chunks_exact_mut(row_stride);
            let mut outs: [&mut [E]; R] =
                std::array::from_fn(|_| rows.next().expect("R rows of row_stride (asserted)"));
            let known_nonzero = std::array::from_fn(|r| (index == 0).then(|| input_nonzero[r]));
            let split = if R == 1 {
                column_parts::<S>(layer, threads)
            } else {
                None
            };
            if let (Some(parts), [input], [output]) = (split, &inputs[..], &mut outs[..]) {
                layer_single_row_split(
                    s,
                    model.level,
                    &parts,
                    threads,
                    layer,
                    activation,
                    floor,
                    input,
                    output,
                    softmax_scratch,
                    indices,
                    known_nonzero[0],
                );
            } else {
                layer_row_group(
                    s,
                    layer,
                    activation,
                    floor,
                    inputs,
                    outs,
                    softmax_scratch,
                    indices,
                    known_nonzero,
                );
            }
        }
        let result = if last % 2 == 0 { &*even } else { &*odd };
        for r in 0..R {
            let values = &result[r * row_stride..r * row_stride + model.outputs()];
            emit_row(values, first_row + r, sink);
        }
    }
}

/// The ranges of output vectors a single row's pass through `layer` is split into for `threads`
/// threads, or None where a split is not worth it.
fn column_parts<S: Simd>(
    layer: &PackedLayer<S::Elem>,
    threads: usize,
) -> Option<Vec<Range<usize>>> {
    split_vectors(
        single_row_vectors::<S>(layer),
        layer.inputs * layer.outputs,
        threads,
    )
}

/// `vectors` output vectors of a layer of `macs` multiply-adds, split for `threads` threads:
/// whole blocks of 8 vectors (the GEMV's unit), a few parts per thread, each at least
/// `MIN_MACS_PER_TASK` multiply-adds; the last vector, which may overlap the one before it,
/// always shares that one's part. None where that leaves one part.
fn split_vectors(vectors: usize, macs: usize, threads: usize) -> Option<Vec<Range<usize>>> {
    const BLOCK: usize = 8;
    let blocks = vectors.saturating_sub(1) / BLOCK;
    let parts = (threads * 4).min(macs / MIN_MACS_PER_TASK).min(blocks);
    if threads <= 1 || parts <= 1 {
        return None;
    }
    // Strictly increasing (parts <= blocks), and all below vectors - 1.
    let mut bounds: Vec<usize> = (0..parts).map(|p| p * blocks / parts * BLOCK).collect();
    bounds.push(vectors);
    Some(bounds.windows(2).map(|pair| pair[0]..pair[1]).collect())
}

/// A layer's output buffer (one row's or one chunk's), written by several threads at once, each
/// to its own columns.
#[derive(Clone, Copy)]
struct SharedOutput<E>(*mut E);

// SAFETY: the pointer is only written through `single_row_vector_range` and `chunk_tile_range`,
// by parts whose columns are disjoint (`split_vectors`, `split_evenly`), while the buffer's
// owner waits in `run_parts`.
unsafe impl<E: Send> Send for SharedOutput<E> {}
// SAFETY: as above; no part reads what another writes.
unsafe impl<E: Send> Sync for SharedOutput<E> {}

/// One layer for one row, its column `parts` computed by up to `threads` threads: a layer too
/// wide for one core's caches is bound by how fast its weights stream from memory, which two
/// cores do faster than one. Bit-identical to `layer_single_row`: every output's sum runs the
/// same steps whichever thread computes it.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // `layer_single_row`'s operands, plus the split
fn layer_single_row_split<S: Simd>(
    s: S,
    level: Level,
    parts: &[Range<usize>],
    threads: usize,
    layer: &PackedLayer<S::Elem>,
    activation: Activation,
    floor: S::Elem,
    input: &[S::Elem],
    out: &mut [S::Elem],
    scratch: &mut [S::Elem],
    indices: &mut [u32],
    known_nonzero: Option<usize>,
) where
    S::Elem: DispatchElement,
{
    assert!(out.len() >= layer.row_width);
    let steps = single_row_steps(s, layer, input, indices, known_nonzero);
    let output = SharedOutput(out.as_mut_ptr());
    threads::run_parts(threads, parts.len(), |part| {
        S::Elem::dispatch(
            level,
            RowVectorsTask {
                layer,
                activation,
                floor,
                input,
                steps,
                output,
                vectors: parts[part].clone(),
            },
        );
    });
    finish_single_row(s, layer, activation, floor, out, scratch);
}

/// One part of `layer_single_row_split`, run at the model's level on whichever thread claims it.
struct RowVectorsTask<'a, E> {
    layer: &'a PackedLayer<E>,
    activation: Activation,
    floor: E,
    input: &'a [E],
    steps: Option<&'a [u32]>,
    output: SharedOutput<E>,
    vectors: Range<usize>,
}

impl<E: DispatchElement> SimdTask<E> for RowVectorsTask<'_, E> {
    type Output = ();

    #[inline(always)]
    fn run<S: Simd<Elem = E>>(self, s: S) {
        // SAFETY: the buffer holds `row_width` elements (asserted by the caller), the parts'
        // ranges are disjoint and keep the last vector with the one before it (`column_parts`),
        // and the steps index `input` (`single_row_steps`).
        unsafe {
            single_row_vector_range(
                s,
                self.layer,
                self.activation,
                self.floor,
                self.input,
                self.steps,
                self.output.0,
                self.vectors,
            )
        };
    }
}

/// `units` column tiles of a layer of `macs` multiply-adds (over a chunk), split for `threads`
/// threads: a few parts per thread, each at least `MIN_MACS_PER_TASK` multiply-adds; None
/// where that leaves one part.
fn split_evenly(units: usize, macs: usize, threads: usize) -> Option<Vec<Range<usize>>> {
    let parts = (threads * 4).min(macs / MIN_MACS_PER_TASK).min(units);
    if threads <= 1 || parts <= 1 {
        return None;
    }
    let bounds: Vec<usize> = (0..=parts).map(|p| p * units / parts).collect();
    Some(bounds.windows(2).map(|pair| pair[0]..pair[1]).collect())
}

/// One part of a chunk's layer split over threads, run at the model's level on whichever
/// thread claims it.
struct ChunkTilesTask<'a, E> {
    layer: &'a PackedLayer<E>,
    activation: Activation,
    floor: E,
    input: &'a [E],
    output: SharedOutput<E>,
    tiles: Range<usize>,
    prefetch: Prefetch,
}

impl<E: DispatchElement> SimdTask<E> for ChunkTilesTask<'_, E> {
    type Output = ();

    #[inline(always)]
    fn run<S: Simd<Elem = E>>(self, s: S) {
        // SAFETY: the buffer holds `outputs * R` elements (the chunk buffers are sized for the
        // widest layer), and the parts' tile ranges, hence their columns, are disjoint.
        unsafe {
            chunk_tile_range(
                s,
                self.layer,
                self.activation,
                self.floor,
                self.input,
                self.output.0,
                self.tiles,
                0..self.layer.inputs,
                None,
                self.prefetch,
            )
        };
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

#[cfg(test)]
mod tests {
    use std::ops::Range;

    use super::{balanced_block, split_evenly, split_vectors, MIN_MACS_PER_TASK};

    /// Runs `split(units, macs, threads)` over a range of sizes and checks what every split
    /// owes: parts only where there are threads to share them, at most four per thread and one
    /// per `MIN_MACS_PER_TASK`, nonempty, in order, covering `0..units` once. `also` then
    /// checks the split's own rules.
    fn check_every_split(
        max_units: usize,
        split: fn(usize, usize, usize) -> Option<Vec<Range<usize>>>,
        also: impl Fn(usize, &[Range<usize>]),
    ) {
        for units in 0..max_units {
            for threads in 1..6 {
                for work in [0, 1, 3, 5, 100] {
                    let macs = work * MIN_MACS_PER_TASK;
                    let Some(parts) = split(units, macs, threads) else {
                        continue;
                    };
                    assert!(threads > 1 && parts.len() > 1 && parts.len() <= threads * 4);
                    assert!(parts.len() <= macs / MIN_MACS_PER_TASK);
                    assert_eq!(parts[0].start, 0);
                    assert_eq!(parts.last().unwrap().end, units);
                    assert!(parts.iter().all(|part| part.start < part.end));
                    for pair in parts.windows(2) {
                        assert_eq!(pair[0].end, pair[1].start);
                    }
                    also(units, &parts);
                }
            }
        }
        assert!(split(2000, 100 * MIN_MACS_PER_TASK, 2).is_some());
    }

    #[test]
    fn tile_splits_cover_every_tile_once() {
        check_every_split(60, split_evenly, |_, _| {});
    }

    #[test]
    fn single_row_splits_cover_every_vector_once_and_keep_the_last_two_together() {
        check_every_split(300, split_vectors, |vectors, parts| {
            for pair in parts.windows(2) {
                assert!(pair[0].end % 8 == 0, "{vectors}: {parts:?}");
            }
            let last = parts.last().unwrap();
            assert!(last.len() >= 2, "{vectors}: {parts:?}");
        });
    }

    #[test]
    fn balanced_blocks_are_as_few_as_the_widest_allow_and_lane_aligned() {
        assert_eq!(balanced_block(784, 128, 16), 112);
        for lanes in [4, 8, 16] {
            for widest in (1..=10).map(|n| n * lanes) {
                for features in 0..400 {
                    let block = balanced_block(features, widest, lanes);
                    assert!(block > 0 && block.is_multiple_of(lanes) && block <= widest);
                    let blocks = features.div_ceil(block);
                    assert_eq!(blocks, features.div_ceil(widest), "{features} {widest}");
                    // Only the last block may be shorter, by less than a vector per block.
                    let last = features - (blocks.max(1) - 1) * block;
                    assert!(features == 0 || block - last < blocks * lanes, "{features}");
                }
            }
        }
    }
}
