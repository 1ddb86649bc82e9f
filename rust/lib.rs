//! fastmlp's compiled core (`fastmlp._core`): thin PyO3 wrappers over the kernels in `kernels/`.
//!
//! The Python layer validates and converts arguments; this layer re-checks what memory safety
//! depends on (dtypes, shapes, contiguity), borrows the arrays without copying, and runs the
//! kernels with the GIL released when the work is large enough to be worth it.

pub mod borrows;
pub mod detached;
pub mod error;
pub mod fork;
pub mod fpenv;
pub mod kernels;
pub mod threads;

use std::ffi::c_int;

use numpy::npyffi::NPY_TYPES;
use numpy::IxDyn;
use numpy::{
    PyArray1, PyArray2, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::prelude::*;

use error::{catch_panic, FastmlpError};
use kernels::dispatch::{active_level, force_level, DispatchElement, Level};
use kernels::elementwise::{map_elementwise, softmax_axis, Source};
use kernels::forward::{PackedModel, Sink};
use kernels::math::Activation;
use kernels::pack::PackedLayer;

/// The largest result (in elements) `PackedMLP.run` allocates itself.
const MAX_CORE_ALLOCATED_OUTPUTS: usize = 1 << 20;

/// Below this many elements an element-wise call keeps the GIL: releasing and re-acquiring it
/// costs more than the computation.
const DETACH_THRESHOLD: usize = 1 << 15;
// An element-wise call that keeps the GIL must never wait for the worker pool (a split needs
// two tasks' worth of elements).
const _: () = assert!(DETACH_THRESHOLD < 2 * kernels::elementwise::SOFTMAX_ELEMENTS_PER_TASK);
const _: () = assert!(DETACH_THRESHOLD < 2 * kernels::elementwise::ELEMENTS_PER_TASK);

/// Below this many multiply-adds a forward pass keeps the GIL. Releasing it costs two mutex
/// operations, and taking it back can mean waiting for another thread's switch interval; a
/// one-row pass of the tutorial's network (45,200) is over in about 1.1 us at AVX-512. Low
/// enough that the portable level, in float64, still holds the GIL only for tens of microseconds.
const DETACH_MIN_MACS: usize = 1 << 16;
// A pass that keeps the GIL must never wait for the worker pool.
const _: () = assert!(DETACH_MIN_MACS <= kernels::forward::MIN_MACS_PER_TASK);

fn dtype_name(array: &Bound<'_, PyAny>) -> String {
    array
        .getattr("dtype")
        .and_then(|d| d.str().map(|s| s.to_string()))
        .unwrap_or_else(|_| "not an array".to_string())
}

/// Runs `work` with the GIL released when `heavy`, catching any panic.
fn run_released<T: Send>(
    py: Python<'_>,
    heavy: bool,
    work: impl FnOnce() -> T + Send,
) -> Result<T, FastmlpError> {
    if heavy {
        detached::run_detached(py, || catch_panic(work))
    } else {
        catch_panic(work)
    }
}

/// `obj` as a C-contiguous float array of element type `E`, or a clear error naming `what`.
fn contiguous_floats<'a, 'py, E: numpy::Element + kernels::simd::Element>(
    obj: &'a Bound<'py, PyAny>,
    what: &str,
) -> Result<&'a Bound<'py, PyArrayDyn<E>>, FastmlpError> {
    let array = obj.cast::<PyArrayDyn<E>>().map_err(|_| {
        FastmlpError::DType(format!(
            "{what} must be a {} array, got {}",
            <E as kernels::simd::Element>::NAME,
            dtype_name(obj)
        ))
    })?;
    if !array.is_c_contiguous() {
        return Err(FastmlpError::Value(format!("{what} must be C-contiguous")));
    }
    Ok(array)
}

/// A writable, C-contiguous float array of element type `E`, borrowed for writing.
///
/// # Safety
/// The slice must not be used after the returned `Borrow` is dropped (`borrows::write`).
// The registry, not the borrow checker, makes the slice the only one (as rust-numpy's own
// `as_slice_mut(&self)`), which is why this is an `unsafe fn`.
#[allow(clippy::mut_from_ref)]
unsafe fn writable_floats<'a, E: numpy::Element + kernels::simd::Element>(
    out: &'a Bound<'_, PyAny>,
    what: &str,
) -> Result<(borrows::Borrow, &'a mut [E]), FastmlpError> {
    // SAFETY: the caller keeps the borrow for as long as it uses the slice.
    unsafe { borrows::write(contiguous_floats::<E>(out, what)?) }.map_err(|refusal| match refusal {
        borrows::Refusal::NotContiguous => {
            FastmlpError::Value(format!("{what} must be C-contiguous"))
        }
        borrows::Refusal::ReadOnly | borrows::Refusal::InUse => FastmlpError::Value(format!(
            "{what} must be writeable and must not overlap another argument"
        )),
    })
}

/// A C-contiguous float array of element type `E`, borrowed for reading.
///
/// # Safety
/// The slice must not be used after the returned `Borrow` is dropped (`borrows::read`).
unsafe fn readable_floats<'a, E: numpy::Element + kernels::simd::Element>(
    x: &'a Bound<'_, PyAny>,
    what: &str,
) -> Result<(borrows::Borrow, &'a [E]), FastmlpError> {
    // SAFETY: the caller keeps the borrow for as long as it uses the slice.
    unsafe { borrows::read(contiguous_floats::<E>(x, what)?) }.map_err(|refusal| match refusal {
        borrows::Refusal::NotContiguous => {
            FastmlpError::Value(format!("{what} must be C-contiguous"))
        }
        borrows::Refusal::ReadOnly | borrows::Refusal::InUse => {
            FastmlpError::Value(format!("{what} is being written elsewhere"))
        }
    })
}

fn parse_activation(name: &str) -> Result<Activation, FastmlpError> {
    Activation::parse(name).ok_or_else(|| {
        FastmlpError::Value(format!(
            "unknown activation {name:?}; expected one of {}",
            Activation::NAMES.join(", ")
        ))
    })
}

fn elementwise_typed<E: DispatchElement + numpy::Element>(
    py: Python<'_>,
    activation: Activation,
    x: Option<&Bound<'_, PyAny>>,
    out: &Bound<'_, PyAny>,
    threads: usize,
) -> Result<(), FastmlpError> {
    // SAFETY: both borrows are held in this frame until the kernel has returned.
    let (_out_borrow, dst) = unsafe { writable_floats::<E>(out, "out")? };
    // SAFETY: as above.
    let input = x
        .map(|x| unsafe { readable_floats::<E>(x, "x") })
        .transpose()?;
    let src = match &input {
        Some((_, src)) => {
            if src.len() != dst.len() {
                return Err(FastmlpError::Shape(format!(
                    "out has {} elements but x has {}",
                    dst.len(),
                    src.len()
                )));
            }
            Source::Slice(src)
        }
        None => Source::InPlace,
    };
    let level = active_level();
    let heavy = dst.len() >= DETACH_THRESHOLD;
    run_released(py, heavy, || {
        map_elementwise(level, activation, src, dst, threads)
    })
}

/// Applies an element-wise activation: `out = act(x)`, or in place on `out` when `x` is None.
#[pyfunction]
#[pyo3(signature = (activation, x, out, threads=None))]
fn elementwise(
    py: Python<'_>,
    activation: &str,
    x: Option<&Bound<'_, PyAny>>,
    out: &Bound<'_, PyAny>,
    threads: Option<usize>,
) -> PyResult<()> {
    let activation = parse_activation(activation)?;
    if activation.is_row_wise() {
        return Err(FastmlpError::Value(format!(
            "{} is not element-wise: use softmax()",
            activation.name()
        ))
        .into());
    }
    let threads = threads::effective_threads(threads);
    if out.cast::<PyArrayDyn<f32>>().is_ok() {
        Ok(elementwise_typed::<f32>(py, activation, x, out, threads)?)
    } else {
        Ok(elementwise_typed::<f64>(py, activation, x, out, threads)?)
    }
}

#[allow(clippy::too_many_arguments)]
fn softmax_typed<E: DispatchElement + numpy::Element>(
    py: Python<'_>,
    x: Option<&Bound<'_, PyAny>>,
    out: &Bound<'_, PyAny>,
    outer: usize,
    len: usize,
    inner: usize,
    log: bool,
    threads: usize,
) -> Result<(), FastmlpError> {
    // SAFETY: both borrows are held in this frame until the kernel has returned.
    let (_out_borrow, dst) = unsafe { writable_floats::<E>(out, "out")? };
    // SAFETY: as above.
    let input = x
        .map(|x| unsafe { readable_floats::<E>(x, "x") })
        .transpose()?;
    let expected = outer
        .checked_mul(len)
        .and_then(|n| n.checked_mul(inner))
        .ok_or_else(|| FastmlpError::Shape("softmax shape overflows".into()))?;
    if dst.len() != expected {
        return Err(FastmlpError::Shape(format!(
            "out has {} elements, expected {outer} x {len} x {inner}",
            dst.len()
        )));
    }
    let src = match &input {
        Some((_, src)) => {
            if src.len() != expected {
                return Err(FastmlpError::Shape(format!(
                    "x has {} elements, expected {outer} x {len} x {inner}",
                    src.len()
                )));
            }
            Source::Slice(src)
        }
        None => Source::InPlace,
    };
    let level = active_level();
    let heavy = expected >= DETACH_THRESHOLD;
    run_released(py, heavy, || {
        softmax_axis(level, src, dst, outer, len, inner, log, threads)
    })
}

/// Softmax (or log-softmax) along the middle axis of a C-contiguous array of `outer * len *
/// inner` elements: `out = softmax(x)`, or in place on `out` when `x` is None.
#[pyfunction]
#[pyo3(signature = (x, out, outer, len, inner, log=false, threads=None))]
#[allow(clippy::too_many_arguments)]
fn softmax(
    py: Python<'_>,
    x: Option<&Bound<'_, PyAny>>,
    out: &Bound<'_, PyAny>,
    outer: usize,
    len: usize,
    inner: usize,
    log: bool,
    threads: Option<usize>,
) -> PyResult<()> {
    let threads = threads::effective_threads(threads);
    if out.cast::<PyArrayDyn<f32>>().is_ok() {
        Ok(softmax_typed::<f32>(
            py, x, out, outer, len, inner, log, threads,
        )?)
    } else {
        Ok(softmax_typed::<f64>(
            py, x, out, outer, len, inner, log, threads,
        )?)
    }
}

enum AnyModel {
    F32(PackedModel<f32>),
    F64(PackedModel<f64>),
}

/// A model whose weights were packed once, at construction, for this CPU's instruction set.
#[pyclass(frozen, module = "fastmlp._core", name = "PackedMLP")]
struct PyPackedMlp {
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
            move |refusal| match refusal {
                borrows::Refusal::NotContiguous => {
                    FastmlpError::Value(format!("layer {index}: {what} must be C-contiguous"))
                }
                borrows::Refusal::ReadOnly | borrows::Refusal::InUse => {
                    FastmlpError::Value(format!("layer {index}: {what} is being written"))
                }
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

/// The typed input rows of a forward call: uint8, float32 or float64, C-contiguous, 1-D (one
/// row) or 2-D; not yet borrowed for reading.
enum InputRows<'a, 'py> {
    U8(&'a Bound<'py, PyArrayDyn<u8>>),
    F32(&'a Bound<'py, PyArrayDyn<f32>>),
    F64(&'a Bound<'py, PyArrayDyn<f64>>),
}

impl<'a, 'py> InputRows<'a, 'py> {
    fn new(x: &'a Bound<'py, PyAny>) -> Result<Self, FastmlpError> {
        // Only the cast the type number points to is tried: a cast that fails asks NumPy for a
        // full dtype-equivalence check (a cast-table lookup), a measurable part of a one-row
        // call.
        let type_number = x.cast::<PyUntypedArray>().ok().map(|a| a.dtype().num());
        let is = |t: NPY_TYPES| type_number == Some(t as c_int);
        let input = if is(NPY_TYPES::NPY_UBYTE) {
            x.cast::<PyArrayDyn<u8>>().ok().map(InputRows::U8)
        } else if is(NPY_TYPES::NPY_FLOAT) {
            x.cast::<PyArrayDyn<f32>>().ok().map(InputRows::F32)
        } else if is(NPY_TYPES::NPY_DOUBLE) {
            x.cast::<PyArrayDyn<f64>>().ok().map(InputRows::F64)
        } else {
            None
        }
        .ok_or_else(|| {
            FastmlpError::DType(format!(
                "X must be a uint8, float32 or float64 array, got {}",
                dtype_name(x)
            ))
        })?;
        let (ndim, contiguous) = match &input {
            InputRows::U8(a) => (a.ndim(), a.is_c_contiguous()),
            InputRows::F32(a) => (a.ndim(), a.is_c_contiguous()),
            InputRows::F64(a) => (a.ndim(), a.is_c_contiguous()),
        };
        if !(1..=2).contains(&ndim) {
            return Err(FastmlpError::Shape(format!(
                "X must be 1-D (one row) or 2-D (rows), got {ndim} dimensions"
            )));
        }
        if !contiguous {
            return Err(FastmlpError::Value("X must be C-contiguous".into()));
        }
        Ok(input)
    }

    fn shape(&self) -> &[usize] {
        match self {
            InputRows::U8(a) => a.shape(),
            InputRows::F32(a) => a.shape(),
            InputRows::F64(a) => a.shape(),
        }
    }

    /// `(rows, features)`: a 1-D array is one row.
    fn rows_and_features(&self) -> (usize, usize) {
        match *self.shape() {
            [features] => (1, features),
            [rows, features] => (rows, features),
            _ => (0, 0),
        }
    }
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

fn forward_typed<'py, E: DispatchElement + numpy::Element>(
    py: Python<'py>,
    model: &PackedModel<E>,
    x: &Bound<'py, PyAny>,
    target: Target<'_, 'py>,
    threads: usize,
    log: bool,
) -> Result<Option<Bound<'py, PyAny>>, FastmlpError> {
    let input = InputRows::new(x)?;
    let features = model.features();
    let outputs = model.outputs();
    let (rows, x_features) = input.rows_and_features();
    if x_features != features {
        return Err(FastmlpError::Shape(format!(
            "X has {x_features} features per row but the model expects {features}"
        )));
    }
    let _out_borrow;
    let mut fresh: Option<Bound<'py, PyArrayDyn<E>>> = None;
    let mut fresh_labels: Option<Bound<'py, PyArray1<i64>>> = None;
    // Only a caller's own `out=` could alias X; a new array cannot.
    let output_is_new = matches!(target, Target::New | Target::NewLabels);
    // Only small results are allocated here: PyArray::new panics if NumPy cannot allocate, so
    // large ones go back to the Python layer, whose np.empty raises MemoryError; for them the
    // extra microsecond does not matter.
    let refuse_large = |values: Option<usize>| {
        if values.is_none_or(|n| n > MAX_CORE_ALLOCATED_OUTPUTS) {
            Err(FastmlpError::Value(
                "the result is large: the Python layer allocates it".into(),
            ))
        } else {
            Ok(())
        }
    };
    let sink = match target {
        Target::Labels(out) => {
            let labels = out.cast::<PyArray1<i64>>().map_err(|_| {
                FastmlpError::DType(format!("out must be int64, got {}", dtype_name(out)))
            })?;
            // SAFETY: the borrow is kept in `_out_borrow` until this function returns.
            let (borrow, slice) =
                unsafe { borrows::write(labels) }.map_err(|refusal| match refusal {
                    borrows::Refusal::NotContiguous => {
                        FastmlpError::Value("out must be C-contiguous".into())
                    }
                    borrows::Refusal::ReadOnly | borrows::Refusal::InUse => FastmlpError::Value(
                        "out must be writeable and must not overlap another argument".into(),
                    ),
                })?;
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
            refuse_large(rows.checked_mul(outputs))?;
            // A borrowed slice: IxDyn keeps up to four dimensions inline, a Vec would allocate.
            let dims = if input.shape().len() == 1 {
                IxDyn(&[outputs])
            } else {
                IxDyn(&[rows, outputs])
            };
            // SAFETY: the array is uninitialised until the forward pass below writes every
            // element; it is returned only after that succeeds (on error it is dropped unseen).
            let array = fresh.insert(unsafe { PyArrayDyn::<E>::new(py, dims, false) });
            // SAFETY: the array was just created and no other reference to it exists, so this
            // is the only view of its (C-contiguous) memory while the call runs.
            let slice = unsafe { array.as_slice_mut() }
                .map_err(|_| FastmlpError::Internal("a new array is not contiguous".into()))?;
            Sink::Values(slice)
        }
        Target::NewLabels => {
            refuse_large(Some(rows))?;
            // SAFETY: as for `Target::New`: every label is written before the array is seen.
            let array = fresh_labels.insert(unsafe { PyArray1::<i64>::new(py, [rows], false) });
            // SAFETY: as for `Target::New`: the only view of a new array's memory.
            let slice = unsafe { array.as_slice_mut() }
                .map_err(|_| FastmlpError::Internal("a new array is not contiguous".into()))?;
            Sink::Labels(slice)
        }
    };
    let heavy = rows.saturating_mul(model.macs_per_row()) >= DETACH_MIN_MACS;
    // Registering a read borrow costs a lock and a table scan, a few percent of a one-row
    // call, so a short call into a new array skips it when nothing could be writing to X
    // meanwhile.
    let unregistered_read = output_is_new && !heavy && detached::no_other_call_running(py);
    macro_rules! run_on {
        ($array:expr) => {{
            let _x_borrow;
            let x = if unregistered_read {
                if !$array.is_c_contiguous() {
                    return Err(FastmlpError::Value("X must be C-contiguous".into()));
                }
                // SAFETY: X is C-contiguous (checked) and only read, and nothing writes to it
                // until the pass ends: the GIL is held throughout (a pass that is not heavy
                // never releases it) and serialises Python threads, no fastmlp call runs with
                // the GIL released that could be writing to it (`no_other_call_running`), and
                // the output is a new array, not a view of X. Native code of other libraries
                // writing without the GIL could, as it could under any NumPy extension (the
                // README says so).
                unsafe { $array.as_slice() }
                    .map_err(|_| FastmlpError::Value("X must be C-contiguous".into()))?
            } else {
                let (borrow, x) =
                    // SAFETY: the borrow is kept in `_x_borrow` until the pass has returned.
                    unsafe { borrows::read($array) }.map_err(|refusal| match refusal {
                        borrows::Refusal::NotContiguous => {
                            FastmlpError::Value("X must be C-contiguous".into())
                        }
                        borrows::Refusal::ReadOnly | borrows::Refusal::InUse => {
                            FastmlpError::Value(
                                "X is being written elsewhere or overlaps out".into(),
                            )
                        }
                    })?;
                _x_borrow = borrow;
                x
            };
            if heavy {
                forward_interruptible(py, model, x, rows, sink, threads, log)?
            } else {
                catch_panic(|| model.forward(x, rows, sink, threads, log))?
            }
        }};
    }
    match &input {
        InputRows::U8(a) => run_on!(a),
        InputRows::F32(a) => run_on!(a),
        InputRows::F64(a) => run_on!(a),
    }
    Ok(fresh
        .map(Bound::into_any)
        .or_else(|| fresh_labels.map(Bound::into_any)))
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
    ) -> Result<Option<Bound<'py, PyAny>>, FastmlpError> {
        let threads = threads::effective_threads(threads);
        match &self.model {
            AnyModel::F32(m) => forward_typed(py, m, x, target, threads, log),
            AnyModel::F64(m) => forward_typed(py, m, x, target, threads, log),
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
    /// `(outputs,)` or `(rows, outputs)`: the low-latency path for callers that hold no buffer.
    #[pyo3(signature = (x, threads=None, log=false))]
    fn run<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        threads: Option<usize>,
        log: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.forward_any(py, x, Target::New, threads, log)?
            .ok_or_else(|| FastmlpError::Internal("no output array was made".into()).into())
    }

    /// `run` for the Python layer's fast path: `None`, without reading `x`, unless `x` is exactly
    /// a NumPy ndarray of at most `max_bytes` bytes, which the Python layer then takes through
    /// its general path.
    #[pyo3(signature = (x, threads, max_bytes, log=false))]
    fn run_direct<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        threads: Option<usize>,
        max_bytes: usize,
        log: bool,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        if !is_direct(x, max_bytes) {
            return Ok(None);
        }
        self.run(py, x, threads, log).map(Some)
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
        if !is_direct(x, max_bytes) {
            return Ok(None);
        }
        let labels = self
            .forward_any(py, x, Target::NewLabels, threads, false)?
            .ok_or_else(|| FastmlpError::Internal("no label array was made".into()))?;
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

/// Sets the default number of threads (0: `FASTMLP_NUM_THREADS`, else the available cores).
#[pyfunction]
fn set_num_threads(threads: usize) {
    threads::set_default_threads(threads);
}

/// The number of threads a call uses by default (capped at the available cores).
#[pyfunction]
fn get_num_threads() -> usize {
    threads::effective_threads(None)
}

/// The instruction-set level new work runs at: "avx512", "avx2", "neon" or "portable".
#[pyfunction]
fn cpu_level() -> &'static str {
    active_level().name()
}

/// The levels this CPU can run, best first.
#[pyfunction]
fn supported_levels() -> Vec<&'static str> {
    Level::ALL
        .into_iter()
        .filter(|l| l.is_supported())
        .map(Level::name)
        .collect()
}

/// For tests: forces the level new work runs at (None returns to the detected one). Models
/// keep the level they were packed for.
#[pyfunction]
#[pyo3(signature = (name=None))]
fn force_cpu_level(name: Option<&str>) -> PyResult<()> {
    let level = match name {
        None => None,
        Some(name) => Some(Level::parse(name).ok_or_else(|| {
            FastmlpError::Value(format!(
                "unknown level {name:?}; expected avx512, avx2, neon or portable"
            ))
        })?),
    };
    force_level(level).map_err(|level| {
        FastmlpError::Value(format!("this CPU cannot run the {} level", level.name())).into()
    })
}

/// For tests: the calling thread's MXCSR register (SSE status flags in bits 0-5, control
/// bits above), or None off x86-64.
#[pyfunction]
fn mxcsr() -> Option<u32> {
    fpenv::mxcsr()
}

/// For tests: clears the calling thread's MXCSR status flags, keeping its control bits.
#[pyfunction]
fn clear_fp_status_flags() {
    fpenv::clear_status_flags()
}

/// For benchmarks: one core's float32 multiply-add peak at the active level, in GFLOP/s (a
/// register-only FMA loop; the best of `repeats` runs of about `seconds` each).
#[pyfunction]
#[pyo3(signature = (seconds=0.05, repeats=5))]
fn fma_peak_gflops(py: Python<'_>, seconds: f64, repeats: usize) -> f64 {
    py.detach(|| kernels::peak::fma_peak_gflops(seconds, repeats))
}

/// How this binary was built, fixed at compile time by `build.rs`: for `fastmlp info` and bug
/// reports.
#[pyfunction]
fn build_info() -> std::collections::BTreeMap<&'static str, &'static str> {
    std::collections::BTreeMap::from([
        ("version", env!("CARGO_PKG_VERSION")),
        ("profile", env!("FASTMLP_BUILD_PROFILE")),
        ("profile_overrides", env!("FASTMLP_BUILD_PROFILE_OVERRIDES")),
        ("opt_level", env!("FASTMLP_BUILD_OPT_LEVEL")),
        (
            "debug_assertions",
            if cfg!(debug_assertions) { "on" } else { "off" },
        ),
        ("target", env!("FASTMLP_BUILD_TARGET")),
        ("target_features", env!("FASTMLP_BUILD_TARGET_FEATURES")),
        ("rustc", env!("FASTMLP_BUILD_RUSTC")),
        ("python", env!("FASTMLP_BUILD_PYTHON")),
    ])
}

/// The CPU features dispatch decides on (`Avx2::detect`, `Avx512::detect` in
/// `kernels/simd_x86.rs`; on aarch64 NEON, which the target guarantees) and whether this CPU
/// has them.
#[pyfunction]
fn cpu_features() -> Vec<(&'static str, bool)> {
    #[cfg(target_arch = "x86_64")]
    {
        vec![
            ("avx2", is_x86_feature_detected!("avx2")),
            ("fma", is_x86_feature_detected!("fma")),
            ("popcnt", is_x86_feature_detected!("popcnt")),
            ("avx512f", is_x86_feature_detected!("avx512f")),
        ]
    }
    #[cfg(target_arch = "aarch64")]
    {
        // Asked of the CPU, not of the target, so `fastmlp info` shows what the kernel reports.
        vec![("neon", std::arch::is_aarch64_feature_detected!("neon"))]
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        Vec::new()
    }
}

#[pymodule(gil_used = false)]
mod _core {
    #[pymodule_init]
    fn init(_module: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
        crate::fork::install();
        Ok(())
    }

    /// The package version: Cargo.toml's, the one place it is written.
    #[allow(non_upper_case_globals)] // Python's conventional name
    #[pymodule_export]
    const __version__: &str = env!("CARGO_PKG_VERSION");

    #[pymodule_export]
    use super::{
        build_info, clear_fp_status_flags, cpu_features, cpu_level, elementwise, fma_peak_gflops,
        force_cpu_level, get_num_threads, mxcsr, set_num_threads, softmax, supported_levels,
        PyPackedMlp,
    };
}
