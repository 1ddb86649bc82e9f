//! The array functions: element-wise activations and softmax / log-softmax along an axis.

use numpy::PyArrayDyn;
use pyo3::prelude::*;

use super::arrays::{readable_floats, writable_floats};
use crate::detached::run_released;
use crate::error::FastmlpError;
use crate::kernels;
use crate::kernels::dispatch::{active_level, DispatchElement};
use crate::kernels::elementwise::{map_elementwise, softmax_axis, Source};
use crate::kernels::math::Activation;
use crate::threads;

/// Below this many elements an element-wise call keeps the GIL: releasing and re-acquiring it
/// costs more than the computation.
const DETACH_THRESHOLD: usize = 1 << 15;
// An element-wise call that keeps the GIL must never wait for the worker pool (a split needs
// two tasks' worth of elements).
const _: () = assert!(DETACH_THRESHOLD < 2 * kernels::elementwise::SOFTMAX_ELEMENTS_PER_TASK);
const _: () = assert!(DETACH_THRESHOLD < 2 * kernels::elementwise::ELEMENTS_PER_TASK);

pub fn parse_activation(name: &str) -> Result<Activation, FastmlpError> {
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
pub fn elementwise(
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
pub fn softmax(
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
