"""Optional peers (onnx, Dask, matplotlib, scikit-learn): imported when used, with one error.

NumPy is fastmlp's only dependency; every other package comes with an extra, and a missing one
is always reported the same way: what needed it, and the ``pip install "fastmlp[extra]"`` that
brings it. A leaf like :mod:`fastmlp._common`.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def import_optional(module: str, *, extra: str, needed_by: str, package: str = "") -> ModuleType:
    """``module`` (e.g. ``"dask.array"``), imported; else an ``ImportError`` saying
    ``{needed_by} needs {package}: pip install "fastmlp[{extra}]"``, where ``needed_by`` is what
    the user asked for in their words (``"fastmlp.dask"``, ``"--plot"``) and ``package``
    defaults to the top-level module name.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        missing = package or module.split(".")[0]
        raise ImportError(f'{needed_by} needs {missing}: pip install "fastmlp[{extra}]"') from error
