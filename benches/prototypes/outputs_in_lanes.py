"""Times the design study `outputs_in_lanes.rs` beside fastmlp, in one process, interleaved.

    python benches/prototypes/outputs_in_lanes.py [--rows 9984] [--rounds 150]

Needs an AVX-512 CPU and `rustc`. Prints each stage's added time (from the minimums over interleaved
rounds of running the stages up to it) and the whole network's share of this core's FMA peak,
beside fastmlp on the same rows with one thread. BENCHMARKS.md, "Intel, session 13", has a run.
"""

import argparse
import ctypes
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

import fastmlp
from fastmlp import _bench, _core

COPY_ROWS = 128
PREFETCH = 256
STAGES = [
    "layer 1 tiles",
    "layer 1 tail",
    "sigmoid 1",
    "layer 2",
    "sigmoid 2",
    "layer 3",
    "softmax",
]


def aligned(array: np.ndarray) -> np.ndarray:
    """A float32 copy starting on a 64-byte boundary (an unaligned start splits every load)."""
    array = np.ascontiguousarray(array, np.float32)
    buffer = np.empty(array.size + 16, np.float32)
    offset = (-buffer.ctypes.data % 64) // 4
    view = buffer[offset : offset + array.size].reshape(array.shape)
    view[...] = array
    return view


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=9984, help="a multiple of 48")
    parser.add_argument("--rounds", type=int, default=150)
    args = parser.parse_args()
    if fastmlp.cpu_level() != "avx512":
        sys.exit(f"needs an AVX-512 CPU; this one runs fastmlp's {fastmlp.cpu_level()!r} level")

    source = pathlib.Path(__file__).with_suffix(".rs")
    build = pathlib.Path(tempfile.mkdtemp()) / "liboutputs_in_lanes.so"
    subprocess.run(
        ["rustc", "--edition", "2021", "-O", "-C", "target-cpu=native", "-C", "codegen-units=1"]
        + ["--crate-type", "cdylib", "-o", str(build), str(source)],
        check=True,
    )
    library = ctypes.CDLL(str(build))

    layers = _bench.tutorial_shaped_layers()
    (w1, b1, _), (w2, b2, _), (w3, b3, _) = layers
    model = fastmlp.MLP(layers)
    rows = args.rows - args.rows % 48
    x = np.random.default_rng(1).random((rows, 784), dtype=np.float32)
    weights = [
        aligned(w1[:, :48]),
        aligned(w1[:, 48:].T),
        aligned(b1),
        aligned(np.pad(w2, ((0, 0), (0, 12)))),
        aligned(np.pad(b2, (0, 12))),
        aligned(np.pad(w3, ((0, 0), (0, 6)))),
        aligned(np.pad(b3, (0, 6))),
    ]
    out = np.empty((rows, 10), np.float32)
    expected = model.predict_proba(x, threads=1)

    def pointer(a: np.ndarray) -> ctypes.c_void_p:
        return a.ctypes.data_as(ctypes.c_void_p)

    fixed = [pointer(x), ctypes.c_size_t(rows)] + [pointer(w) for w in weights] + [pointer(out)]

    def prototype(stages: int) -> None:
        library.forward(*fixed, ctypes.c_uint32(stages))

    for flags in [0, COPY_ROWS, PREFETCH, COPY_ROWS | PREFETCH]:
        out[...] = np.nan
        prototype(127 | flags)
        difference = np.abs(out - expected).max()
        print(f"largest difference from fastmlp, flags {flags}: {difference:.2e}")

    # Each stage's time is the difference between running the stages up to it and up to the
    # one before; "copied" runs read each chunk's rows from an aligned copy with subnormal
    # values flushed (what fastmlp's contract needs without the denormals-are-zero mode).
    prefixes = [(1 << (i + 1)) - 1 for i in range(len(STAGES))]
    variants = {
        "in place": 0,
        "copied": COPY_ROWS,
        "in place+pf": PREFETCH,
        "copied+pf": COPY_ROWS | PREFETCH,
    }
    runs = [stages | flag for flag in variants.values() for stages in [0] + prefixes]
    best = {"fastmlp": np.inf, **{stages: np.inf for stages in runs}}
    peak = 0.0
    for round_index in range(args.rounds):
        start = time.perf_counter()
        model.predict_proba(x, threads=1, out=expected)
        best["fastmlp"] = min(best["fastmlp"], time.perf_counter() - start)
        for stages in runs:
            start = time.perf_counter()
            prototype(stages)
            best[stages] = min(best[stages], time.perf_counter() - start)
        if round_index % 25 == 0:
            peak = max(peak, _core.fma_peak_gflops())

    flops = rows * 2 * (784 * 50 + 50 * 100 + 100 * 10)
    print(f"FMA peak (one core, register-only loop): {peak:.0f} GFLOP/s; {rows} rows, 1 thread")
    print(f"  {'stage':<14}" + "".join(f"{name:>12}" for name in variants))
    for name, stages in zip(["copy"] + STAGES, [0] + prefixes):
        added = []
        for flag in variants.values():
            before = best[flag | (stages >> 1)] if stages else 0.0
            added.append(best[flag | stages] - before)
        print(f"  {name:<14}" + "".join(f"{t * 1e3:+9.3f} ms" for t in added))
    totals = {f"prototype, {name}": best[prefixes[-1] | flag] for name, flag in variants.items()}
    for name, seconds in [*totals.items(), ("fastmlp", best["fastmlp"])]:
        share = flops / seconds / 1e9 / peak
        ratio = seconds / best["fastmlp"]
        print(f"{name:<20} {seconds * 1e3:6.3f} ms  {share:4.0%} of the FMA peak  {ratio:.3f}x")


if __name__ == "__main__":
    main()
