//! Build script: exposes PyO3's interpreter cfgs (`Py_GIL_DISABLED` for free-threaded builds)
//! to the crate, so `rust/detached.rs` knows at compile time whether a GIL serialises threads.

fn main() {
    pyo3_build_config::use_pyo3_cfgs();
}
