"""``fastmlp predict``: a network over a .npy, IDX or CSV file, chunk by chunk, into a .npy."""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataFormatError
from .common import (
    CommandError,
    UsageError,
    add_model_options,
    cleans_up_on_sigterm,
    describe,
    load_model,
    positive_int,
    refuse_overwriting_inputs,
    write_error,
)

PREDICT_DESCRIPTION = (
    "Run a network over a data file and write its outputs (or labels) as a .npy. IN is "
    "recognised by content: a .npy (memory-mapped, processed chunk by chunk, so it may be "
    "larger than memory), an IDX file (gzip or raw, as MNIST's) or CSV text of numbers. OUT "
    "is written chunk by chunk to a temporary file renamed into place at the end, so a failure "
    "never leaves a partial file."
)
# The progress line is redrawn at most this often: often enough to look live, rarely enough
# that drawing it costs nothing next to the work.
PROGRESS_INTERVAL_SECONDS = 0.1


def add_parser(commands: Any) -> None:
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
    add_model_options(predict)
    predict.add_argument(
        "--threads",
        metavar="N",
        type=positive_int,
        help="threads (default: all available cores)",
    )
    predict.add_argument(
        "--chunk-rows",
        metavar="N",
        type=positive_int,
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
    from .._formats import sniff
    from ..datasets import read_csv, read_idx, read_npy

    try:
        kind = sniff.kind_of(*sniff.read_head(path))
    except OSError as exc:
        raise CommandError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from exc
    if kind not in ("npy", "zip", "gzip", "idx"):
        kind = "csv"  # whatever else it starts with: CSV's reader says what is wrong
    if csv_label_column is not None and kind != "csv":
        raise UsageError(
            f"--csv-label-column applies to CSV input only, and {str(path)!r} is not text"
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


@cleans_up_on_sigterm
def run(options: argparse.Namespace) -> int:
    from .._formats.atomic import write_atomically
    from .._mapped import release_pages, row_chunks, rows_per_chunk

    source, destination = options.input, options.output_file
    refuse_overwriting_inputs(destination, {"IN": source, "the model": options.model})
    model = load_model(options.model, options)
    if options.labels and model.out_activation_ == "identity":
        raise UsageError(
            "--labels needs a classifier (softmax or sigmoid output), but this model's output "
            "layer is identity (a regressor): leave out --labels to write its outputs"
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
        raise write_error(destination, exc) from exc
    print(
        f"wrote {destination}: {what} of shape {shape}, {dtype.name}, from {n_rows:,} rows of "
        f"{kind} input through the {describe(model)}"
    )
    return 0
