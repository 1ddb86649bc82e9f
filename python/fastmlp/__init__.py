"""fastmlp: fast, exact inference for small dense neural networks (MLPs) on the CPU.

The compute core is Rust (``fastmlp._core``); this package validates arguments, applies
NumPy's dtype rules and raises clear errors. The public API:

- kernels: :func:`sigmoid`, :func:`softmax`, :func:`log_softmax`, :func:`identity`, :func:`dense`
- the model: :class:`MLP` (``predict_proba``, ``predict_log_proba``, ``predict``, ``score``)
- weights: :func:`load` (``.npz``, ``.safetensors``, the tutorial's pickle, PyTorch, ONNX;
  nothing in a file is executed), :func:`save` / ``MLP.save`` (``.npz``, ``.safetensors``)
- importers: :func:`from_sklearn`, :func:`from_keras`, :func:`from_onnx` (and ``MLP.to_onnx``),
  :func:`from_torch`, :func:`from_torch_checkpoint` (read without torch installed)
- data: :mod:`fastmlp.datasets` (IDX, ``mnist.npz``, ``.npy`` memory-mapped, CSV);
  :mod:`fastmlp.dask` for Dask arrays and dataframes
- threads: :func:`set_num_threads`, :func:`get_num_threads` (or ``FASTMLP_NUM_THREADS``)
- :mod:`fastmlp.reference`: the plain NumPy ground truth the tests compare against.
"""

from __future__ import annotations

from . import _core, reference
from ._functions import dense, identity, log_softmax, sigmoid, softmax
from ._interop import from_keras, from_onnx, from_sklearn
from ._formats import load, save
from ._model import MLP
from ._torch import from_torch, from_torch_checkpoint
from .errors import DataFormatError, UnsafePickleError, WeightsFormatError

# Cargo.toml holds the version; the core reports it, so the two cannot disagree.
__version__: str = _core.__version__

__all__ = [
    "MLP",
    "DataFormatError",
    "UnsafePickleError",
    "WeightsFormatError",
    "cpu_level",
    "dense",
    "from_keras",
    "from_onnx",
    "from_sklearn",
    "from_torch",
    "from_torch_checkpoint",
    "get_num_threads",
    "identity",
    "load",
    "log_softmax",
    "reference",
    "save",
    "set_num_threads",
    "sigmoid",
    "softmax",
]


def set_num_threads(threads: int) -> None:
    """Sets how many threads calls use by default.

    Parameters
    ----------
    threads : int
        The new default; 0 restores the initial one (``FASTMLP_NUM_THREADS`` when set, else
        ``OMP_NUM_THREADS`` at import, else the cores available to the process). Counts above the
        available cores are capped: concurrent callers share one pool of workers rather than
        oversubscribing the machine.
        A call's ``threads=`` argument overrides the default.

    Raises
    ------
    ValueError
        If ``threads`` is negative.
    """
    import operator

    from ._common import MAX_THREADS

    count = operator.index(threads)
    if count < 0:
        raise ValueError(f"threads must be >= 0, got {count}")
    _core.set_num_threads(min(count, MAX_THREADS) or _threadpool.initial_threads())


def get_num_threads() -> int:
    """The number of threads a call uses by default.

    Returns
    -------
    int
        At least 1, at most the cores available to the process.
    """
    return _core.get_num_threads()


def cpu_level() -> str:
    """The instruction set new work runs at.

    ``"avx512"``, ``"avx2"`` (x86-64), ``"neon"`` (aarch64) or ``"portable"``.
    """
    return _core.cpu_level()


# threadpoolctl registration (when threadpoolctl is imported) and OMP_NUM_THREADS.
from . import _threadpool  # noqa: E402

_threadpool.install()
