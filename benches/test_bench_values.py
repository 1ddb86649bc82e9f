"""Speed that should not depend on the input's values.

Groups:

- ``values-sigmoid``, ``values-tanh``: 1,000,000 float32 values in a moderate range (-10, 10)
  and in ranges where exp saturates ((-100, -88), (88, 100), (-1000, -200)). A kernel that made
  subnormal numbers there would pay a microcode assist per vector on Intel cores.
- ``values-softmax``: (10000, 100) float32 rows spread over (-10, 10) and over (-500, 0).
- ``values-network``: the tutorial-shaped 784-50-100-10 network on 10,000 raw 0..255 pixel
  rows against the same rows / 255, float32 and uint8, beside ONNX Runtime and NumPy.

The ratios (saturating / moderate, raw / scaled, fastmlp raw / ONNX Runtime raw) are printed
after the tables. ``fastmlp bench --values`` times the same cases interleaved in one process.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastmlp
from fastmlp import _bench, _functions

ELEMENTS = 1_000_000

pytestmark = pytest.mark.benchmark(max_time=0.5, min_rounds=5)


def elementwise_input(low: float, high: float) -> np.ndarray:
    return np.random.default_rng(11).uniform(low, high, ELEMENTS).astype(np.float32)


@pytest.mark.parametrize("kernel", ["sigmoid", "tanh"])
@pytest.mark.parametrize("label", list(_bench.ELEMENTWISE_RANGES))
def test_elementwise_by_range(benchmark, record, derived, timings, kernel, label):
    x = elementwise_input(*_bench.ELEMENTWISE_RANGES[label])
    benchmark.group = f"values-{kernel}"
    out = benchmark(_functions._elementwise, kernel, x, None, None)
    assert out.shape == x.shape and np.isfinite(out).all()
    seconds = record(label)
    moderate = timings.get((benchmark.group, "moderate (-10, 10)"))
    if seconds is not None and moderate is not None and not label.startswith("moderate"):
        derived.append(f"{kernel} {label}: {seconds / moderate:.2f}x its moderate range")


@pytest.mark.parametrize("label", list(_bench.SOFTMAX_RANGES))
def test_softmax_by_range(benchmark, record, derived, timings, label):
    low, high = _bench.SOFTMAX_RANGES[label]
    x = np.random.default_rng(12).uniform(low, high, (ELEMENTS // 100, 100)).astype(np.float32)
    benchmark.group = "values-softmax"
    out = benchmark(fastmlp.softmax, x)
    np.testing.assert_allclose(out.sum(axis=1), 1, atol=1e-5)
    seconds = record(label)
    moderate = timings.get((benchmark.group, "moderate (-10, 10)"))
    if seconds is not None and moderate is not None and not label.startswith("moderate"):
        derived.append(f"softmax {label}: {seconds / moderate:.2f}x its moderate range")


@pytest.fixture(scope="module")
def raw_pixels() -> np.ndarray:
    rng = np.random.default_rng(13)
    pixels = rng.integers(0, 256, size=(10_000, 784), dtype=np.uint8)
    pixels[rng.random(pixels.shape) < 0.8] = 0
    return pixels


@pytest.fixture(scope="module")
def network_engines(layers, threads):
    return _bench.engines(layers, threads, include=("fastmlp", "numpy", "onnxruntime"))


@pytest.mark.parametrize("engine", ["fastmlp", "onnxruntime", "numpy"])
@pytest.mark.parametrize("case", ["raw float32", "scaled float32", "raw uint8", "scaled uint8"])
def test_network_on_raw_and_scaled_pixels(
    benchmark, record, derived, timings, network_engines, layers, threads, raw_pixels, engine, case
):
    kind, dtype = case.split()
    if engine not in network_engines:
        pytest.skip(f"{engine} is not installed (pip install '.[bench]')")
    if dtype == "uint8" and engine != "fastmlp":
        pytest.skip(f"{engine} takes float rows only")
    if dtype == "uint8":
        model = fastmlp.MLP(layers, input_scale=1 / 255 if kind == "scaled" else None)
        x = raw_pixels

        def run(x):
            return model.predict_proba(x, threads=threads)

    else:
        x = raw_pixels.astype(np.float32)
        if kind == "scaled":
            x = x / np.float32(255)
        run = network_engines[engine]
    benchmark.group = "values-network"
    out = benchmark(run, x)
    np.testing.assert_allclose(np.asarray(out).sum(axis=1), 1, atol=1e-4)
    record(f"{engine} {case}")
    # Each ratio is printed once both of its timings exist, whichever ran first.
    group = benchmark.group
    raw = timings.get((group, f"{engine} raw {dtype}"))
    scaled = timings.get((group, f"{engine} scaled {dtype}"))
    if raw is not None and scaled is not None:
        derived.append(f"{engine} raw {dtype}: {raw / scaled:.2f}x its time on scaled pixels")
    ours = timings.get((group, f"fastmlp {case}"))
    ort = timings.get((group, f"onnxruntime {case}"))
    if ours is not None and ort is not None and engine in ("fastmlp", "onnxruntime"):
        derived.append(f"fastmlp {case}: {ours / ort:.2f}x ONNX Runtime's time")
