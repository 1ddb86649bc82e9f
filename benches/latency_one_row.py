"""One-row latency of fastmlp against ONNX Runtime, timed in blocks of calls.

``fastmlp bench`` and pytest-benchmark time every call (or every few calls) on its own, which
adds roughly a tenth of a microsecond of timer and harness overhead to each engine: at 1.4 us
that is 7%, and it pulls the ratio between two engines towards 1. Here each engine runs blocks
of back-to-back calls, engines alternating with a pause between turns, and the fastest
block's mean counts. The network and the ONNX graph are those of ``fastmlp bench`` (fixed
seed, 784-50-100-10, sigmoid, sigmoid, softmax; MatMul + Add nodes).

Two kinds of rows:

- a dense random (1, 784) float32 row, the same one in every call, in blocks of 1,000 calls.
  fastmlp runs it twice: called plainly, and as ``fastmlp bench`` calls it (through a wrapper
  passing ``threads=``);
- the 10,000 MNIST test images as pixels / 255, one (1, 784) float32 row per call (issue 3's
  peer table measured its batch of 1 on these), timed as whole passes over all of them, the
  fastest pass's mean counting. Four-fifths of an image's pixels are zero and a single row
  skips zero inputs, so fastmlp's time depends on the image: the fastest of smaller blocks
  would favour the emptiest images. fastmlp runs them through ``predict_proba`` and
  ``predict``. Read from ``../shared/data/mnist`` (or ``$FASTMLP_SHARED_DATA/mnist``);
  skipped, with the reason printed, where absent.

Run: ``python benches/latency_one_row.py`` (needs onnxruntime and onnx, the ``bench`` extra).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

import fastmlp
from fastmlp import _bench

THREADS = 2
CALLS_PER_BLOCK = 1000
BLOCKS_PER_TURN = 10
ROUNDS = 7
PAUSE_SECONDS = 0.3  # lets ONNX Runtime's spinning workers go idle before the next turn

Row = np.ndarray


def fastest_block(call: Callable[[Row], object], blocks: List[List[Row]]) -> float:
    """The fastest mean seconds per call over a turn's blocks of rows."""
    best = float("inf")
    for block in blocks:
        start = time.perf_counter()
        for row in block:
            call(row)
        best = min(best, (time.perf_counter() - start) / len(block))
    return best


def mnist_rows() -> "tuple[Optional[np.ndarray], str]":
    """The MNIST test images as (10000, 784) float32 pixels / 255, or None and why not."""
    override = os.environ.get("FASTMLP_SHARED_DATA")
    shared = Path(override) if override else Path(__file__).resolve().parents[2] / "shared" / "data"
    folder = shared / "mnist"
    try:
        from fastmlp.datasets import load_mnist

        images, _ = load_mnist(folder)
    except (OSError, ValueError) as error:
        return None, f"MNIST test set not read from {folder}: {error}"
    return (images.reshape(len(images), -1) / np.float32(255)).astype(np.float32), ""


def compare(title: str, calls: Dict[str, Callable[[Row], object]], blocks: List[List[Row]]) -> None:
    best = {name: float("inf") for name in calls}
    for _ in range(ROUNDS):
        for name, call in calls.items():
            time.sleep(PAUSE_SECONDS)
            best[name] = min(best[name], fastest_block(call, blocks))
    print(title)
    reference = best["onnxruntime"]
    for name, seconds in best.items():
        print(f"  {name:28} {seconds * 1e6:6.2f} us  {seconds / reference:5.3f} x onnxruntime")


def main() -> None:
    layers = _bench.tutorial_shaped_layers()
    engines = _bench.engines(layers, THREADS, include=("fastmlp", "onnxruntime"))
    if "onnxruntime" not in engines:
        raise SystemExit("onnxruntime is not installed: pip install '.[bench]'")
    onnxruntime_forward = engines["onnxruntime"]
    model = fastmlp.MLP(layers)

    row = np.random.default_rng(1).random((1, layers[0][0].shape[0]), dtype=np.float32)
    fastmlp_forward = engines["fastmlp"]
    np.testing.assert_allclose(fastmlp_forward(row), onnxruntime_forward(row), atol=1e-5)
    same_row = [[row] * CALLS_PER_BLOCK for _ in range(BLOCKS_PER_TURN)]
    compare(
        "a dense random row, the same in every call",
        {
            "fastmlp (default)": model.predict_proba,
            f"fastmlp (threads={THREADS})": fastmlp_forward,
            "onnxruntime": onnxruntime_forward,
        },
        same_row,
    )

    pixels, why_not = mnist_rows()
    if pixels is None:
        print(f"MNIST images skipped: {why_not}")
        return
    rows = [pixels[i : i + 1] for i in range(len(pixels))]
    np.testing.assert_allclose(
        model.predict_proba(pixels[:100]), onnxruntime_forward(pixels[:100]), atol=1e-5
    )
    compare(
        f"the {len(rows):,} MNIST test images (pixels / 255), one per call",
        {
            "fastmlp predict_proba": model.predict_proba,
            "fastmlp predict (labels)": model.predict,
            "onnxruntime": onnxruntime_forward,
        },
        [rows],
    )


if __name__ == "__main__":
    main()
