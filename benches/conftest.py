"""Fixtures for the benchmark suite: one network, one set of inputs, every engine.

Everything is made once per session with fixed seeds, so every engine sees the same arrays.
Optional peers (ONNX Runtime, PyTorch, SciPy) skip with the reason when not installed. The
real MNIST test set and the book's weights are read from ``../shared/data`` beside the
repository (``FASTMLP_SHARED_DATA`` overrides, as for the tests); the MNIST benchmark skips
without them.

Run: ``pytest benches --benchmark-enable --benchmark-group-by=group`` (see README.md).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import pytest

import fastmlp
from fastmlp import _bench, reference

BATCH_SIZES = (1, 100, 10_000, 100_000)
PIXEL_SCALE = 1 / 255
SEED = 0
INPUT_SEED = 1

# Absolute tolerance for an engine's probabilities against the ground truth (float32).
ATOL = 1e-5

MNIST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
WEIGHTS_FILE = Path("dlfs") / "sample_weight.pkl"
# The tutorial's published accuracy on the 10,000 MNIST test images, pixels scaled to [0, 1].
TUTORIAL_ACCURACY_SCALED = 0.9352

# Numbers derived from several benchmarks (ratios, time per row), printed after the tables.
_DERIVED: List[str] = []
# (group, name) -> minimum seconds per call, for the derived numbers.
_TIMINGS: Dict[Tuple[str, str], float] = {}


# -- reporting ---------------------------------------------------------------------------


def pytest_report_header(config) -> List[str]:
    lines = [
        f"fastmlp {fastmlp.__version__}: {fastmlp.get_num_threads()} threads, "
        f"cpu level {fastmlp.cpu_level()}; NumPy {np.__version__}",
    ]
    blas_env = [name for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if name in os.environ]
    if blas_env:
        lines.append(
            f"warning: {', '.join(blas_env)} set; NumPy's OpenBLAS may run slower than its "
            "default (run with `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest ...`)"
        )
    return lines


def pytest_terminal_summary(terminalreporter) -> None:
    if not _DERIVED:
        return
    terminalreporter.write_sep("-", "derived from the minimum times above (same run)")
    for line in _DERIVED:
        terminalreporter.write_line(line)
    blas_env = [name for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if name in os.environ]
    if blas_env:
        terminalreporter.write_line(
            f"note: {', '.join(blas_env)} was set in the environment; NumPy's numbers may be "
            "slower than its default"
        )


def min_seconds(benchmark) -> Optional[float]:
    """The benchmark's minimum seconds per call, or None when benchmarks are disabled."""
    stats = getattr(benchmark, "stats", None)
    if stats is None:
        return None
    return stats.stats.min


@pytest.fixture
def record(benchmark) -> Callable[..., Optional[float]]:
    """``record(key=None)``: after the benchmark ran, remember its minimum under its group.

    Returns the minimum in seconds (None when benchmarks are disabled).
    """

    def record_min(name: Optional[str] = None) -> Optional[float]:
        seconds = min_seconds(benchmark)
        if seconds is not None:
            _TIMINGS[(benchmark.group, name or benchmark.name)] = seconds
        return seconds

    return record_min


@pytest.fixture(scope="session")
def timings() -> Dict[Tuple[str, str], float]:
    """Minimum seconds recorded by earlier benchmarks in this run, by (group, name)."""
    return _TIMINGS


@pytest.fixture(scope="session")
def derived() -> List[str]:
    """Lines printed after the benchmark tables (ratios computed within this run)."""
    return _DERIVED


# OpenBLAS's workers spin for about 0.1 s after a NumPy matrix product, taking a core: a
# fastmlp benchmark started right after a NumPy check ran up to 1.5x slower on 2 cores.
SETTLE_SECONDS = 0.2


@pytest.fixture(autouse=True)
def settle(benchmark) -> None:
    """Pauses before each benchmark (when enabled) so every engine starts on idle cores."""
    if not benchmark.disabled:
        time.sleep(SETTLE_SECONDS)


# -- the network and its inputs ----------------------------------------------------------


@pytest.fixture(scope="session")
def threads() -> int:
    """fastmlp's default thread count; every multi-threaded peer gets the same."""
    return fastmlp.get_num_threads()


@pytest.fixture(scope="session")
def layers() -> "list[tuple[np.ndarray, np.ndarray, str]]":
    """The tutorial's 784-50-100-10 (sigmoid, sigmoid, softmax) shape, float32, seeded."""
    return _bench.tutorial_shaped_layers(SEED, np.float32)


@pytest.fixture(scope="session")
def layers64() -> "list[tuple[np.ndarray, np.ndarray, str]]":
    """The same network drawn in float64."""
    return _bench.tutorial_shaped_layers(SEED, np.float64)


@pytest.fixture(scope="session")
def model(layers) -> fastmlp.MLP:
    return fastmlp.MLP(layers)


@pytest.fixture(scope="session")
def pixel_model(layers) -> fastmlp.MLP:
    """The same network reading raw uint8 pixels, scaled by 1/255 inside the kernel."""
    return fastmlp.MLP(layers, input_scale=PIXEL_SCALE)


@pytest.fixture(scope="session")
def model64(layers64) -> fastmlp.MLP:
    return fastmlp.MLP(layers64)


@pytest.fixture(scope="session")
def x32() -> Dict[int, np.ndarray]:
    """float32 inputs in [0, 1), shape (n, 784), for each n in BATCH_SIZES (fixed seed)."""
    rng = np.random.default_rng(INPUT_SEED)
    full = rng.random((max(BATCH_SIZES), _bench.TUTORIAL_SIZES[0]), dtype=np.float32)
    return {n: full[:n].copy() for n in BATCH_SIZES}


@pytest.fixture(scope="session")
def pixels() -> Dict[int, np.ndarray]:
    """uint8 pixels 0..255, shape (n, 784), for each n in BATCH_SIZES (fixed seed)."""
    rng = np.random.default_rng(INPUT_SEED + 1)
    full = rng.integers(0, 256, (max(BATCH_SIZES), _bench.TUTORIAL_SIZES[0]), dtype=np.uint8)
    return {n: full[:n].copy() for n in BATCH_SIZES}


@pytest.fixture(scope="session")
def expected32(layers, x32) -> Dict[int, np.ndarray]:
    """The NumPy reference's probabilities for ``x32[n]``: the ground truth for every engine."""
    full = reference.forward(layers, x32[max(BATCH_SIZES)])
    return {n: full[:n] for n in BATCH_SIZES}


@pytest.fixture(scope="session")
def expected_pixels(layers, pixels) -> Dict[int, np.ndarray]:
    """The NumPy reference's probabilities for ``pixels[n] / 255``."""
    full = reference.forward(layers, pixels[max(BATCH_SIZES)], input_scale=PIXEL_SCALE)
    return {n: full[:n] for n in BATCH_SIZES}


# -- optional peers ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def onnxruntime_forward(layers, threads) -> Callable[[np.ndarray], np.ndarray]:
    """ONNX Runtime over the same network, with fastmlp's thread count."""
    pytest.importorskip(
        "onnxruntime", reason='ONNX Runtime is not installed (pip install "fastmlp[bench]")'
    )
    pytest.importorskip(
        "onnx",
        reason='onnx (to build the ONNX graph) is not installed (pip install "fastmlp[bench]")',
    )
    run = _bench.onnxruntime_forward(layers, threads)
    assert run is not None
    return run


@pytest.fixture(scope="session")
def torch_forward(layers, threads) -> Callable[[np.ndarray], np.ndarray]:
    """PyTorch (CPU, inference mode) over the same network, with fastmlp's thread count."""
    pytest.importorskip(
        "torch", reason="PyTorch is not installed; it is an optional peer (pip install torch)"
    )
    run = _bench.torch_forward(layers, threads)
    assert run is not None
    return run


@pytest.fixture(scope="session")
def torch_module():
    """The ``torch`` module, for the kernel benchmarks."""
    return pytest.importorskip(
        "torch", reason="PyTorch is not installed; it is an optional peer (pip install torch)"
    )


@pytest.fixture(scope="session")
def scipy_expit():
    special = pytest.importorskip(
        "scipy.special", reason="SciPy is not installed; scipy.special.expit is an optional peer"
    )
    return special.expit


# -- the real data -----------------------------------------------------------------------


def _shared_data_dir() -> Path:
    override = os.environ.get("FASTMLP_SHARED_DATA")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def mnist() -> Tuple[np.ndarray, np.ndarray]:
    """The 10,000 MNIST test images (uint8, (N, 28, 28)) and labels (int64)."""
    folder = _shared_data_dir() / "mnist"
    missing = [name for name in MNIST_FILES if not (folder / name).is_file()]
    if missing:
        pytest.skip(
            f"MNIST test set not found: {', '.join(str(folder / n) for n in missing)} missing "
            "(set FASTMLP_SHARED_DATA to the folder holding mnist/ and dlfs/)"
        )
    from fastmlp.datasets import load_mnist

    return load_mnist(folder)


@pytest.fixture(scope="session")
def sample_weights() -> Dict[str, np.ndarray]:
    """The book's pretrained network (``sample_weight.pkl``) as W1, b1, ..., W3, b3."""
    path = _shared_data_dir() / WEIGHTS_FILE
    if not path.is_file():
        pytest.skip(
            f"the book's weights not found: {path} missing (set FASTMLP_SHARED_DATA to the "
            "folder holding mnist/ and dlfs/)"
        )
    from fastmlp._formats import read_weights

    return read_weights(path)
