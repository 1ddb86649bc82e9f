"""The whole forward pass: fastmlp against its peers on the same network and the same arrays.

Groups (``--benchmark-group-by=group`` puts each group's rows side by side):

- ``batch-1`` .. ``batch-100000``: fastmlp (float32 input, and uint8 pixels scaled by 1/255
  inside the kernel), the NumPy reference, ONNX Runtime and PyTorch where installed.
- ``float64``: fastmlp against NumPy, both computing in float64, 10,000 rows.
- ``threads``: fastmlp on 10,000 rows with 1 and with 2 threads.
- ``rows-scaling``: fastmlp on uint8 pixels, 1,000 to 1,000,000 rows (time per row in the
  summary after the tables).
- ``tutorial``: the book's per-sample NumPy loop (and its batched loop) over 1,000 images
  against one fastmlp call.
- ``mnist``: the real MNIST test set with the book's weights (skips without the data).
- ``mnist-1``: one real test image (four-fifths of its pixels are zero, which a single row
  skips) through the book's weights: fastmlp on pixels and on pixels / 255, ONNX Runtime and
  NumPy on pixels / 255.

Every benchmark checks its engine's output once, so a broken engine cannot post a fast time.
Nothing here asserts on speed.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastmlp
from fastmlp import _bench, reference

BATCH_SIZES = (1, 100, 10_000, 100_000)
PEER_BATCH_SIZES = (1, 100, 10_000)  # the slow or optional peers skip 100,000 rows
PIXEL_SCALE = 1 / 255
ATOL = 1e-5
TUTORIAL_ACCURACY_SCALED = 0.9352

# Small calls are calibrated by pytest-benchmark within this budget; big ones use pedantic.
pytestmark = pytest.mark.benchmark(max_time=0.5, min_rounds=5)


def measure(benchmark, fn, *args, rows: int, group: str, rounds=None, **kwargs):
    """Times ``fn(*args, **kwargs)`` in ``group``; returns its result.

    Calls on fewer than 10,000 rows are calibrated by pytest-benchmark; bigger ones run a
    fixed, small number of rounds (one warm-up) so the suite stays short.
    """
    benchmark.group = group
    benchmark.extra_info["rows"] = rows
    if rounds is None and rows < 10_000:
        return benchmark(fn, *args, **kwargs)
    if rounds is None:
        rounds = 10 if rows <= 10_000 else 5 if rows <= 100_000 else 3
    return benchmark.pedantic(
        fn, args=args, kwargs=kwargs, rounds=rounds, iterations=1, warmup_rounds=1
    )


def close(actual, expected, atol: float = ATOL) -> None:
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol)


def batch_group(rows: int) -> str:
    return f"batch-{rows}"


def note_ratio(derived, timings, group, baseline, seconds, label) -> None:
    """Adds ``label: seconds / baseline's`` to the summary when both were timed in this run."""
    base = timings.get((group, baseline))
    if seconds is not None and base:
        derived.append(f"{group:>13}: {label} = {seconds / base:.2f}")


# -- batch-N: every engine on the same float32 rows --------------------------------------


@pytest.mark.parametrize("rows", BATCH_SIZES)
def test_fastmlp_float32(benchmark, record, model, x32, expected32, rows):
    result = measure(benchmark, model.predict_proba, x32[rows], rows=rows, group=batch_group(rows))
    close(result, expected32[rows])
    record()


@pytest.mark.parametrize("rows", BATCH_SIZES)
def test_fastmlp_uint8(
    benchmark, record, timings, derived, pixel_model, pixels, expected_pixels, rows
):
    """Raw pixels with ``input_scale=1/255``: the target is no slower than float32 input."""
    group = batch_group(rows)
    result = measure(benchmark, pixel_model.predict_proba, pixels[rows], rows=rows, group=group)
    close(result, expected_pixels[rows])
    note_ratio(
        derived,
        timings,
        group,
        f"test_fastmlp_float32[{rows}]",
        record(),
        "fastmlp uint8 / fastmlp float32 (target <= 1)",
    )


@pytest.mark.parametrize("rows", BATCH_SIZES)
def test_numpy_reference(benchmark, record, timings, derived, layers, model, x32, rows):
    group = batch_group(rows)
    result = measure(benchmark, reference.forward, layers, x32[rows], rows=rows, group=group)
    close(result, model.predict_proba(x32[rows]))
    note_ratio(
        derived,
        timings,
        group,
        f"test_fastmlp_float32[{rows}]",
        record(),
        "numpy reference / fastmlp",
    )


@pytest.mark.parametrize("rows", BATCH_SIZES)
def test_onnxruntime(benchmark, record, timings, derived, onnxruntime_forward, model, x32, rows):
    group = batch_group(rows)
    result = measure(benchmark, onnxruntime_forward, x32[rows], rows=rows, group=group)
    close(result, model.predict_proba(x32[rows]))
    note_ratio(
        derived,
        timings,
        group,
        f"test_fastmlp_float32[{rows}]",
        record(),
        "onnxruntime / fastmlp",
    )


@pytest.mark.parametrize("rows", PEER_BATCH_SIZES)
def test_torch(benchmark, record, timings, derived, torch_forward, model, x32, rows):
    group = batch_group(rows)
    result = measure(benchmark, torch_forward, x32[rows], rows=rows, group=group)
    close(result, model.predict_proba(x32[rows]))
    note_ratio(
        derived,
        timings,
        group,
        f"test_fastmlp_float32[{rows}]",
        record(),
        "torch / fastmlp",
    )


# -- float64 -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def x64(x32):
    return x32[10_000].astype(np.float64)


def test_fastmlp_float64(benchmark, record, layers64, model64, x64):
    result = measure(benchmark, model64.predict_proba, x64, rows=len(x64), group="float64")
    assert result.dtype == np.float64
    close(result, reference.forward(layers64, x64), atol=1e-12)
    record()


def test_numpy_float64(benchmark, record, timings, derived, layers64, model64, x64):
    result = measure(benchmark, reference.forward, layers64, x64, rows=len(x64), group="float64")
    assert result.dtype == np.float64
    close(result, model64.predict_proba(x64), atol=1e-12)
    note_ratio(
        derived,
        timings,
        "float64",
        "test_fastmlp_float64",
        record(),
        "numpy float64 / fastmlp float64",
    )


# -- threads: the same call on 1 and 2 threads -------------------------------------------


@pytest.mark.parametrize("count", [1, 2])
def test_fastmlp_threads(benchmark, record, timings, derived, model, x32, expected32, count):
    X = x32[10_000]
    result = measure(benchmark, model.predict_proba, X, threads=count, rows=len(X), group="threads")
    close(result, expected32[10_000])
    # Results are documented to be bit-identical whatever the thread count.
    np.testing.assert_array_equal(result, model.predict_proba(X, threads=1))
    seconds = record()
    if count != 1:
        note_ratio(
            derived,
            timings,
            "threads",
            "test_fastmlp_threads[1]",
            seconds,
            f"fastmlp {count} threads / 1 thread, 10,000 rows",
        )


# -- rows-scaling: time per row from 1,000 to 1,000,000 rows (uint8 pixels) ----------------


@pytest.mark.parametrize("rows", [1_000, 10_000, 100_000, 1_000_000])
def test_fastmlp_rows_scaling(benchmark, record, derived, layers, pixel_model, pixels, rows):
    """uint8 pixels throughout: 1,000,000 rows are 784 MB (float32 would be 3.1 GB)."""
    biggest = pixels[max(BATCH_SIZES)]
    if rows <= len(biggest):
        P = biggest[:rows]
    else:
        P = np.tile(biggest, (rows // len(biggest), 1))
    result = measure(benchmark, pixel_model.predict_proba, P, rows=rows, group="rows-scaling")
    assert result.shape == (rows, 10)
    # Rows are independent: check about 1,000 of them spread over the whole batch.
    sample = np.arange(0, rows, max(1, rows // 1000))
    close(result[sample], reference.forward(layers, P[sample], input_scale=PIXEL_SCALE))
    seconds = record()
    if seconds is not None:
        per_row = seconds / rows * 1e9
        benchmark.extra_info["ns_per_row"] = per_row
        derived.append(f"{'rows-scaling':>13}: {rows:>9,} rows: {per_row:7.1f} ns per row")
    del P, result


# -- tutorial: the book's loops against one fastmlp call ---------------------------------

TUTORIAL_IMAGES = 1_000


@pytest.fixture(scope="module")
def tutorial_case(layers, x32, expected32):
    """1,000 float32 images in [0, 1) (as the book's normalize=True), labels, the network dict."""
    rng = np.random.default_rng(7)
    x = x32[10_000][:TUTORIAL_IMAGES]
    labels = rng.integers(0, 10, TUTORIAL_IMAGES)
    network = {}
    for index, (W, b, _) in enumerate(layers, start=1):
        network[f"W{index}"], network[f"b{index}"] = W, b
    expected_labels = np.argmax(expected32[10_000][:TUTORIAL_IMAGES], axis=1)
    return x, labels, network, expected_labels


def test_tutorial_per_sample_loop(benchmark, record, tutorial_case):
    x, labels, network, expected_labels = tutorial_case
    accuracy, predicted = measure(
        benchmark,
        reference.tutorial_accuracy_per_sample,
        network,
        x,
        labels,
        rows=len(x),
        group="tutorial",
    )
    np.testing.assert_array_equal(predicted, expected_labels)
    assert accuracy == np.mean(expected_labels == labels)
    record()


def test_tutorial_batched_loop(benchmark, record, tutorial_case):
    x, labels, network, expected_labels = tutorial_case
    accuracy, predicted = measure(
        benchmark,
        reference.tutorial_accuracy_batched,
        network,
        x,
        labels,
        rows=len(x),
        group="tutorial",
    )
    np.testing.assert_array_equal(predicted, expected_labels)
    assert accuracy == np.mean(expected_labels == labels)
    record()


def test_tutorial_fastmlp_batch(benchmark, record, timings, derived, model, tutorial_case):
    x, labels, _, expected_labels = tutorial_case
    accuracy = measure(benchmark, model.score, x, labels, rows=len(x), group="tutorial")
    np.testing.assert_array_equal(model.predict(x), expected_labels)
    assert accuracy == np.mean(expected_labels == labels)
    seconds = record()
    for baseline, label in [
        ("test_tutorial_per_sample_loop", "per-sample NumPy loop / fastmlp"),
        ("test_tutorial_batched_loop", "batched NumPy loop / fastmlp"),
    ]:
        base = timings.get(("tutorial", baseline))
        if seconds and base:
            derived.append(f"{'tutorial':>13}: {label} = {base / seconds:.1f}x")


# -- mnist: the real test set and the book's weights -------------------------------------


@pytest.fixture(scope="module")
def mnist_case(mnist, sample_weights):
    images, labels = mnist
    flat = images.reshape(len(images), -1)
    scaled = flat.astype(np.float32) / 255  # the book's normalize=True
    return flat, scaled, labels, sample_weights


def test_mnist_fastmlp_uint8(benchmark, record, mnist_case):
    flat, _, labels, weights = mnist_case
    model = fastmlp.MLP.from_dict(weights, input_scale=PIXEL_SCALE)
    accuracy = measure(benchmark, model.score, flat, labels, rows=len(flat), group="mnist")
    assert accuracy == TUTORIAL_ACCURACY_SCALED
    record()


def test_mnist_fastmlp_float32(benchmark, record, mnist_case):
    _, scaled, labels, weights = mnist_case
    model = fastmlp.MLP.from_dict(weights)
    accuracy = measure(benchmark, model.score, scaled, labels, rows=len(scaled), group="mnist")
    assert accuracy == TUTORIAL_ACCURACY_SCALED
    record()


def test_mnist_tutorial_batched_loop(benchmark, record, mnist_case):
    _, scaled, labels, weights = mnist_case
    accuracy, _ = measure(
        benchmark,
        reference.tutorial_accuracy_batched,
        weights,
        scaled,
        labels,
        rows=len(scaled),
        group="mnist",
        rounds=5,
    )
    assert accuracy == TUTORIAL_ACCURACY_SCALED
    record()


def test_mnist_tutorial_per_sample_loop(benchmark, record, timings, derived, mnist_case):
    _, scaled, labels, weights = mnist_case
    accuracy, _ = measure(
        benchmark,
        reference.tutorial_accuracy_per_sample,
        weights,
        scaled,
        labels,
        rows=len(scaled),
        group="mnist",
        rounds=3,
    )
    assert accuracy == TUTORIAL_ACCURACY_SCALED
    seconds = record()
    base = timings.get(("mnist", "test_mnist_fastmlp_uint8"))
    if seconds and base:
        derived.append(
            f"{'mnist':>13}: book's per-sample loop / fastmlp uint8 = {seconds / base:.1f}x "
            "(10,000 test images, accuracy 0.9352 both)"
        )


# -- mnist-1: one real image, whose zero pixels a single row skips -----------------------


@pytest.fixture(scope="module")
def mnist_one(mnist_case):
    flat, scaled, _, weights = mnist_case
    layers = [
        (weights[f"W{i}"], weights[f"b{i}"], activation)
        for i, activation in enumerate(_bench.TUTORIAL_ACTIVATIONS, 1)
    ]
    one_scaled = scaled[:1].copy()
    return flat[:1].copy(), one_scaled, weights, layers, reference.forward(layers, one_scaled)


def test_mnist_one_fastmlp_uint8(benchmark, record, mnist_one):
    pixels, _, weights, _, expected = mnist_one
    model = fastmlp.MLP.from_dict(weights, input_scale=PIXEL_SCALE)
    result = measure(benchmark, model.predict_proba, pixels, rows=1, group="mnist-1")
    close(result, expected)
    record()


def test_mnist_one_fastmlp_float32(benchmark, record, mnist_one):
    _, scaled, weights, _, expected = mnist_one
    model = fastmlp.MLP.from_dict(weights)
    result = measure(benchmark, model.predict_proba, scaled, rows=1, group="mnist-1")
    close(result, expected)
    record()


def test_mnist_one_numpy_reference(benchmark, record, timings, derived, mnist_one):
    _, scaled, _, layers, expected = mnist_one
    result = measure(benchmark, reference.forward, layers, scaled, rows=1, group="mnist-1")
    close(result, expected)
    seconds = record()
    note_ratio(
        derived,
        timings,
        "mnist-1",
        "test_mnist_one_fastmlp_float32",
        seconds,
        "numpy reference / fastmlp float32",
    )


def test_mnist_one_onnxruntime(benchmark, record, timings, derived, threads, mnist_one):
    pytest.importorskip(
        "onnxruntime", reason='ONNX Runtime is not installed (pip install "fastmlp[bench]")'
    )
    pytest.importorskip("onnx", reason='onnx is not installed (pip install "fastmlp[bench]")')
    _, scaled, _, layers, expected = mnist_one
    run = _bench.onnxruntime_forward(layers, threads)
    result = measure(benchmark, run, scaled, rows=1, group="mnist-1")
    close(result, expected)
    seconds = record()
    for name, label in (
        ("test_mnist_one_fastmlp_float32", "onnxruntime / fastmlp float32"),
        ("test_mnist_one_fastmlp_uint8", "onnxruntime / fastmlp uint8"),
    ):
        note_ratio(derived, timings, "mnist-1", name, seconds, label)
