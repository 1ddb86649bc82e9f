"""``fastmlp demo``: the tutorial's MNIST evaluation three ways (NumPy one image per call,
NumPy 100 images per call, fastmlp in one call) on raw pixels and on pixels / 255, with
accuracy, time, speed-up and the largest difference from the stable NumPy reference. Without
weights or data it runs offline on fixed-seed random weights and images.
"""

from __future__ import annotations

import argparse
import math
import textwrap
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import reference
from ..datasets import KERAS_MNIST_PATH, load_mnist
from ..errors import DataFormatError, WeightsFormatError
from .common import CommandError, positive_int

DEFAULT_WEIGHTS_NAME = "sample_weight.pkl"  # the book runs ch03 with this file beside it
OFFLINE_SEED = 0
OFFLINE_SAMPLES = 10_000
PIXEL_SCALE = 1 / 255
TUTORIAL_BATCH_SIZE = 100
MAX_ERROR_DIGITS = 40
# Each method is timed until this much time has gone by (at most MAX_RUNS runs), and the
# fastest run is kept, so quick methods are not judged on one noisy sample.
TIMING_BUDGET_SECONDS = 0.3
MAX_RUNS = 5
NOTE_WIDTH = 100
COLUMN_LEGEND = (
    "agrees w/ ref: predictions equal to those of the stable NumPy reference "
    "(fastmlp.reference.forward); max |Δp|: the largest difference from its outputs."
)
REAL_MNIST_HINT = "fastmlp demo --weights sample_weight.pkl --data DIR_OR_mnist.npz"


def add_parser(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="reproduce the MNIST tutorial: NumPy loops vs fastmlp",
        description=(
            "Reproduce the tutorial (the 784-50-100-10 sigmoid network of 'Deep Learning from "
            "Scratch' on the 10,000 MNIST test images) with NumPy one image per call, 100 per "
            "call, and fastmlp in one call; on raw pixels and on pixels / 255. Without weights "
            "and data it runs offline on fixed-seed random ones."
        ),
    )
    demo.add_argument(
        "--weights",
        metavar="PATH",
        type=Path,
        help=f"the network: the book's {DEFAULT_WEIGHTS_NAME} or a .npz of W1, b1, ... "
        f"(default: ./{DEFAULT_WEIGHTS_NAME} if present)",
    )
    demo.add_argument(
        "--data",
        metavar="PATH",
        type=Path,
        help="MNIST: a folder of t10k-*-idx*-ubyte[.gz] files or a Keras mnist.npz "
        f"(default: {KERAS_MNIST_PATH} if present)",
    )
    demo.add_argument(
        "--save-errors",
        metavar="PNG",
        type=Path,
        help=f"write a grid of up to {MAX_ERROR_DIGITS} misclassified digits (needs matplotlib)",
    )
    demo.add_argument(
        "--threads",
        metavar="N",
        type=positive_int,
        help="threads for fastmlp (default: all available cores)",
    )


# --- Inputs ----------------------------------------------------------------------------------


@dataclass
class _DemoInputs:
    network: dict[str, np.ndarray]
    images: np.ndarray  # (N, 28, 28) or (N, K) uint8
    labels: np.ndarray | None  # None on random images: nothing to score against
    weights_source: str
    data_source: str
    notes: list[str]


def _read_network(path: Path | None) -> tuple[dict[str, np.ndarray] | None, str]:
    from .._formats import read_weights

    if path is None:
        if not Path(DEFAULT_WEIGHTS_NAME).is_file():
            return None, ""
        path = Path(DEFAULT_WEIGHTS_NAME)
    try:
        network = read_weights(path)
    except (OSError, WeightsFormatError) as exc:
        raise CommandError(f"cannot read weights from {str(path)!r}: {exc}") from exc
    dtypes = ", ".join(sorted({array.dtype.name for array in network.values()}))
    return network, f"{path} ({len(network)} {dtypes} arrays)"


def _read_mnist(path: Path | None) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    shown = path if path is not None else KERAS_MNIST_PATH
    try:
        images, labels = load_mnist(path)
    except FileNotFoundError as exc:
        if path is None:
            return None, None, ""
        raise CommandError(str(exc)) from exc
    except (OSError, DataFormatError) as exc:
        raise CommandError(f"cannot read MNIST from {str(shown)!r}: {exc}") from exc
    shape = "x".join(str(size) for size in images.shape[1:])
    return images, labels, f"{shown} ({len(images):,} images {shape} uint8, with labels)"


def _random_network() -> dict[str, np.ndarray]:
    from .._bench import tutorial_shaped_layers

    layers = tutorial_shaped_layers(seed=OFFLINE_SEED, dtype=np.float32)
    network = {}
    for index, (W, b, _) in enumerate(layers, start=1):
        network[f"W{index}"], network[f"b{index}"] = W, b
    return network


def _random_images(n_features: int) -> np.ndarray:
    rng = np.random.default_rng(OFFLINE_SEED)
    shape = (OFFLINE_SAMPLES, 28, 28) if n_features == 28 * 28 else (OFFLINE_SAMPLES, n_features)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def _gather_inputs(options: argparse.Namespace) -> _DemoInputs:
    network, weights_source = _read_network(options.weights)
    images, labels, data_source = _read_mnist(options.data)
    notes = []
    if network is None:
        network = _random_network()
        weights_source = (
            f"random 784-50-100-10 sigmoid network (seed {OFFLINE_SEED}, N(0, 1/fan_in) float32)"
        )
        if images is not None:
            notes.append("no weights given: with random weights, accuracy is at chance level")
    n_features = int(network["W1"].shape[0])
    if images is None:
        images = _random_images(n_features)
        data_source = f"{len(images):,} random uint8 images (seed {OFFLINE_SEED}), no labels"
        if options.weights is not None:
            notes.append(
                f"no MNIST data found (no --data, nothing at {KERAS_MNIST_PATH}): running the "
                "given weights on random images, so there is no accuracy to report"
            )
    pixels = int(np.prod(images.shape[1:]))
    if pixels != n_features:
        raise CommandError(
            f"the network takes {n_features} inputs (W1 is {network['W1'].shape}) but each "
            f"image has {pixels} pixels"
        )
    return _DemoInputs(network, images, labels, weights_source, data_source, notes)


# --- Measuring -------------------------------------------------------------------------------


@dataclass
class _Measurement:
    method: str
    predictions: np.ndarray
    proba: np.ndarray
    seconds: float
    runtime_warnings: list[warnings.WarningMessage]


def _measure(method: str, run: Callable[[], tuple[np.ndarray, np.ndarray]]) -> _Measurement:
    """Time ``run`` (best of several), recording the RuntimeWarnings of its first run."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        predictions, proba = run()
        best = time.perf_counter() - start
    runtime_warnings = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    spent, runs = best, 1
    # Later runs leave the warnings out: their bookkeeping is not the method's own cost.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        while spent < TIMING_BUDGET_SECONDS and runs < MAX_RUNS:
            start = time.perf_counter()
            run()
            elapsed = time.perf_counter() - start
            best, spent, runs = min(best, elapsed), spent + elapsed, runs + 1
    return _Measurement(method, predictions, proba, best, runtime_warnings)


@dataclass
class _Condition:
    title: str
    measurements: list[_Measurement]
    reference_proba: np.ndarray


def _evaluate_condition(inputs: _DemoInputs, *, scaled: bool, threads: int | None) -> _Condition:
    from .._model import MLP

    network, images = inputs.network, inputs.images
    input_scale = PIXEL_SCALE if scaled else None
    try:
        model = MLP.from_dict(network, input_scale=input_scale)
    except (ValueError, TypeError) as exc:
        raise CommandError(f"the weights do not form a network: {exc}") from exc
    layers = list(zip(model.coefs_, model.intercepts_, model.activations))
    reference_proba = reference.forward(layers, images, input_scale=input_scale)
    # The tutorial divides float32 pixels (x.astype(np.float32) / 255); fastmlp takes the
    # uint8 images as they are and scales them inside its kernel.
    tutorial_x = images.reshape(len(images), -1)
    if scaled:
        tutorial_x = tutorial_x.astype(np.float32) / 255
    # Without labels the loops score against the reference, which is what the column shows.
    targets = inputs.labels if inputs.labels is not None else reference_proba.argmax(axis=1)

    def per_sample() -> tuple[np.ndarray, np.ndarray]:
        _, predictions, proba = reference.tutorial_accuracy_per_sample(
            network, tutorial_x, targets, return_proba=True
        )
        return predictions, proba

    def batched() -> tuple[np.ndarray, np.ndarray]:
        _, predictions, proba = reference.tutorial_accuracy_batched(
            network, tutorial_x, targets, TUTORIAL_BATCH_SIZE, return_proba=True
        )
        return predictions, proba

    def whole_batch() -> tuple[np.ndarray, np.ndarray]:
        proba = model.predict_proba(images, threads=threads)
        return proba.argmax(axis=1), proba

    if scaled:
        title = "pixels / 255 (NumPy: x.astype(float32) / 255; fastmlp: uint8, input_scale=1/255)"
    else:
        title = "raw pixels 0..255 (NumPy and fastmlp both fed the uint8 images)"
    measurements = [
        _measure("tutorial NumPy, 1 image/call", per_sample),
        _measure(f"tutorial NumPy, {TUTORIAL_BATCH_SIZE} images/call", batched),
        _measure("fastmlp, all images in 1 call", whole_batch),
    ]
    return _Condition(title, measurements, reference_proba)


# --- Reporting -------------------------------------------------------------------------------


def _format_seconds(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    milliseconds = seconds * 1e3
    # Compare after rounding so that 9.996 ms prints as "10.0 ms", not "10.00 ms".
    return f"{milliseconds:.2f} ms" if round(milliseconds, 2) < 10 else f"{milliseconds:.1f} ms"


def _format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> str:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]

    def line(cells: Sequence[str]) -> str:
        # The first column (the method) reads left to right; numbers line up on the right.
        padded = [cells[0].ljust(widths[0])]
        padded += [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:])]
        return indent + "   ".join(padded).rstrip()

    rule = indent + "   ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule] + [line(row) for row in rows])


def _condition_table(condition: _Condition, labels: np.ndarray | None) -> str:
    reference_predictions = condition.reference_proba.argmax(axis=1)
    baseline = condition.measurements[0].seconds
    headers = ["method"]
    if labels is not None:
        headers.append("accuracy")
    headers += ["agrees w/ ref", "time", "speed-up", "max |Δp|"]
    rows = []
    for measurement in condition.measurements:
        row = [measurement.method]
        if labels is not None:
            row.append(f"{np.mean(measurement.predictions == labels):.4f}")
        agreeing = int(np.sum(measurement.predictions == reference_predictions))
        largest_difference = float(np.max(np.abs(measurement.proba - condition.reference_proba)))
        row += [
            f"{agreeing}/{len(reference_predictions)}",
            _format_seconds(measurement.seconds),
            f"{baseline / measurement.seconds:.1f}x",
            f"{largest_difference:.1e}",
        ]
        rows.append(row)
    return _format_table(headers, rows)


def _trap_notes(raw: _Condition, scaled: _Condition) -> list[str]:
    per_sample, batched = raw.measurements[:2]
    overflow_counts = [
        sum("overflow encountered in exp" in str(w.message) for w in m.runtime_warnings)
        for m in (per_sample, batched)
    ]
    fastmlp_warnings = sum(
        len(condition.measurements[-1].runtime_warnings) for condition in (raw, scaled)
    )
    tutorial_sums = scaled.measurements[1].proba.sum(axis=1, dtype=np.float64)
    fastmlp_sums = scaled.measurements[-1].proba.sum(axis=1, dtype=np.float64)
    overflow_note = (
        f"overflow: on raw pixels the tutorial's sigmoid 1/(1+np.exp(-x)) warned \"overflow "
        f'encountered in exp" {overflow_counts[0]:,} times at 1 image per call and '
        f"{overflow_counts[1]:,} times at {TUTORIAL_BATCH_SIZE} per call; fastmlp: "
        f"{fastmlp_warnings} warnings."
    )
    softmax_note = (
        f"softmax: the tutorial's ch.3 softmax takes max and sum over the whole batch, so at "
        f"{TUTORIAL_BATCH_SIZE} images per call its rows sum to {tutorial_sums.min():.3g} .. "
        f"{tutorial_sums.max():.3g}, not 1 (hence its large |Δp|; argmax is unaffected); "
        f"fastmlp's rows sum to 1 ± {np.max(np.abs(fastmlp_sums - 1)):.1e}."
    )
    return [
        textwrap.fill(note, NOTE_WIDTH, initial_indent="- ", subsequent_indent="  ")
        for note in (overflow_note, softmax_note)
    ]


def _save_misclassified(
    path: Path, images: np.ndarray, labels: np.ndarray, predictions: np.ndarray
) -> str:
    from matplotlib.figure import Figure  # no pyplot: no GUI backend is ever touched

    wrong = np.flatnonzero(predictions != labels)
    shown = wrong[:MAX_ERROR_DIGITS]
    columns = 10
    rows = max(1, -(-len(shown) // columns))
    figure = Figure(figsize=(columns * 1.1, rows * 1.3), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    for ax in axes:
        ax.set_axis_off()
    side = math.isqrt(images[0].size)
    for ax, index in zip(axes, shown):
        ax.imshow(images[index].reshape(side, side), cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(f"{labels[index]} → {predictions[index]}", fontsize=10)
    figure.suptitle(f"misclassified (true → predicted): {len(shown)} of {len(wrong)}")
    try:
        figure.savefig(path, dpi=100)
    except OSError as exc:
        raise CommandError(f"cannot write {str(path)!r}: {exc}") from exc
    return f"saved {len(shown)} of {len(wrong)} misclassified digits (pixels / 255) to {path}"


def _header(inputs: _DemoInputs, threads: int | None, offline: bool) -> str:
    import fastmlp

    n_layers = len(inputs.network) // 2
    sizes = [inputs.network["W1"].shape[0]]
    sizes += [inputs.network[f"W{i}"].shape[1] for i in range(1, n_layers + 1)]
    heading = "fastmlp demo (offline)" if offline else "fastmlp demo"
    engine = f"{fastmlp.__version__}, {fastmlp.cpu_level()} kernels"
    engine += f", threads: {threads or 'default'}"
    lines = [
        f"{heading}: a {'-'.join(map(str, sizes))} network on {len(inputs.images):,} images",
        f"  weights: {inputs.weights_source}",
        f"  data:    {inputs.data_source}",
        f"  fastmlp: {engine}; times are the best of up to {MAX_RUNS} runs",
    ]
    if offline:
        lines.append(f"  For real MNIST: {REAL_MNIST_HINT}")
    lines += [f"  note: {note}" for note in inputs.notes]
    return "\n".join(lines)


def run(options: argparse.Namespace) -> int:
    if options.save_errors is not None:
        from .._optional import import_optional

        try:  # checked now, before minutes of work
            import_optional("matplotlib", extra="plot", needed_by="--save-errors")
        except ImportError as error:
            raise CommandError(str(error)) from None
    inputs = _gather_inputs(options)
    if options.save_errors is not None and inputs.labels is None:
        raise CommandError("--save-errors needs labelled MNIST data: pass --data")
    offline = inputs.labels is None and options.weights is None
    print(_header(inputs, options.threads, offline))

    raw = _evaluate_condition(inputs, scaled=False, threads=options.threads)
    scaled = _evaluate_condition(inputs, scaled=True, threads=options.threads)
    for condition in (raw, scaled):
        print()
        print(condition.title)
        print(_condition_table(condition, inputs.labels))
    print()
    print(textwrap.fill(COLUMN_LEGEND, NOTE_WIDTH))
    print("\n".join(_trap_notes(raw, scaled)))
    if options.save_errors is not None:
        assert inputs.labels is not None  # checked above
        print(
            _save_misclassified(
                options.save_errors,
                inputs.images,
                inputs.labels,
                scaled.measurements[-1].predictions,
            )
        )
    return 0
