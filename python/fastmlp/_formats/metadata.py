"""The metadata record fastmlp writes beside the arrays: ``{"fastmlp": 1, "activations": [...],
"input_scale": ...}`` as JSON text, in every format it writes (.npz, .safetensors, ONNX)."""

from __future__ import annotations

import json
import math
import os
from typing import TYPE_CHECKING, Optional

from .._common import ACTIVATIONS, PathLike
from ..errors import WeightsFormatError

if TYPE_CHECKING:
    from .._model import MLP

NPZ_MEMBER = "__fastmlp__"  # the .npz member holding the record, a 0-d unicode array
KEY = "fastmlp"  # in a .safetensors file's __metadata__ and an ONNX file's metadata_props
VERSION = 1


def metadata_json(model: MLP) -> str:
    record = {
        "fastmlp": VERSION,
        "activations": list(model.activations),
        "input_scale": model.input_scale,
    }
    return json.dumps(record)


def parse_metadata(
    text: str, path: PathLike, n_layers: int
) -> "tuple[tuple[str, ...], Optional[float]]":
    """The activations and input scale of a fastmlp metadata record, checked."""
    where = repr(os.fspath(path))
    try:
        record = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise WeightsFormatError(
            f"{where} has fastmlp metadata that is not valid JSON ({exc}): {text[:80]!r}"
        ) from exc
    if not isinstance(record, dict):
        raise WeightsFormatError(
            f"{where} has fastmlp metadata {text[:80]!r}; expected a JSON object "
            '{"fastmlp": 1, "activations": [...], "input_scale": ...}'
        )
    version = record.get("fastmlp")
    if type(version) is not int or version != VERSION:
        raise WeightsFormatError(
            f"{where} has fastmlp metadata of version {version!r}; this fastmlp reads version "
            f"{VERSION} (was the file written by a newer fastmlp?)"
        )
    activations = record.get("activations")
    if not isinstance(activations, list) or not all(isinstance(a, str) for a in activations):
        raise WeightsFormatError(
            f"{where} records activations {activations!r:.120}; expected a list of names"
        )
    unknown = [name for name in activations if name not in ACTIVATIONS]
    if unknown:
        raise WeightsFormatError(
            f"{where} records unknown activations {unknown!r:.120}; expected names among "
            f"{', '.join(ACTIVATIONS)}"
        )
    if len(activations) != n_layers:
        raise WeightsFormatError(
            f"{where} records {len(activations)} activations for {n_layers} layers; expected "
            "one per layer"
        )
    input_scale = record.get("input_scale")
    if input_scale is not None:
        if isinstance(input_scale, bool) or not isinstance(input_scale, (int, float)):
            raise WeightsFormatError(
                f"{where} records input_scale {input_scale!r:.80}; expected a number or null"
            )
        input_scale = float(input_scale)
        if not math.isfinite(input_scale):
            raise WeightsFormatError(
                f"{where} records input_scale {input_scale}; expected a finite number or null"
            )
    return tuple(activations), input_scale
