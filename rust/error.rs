//! Every error the core reports, and its one mapping to a Python exception.

use std::fmt;

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::PyErr;

use crate::borrows::Refusal;

#[derive(Debug)]
pub enum FastmlpError {
    /// An array has the wrong shape or size for what it is used as.
    Shape(String),
    /// An array has a dtype the operation does not accept.
    DType(String),
    /// An argument has a value outside what is accepted (names, counts, layouts).
    Value(String),
    /// A bug in fastmlp: a Rust panic caught before it could reach Python.
    Internal(String),
    /// A signal handler raised (KeyboardInterrupt on Ctrl-C) while a long call ran; the call's
    /// remaining work was cancelled and the handler's exception is raised as it is.
    Interrupted(PyErr),
}

impl fmt::Display for FastmlpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FastmlpError::Shape(m) | FastmlpError::DType(m) | FastmlpError::Value(m) => {
                f.write_str(m)
            }
            FastmlpError::Interrupted(error) => write!(f, "{error}"),
            FastmlpError::Internal(m) => write!(
                f,
                "internal error in fastmlp's core ({m}); please report it with the call that caused it"
            ),
        }
    }
}

impl std::error::Error for FastmlpError {}

impl FastmlpError {
    /// The error for a refused borrow of the array named `what`: it is not C-contiguous, or (read
    /// only, or in use by another call) `what` followed by `in_use`.
    pub fn refused(refusal: Refusal, what: &str, in_use: &str) -> FastmlpError {
        match refusal {
            Refusal::NotContiguous => FastmlpError::Value(format!("{what} must be C-contiguous")),
            Refusal::ReadOnly | Refusal::InUse => FastmlpError::Value(format!("{what} {in_use}")),
        }
    }
}

impl From<FastmlpError> for PyErr {
    fn from(err: FastmlpError) -> PyErr {
        match err {
            FastmlpError::Interrupted(error) => error,
            FastmlpError::Shape(_) | FastmlpError::Value(_) => {
                PyValueError::new_err(err.to_string())
            }
            FastmlpError::DType(_) => PyTypeError::new_err(err.to_string()),
            FastmlpError::Internal(_) => PyRuntimeError::new_err(err.to_string()),
        }
    }
}

/// Runs `work`, turning a panic into `FastmlpError::Internal` so it never unwinds into Python.
pub fn catch_panic<T>(work: impl FnOnce() -> T) -> Result<T, FastmlpError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).map_err(|payload| {
        let detail = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_string());
        FastmlpError::Internal(detail)
    })
}
