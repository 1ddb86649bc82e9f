"""Fixtures locating the shared data (MNIST and the book's weights) beside the repository.

The data lives in ``../shared/data`` next to the repository root and is never copied into it.
``FASTMLP_SHARED_DATA`` points elsewhere. Tests that need a file skip, naming the missing path.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

MNIST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
WEIGHTS_FILE = Path("dlfs") / "sample_weight.pkl"

# The tutorial's published accuracies on the 10,000 MNIST test images.
TUTORIAL_ACCURACY_RAW = 0.9207
TUTORIAL_ACCURACY_SCALED = 0.9352


def _shared_data_dir() -> Path:
    override = os.environ.get("FASTMLP_SHARED_DATA")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder (it may lack files: use the fixtures below, which skip)."""
    return _shared_data_dir()


@pytest.fixture(scope="session")
def mnist_dir(shared_data: Path) -> Path:
    """The folder holding the gzipped MNIST test IDX files."""
    folder = shared_data / "mnist"
    missing = [name for name in MNIST_FILES if not (folder / name).is_file()]
    if missing:
        pytest.skip(
            f"MNIST test set not found: {', '.join(str(folder / n) for n in missing)} missing "
            "(set FASTMLP_SHARED_DATA to the folder holding mnist/ and dlfs/)"
        )
    return folder


@pytest.fixture(scope="session")
def mnist(mnist_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 MNIST test images (uint8, (N, 28, 28)) and labels (int64)."""
    from fastmlp.datasets import load_mnist

    return load_mnist(mnist_dir)


@pytest.fixture(scope="session")
def sample_weights_path(shared_data: Path) -> Path:
    """The book's pretrained ``sample_weight.pkl``."""
    path = shared_data / WEIGHTS_FILE
    if not path.is_file():
        pytest.skip(
            f"the book's weights not found: {path} missing (set FASTMLP_SHARED_DATA to the "
            "folder holding mnist/ and dlfs/)"
        )
    return path


@pytest.fixture(scope="session")
def sample_weights(sample_weights_path: Path) -> dict[str, np.ndarray]:
    """The book's network as a dict W1, b1, ..., W3, b3, read through the safe loader."""
    from fastmlp._formats import read_weights

    return read_weights(sample_weights_path)
