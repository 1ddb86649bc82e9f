//! The model class, `PackedMLP`: packing at construction, and every forward call's route from
//! a NumPy array to the kernels and back.

use numpy::IxDyn;
use numpy::{
    PyArray1, PyArray2, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::prelude::*;

use super::arrays::{dtype_name, writable_floats, InputRows, WRITE_REFUSED};
use super::functions::parse_activation;
use crate::borrows;
use crate::detached::{self, run_released};
use crate::error::{catch_panic, FastmlpError};
use crate::kernels;
use crate::kernels::dispatch::{active_level, DispatchElement, Level};
use crate::kernels::forward::{PackedModel, Sink};
use crate::kernels::math::Activation;
use crate::kernels::pack::PackedLayer;
use crate::threads;

/// The largest result (in elements) `PackedMLP.run` allocates itself.
const MAX_CORE_ALLOCATED_OUTPUTS: usize = 1 << 20;

/// Below this many multiply-adds a forward pass keeps the GIL. Releasing it costs two mutex
/// operations, and taking it back can mean waiting for another thread's switch interval; a
/// one-row pass of the tutorial's network (45,200) is over in about 1.1 us at AVX-512. Low
/// enough that the portable level, in float64, still holds the GIL only for tens of microseconds.
const DETACH_MIN_MACS: usize = 1 << 16;
// A pass that keeps the GIL must never wait for the worker pool.
const _: () = assert!(DETACH_MIN_MACS <= kernels::forward::MIN_MACS_PER_TASK);

enum AnyModel {
    F32(PackedModel<f32>),
    F64(PackedModel<f64>),
}

/// A model whose weights were packed once, at construction, for this CPU's instruction set.
#[pyclass(frozen, module = "fastmlp._core", name = "PackedMLP")]
pub struct PyPackedMlp {
    model: AnyModel,
}

fn pack_model<E: DispatchElement + numpy::Element>(
    weights: &[Bound<'_, PyAny>],
    biases: &[Bound<'_, PyAny>],
    activations: &[Activation],
    input_scale: f64,
) -> Result<PackedModel<E>, FastmlpError> {
    let level = active_level();
    let max_tile_cols = level_tile_cols::<E>(level);
    let mut layers = Vec::with_capacity(weights.len());
    let mut previous_outputs: Option<usize> = None;
    for (index, ((w, b), &activation)) in weights.iter().zip(biases).zip(activations).enumerate() {
        let w = w.cast::<PyArray2<E>>().map_err(|_| {
            FastmlpError::DType(format!(
                "layer {index}: W must be a 2-D {} array, got {}",
                <E as kernels::simd::Element>::NAME,
                dtype_name(w)
            ))
        })?;
        let b = b.cast::<PyArray1<E>>().map_err(|_| {
            FastmlpError::DType(format!(
                "layer {index}: b must be a 1-D {} array, got {}",
                <E as kernels::simd::Element>::NAME,
                dtype_name(b)
            ))
        })?;
        // Copied while registered as read, so no other fastmlp call writes them meanwhile.
        let being_written = |what: &'static str| {
            move |refusal| {
                FastmlpError::refused(
                    refusal,
                    &format!("layer {index}: {what}"),
                    "is being written",
                )
            }
        };
        // SAFETY: the slice is copied before its borrow is dropped at the end of the statement.
        let w_values = unsafe { borrows::read(w) }
            .map(|(_borrow, values)| values.to_vec())
            .map_err(being_written("W"))?;
        let w = ndarray::Array2::from_shape_vec(w.dims(), w_values)
            .map_err(|_| FastmlpError::Internal("W's shape does not match its length".into()))?;
        // SAFETY: as for W.
        let b = unsafe { borrows::read(b) }
            .map(|(_borrow, values)| values.to_vec())
            .map_err(being_written("b"))?;
        let w = w.view();
        let (inputs, outputs) = w.dim();
        if inputs == 0 || outputs == 0 {
            return Err(FastmlpError::Shape(format!(
                "layer {index}: W has an empty dimension, shape ({inputs}, {outputs})"
            )));
        }
        if b.len() != outputs {
            return Err(FastmlpError::Shape(format!(
                "layer {index}: W has shape ({inputs}, {outputs}) but b has shape ({},)",
                b.len()
            )));
        }
        if let Some(previous) = previous_outputs {
            if previous != inputs {
                return Err(FastmlpError::Shape(format!(
                    "layer {index}: W has {inputs} inputs but the previous layer has {previous} outputs"
                )));
            }
        }
        previous_outputs = Some(outputs);
        layers.push(PackedLayer::new(w, &b, activation, max_tile_cols));
    }
    if layers.is_empty() {
        return Err(FastmlpError::Value(
            "a model needs at least one layer".into(),
        ));
    }
    // A subnormal scale would be read in every multiply (the Python layer refuses one).
    let input_scale = E::from_f64_flushed(input_scale);
    Ok(PackedModel::new(layers, input_scale, level))
}

/// The widest column tile of `level` for element type `E`.
fn level_tile_cols<E: DispatchElement>(level: Level) -> usize {
    struct TileCols;
    impl<E> kernels::dispatch::SimdTask<E> for TileCols {
        type Output = usize;
        #[inline(always)]
        fn run<S: kernels::simd::Simd<Elem = E>>(self, _simd: S) -> usize {
            S::MAX_TILE_COLS
        }
    }
    E::dispatch(level, TileCols)
}

/// Where a forward call writes.
enum Target<'a, 'py> {
    /// The caller's float array, `(rows, outputs)` elements.
    Values(&'a Bound<'py, PyAny>),
    /// The caller's int64 array, one label per row.
    Labels(&'a Bound<'py, PyAny>),
    /// A new float array shaped like `x` with `outputs` in place of the features.
    New,
    /// A new int64 array of one label per row (one value for a 1-D `x`).
    NewLabels,
}

/// What a forward call gives back.
enum Outcome<'py> {
    /// The outputs are in the caller's array.
    Written,
    /// The outputs (or labels) in a new array.
    New(Bound<'py, PyAny>),
    /// Nothing was run: the new array would have more than `MAX_CORE_ALLOCATED_OUTPUTS`
    /// elements. `PyArray::new` panics if NumPy cannot allocate, so large results are left to
    /// the Python layer, whose `np.empty` raises MemoryError; for them the extra microsecond
    /// does not matter.
    TooLarge,
}

fn forward_typed<'py, E: DispatchElement + numpy::Element>(
    py: Python<'py>,
    model: &PackedModel<E>,
    x: &Bound<'py, PyAny>,
    target: Target<'_, 'py>,
    threads: usize,
    log: bool,
) -> Result<Outcome<'py>, FastmlpError> {
    let input = InputRows::new(x)?;
    let features = model.features();
    let outputs = model.outputs();
    let (rows, x_features) = input.rows_and_features();
    if x_features != features {
        return Err(FastmlpError::Shape(format!(
            "X has {x_features} features per row but the model expects {features}"
        )));
    }
    let too_large = |values: Option<usize>| values.is_none_or(|n| n > MAX_CORE_ALLOCATED_OUTPUTS);
    // Only a caller's own `out=` could alias X; a new array cannot.
    let output_is_new = matches!(target, Target::New | Target::NewLabels);
    let _out_borrow;
    let mut fresh_values: Option<Bound<'py, PyArrayDyn<E>>> = None;
    let mut fresh_labels: Option<Bound<'py, PyArray1<i64>>> = None;
    let not_contiguous = |_| FastmlpError::Internal("a new array is not contiguous".into());
    let sink = match target {
        Target::Labels(out) => {
            let labels = out.cast::<PyArray1<i64>>().map_err(|_| {
                FastmlpError::DType(format!("out must be int64, got {}", dtype_name(out)))
            })?;
            // SAFETY: the borrow is kept in `_out_borrow` until this function returns.
            let (borrow, slice) = unsafe { borrows::write(labels) }
                .map_err(|refusal| FastmlpError::refused(refusal, "out", WRITE_REFUSED))?;
            _out_borrow = Some(borrow);
            if slice.len() != rows {
                return Err(FastmlpError::Shape(format!(
                    "out has {} elements, expected {rows}",
                    slice.len()
                )));
            }
            Sink::Labels(slice)
        }
        Target::Values(out) => {
            // SAFETY: the borrow is kept in `_out_borrow` until this function returns.
            let (borrow, slice) = unsafe { writable_floats::<E>(out, "out")? };
            _out_borrow = Some(borrow);
            if Some(slice.len()) != rows.checked_mul(outputs) {
                return Err(FastmlpError::Shape(format!(
                    "out has {} elements, expected {rows} x {outputs}",
                    slice.len()
                )));
            }
            Sink::Values(slice)
        }
        Target::New => {
            if too_large(rows.checked_mul(outputs)) {
                return Ok(Outcome::TooLarge);
            }
            // A borrowed slice: IxDyn keeps up to four dimensions inline, a Vec would allocate.
            let dims = if input.shape().len() == 1 {
                IxDyn(&[outputs])
            } else {
                IxDyn(&[rows, outputs])
            };
            // SAFETY: the array is uninitialised until the forward pass below writes every
            // element; it is returned only after that succeeds (on error it is dropped unseen).
            let array = fresh_values.insert(unsafe { PyArrayDyn::<E>::new(py, dims, false) });
            // SAFETY: the array was just created and no other reference to it exists, so this
            // is the only view of its (C-contiguous) memory while the call runs.
            Sink::Values(unsafe { array.as_slice_mut() }.map_err(not_contiguous)?)
        }
        Target::NewLabels => {
            if too_large(Some(rows)) {
                return Ok(Outcome::TooLarge);
            }
            // SAFETY: as for `Target::New`: every label is written before the array is seen.
            let array = fresh_labels.insert(unsafe { PyArray1::<i64>::new(py, [rows], false) });
            // SAFETY: as for `Target::New`: the only view of a new array's memory.
            Sink::Labels(unsafe { array.as_slice_mut() }.map_err(not_contiguous)?)
        }
    };
    let heavy = rows.saturating_mul(model.macs_per_row()) >= DETACH_MIN_MACS;
    // Registering a read borrow costs a lock and a table scan, a few percent of a one-row
    // call, so a short call into a new array skips it when nothing could be writing to X
    // meanwhile.
    let register_read = !(output_is_new && !heavy && detached::no_other_call_running(py));
    let pass = Pass {
        py,
        model,
        rows,
        threads,
        log,
        heavy,
        register_read,
    };
    match &input {
        InputRows::U8(a) => pass.run(a, sink)?,
        InputRows::F32(a) => pass.run(a, sink)?,
        InputRows::F64(a) => pass.run(a, sink)?,
    }
    let fresh = fresh_values
        .map(Bound::into_any)
        .or_else(|| fresh_labels.map(Bound::into_any));
    Ok(fresh.map_or(Outcome::Written, Outcome::New))
}

/// One forward pass, decided and ready to run on X of whichever input type it has.
struct Pass<'m, 'py, E: DispatchElement> {
    py: Python<'py>,
    model: &'m PackedModel<E>,
    rows: usize,
    threads: usize,
    log: bool,
    /// Long enough to release the GIL and check for signals between slices.
    heavy: bool,
    /// Whether X is registered as read; without registration the caller has shown that
    /// nothing can write to X while this call holds the GIL (`forward_typed`).
    register_read: bool,
}

impl<E: DispatchElement> Pass<'_, '_, E> {
    fn run<X: kernels::simd::InputElement + numpy::Element>(
        &self,
        array: &Bound<'_, PyArrayDyn<X>>,
        sink: Sink<'_, E>,
    ) -> Result<(), FastmlpError> {
        let _x_borrow;
        let x = if self.register_read {
            // SAFETY: the borrow is kept in `_x_borrow` until the pass has returned.
            let (borrow, x) = unsafe { borrows::read(array) }.map_err(|refusal| {
                FastmlpError::refused(refusal, "X", "is being written elsewhere or overlaps out")
            })?;
            _x_borrow = borrow;
            x
        } else {
            if !array.is_c_contiguous() {
                return Err(FastmlpError::Value("X must be C-contiguous".into()));
            }
            // SAFETY: X is C-contiguous (checked) and only read, and nothing writes to it until
            // the pass ends: the GIL is held throughout (a pass that is not heavy never
            // releases it) and serialises Python threads, no fastmlp call runs with the GIL
            // released that could be writing to it (`no_other_call_running`), and the output is
            // a new array, not a view of X. Native code of other libraries writing without the
            // GIL could, as it could under any NumPy extension (the README says so).
            unsafe { array.as_slice() }
                .map_err(|_| FastmlpError::Value("X must be C-contiguous".into()))?
        };
        let (model, rows, threads, log) = (self.model, self.rows, self.threads, self.log);
        if self.heavy {
            forward_interruptible(self.py, model, x, rows, sink, threads, log)
        } else {
            catch_panic(|| model.forward(x, rows, sink, threads, log))
        }
    }
}

/// Multiply-adds per slice of a long forward pass: between slices the calling thread takes the
/// GIL back for a moment to run Python's signal handlers, so Ctrl-C stops a call within a
/// slice's time (about 10 ms at AVX-512 on two cores, 0.2-0.6 s at the portable level) instead
/// of when the whole call returns. A slice is large enough that the pause costs nothing
/// measurable.
const MACS_PER_INTERRUPTIBLE_SLICE: usize = 1 << 29;

/// `model.forward` with the GIL released, in slices of rows with a signal check between them.
/// A handler that raises (KeyboardInterrupt) cancels the slices not yet run and its exception
/// is returned; `sink` is then partly written, which only a caller's `out=` can show.
fn forward_interruptible<E: DispatchElement, X: kernels::simd::InputElement>(
    py: Python<'_>,
    model: &PackedModel<E>,
    x: &[X],
    rows: usize,
    sink: Sink<'_, E>,
    threads: usize,
    log: bool,
) -> Result<(), FastmlpError> {
    let features = model.features();
    let outputs = model.outputs();
    let slice_rows = (MACS_PER_INTERRUPTIBLE_SLICE / model.macs_per_row().max(1)).max(1);
    let mut sink = sink;
    let mut start = 0;
    while start < rows {
        let end = rows.min(start + slice_rows);
        let (slice_sink, rest) = sink.split_rows(end - start, outputs);
        let x_slice = &x[start * features..end * features];
        run_released(py, true, || {
            model.forward(x_slice, end - start, slice_sink, threads, log)
        })?;
        sink = rest;
        start = end;
        if start < rows {
            py.check_signals().map_err(FastmlpError::Interrupted)?;
        }
    }
    Ok(())
}

/// Whether the Python layer's fast path may hand `x` to the core as it is: exactly a NumPy
/// ndarray (a subclass may mean something else by its data, as a masked array does) of at most
/// `max_bytes` bytes (larger ones may be memory-mapped files that the Python layer runs in
/// chunks).
fn is_direct(x: &Bound<'_, PyAny>, max_bytes: usize) -> bool {
    x.cast_exact::<PyUntypedArray>()
        .is_ok_and(|a| a.len().saturating_mul(a.dtype().itemsize()) <= max_bytes)
}

impl PyPackedMlp {
    /// `forward_typed` at the model's own dtype: every forward call goes through here.
    fn forward_any<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        target: Target<'_, 'py>,
        threads: Option<usize>,
        log: bool,
    ) -> Result<Outcome<'py>, FastmlpError> {
        let threads = threads::effective_threads(threads);
        match &self.model {
            AnyModel::F32(m) => forward_typed(py, m, x, target, threads, log),
            AnyModel::F64(m) => forward_typed(py, m, x, target, threads, log),
        }
    }

    /// `forward_any` into a new array for the Python layer's fast path: `None`, without reading
    /// `x`, unless `x` is exactly a NumPy ndarray of at most `max_bytes` bytes and the result
    /// is small enough for the core to allocate (`Outcome::TooLarge`); the Python layer takes
    /// those through its general path.
    fn forward_direct<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        target: Target<'_, 'py>,
        threads: Option<usize>,
        max_bytes: usize,
        log: bool,
    ) -> Result<Option<Bound<'py, PyAny>>, FastmlpError> {
        if !is_direct(x, max_bytes) {
            return Ok(None);
        }
        match self.forward_any(py, x, target, threads, log)? {
            Outcome::New(array) => Ok(Some(array)),
            Outcome::TooLarge => Ok(None),
            Outcome::Written => Err(FastmlpError::Internal("no new array was made".into())),
        }
    }
}

#[pymethods]
impl PyPackedMlp {
    /// Packs `weights[i]` (`(in, out)`), `biases[i]` and `activations[i]` for this CPU. All arrays
    /// must share one dtype, float32 or float64, which becomes the model's compute dtype.
    #[new]
    #[pyo3(signature = (weights, biases, activations, input_scale=1.0))]
    fn new(
        weights: Vec<Bound<'_, PyAny>>,
        biases: Vec<Bound<'_, PyAny>>,
        activations: Vec<String>,
        input_scale: f64,
    ) -> PyResult<Self> {
        if weights.len() != biases.len() || weights.len() != activations.len() {
            return Err(FastmlpError::Value(format!(
                "got {} weight matrices, {} biases and {} activations; expected one of each per layer",
                weights.len(),
                biases.len(),
                activations.len()
            ))
            .into());
        }
        let activations = activations
            .iter()
            .map(|name| match parse_activation(name)? {
                Activation::LogSoftmax => Err(FastmlpError::Value(format!(
                    "{name:?} is not a layer activation; expected one of {}",
                    Activation::NAMES.join(", ")
                ))),
                activation => Ok(activation),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let first = weights
            .first()
            .ok_or_else(|| FastmlpError::Value("a model needs at least one layer".into()))?;
        let model = if first.cast::<PyArray2<f32>>().is_ok() {
            AnyModel::F32(catch_panic(|| {
                pack_model::<f32>(&weights, &biases, &activations, input_scale)
            })??)
        } else {
            AnyModel::F64(catch_panic(|| {
                pack_model::<f64>(&weights, &biases, &activations, input_scale)
            })??)
        };
        Ok(PyPackedMlp { model })
    }

    /// Writes the model's outputs for the rows of `x` into `out` (`(rows, outputs)`, the model's
    /// dtype); with `log`, a final softmax is computed as log-softmax.
    #[pyo3(signature = (x, out, threads=None, log=false))]
    fn forward(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        out: &Bound<'_, PyAny>,
        threads: Option<usize>,
        log: bool,
    ) -> PyResult<()> {
        self.forward_any(py, x, Target::Values(out), threads, log)?;
        Ok(())
    }

    /// Runs the model over `x` (1-D: one row; 2-D: rows) into a new array of the model's dtype,
    /// `(outputs,)` or `(rows, outputs)`: the Python layer's low-latency path. `None` for what
    /// that path passes over (see `forward_direct`).
    #[pyo3(signature = (x, threads, max_bytes, log=false))]
    fn run_direct<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        threads: Option<usize>,
        max_bytes: usize,
        log: bool,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        Ok(self.forward_direct(py, x, Target::New, threads, max_bytes, log)?)
    }

    /// Each row's argmax output as a new int64 array, or as an int64 scalar for a 1-D `x`; `None`
    /// under the same conditions as `run_direct`.
    #[pyo3(signature = (x, threads, max_bytes))]
    fn predict_direct<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        threads: Option<usize>,
        max_bytes: usize,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Some(labels) =
            self.forward_direct(py, x, Target::NewLabels, threads, max_bytes, false)?
        else {
            return Ok(None);
        };
        // The label of a single 1-D row is NumPy's scalar, as `labels[0]` gives in Python.
        let one_row = x.cast::<PyUntypedArray>().is_ok_and(|a| a.ndim() == 1);
        Ok(Some(if one_row { labels.get_item(0)? } else { labels }))
    }

    /// Writes each row's argmax output into `out` (int64, `(rows,)`), never materialising
    /// the full output matrix.
    #[pyo3(signature = (x, out, threads=None))]
    fn predict(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        out: &Bound<'_, PyAny>,
        threads: Option<usize>,
    ) -> PyResult<()> {
        self.forward_any(py, x, Target::Labels(out), threads, false)?;
        Ok(())
    }

    /// The instruction-set level the weights were packed for and every call runs at.
    #[getter]
    fn level(&self) -> &'static str {
        match &self.model {
            AnyModel::F32(m) => m.level.name(),
            AnyModel::F64(m) => m.level.name(),
        }
    }

    /// How many tasks a call over `rows` rows would be split into with `threads` threads.
    #[pyo3(signature = (rows, threads=None))]
    fn planned_tasks(&self, rows: usize, threads: Option<usize>) -> usize {
        let threads = threads::effective_threads(threads);
        match &self.model {
            AnyModel::F32(m) => m.plan_tasks(rows, threads),
            AnyModel::F64(m) => m.plan_tasks(rows, threads),
        }
    }
}
