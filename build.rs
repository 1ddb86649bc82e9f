//! Build script: exposes PyO3's interpreter cfgs (`Py_GIL_DISABLED` for free-threaded builds,
//! `Py_LIMITED_API` for abi3) to the crate, so `rust/detached.rs` knows at compile time whether
//! a GIL serialises threads; and records how the crate was built, for `fastmlp info`.

use std::env;
use std::path::Path;
use std::process::Command;

use pyo3_build_config::PythonAbiKind;

fn main() {
    pyo3_build_config::use_pyo3_cfgs();
    record_build();
}

/// The overrides people use (the README's quick development build sets the first two): watched
/// even while unset, so setting one re-records the build.
const WATCHED_OVERRIDES: [&str; 4] = [
    "CARGO_PROFILE_RELEASE_LTO",
    "CARGO_PROFILE_RELEASE_CODEGEN_UNITS",
    "CARGO_PROFILE_DIST_LTO",
    "CARGO_PROFILE_DIST_CODEGEN_UNITS",
];

/// Passes the build's circumstances to `build_info()` in `rust/bindings/runtime.rs` as
/// `FASTMLP_BUILD_*`
/// environment variables of the compiler: a bug report then says how the binary was made.
fn record_build() {
    let var = |name: &str| env::var(name).unwrap_or_default();
    // Cargo tells build scripts "release" or "debug" only; the profile's own name (e.g. "dist"
    // for release wheels) is the directory the build script's output lands in:
    // target/[<triple>/]<profile>/build/<crate>-<hash>/out.
    let out_dir = var("OUT_DIR");
    let profile = Path::new(&out_dir)
        .ancestors()
        .nth(3)
        .and_then(Path::file_name)
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| var("PROFILE"));
    // Settings overridden from the environment (CARGO_PROFILE_RELEASE_LTO=off, ...) change
    // what the profile in Cargo.toml says, so they are recorded too.
    let mut overrides: Vec<String> = env::vars()
        .filter(|(name, _)| name.starts_with("CARGO_PROFILE_"))
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    overrides.sort();
    let rustc = Command::new(env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
        .arg("--version")
        .output()
        .ok()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default();
    let python = pyo3_build_config::get();
    let python = format!(
        "{} {}.{}{}",
        python.implementation(),
        python.version().major,
        python.version().minor,
        if matches!(python.target_abi().kind(), PythonAbiKind::Stable(_)) {
            "+ (stable ABI)"
        } else {
            ""
        }
    );
    let records = [
        ("PROFILE", profile),
        ("PROFILE_OVERRIDES", overrides.join(" ")),
        ("OPT_LEVEL", var("OPT_LEVEL")),
        ("TARGET", var("TARGET")),
        ("TARGET_FEATURES", var("CARGO_CFG_TARGET_FEATURE")),
        ("RUSTC", rustc),
        ("PYTHON", python),
    ];
    for (name, value) in records {
        println!("cargo:rustc-env=FASTMLP_BUILD_{name}={value}");
    }
    let watched = env::vars()
        .map(|(name, _)| name)
        .filter(|name| name.starts_with("CARGO_PROFILE_"))
        .chain(WATCHED_OVERRIDES.iter().map(|name| name.to_string()));
    for name in watched {
        println!("cargo:rerun-if-env-changed={name}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
