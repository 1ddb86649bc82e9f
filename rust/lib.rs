//! fastmlp's compiled core (`fastmlp._core`): thin PyO3 wrappers over the kernels in `kernels/`.
//!
//! The Python layer validates and converts arguments; this layer re-checks what memory safety
//! depends on (dtypes, shapes, contiguity), borrows the arrays without copying, and runs the
//! kernels with the GIL released when the work is large enough to be worth it.

pub mod bindings;
pub mod borrows;
pub mod detached;
pub mod error;
pub mod fork;
pub mod fpenv;
pub mod kernels;
pub mod threads;

use pyo3::prelude::*;

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
    use crate::bindings::functions::{elementwise, softmax};
    #[pymodule_export]
    use crate::bindings::model::PyPackedMlp;
    #[pymodule_export]
    use crate::bindings::runtime::{
        build_info, clear_fp_status_flags, cpu_features, cpu_level, fma_peak_gflops,
        force_cpu_level, get_num_threads, mxcsr, set_num_threads, supported_levels,
    };
}
