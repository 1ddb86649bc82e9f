//! NumPy arrays as the kernels take them: dtype and layout checks with errors that name the
//! argument, and slices borrowed (in `crate::borrows`) for exactly as long as a call uses them.

use std::ffi::c_int;

use numpy::npyffi::NPY_TYPES;
use numpy::{PyArrayDescrMethods, PyArrayDyn, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;

use crate::borrows;
use crate::error::FastmlpError;
use crate::kernels;

/// Why an output could not be borrowed for writing, after its name.
pub const WRITE_REFUSED: &str = "must be writeable and must not overlap another argument";

pub fn dtype_name(array: &Bound<'_, PyAny>) -> String {
    array
        .getattr("dtype")
        .and_then(|d| d.str().map(|s| s.to_string()))
        .unwrap_or_else(|_| "not an array".to_string())
}

/// `obj` as a C-contiguous float array of element type `E`, or a clear error naming `what`.
pub fn contiguous_floats<'a, 'py, E: numpy::Element + kernels::simd::Element>(
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
pub unsafe fn writable_floats<'a, E: numpy::Element + kernels::simd::Element>(
    out: &'a Bound<'_, PyAny>,
    what: &str,
) -> Result<(borrows::Borrow, &'a mut [E]), FastmlpError> {
    // SAFETY: the caller keeps the borrow for as long as it uses the slice.
    unsafe { borrows::write(contiguous_floats::<E>(out, what)?) }
        .map_err(|refusal| FastmlpError::refused(refusal, what, WRITE_REFUSED))
}

/// A C-contiguous float array of element type `E`, borrowed for reading.
///
/// # Safety
/// The slice must not be used after the returned `Borrow` is dropped (`borrows::read`).
pub unsafe fn readable_floats<'a, E: numpy::Element + kernels::simd::Element>(
    x: &'a Bound<'_, PyAny>,
    what: &str,
) -> Result<(borrows::Borrow, &'a [E]), FastmlpError> {
    // SAFETY: the caller keeps the borrow for as long as it uses the slice.
    unsafe { borrows::read(contiguous_floats::<E>(x, what)?) }
        .map_err(|refusal| FastmlpError::refused(refusal, what, "is being written elsewhere"))
}

/// The typed input rows of a forward call: uint8, float32 or float64, C-contiguous, 1-D (one
/// row) or 2-D; not yet borrowed for reading.
pub enum InputRows<'a, 'py> {
    U8(&'a Bound<'py, PyArrayDyn<u8>>),
    F32(&'a Bound<'py, PyArrayDyn<f32>>),
    F64(&'a Bound<'py, PyArrayDyn<f64>>),
}

impl<'a, 'py> InputRows<'a, 'py> {
    pub fn new(x: &'a Bound<'py, PyAny>) -> Result<Self, FastmlpError> {
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

    pub fn shape(&self) -> &[usize] {
        match self {
            InputRows::U8(a) => a.shape(),
            InputRows::F32(a) => a.shape(),
            InputRows::F64(a) => a.shape(),
        }
    }

    /// `(rows, features)`: a 1-D array is one row.
    pub fn rows_and_features(&self) -> (usize, usize) {
        match *self.shape() {
            [features] => (1, features),
            [rows, features] => (rows, features),
            _ => (0, 0),
        }
    }
}
