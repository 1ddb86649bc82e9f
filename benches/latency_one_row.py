"""One-row latency of fastmlp against ONNX Runtime, timed in blocks of calls.

``fastmlp bench`` and pytest-benchmark time every call (or every few calls) on its own, which
adds roughly a tenth of a microsecond of timer and harness overhead to each engine: at 1.4 us
that is 7%, and it pulls the ratio between two engines towards 1. Here each engine runs blocks
of 1,000 back-to-back calls on the same (1, 784) float32 row, engines alternating with a pause
between turns, and the fastest block's mean counts. fastmlp runs twice: called plainly, and as
``fastmlp bench`` calls it (through a wrapper passing ``threads=``). The network and the ONNX
graph are those of ``fastmlp bench`` (fixed seed, 784-50-100-10, sigmoid, sigmoid, softmax;
MatMul + Add nodes).

Run: ``python benches/latency_one_row.py`` (needs onnxruntime and onnx, the ``bench`` extra).
"""

from __future__ import annotations

import time
from typing import Callable, Dict

import numpy as np

import fastmlp
from fastmlp import _bench

THREADS = 2
CALLS_PER_BLOCK = 1000
BLOCKS_PER_TURN = 10
ROUNDS = 7
PAUSE_SECONDS = 0.3  # lets ONNX Runtime's spinning workers go idle before the next turn


def fastest_block(call: Callable[[], object]) -> float:
    """The fastest mean seconds per call over a turn's blocks."""
    best = float("inf")
    for _ in range(BLOCKS_PER_TURN):
        start = time.perf_counter()
        for _ in range(CALLS_PER_BLOCK):
            call()
        best = min(best, (time.perf_counter() - start) / CALLS_PER_BLOCK)
    return best


def main() -> None:
    layers = _bench.tutorial_shaped_layers()
    engines = _bench.engines(layers, THREADS, include=("fastmlp", "onnxruntime"))
    if "onnxruntime" not in engines:
        raise SystemExit("onnxruntime is not installed: pip install '.[bench]'")
    row = np.random.default_rng(1).random((1, layers[0][0].shape[0]), dtype=np.float32)
    fastmlp_forward = engines["fastmlp"]
    np.testing.assert_allclose(fastmlp_forward(row), engines["onnxruntime"](row), atol=1e-5)
    model = fastmlp.MLP(layers)
    calls: Dict[str, Callable[[], object]] = {
        "fastmlp (default)": lambda: model.predict_proba(row),
        f"fastmlp (threads={THREADS})": lambda: fastmlp_forward(row),
        "onnxruntime": lambda: engines["onnxruntime"](row),
    }
    best = {name: float("inf") for name in calls}
    for _ in range(ROUNDS):
        for name, call in calls.items():
            time.sleep(PAUSE_SECONDS)
            best[name] = min(best[name], fastest_block(call))
    reference = best["onnxruntime"]
    for name, seconds in best.items():
        print(f"{name:24} {seconds * 1e6:6.2f} us  {seconds / reference:5.3f} x onnxruntime")


if __name__ == "__main__":
    main()
