"""Reading MNIST: the real IDX files, synthetic ones in every spelling, and broken ones."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from fastmlp.datasets import load_mnist, read_idx
from fastmlp.errors import DataFormatError


def _idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def _write(path: Path, content: bytes, gz: bool) -> Path:
    path.write_bytes(gzip.compress(content) if gz else content)
    return path


@pytest.fixture
def digits() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, size=(12, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=12, dtype=np.uint8)
    return images, labels


def _write_mnist_folder(folder: Path, images, labels, gz: bool, spelling: str) -> Path:
    suffix = ".gz" if gz else ""
    folder.mkdir(exist_ok=True)
    _write(folder / (spelling.format(kind="images", ndim=3) + suffix), _idx_bytes(images), gz)
    _write(folder / (spelling.format(kind="labels", ndim=1) + suffix), _idx_bytes(labels), gz)
    return folder


# --- the real files ----------------------------------------------------------------------


def test_real_mnist_test_set(mnist):
    images, labels = mnist
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.int64
    assert labels.min() == 0 and labels.max() == 9
    assert np.bincount(labels).min() > 800  # every digit is well represented
    assert images.max() == 255 and images.min() == 0


def test_real_idx_files_read_directly(mnist_dir):
    labels = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz", ndim=1)
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert labels.flags.writeable and labels.flags.owndata


# --- synthetic files ---------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("spelling", ["t10k-{kind}-idx{ndim}-ubyte", "t10k-{kind}.idx{ndim}-ubyte"])
def test_synthetic_folder_round_trips(tmp_path, digits, gz, spelling):
    images, labels = digits
    folder = _write_mnist_folder(tmp_path / "mnist", images, labels, gz, spelling)
    loaded_images, loaded_labels = load_mnist(folder)
    np.testing.assert_array_equal(loaded_images, images)
    np.testing.assert_array_equal(loaded_labels, labels)
    assert loaded_labels.dtype == np.int64


def test_train_split_reads_train_files(tmp_path, digits):
    images, labels = digits
    folder = _write_mnist_folder(
        tmp_path / "mnist", images, labels, True, "train-{kind}-idx{ndim}-ubyte"
    )
    np.testing.assert_array_equal(load_mnist(folder, split="train")[0], images)
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte.gz"):
        load_mnist(folder)  # no test files there
    with pytest.raises(ValueError, match="split"):
        load_mnist(folder, split="validation")


def test_gzip_is_detected_by_content_not_name(tmp_path, digits):
    images, _ = digits
    path = _write(tmp_path / "images.idx", _idx_bytes(images), gz=True)
    np.testing.assert_array_equal(read_idx(path), images)


def test_read_idx_handles_other_shapes(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = _write(tmp_path / "cube", _idx_bytes(array), gz=False)
    np.testing.assert_array_equal(read_idx(path), array)


def test_keras_npz_loads(tmp_path, digits):
    images, labels = digits
    np.savez(
        tmp_path / "mnist.npz", x_train=images[:4], y_train=labels[:4], x_test=images, y_test=labels
    )
    loaded_images, loaded_labels = load_mnist(tmp_path / "mnist.npz")
    np.testing.assert_array_equal(loaded_images, images)
    np.testing.assert_array_equal(loaded_labels, labels)
    assert load_mnist(tmp_path / "mnist.npz", split="train")[0].shape == (4, 28, 28)


def test_default_path_is_the_keras_cache(tmp_path, digits, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"\.keras/datasets/mnist\.npz"):
        load_mnist()
    images, labels = digits
    (tmp_path / ".keras" / "datasets").mkdir(parents=True)
    np.savez(tmp_path / ".keras" / "datasets" / "mnist.npz", x_test=images, y_test=labels)
    np.testing.assert_array_equal(load_mnist()[1], labels)


# --- broken files ------------------------------------------------------------------------


def test_wrong_magic(tmp_path, digits):
    content = b"\x12\x34" + _idx_bytes(digits[0])[2:]
    path = _write(tmp_path / "images", content, gz=False)
    with pytest.raises(DataFormatError, match="magic 0x1234.*not an IDX file"):
        read_idx(path)


def test_labels_where_images_are_expected(tmp_path, digits):
    path = _write(tmp_path / "labels", _idx_bytes(digits[1]), gz=True)
    with pytest.raises(DataFormatError, match="0x00000801.*expected 0x00000803"):
        read_idx(path, ndim=3)


def test_wrong_dtype_byte(tmp_path):
    floats = np.zeros((2, 2), dtype=">f4")
    path = _write(tmp_path / "floats", _idx_bytes(floats, type_code=0x0D), gz=False)
    with pytest.raises(DataFormatError, match=r"type 0x0d \(float32\); expected 0x08"):
        read_idx(path)


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_payload(tmp_path, digits, gz):
    content = _idx_bytes(digits[0])
    path = _write(tmp_path / "images", content[:-100], gz)
    with pytest.raises(DataFormatError, match=r"truncated.*9408 bytes of data, but 9308"):
        read_idx(path)


def test_truncated_header(tmp_path, digits):
    path = _write(tmp_path / "images", _idx_bytes(digits[0])[:10], gz=False)
    with pytest.raises(DataFormatError, match="truncated inside its header"):
        read_idx(path)


def test_lying_header_is_checked_before_allocating(tmp_path):
    # Declares 4 billion x 28 x 28 bytes but holds 10: must fail fast, not try to allocate.
    content = bytes([0, 0, 8, 3]) + struct.pack(">3I", 4_000_000_000, 28, 28) + bytes(10)
    path = _write(tmp_path / "images", content, gz=False)
    with pytest.raises(DataFormatError, match=r"\(4000000000, 28, 28\).*but 10 bytes"):
        read_idx(path)


def test_extra_bytes_after_payload(tmp_path, digits):
    path = _write(tmp_path / "labels", _idx_bytes(digits[1]) + b"\x00", gz=False)
    with pytest.raises(DataFormatError, match="longer than its header says"):
        read_idx(path)


def test_gzip_bomb_is_not_decompressed_past_its_header(tmp_path):
    # 2 labels declared, then 256 MiB of zeros: a 256 KiB file. Reading must stop one byte
    # past the declared payload instead of inflating everything.
    import tracemalloc

    content = bytes([0, 0, 8, 1]) + struct.pack(">I", 2) + bytes(256 << 20)
    path = tmp_path / "bomb.gz"
    path.write_bytes(gzip.compress(content, compresslevel=9))
    del content
    tracemalloc.start()
    try:
        with pytest.raises(DataFormatError, match="longer than its header says"):
            read_idx(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20, f"read_idx allocated {peak} bytes for a 2-byte payload"


def test_gzip_declaring_more_than_it_can_inflate_to(tmp_path):
    content = bytes([0, 0, 8, 3]) + struct.pack(">3I", 100_000, 28, 28) + bytes(100)
    path = _write(tmp_path / "images.gz", content, gz=True)
    with pytest.raises(DataFormatError, match="cannot decompress to more than"):
        read_idx(path)


def test_damaged_gzip(tmp_path, digits):
    compressed = gzip.compress(_idx_bytes(digits[0]))
    path = tmp_path / "images.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(DataFormatError, match="damaged or truncated gzip"):
        read_idx(path)


def test_empty_file(tmp_path):
    path = _write(tmp_path / "empty", b"", gz=False)
    with pytest.raises(DataFormatError, match="0 bytes long"):
        read_idx(path)


def test_mismatched_image_and_label_counts(tmp_path, digits):
    images, labels = digits
    folder = _write_mnist_folder(
        tmp_path / "mnist", images, labels[:-1], True, "t10k-{kind}-idx{ndim}-ubyte"
    )
    with pytest.raises(DataFormatError, match="12 images but 11 labels"):
        load_mnist(folder)


def test_npz_with_wrong_keys(tmp_path, digits):
    np.savez(tmp_path / "mnist.npz", images=digits[0], labels=digits[1])
    with pytest.raises(DataFormatError, match="expected Keras' MNIST keys 'x_test' and 'y_test'"):
        load_mnist(tmp_path / "mnist.npz")


def test_npz_with_float_images(tmp_path, digits):
    np.savez(tmp_path / "mnist.npz", x_test=digits[0] / 255, y_test=digits[1])
    with pytest.raises(DataFormatError, match="float64; expected uint8"):
        load_mnist(tmp_path / "mnist.npz")


def test_npz_with_object_arrays_is_refused(tmp_path, digits):
    np.savez(tmp_path / "mnist.npz", x_test=digits[0], y_test=np.array([{}] * 12, dtype=object))
    with pytest.raises(DataFormatError, match="not a readable .npz"):
        load_mnist(tmp_path / "mnist.npz")


def test_a_file_that_is_neither_folder_nor_npz(tmp_path, digits):
    path = _write(tmp_path / "t10k-images-idx3-ubyte.gz", _idx_bytes(digits[0]), gz=True)
    with pytest.raises(DataFormatError, match="expected a folder of IDX files or a Keras"):
        load_mnist(path)


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load_mnist(tmp_path / "nowhere")


def test_idx_declaring_too_many_dimensions(tmp_path):
    content = bytes([0, 0, 8, 65]) + struct.pack(">65I", *([1] * 65)) + b"x"
    path = _write(tmp_path / "deep", content, gz=False)
    with pytest.raises(DataFormatError, match="declaring 65 dimensions; expected at most 32"):
        read_idx(path)


@pytest.mark.parametrize("ndim", [0, 33, 300, "3", 2.0, True])
def test_read_idx_refuses_a_bad_ndim_argument(tmp_path, digits, ndim):
    path = _write(tmp_path / "labels", _idx_bytes(digits[1]), gz=False)
    with pytest.raises(ValueError, match="ndim must be an int from 1 to 32"):
        read_idx(path, ndim=ndim)
