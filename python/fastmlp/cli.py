"""The ``fastmlp`` command: ``demo`` reproduces the tutorial, ``bench`` times peers, ``predict``
runs a network over a data file, ``convert`` rewrites a weights file as ``.npz``/``.safetensors``,
``info`` describes the install (and ``--version``).

``fastmlp demo`` runs the tutorial's MNIST evaluation three ways (NumPy one image per call,
NumPy 100 images per call, fastmlp in one call) on raw pixels and on pixels / 255, and prints
accuracy, time, speed-up and the largest difference from the stable NumPy reference. Without
weights or data it runs offline on fixed-seed random weights and images.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import signal
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import reference
from ._info import run_info, version_line
from .datasets import KERAS_MNIST_PATH, load_mnist
from .errors import DataFormatError, WeightsFormatError

__all__ = ["main"]

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


class DemoError(Exception):
    """A problem the user can fix (a missing or unreadable file): reported without traceback."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastmlp",
        description="Fast inference for small dense neural networks (MLPs) on the CPU.",
    )
    parser.add_argument("--version", action="version", version=version_line())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser(
        "info",
        help="print versions, the CPU, dispatch level, threads and build: for bug reports",
        description="Print what a bug report needs: the fastmlp, Python and NumPy versions, "
        "the CPU model, the instruction-set level and the features dispatch checked, the "
        "default thread count, and how the compiled core was built.",
    )
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
        type=_positive_int,
        help="threads for fastmlp (default: all available cores)",
    )
    # `bench` is dispatched before parsing (see main) so that all its options pass through.
    commands.add_parser(
        "bench",
        add_help=False,
        help="time fastmlp against NumPy and other engines (fastmlp bench --help)",
    )
    _add_predict_parser(commands)
    _add_convert_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fastmlp`` command line.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name. Default: ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit code: 0 on success, 1 when a file is missing or unreadable, 2 for usage
        errors.

    Raises
    ------
    SystemExit
        From argparse, for ``--help`` and malformed options.

    Examples
    --------
    >>> main(["demo"])  # doctest: +SKIP
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["bench"]:
        from ._bench import main as bench_main

        return bench_main(arguments[1:])
    parser = _build_parser()
    options = parser.parse_args(arguments)
    if options.command is None:
        parser.print_help(sys.stderr)
        return 2
    if options.command == "info":
        return run_info()
    if options.command in ("predict", "convert"):
        runner = _run_predict if options.command == "predict" else _run_convert
        try:
            return runner(options)
        except CommandError as exc:
            print(f"fastmlp {options.command}: error: {exc}", file=sys.stderr)
            return exc.exit_code
    try:
        return _run_demo(options)
    except DemoError as exc:
        print(f"fastmlp demo: error: {exc}", file=sys.stderr)
        return 1


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
    from ._formats import read_weights

    if path is None:
        if not Path(DEFAULT_WEIGHTS_NAME).is_file():
            return None, ""
        path = Path(DEFAULT_WEIGHTS_NAME)
    try:
        network = read_weights(path)
    except (OSError, WeightsFormatError) as exc:
        raise DemoError(f"cannot read weights from {str(path)!r}: {exc}") from exc
    dtypes = ", ".join(sorted({array.dtype.name for array in network.values()}))
    return network, f"{path} ({len(network)} {dtypes} arrays)"


def _read_mnist(path: Path | None) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    shown = path if path is not None else KERAS_MNIST_PATH
    try:
        images, labels = load_mnist(path)
    except FileNotFoundError as exc:
        if path is None:
            return None, None, ""
        raise DemoError(str(exc)) from exc
    except (OSError, DataFormatError) as exc:
        raise DemoError(f"cannot read MNIST from {str(shown)!r}: {exc}") from exc
    shape = "x".join(str(size) for size in images.shape[1:])
    return images, labels, f"{shown} ({len(images):,} images {shape} uint8, with labels)"


def _random_network() -> dict[str, np.ndarray]:
    from ._bench import tutorial_shaped_layers

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
        raise DemoError(
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
    from ._model import MLP

    network, images = inputs.network, inputs.images
    input_scale = PIXEL_SCALE if scaled else None
    try:
        model = MLP.from_dict(network, input_scale=input_scale)
    except (ValueError, TypeError) as exc:
        raise DemoError(f"the weights do not form a network: {exc}") from exc
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
        raise DemoError(f"cannot write {str(path)!r}: {exc}") from exc
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


def _run_demo(options: argparse.Namespace) -> int:
    if options.save_errors is not None:
        from ._optional import import_optional

        try:  # checked now, before minutes of work
            import_optional("matplotlib", extra="plot", needed_by="--save-errors")
        except ImportError as error:
            raise DemoError(str(error)) from None
    inputs = _gather_inputs(options)
    if options.save_errors is not None and inputs.labels is None:
        raise DemoError("--save-errors needs labelled MNIST data: pass --data")
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


# --- predict and convert ---------------------------------------------------------------------

PREDICT_DESCRIPTION = (
    "Run a network over a data file and write its outputs (or labels) as a .npy. IN is "
    "recognised by content: a .npy (memory-mapped, processed chunk by chunk, so it may be "
    "larger than memory), an IDX file (gzip or raw, as MNIST's) or CSV text of numbers. OUT "
    "is written chunk by chunk to a temporary file renamed into place at the end, so a failure "
    "never leaves a partial file."
)
CONVERT_DESCRIPTION = (
    "Read a weights file that fastmlp.load reads (.npz, .safetensors, the book's pickle, a "
    "PyTorch checkpoint, ONNX) and write it as .npz or .safetensors with its activations and "
    "input scale recorded, so that fastmlp.load(OUT) needs no options."
)
# The progress line is redrawn at most this often: often enough to look live, rarely enough
# that drawing it costs nothing next to the work.
PROGRESS_INTERVAL_SECONDS = 0.1


class CommandError(Exception):
    """A problem the user can fix, reported as ``fastmlp COMMAND: error: ...`` with an exit code.

    Exit code 1: a file is missing, unreadable or does not fit; 2: the options do not work
    together (argparse's own usage errors exit with 2 as well).
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _activation_name(text: str) -> str:
    from ._common import ACTIVATIONS

    name = text.strip()
    if name not in ACTIVATIONS:
        raise argparse.ArgumentTypeError(
            f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}"
        )
    return name


def _activation_list(text: str) -> list[str]:
    return [_activation_name(name) for name in text.split(",")]


def _input_scale(text: str) -> float:
    # "1/255" is accepted as well as "0.00392...": the fraction is what people think of.
    numerator, slash, denominator = text.partition("/")
    try:
        value = float(numerator) / float(denominator) if slash else float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(
            f"expected a number such as 0.5 or 1/255, got {text!r}"
        ) from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--hidden",
        metavar="A",
        type=_activation_name,
        help="activation of every hidden layer, for files that do not record it "
        "(default: the file's, else sigmoid)",
    )
    parser.add_argument(
        "--output",
        metavar="A",
        type=_activation_name,
        help="activation of the output layer (default: the file's, else softmax)",
    )
    parser.add_argument(
        "--activations",
        metavar="A,B,C",
        type=_activation_list,
        help="one activation per layer, comma-separated; instead of --hidden/--output",
    )
    parser.add_argument(
        "--input-scale",
        metavar="X",
        type=_input_scale,
        help="factor applied to every input value, e.g. 1/255 for raw pixels "
        "(default: the file's, else none)",
    )


def _add_predict_parser(commands: Any) -> None:
    predict = commands.add_parser(
        "predict",
        help="run a network over a .npy, IDX or CSV file, writing a .npy",
        description=PREDICT_DESCRIPTION,
    )
    predict.add_argument("input", metavar="IN", type=Path, help="the data: .npy, IDX or CSV")
    predict.add_argument("output_file", metavar="OUT", type=Path, help="the .npy to write")
    predict.add_argument(
        "--model", metavar="PATH", type=Path, required=True, help="the weights file"
    )
    predict.add_argument(
        "--labels",
        action="store_true",
        help="write the predicted labels (int64, shape (N,)) instead of the outputs",
    )
    _add_model_options(predict)
    predict.add_argument(
        "--threads",
        metavar="N",
        type=_positive_int,
        help="threads (default: all available cores)",
    )
    predict.add_argument(
        "--chunk-rows",
        metavar="N",
        type=_positive_int,
        help="rows per chunk (default: about 64 MiB of input)",
    )
    predict.add_argument(
        "--csv-label-column",
        metavar="COL",
        help="CSV input only: a column to leave out (the labels), by 0-based index or header "
        "name (default: every column is a feature)",
    )
    predict.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show rows done and rows/s on stderr (default: when stderr is a terminal)",
    )


def _add_convert_parser(commands: Any) -> None:
    convert = commands.add_parser(
        "convert",
        help="rewrite a weights file as .npz or .safetensors, activations included",
        description=CONVERT_DESCRIPTION,
    )
    convert.add_argument("input", metavar="IN", type=Path, help="the weights file to read")
    convert.add_argument("output_file", metavar="OUT", type=Path, help="the file to write")
    convert.add_argument(
        "--format",
        choices=("npz", "safetensors"),
        help="the format to write (default: from OUT's suffix, .npz or .safetensors)",
    )
    _add_model_options(convert)


def _load_model(path: Path, options: argparse.Namespace) -> Any:
    from ._formats import load

    if options.activations is not None and (
        options.hidden is not None or options.output is not None
    ):
        raise CommandError(
            "give either --activations (one name per layer) or --hidden/--output, not both",
            exit_code=2,
        )
    try:
        return load(
            path,
            hidden=options.hidden,
            output=options.output,
            activations=options.activations,
            input_scale=options.input_scale,
        )
    except WeightsFormatError as exc:
        raise CommandError(f"cannot read the model {str(path)!r}: {exc}") from exc
    except (ValueError, TypeError) as exc:
        # The file is fine but the options do not fit it (activations missing for a PyTorch
        # checkpoint, one name too many, an unknown name): a usage error, said in the
        # command line's words rather than load()'s keyword arguments.
        message = str(exc)
        for keyword, option in _OPTION_NAMES:
            message = message.replace(keyword, option)
        if str(path) not in message:
            message = f"the model {str(path)!r}: {message}"
        # Only the activations are the caller's to fix with options; anything else (layers
        # that do not chain, say) is the file's problem.
        raise CommandError(message, exit_code=2 if "activation" in message else 1) from exc
    except (OSError, ImportError) as exc:
        raise CommandError(f"cannot read the model {str(path)!r}: {exc}") from exc


# load()'s keyword arguments as they appear in its messages, and the options that set them.
_OPTION_NAMES = (
    ("activations=[...]", "--activations A,B,..."),
    ("activations=", "--activations "),
    ("hidden=/output=", "--hidden/--output"),
    ("hidden= and output=", "--hidden and --output"),
    ("input_scale=", "--input-scale "),
)


def _describe(model: Any) -> str:
    sizes = "-".join(str(n) for n in [model.n_features_in_] + [W.shape[1] for W in model.coefs_])
    scale = "" if model.input_scale is None else f", input scale {model.input_scale:g}"
    return f"{sizes} {model.dtype.name} network ({', '.join(model.activations)}{scale})"


class _Progress:
    """A one-line progress display: rows done of the total, percentage and rows per second."""

    def __init__(self, total: int, stream: Any, enabled: bool) -> None:
        self._total = total
        self._stream = stream
        self._enabled = enabled
        self._start = time.perf_counter()
        self._last_drawn = -math.inf
        self._last_width = 0

    def _draw(self, done: int, end: str) -> None:
        elapsed = time.perf_counter() - self._start
        rate = f"{done / elapsed:,.0f} rows/s" if elapsed > 0 else "- rows/s"
        percent = 100.0 * done / self._total if self._total else 100.0
        text = f"fastmlp predict: {done:,} / {self._total:,} rows ({percent:5.1f}%), {rate}"
        # Spaces cover what is left of a longer previous line (the rate can shrink).
        self._stream.write(f"\r{text.ljust(self._last_width)}{end}")
        self._last_width = len(text)
        self._stream.flush()

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if self._enabled and now - self._last_drawn >= PROGRESS_INTERVAL_SECONDS:
            self._last_drawn = now
            self._draw(done, "")

    def close(self, done: int) -> None:
        if self._enabled:
            self._draw(done, "\n")


def _read_input(path: Path, csv_label_column: str | None) -> tuple[np.ndarray, str]:
    from ._formats import sniff
    from .datasets import read_csv, read_idx, read_npy

    try:
        kind = sniff.kind_of(*sniff.read_head(path))
    except OSError as exc:
        raise CommandError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from exc
    if kind not in ("npy", "zip", "gzip", "idx"):
        kind = "csv"  # whatever else it starts with: CSV's reader says what is wrong
    if csv_label_column is not None and kind != "csv":
        raise CommandError(
            f"--csv-label-column applies to CSV input only, and {str(path)!r} is not text",
            exit_code=2,
        )
    try:
        if kind == "npy":
            return read_npy(path, mmap=True), "npy"
        if kind == "zip":
            raise CommandError(
                f"{str(path)!r} is a zip archive (an .npz?); expected a .npy, IDX or CSV file "
                "(save one array with np.save)"
            )
        if kind in ("gzip", "idx"):
            return read_idx(path), "IDX"
        label: int | str | None = csv_label_column
        if csv_label_column is not None and csv_label_column.lstrip("-").isdigit():
            label = int(csv_label_column)
        features, _ = read_csv(path, label_column=label)
        return features, "CSV"
    except (OSError, DataFormatError) as exc:
        raise CommandError(f"cannot read {str(path)!r}: {exc}") from exc


def _check_rows(X: np.ndarray, model: Any, path: Path) -> None:
    expected = model.n_features_in_
    if X.ndim < 2:
        raise CommandError(
            f"{str(path)!r} holds an array of shape {X.shape}; expected rows, shape "
            f"(N, {expected}) or (N, ...) with {expected} values per row"
        )
    if X.dtype.kind not in "fiu":
        raise CommandError(
            f"{str(path)!r} holds {X.dtype} data; expected numbers (uint8, float32, float64, ...)"
        )
    per_row = math.prod(X.shape[1:])
    if per_row != expected:
        raise CommandError(
            f"{str(path)!r} has {per_row} values per row (shape {X.shape}) but the model "
            f"takes {expected} inputs"
        )


def _file_identity(path: Path) -> tuple[int, int] | None:
    """The (device, inode) of the file ``path`` names, through symbolic links; None if absent."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _refuse_overwriting_inputs(output: Path, inputs: dict[str, Path]) -> None:
    """A usage error if OUT is one of the inputs (the model included), however it is spelled.

    Compared by device and inode, so ``./x``, a symbolic link and a hard link to an input are
    caught as well as the same name: writing OUT would otherwise replace that input.
    """
    written = _file_identity(output)
    if written is None:
        return
    for role, path in inputs.items():
        if _file_identity(path) == written:
            same = "" if str(path) == str(output) else f" ({str(output)!r} is {str(path)!r})"
            raise CommandError(
                f"OUT and {role} are the same file{same}; writing OUT would destroy {role}: "
                "give another OUT",
                exit_code=2,
            )


class _Terminated(BaseException):
    """SIGTERM arrived: unwinds like Ctrl-C, so that every ``finally`` removes its files."""


_TERMINATED_EXIT_CODE = 128 + signal.SIGTERM  # what a shell reports for a process killed so


def _cleans_up_on_sigterm(run: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    """Run a command with SIGTERM turned into an exception for its duration.

    ``kill``, ``timeout`` and ``docker stop`` send SIGTERM, whose default action ends the
    process at once and leaves a half-written temporary file behind. The previous handler is
    restored afterwards, so that a program calling :func:`main` keeps its own.
    """

    @functools.wraps(run)
    def wrapper(options: argparse.Namespace) -> int:
        if threading.current_thread() is not threading.main_thread():
            return run(options)  # signal handlers can only be set from the main thread

        def terminate(signum: int, frame: Any) -> None:
            raise _Terminated

        previous = signal.signal(signal.SIGTERM, terminate)
        try:
            return run(options)
        except _Terminated:
            print(f"fastmlp {options.command}: terminated; OUT was not written", file=sys.stderr)
            return _TERMINATED_EXIT_CODE
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)

    return wrapper


def _write_error(destination: Path, exc: OSError) -> CommandError:
    return CommandError(f"cannot write {str(destination)!r}: {exc.strerror or exc}")


@_cleans_up_on_sigterm
def _run_predict(options: argparse.Namespace) -> int:
    from ._formats.atomic import write_atomically
    from ._mapped import release_pages, row_chunks, rows_per_chunk

    source, destination = options.input, options.output_file
    _refuse_overwriting_inputs(destination, {"IN": source, "the model": options.model})
    model = _load_model(options.model, options)
    if options.labels and model.out_activation_ == "identity":
        raise CommandError(
            "--labels needs a classifier (softmax or sigmoid output), but this model's output "
            "layer is identity (a regressor): leave out --labels to write its outputs",
            exit_code=2,
        )
    X, kind = _read_input(source, options.csv_label_column)
    _check_rows(X, model, source)
    n_rows = X.shape[0]
    shape: tuple[int, ...]
    if options.labels:
        dtype, shape, what = np.dtype(np.int64), (n_rows,), "labels"
    else:
        dtype, shape, what = model.dtype, (n_rows, model.n_outputs_), "outputs"
    chunk_rows = options.chunk_rows or rows_per_chunk(X)
    enabled = sys.stderr.isatty() if options.progress is None else options.progress
    progress = _Progress(n_rows, sys.stderr, enabled)

    # Ordinary writes, not a memory map of a sparse file: on a full disk a write through a map
    # is a SIGBUS that kills the process, where write() returns an error to report.
    def write(file: Any) -> None:
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False}
        np.lib.format.write_array_header_1_0(file, dict(header, shape=shape))
        if not options.labels:
            buffer = np.empty((min(chunk_rows, n_rows), model.n_outputs_), dtype=dtype)
        for rows in row_chunks(n_rows, chunk_rows):
            chunk = X[rows]
            if options.labels:
                result = model.predict(chunk, threads=options.threads)
            else:
                result = buffer[: rows.stop - rows.start]
                model.predict_proba(chunk, threads=options.threads, out=result)
            file.write(memoryview(np.ascontiguousarray(result)).cast("B"))
            # The input's pages need not stay in memory once read.
            release_pages(chunk)
            progress.update(rows.stop)
        progress.close(n_rows)

    try:
        write_atomically(destination, write)
    except OSError as exc:
        raise _write_error(destination, exc) from exc
    print(
        f"wrote {destination}: {what} of shape {shape}, {dtype.name}, from {n_rows:,} rows of "
        f"{kind} input through the {_describe(model)}"
    )
    return 0


@_cleans_up_on_sigterm
def _run_convert(options: argparse.Namespace) -> int:
    from ._formats import SAVE_FORMATS, save

    source, destination = options.input, options.output_file
    _refuse_overwriting_inputs(destination, {"IN": source})
    chosen = options.format
    if chosen is None:
        chosen = SAVE_FORMATS.get(destination.suffix.lower())
        if chosen is None:
            raise CommandError(
                f"cannot tell the format from the name {str(destination)!r}: use the suffix "
                ".npz or .safetensors, or --format npz|safetensors",
                exit_code=2,
            )
    model = _load_model(source, options)
    try:
        save(model, destination, format=chosen)
    except OSError as exc:
        raise _write_error(destination, exc) from exc
    print(f"wrote {destination} ({chosen}): {_describe(model)}")
    return 0
