"""Type stub for fastmlp's compiled core. Private: use the functions in ``fastmlp`` instead.

The Python layer validates arguments and allocates outputs; these functions re-check what
memory safety depends on (dtype, shape, C-contiguity, writeability) and raise ``TypeError`` or
``ValueError`` otherwise. A Rust panic is caught and raised as ``RuntimeError``.
"""

from typing import Dict, List, Optional, Tuple, Union, final

import numpy as np
import numpy.typing as npt

__all__ = [
    "__version__",
    "PackedMLP",
    "build_info",
    "clear_fp_status_flags",
    "cpu_features",
    "cpu_level",
    "elementwise",
    "fma_peak_gflops",
    "force_cpu_level",
    "get_num_threads",
    "mxcsr",
    "set_num_threads",
    "softmax",
    "supported_levels",
]

__version__: str

def build_info() -> Dict[str, str]:
    """How this binary was built (version, Cargo profile and overrides, target, rustc, the
    Python ABI), fixed at compile time."""

def cpu_features() -> List[Tuple[str, bool]]:
    """The CPU features runtime dispatch checks, and whether this CPU has each."""

def elementwise(
    activation: str,
    x: Optional[npt.NDArray[np.floating]],
    out: npt.NDArray[np.floating],
    threads: Optional[int] = None,
) -> None:
    """``out = activation(x)`` element-wise ("sigmoid", "relu", "tanh", "identity"); in place
    on ``out`` when ``x`` is None. ``x`` and ``out`` share one dtype, float32 or float64."""

def softmax(
    x: Optional[npt.NDArray[np.floating]],
    out: npt.NDArray[np.floating],
    outer: int,
    len: int,
    inner: int,
    log: bool = False,
    threads: Optional[int] = None,
) -> None:
    """Softmax (or log-softmax) along the middle axis of a C-contiguous array viewed as
    ``[outer][len][inner]``; in place on ``out`` when ``x`` is None."""

@final
class PackedMLP:
    """A model whose weights were packed once, at construction, for this CPU."""

    def __new__(
        cls,
        weights: List[npt.NDArray[np.floating]],
        biases: List[npt.NDArray[np.floating]],
        activations: List[str],
        input_scale: float = 1.0,
    ) -> PackedMLP: ...
    def forward(
        self,
        x: npt.NDArray[np.generic],
        out: npt.NDArray[np.floating],
        threads: Optional[int] = None,
        log: bool = False,
    ) -> None:
        """Writes the outputs for the rows of ``x`` (2-D uint8/float32/float64) into ``out``."""
    def run_direct(
        self,
        x: object,
        threads: Optional[int],
        max_bytes: int,
        log: bool = False,
    ) -> Optional[npt.NDArray[np.floating]]:
        """Runs the model over ``x`` (1-D: one row; 2-D: rows) into a new array of the model's
        dtype, ``(outputs,)`` or ``(rows, outputs)``: the low-latency path. ``None``, without
        reading ``x``, unless ``x`` is exactly a NumPy ndarray of at most ``max_bytes`` bytes
        whose result is small enough for the core to allocate."""
    def predict_direct(
        self,
        x: object,
        threads: Optional[int],
        max_bytes: int,
    ) -> Union[npt.NDArray[np.int64], np.int64, None]:
        """Each row's argmax output as a new int64 array (a scalar for a 1-D ``x``); ``None``
        under the same conditions as ``run_direct``."""
    def predict(
        self,
        x: npt.NDArray[np.generic],
        out: npt.NDArray[np.int64],
        threads: Optional[int] = None,
    ) -> None:
        """Writes each row's argmax output into ``out`` (int64, one per row)."""
    @property
    def level(self) -> str:
        """The instruction-set level the weights were packed for."""
    def planned_tasks(self, rows: int, threads: Optional[int] = None) -> int:
        """How many tasks a call over ``rows`` rows is split into."""

def set_num_threads(threads: int) -> None:
    """Sets the default thread count (0: ``FASTMLP_NUM_THREADS`` or the available cores)."""

def get_num_threads() -> int:
    """The default thread count, capped at the available cores."""

def cpu_level() -> str:
    """The instruction-set level new work runs at."""

def supported_levels() -> List[str]:
    """The levels this CPU can run, best first."""

def force_cpu_level(name: Optional[str] = None) -> None:
    """For tests: forces the level new work runs at (None: the detected one)."""

def mxcsr() -> Optional[int]:
    """For tests: the calling thread's MXCSR register (SSE status flags in bits 0-5, control
    bits above), or None off x86-64."""

def clear_fp_status_flags() -> None:
    """For tests: clears the calling thread's MXCSR status flags, keeping its control bits."""

def fma_peak_gflops(seconds: float = 0.05, repeats: int = 5) -> float:
    """For benchmarks: one core's float32 multiply-add peak at the active level, in GFLOP/s (a
    register-only FMA loop; the best of ``repeats`` runs of about ``seconds`` each)."""
