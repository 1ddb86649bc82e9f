//! Settings and introspection: threads, instruction-set levels, the floating-point status
//! flags, and how this binary was built.

use pyo3::prelude::*;

use crate::error::FastmlpError;
use crate::fpenv;
use crate::kernels;
use crate::kernels::dispatch::{active_level, force_level, Level};
use crate::threads;

#[pyfunction]
pub fn set_num_threads(threads: usize) {
    threads::set_default_threads(threads);
}

/// The number of threads a call uses by default (capped at the available cores).
#[pyfunction]
pub fn get_num_threads() -> usize {
    threads::effective_threads(None)
}

/// The instruction-set level new work runs at: "avx512", "avx2", "neon" or "portable".
#[pyfunction]
pub fn cpu_level() -> &'static str {
    active_level().name()
}

/// The levels this CPU can run, best first.
#[pyfunction]
pub fn supported_levels() -> Vec<&'static str> {
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
pub fn force_cpu_level(name: Option<&str>) -> PyResult<()> {
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
pub fn mxcsr() -> Option<u32> {
    fpenv::mxcsr()
}

/// For tests: clears the calling thread's MXCSR status flags, keeping its control bits.
#[pyfunction]
pub fn clear_fp_status_flags() {
    fpenv::clear_status_flags()
}

/// For benchmarks: one core's float32 multiply-add peak at the active level, in GFLOP/s (a
/// register-only FMA loop; the best of `repeats` runs of about `seconds` each).
#[pyfunction]
#[pyo3(signature = (seconds=0.05, repeats=5))]
pub fn fma_peak_gflops(py: Python<'_>, seconds: f64, repeats: usize) -> f64 {
    py.detach(|| kernels::peak::fma_peak_gflops(seconds, repeats))
}

/// How this binary was built, fixed at compile time by `build.rs`: for `fastmlp info` and bug
/// reports.
#[pyfunction]
pub fn build_info() -> std::collections::BTreeMap<&'static str, &'static str> {
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
pub fn cpu_features() -> Vec<(&'static str, bool)> {
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
