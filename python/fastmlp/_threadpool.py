"""fastmlp's thread pool as other tools see it: threadpoolctl, and ``OMP_NUM_THREADS``.

- threadpoolctl (optional) learns about fastmlp's pool through ``threadpoolctl.register``, so
  ``threadpool_info()`` lists it and ``threadpool_limits(n)`` limits it. Registration costs no
  import: if threadpoolctl is already imported it happens at once, else a finder on
  ``sys.meta_path`` does it right after threadpoolctl's own module runs, and removes itself.
- Without ``FASTMLP_NUM_THREADS``, a positive ``OMP_NUM_THREADS`` sets the default thread
  count, as it does for OpenMP, BLAS libraries and PyTorch: joblib's loky workers get it set to
  their share of the cores, so fastmlp in a worker does not oversubscribe the machine.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Optional

from . import _core
from ._common import available_cores

__all__ = ["environment_threads", "initial_threads", "install"]

_USER_API = "fastmlp"


def environment_threads() -> int:
    """The thread count ``OMP_NUM_THREADS`` asks for, or 0 (none, or ``FASTMLP_NUM_THREADS`` set).

    ``FASTMLP_NUM_THREADS`` wins: the core reads it itself. OpenMP's list form ``"4,2"`` (one
    count per nesting level) gives its first count; anything unparsable is ignored, as OpenMP
    runtimes ignore it.
    """
    if os.environ.get("FASTMLP_NUM_THREADS", "").strip():
        return 0
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    try:
        count = int(value)
    except ValueError:
        return 0
    return min(count, available_cores()) if count > 0 else 0


def register_with(threadpoolctl: Any) -> bool:
    """Registers fastmlp's controller with an imported threadpoolctl; False if it is too old."""
    register = getattr(threadpoolctl, "register", None)
    base = getattr(threadpoolctl, "LibController", None)
    if register is None or base is None:
        return False  # threadpoolctl < 3.5 has no public registration
    registered = getattr(threadpoolctl, "_ALL_CONTROLLERS", ())
    if any(getattr(c, "user_api", None) == _USER_API for c in registered):
        return True
    core_path = os.path.realpath(_core.__file__)

    class FastmlpController(base):  # type: ignore[misc, valid-type]
        """fastmlp's pool: its default thread count (``fastmlp.set_num_threads``)."""

        user_api = _USER_API
        internal_api = _USER_API
        # threadpoolctl matches loaded libraries by file name; other packages may have an
        # extension called ``_core`` too, so the file is also checked by its full path below.
        filename_prefixes = (os.path.basename(core_path).lower(),)
        check_symbols = ("PyInit__core",)

        def set_additional_attributes(self) -> None:
            if os.path.realpath(self.filepath) != core_path:
                # threadpoolctl skips a library whose controller raises OSError.
                raise OSError(f"{self.filepath} is not fastmlp's extension")

        def get_num_threads(self) -> int:
            return int(_core.get_num_threads())

        def set_num_threads(self, num_threads: int) -> None:
            import fastmlp

            fastmlp.set_num_threads(num_threads)

        def get_version(self) -> Optional[str]:
            import fastmlp

            return getattr(fastmlp, "__version__", None)

    register(FastmlpController)
    return True


class _RegisterOnImport:
    """Registers the controller right after ``import threadpoolctl`` runs, then goes away.

    A plain class: the import system needs only ``find_spec``, and importing
    ``importlib.abc`` for its base class cost more than everything else here.
    """

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "threadpoolctl":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _RegisteringLoader(spec.loader, self)
        return spec


class _RegisteringLoader:
    """Runs threadpoolctl's own loader, then registers fastmlp's controller."""

    def __init__(self, loader: Any, finder: _RegisterOnImport) -> None:
        self._loader = loader
        self._finder = finder

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        module.__loader__ = self._loader  # as if we had never been there
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        try:
            sys.meta_path.remove(self._finder)
        except ValueError:
            pass
        try:
            register_with(module)
        except Exception:  # noqa: BLE001 - never break the user's import of threadpoolctl
            pass


# What OMP_NUM_THREADS asked for when fastmlp was imported. Read once, as the core reads
# FASTMLP_NUM_THREADS once: libraries imported later (Dask's distributed, for one) set
# OMP_NUM_THREADS in os.environ for the processes they start, not for this one.
_initial_threads = 0


def initial_threads() -> int:
    """The default ``OMP_NUM_THREADS`` set at import, or 0 (the core's own default)."""
    return _initial_threads


def install() -> None:
    """Applies ``OMP_NUM_THREADS`` and arranges the threadpoolctl registration (at import)."""
    global _initial_threads
    _initial_threads = environment_threads()
    if _initial_threads:
        _core.set_num_threads(_initial_threads)
    module = sys.modules.get("threadpoolctl")
    if module is not None:
        try:
            register_with(module)
        except Exception:  # noqa: BLE001 - an unusual threadpoolctl must not break our import
            pass
        return
    if not any(isinstance(f, _RegisterOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterOnImport())
