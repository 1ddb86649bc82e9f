"""``fastmlp convert``: any weights file fastmlp.load reads, rewritten as .npz or .safetensors
with its activations and input scale recorded."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import (
    UsageError,
    add_model_options,
    cleans_up_on_sigterm,
    describe,
    load_model,
    refuse_overwriting_inputs,
    write_error,
)

CONVERT_DESCRIPTION = (
    "Read a weights file that fastmlp.load reads (.npz, .safetensors, the book's pickle, a "
    "PyTorch checkpoint, ONNX) and write it as .npz or .safetensors with its activations and "
    "input scale recorded, so that fastmlp.load(OUT) needs no options."
)


def add_parser(commands: Any) -> None:
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
    add_model_options(convert)


@cleans_up_on_sigterm
def run(options: argparse.Namespace) -> int:
    from .._formats import SAVE_FORMATS, save

    source, destination = options.input, options.output_file
    refuse_overwriting_inputs(destination, {"IN": source})
    chosen = options.format
    if chosen is None:
        chosen = SAVE_FORMATS.get(destination.suffix.lower())
        if chosen is None:
            raise UsageError(
                f"cannot tell the format from the name {str(destination)!r}: use the suffix "
                ".npz or .safetensors, or --format npz|safetensors"
            )
    model = load_model(source, options)
    try:
        save(model, destination, format=chosen)
    except OSError as exc:
        raise write_error(destination, exc) from exc
    print(f"wrote {destination} ({chosen}): {describe(model)}")
    return 0
