"""Reading ``.npy`` and CSV data, and predicting over memory-mapped input chunk by chunk.

The chunking tests shrink ``fastmlp._mapped.CHUNK_BYTES`` so that small files span many
chunks; one test runs a few hundred MB file in a subprocess and checks its peak memory.
"""

from __future__ import annotations

import gzip
import json
import mmap
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import fastmlp
from fastmlp import _mapped, datasets
from fastmlp.datasets import read_csv, read_npy
from fastmlp.errors import DataFormatError

FEATURES = 784


def _network(rng: np.random.Generator, features: int = FEATURES, output: str = "softmax"):
    return fastmlp.MLP(
        [
            (rng.normal(size=(features, 16)).astype(np.float32), rng.normal(size=16), "sigmoid"),
            (rng.normal(size=(16, 10)).astype(np.float32), rng.normal(size=10), output),
        ],
        input_scale=1 / 255,
    )


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240611)


@pytest.fixture
def model(rng):
    return _network(rng)


# --- read_npy: good files --------------------------------------------------------------------


@pytest.mark.parametrize("mmap_mode", [False, True])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64, ">f8", np.int16])
def test_read_npy_returns_what_np_save_wrote(tmp_path, rng, mmap_mode, order, dtype):
    array = np.asarray(rng.normal(size=(7, 5)) * 50, dtype=dtype, order=order)
    path = tmp_path / "a.npy"
    np.save(path, array)
    read = read_npy(path, mmap=mmap_mode)
    assert read.dtype == array.dtype and read.shape == array.shape
    assert np.array_equal(read, array)
    assert read.flags.f_contiguous if order == "F" else read.flags.c_contiguous
    if mmap_mode:
        assert isinstance(read, np.memmap) and not read.flags.writeable
    else:
        assert not isinstance(read, np.memmap)


def test_read_npy_ignores_the_name(tmp_path, rng):
    array = rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    path = tmp_path / "images.bin"
    with open(path, "wb") as file:
        np.save(file, array)
    assert np.array_equal(read_npy(str(path), mmap=True), array)


def test_read_npy_reads_empty_arrays_and_header_versions_2_and_3(tmp_path):
    empty = tmp_path / "empty.npy"
    np.save(empty, np.zeros((0, FEATURES), np.uint8))
    assert read_npy(empty, mmap=True).shape == (0, FEATURES)
    for version in ((2, 0), (3, 0)):
        path = tmp_path / f"v{version[0]}.npy"
        array = np.arange(6.0).reshape(2, 3)
        with open(path, "wb") as file:
            np.lib.format.write_array(file, array, version=version)
        assert np.array_equal(read_npy(path), array)
        assert np.array_equal(read_npy(path, mmap=True), array)


# --- read_npy: every error -------------------------------------------------------------------


def _saved(tmp_path: Path, array: np.ndarray, **kwargs) -> bytes:
    path = tmp_path / "source.npy"
    np.save(path, array, **kwargs)
    return path.read_bytes()


@pytest.mark.parametrize("mmap_mode", [False, True])
@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"1,2,3\n4,5,6\n", "starts with b'1,2,3"),
        (b"PK\x03\x04" + bytes(40), "zip archive"),
        (gzip.compress(b"\x00\x00\x08\x01" + bytes(8)), "gzip"),
        (b"\x93NUMP", "starts with"),
    ],
)
def test_read_npy_refuses_what_is_not_npy(tmp_path, content, message, mmap_mode):
    path = tmp_path / "data.npy"
    path.write_bytes(content)
    with pytest.raises(DataFormatError, match=message) as caught:
        read_npy(path, mmap=mmap_mode)
    assert "data.npy" in str(caught.value) and "\\x93NUMPY" in str(caught.value)


@pytest.mark.parametrize("mmap_mode", [False, True])
def test_read_npy_refuses_object_arrays_without_unpickling(tmp_path, mmap_mode):
    content = _saved(tmp_path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    path = tmp_path / "objects.npy"
    path.write_bytes(content)
    with pytest.raises(DataFormatError, match="dtype object.*Python objects"):
        read_npy(path, mmap=mmap_mode)


@pytest.mark.parametrize("mmap_mode", [False, True])
@pytest.mark.parametrize("cut", [1, 784, 5000])
def test_read_npy_refuses_a_truncated_file_before_mapping_it(tmp_path, rng, cut, mmap_mode):
    content = _saved(tmp_path, rng.integers(0, 256, size=(10, FEATURES), dtype=np.uint8))
    path = tmp_path / "cut.npy"
    path.write_bytes(content[:-cut])
    with pytest.raises(DataFormatError, match=r"truncated.*\(10, 784\)") as caught:
        read_npy(path, mmap=mmap_mode)
    assert f"{10 * FEATURES - cut} bytes follow" in str(caught.value)


@pytest.mark.parametrize("mmap_mode", [False, True])
def test_read_npy_refuses_bytes_after_the_data(tmp_path, mmap_mode):
    path = tmp_path / "long.npy"
    path.write_bytes(_saved(tmp_path, np.zeros((2, 3))) + b"junk")
    with pytest.raises(DataFormatError, match="longer than its header says"):
        read_npy(path, mmap=mmap_mode)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda c: c[:12], "damaged .npy header"),  # the header cut short
        (lambda c: c.replace(b"'shape'", b"'shope'"), "damaged .npy header"),
        (lambda c: c.replace(b"'descr'", b"'descx'"), "damaged .npy header"),
        (lambda c: c.replace(b"<f8", b"<q9"), "damaged .npy header"),  # unknown dtype
        (lambda c: c[:6] + b"\x09\x00" + c[8:], "format version 9.0"),
        # An unclosed bracket: NumPy's literal parser fails in the tokenizer (TokenError).
        (lambda c: c.replace(b"(2, 3)", b"(2, 3 "), "damaged .npy header"),
    ],
)
def test_read_npy_refuses_a_damaged_header(tmp_path, damage, message):
    path = tmp_path / "damaged.npy"
    path.write_bytes(damage(_saved(tmp_path, np.zeros((2, 3)))))
    with pytest.raises(DataFormatError, match=message):
        read_npy(path)


def test_read_npy_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_npy(tmp_path / "nowhere.npy")


def test_other_readers_are_still_there():
    assert {"read_idx", "load_mnist", "read_npy", "read_csv"} <= set(datasets.__all__)
    for name in datasets.__all__:
        assert hasattr(datasets, name)


# --- read_csv: good files --------------------------------------------------------------------


def _csv(tmp_path: Path, text: str, name: str = "data.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_read_csv_with_a_header_and_labels_first(tmp_path):
    path = _csv(tmp_path, "label,a,b,c\n3,0.5,1,2\n7,1e2,-3,4\n")
    X, y = read_csv(path)
    assert X.dtype == np.float32 and X.flags.c_contiguous
    assert np.array_equal(X, np.array([[0.5, 1, 2], [100, -3, 4]], np.float32))
    assert y.dtype == np.int64 and y.tolist() == [3, 7]


def test_read_csv_without_a_header(tmp_path):
    X, y = read_csv(_csv(tmp_path, "1,2,3\n4,5,6\n"))
    assert X.tolist() == [[2, 3], [5, 6]] and y.tolist() == [1, 4]


@pytest.mark.parametrize(
    "label_column, features, labels",
    [
        (0, [[2, 3], [5, 6]], [1, 4]),
        (1, [[1, 3], [4, 6]], [2, 5]),
        (-1, [[1, 2], [4, 5]], [3, 6]),
        (-3, [[2, 3], [5, 6]], [1, 4]),
        ("y", [[1, 2], [4, 5]], [3, 6]),
        ("x 2", [[1, 3], [4, 6]], [2, 5]),
    ],
)
def test_read_csv_label_column_by_index_or_name(tmp_path, label_column, features, labels):
    path = _csv(tmp_path, "x1,x 2,y\n1,2,3\n4,5,6\n")
    X, y = read_csv(path, label_column=label_column)
    assert X.tolist() == features and y.tolist() == labels


def test_read_csv_without_labels(tmp_path):
    X, y = read_csv(_csv(tmp_path, "a,b\n1,2\n3,4\n"), label_column=None)
    assert y is None and X.tolist() == [[1, 2], [3, 4]]


def test_read_csv_keeps_fractional_labels_as_float(tmp_path):
    _, y = read_csv(_csv(tmp_path, "0.5,1\n2,3\n"))
    assert y.dtype == np.float64 and y.tolist() == [0.5, 2.0]
    _, y = read_csv(_csv(tmp_path, "nan,1\n2,3\n"))
    assert y.dtype == np.float64 and np.isnan(y[0])


def test_read_csv_dtype_float64_keeps_precision(tmp_path):
    X, _ = read_csv(_csv(tmp_path, "0,0.1\n"), dtype=np.float64)
    assert X.dtype == np.float64 and X[0, 0] == 0.1


@pytest.mark.parametrize("delimiter", [";", "\t", "|", " "])
def test_read_csv_other_delimiters(tmp_path, delimiter):
    text = "\n".join(delimiter.join(row) for row in (["l", "a", "b"], ["1", "2", "3"])) + "\n"
    X, y = read_csv(_csv(tmp_path, text), delimiter=delimiter)
    assert X.tolist() == [[2, 3]] and y.tolist() == [1]


def test_read_csv_tolerates_quotes_spaces_bom_crlf_and_blank_lines(tmp_path):
    text = '\ufeff"label", "a"\r\n\r\n"1", 2.5 \r\n\r\n  \r\n3,4\r\n'
    X, y = read_csv(_csv(tmp_path, text))
    assert X.tolist() == [[2.5], [4.0]] and y.tolist() == [1, 3]


def test_read_csv_header_can_be_forced_either_way(tmp_path):
    path = _csv(tmp_path, "1,2\n3,4\n")
    X, y = read_csv(path, header=True)
    assert X.tolist() == [[4]] and y.tolist() == [3]
    with pytest.raises(DataFormatError, match="line 1, column 1"):
        read_csv(_csv(tmp_path, "label,a\n1,2\n"), header=False)


def test_read_csv_header_of_numbered_pixels_is_detected(tmp_path):
    # Files written from a DataFrame with columns ["label", 0, 1, ...]: one name is enough.
    X, y = read_csv(_csv(tmp_path, "label,0,1,2\n5,10,20,30\n"))
    assert X.tolist() == [[10, 20, 30]] and y.tolist() == [5]


def test_read_csv_many_rows_match_numpy(tmp_path, rng):
    # More rows than one parsing block, so the blocks are joined in order.
    table = np.column_stack([rng.integers(0, 10, 10_000), rng.integers(0, 256, size=(10_000, 20))])
    path = tmp_path / "big.csv"
    np.savetxt(path, table, fmt="%d", delimiter=",", header="label," + ",".join("p" * 20))
    X, y = read_csv(path)  # np.savetxt's header starts with "# ": a non-numeric first row
    assert np.array_equal(X, table[:, 1:].astype(np.float32))
    assert np.array_equal(y, table[:, 0])


# --- read_csv: every error -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "is empty"),
        ("\n\n  \n", "only blank lines"),
        ("a,b,c\n", "a single line, taken as a header because the cell 'a' is not a number"),
        ("0x10,2\n", "taken as a header because the cell '0x10' is not a number"),
        (
            "1,2,1e39\n3,4,5\n",
            r"the value 1e\+39 \(data row 1, feature 2\) is too large for float32",
        ),
        ("1,2,3\n4,5\n", "line 2: 2 columns, but the first row has 3"),
        ("1,2,3\n\n4,5,6,7\n", "line 3: 4 columns, but the first row has 3"),
        ("l,a,b\n1,2\n", "line 2: 2 columns, but the header has 3"),
        ("1,2,3\n4,five,6\n", "line 2, column 2: the cell 'five' is not a number"),
        ("l,a,b\n\n1,2,3\n4,5,\n", "line 4, column 3: the cell is empty"),
        ("1,2\n3,0x10\n", "line 2, column 2: the cell '0x10' is not a number"),
        ('1,2\n3,"4\n', "line 2: not valid CSV"),  # a quote never closed
        ("1,2\n3,4\x00\n", r"line 2, column 2: the cell '4\\x00' is not a number"),
        ("7\n8\n", "single column, the labels"),
    ],
)
def test_read_csv_errors_name_the_line_and_column(tmp_path, text, message):
    with pytest.raises(DataFormatError, match=message) as caught:
        read_csv(_csv(tmp_path, text))
    assert "data.csv" in str(caught.value)


def test_read_csv_header_only_when_declared(tmp_path):
    with pytest.raises(DataFormatError, match="only a header line"):
        read_csv(_csv(tmp_path, "a,b,c\n"), header=True)


def test_read_csv_large_values_fit_float64(tmp_path):
    X, y = read_csv(_csv(tmp_path, "1,2,1e39\n"), dtype=np.float64)
    assert X[0, 1] == 1e39 and y[0] == 1


def test_read_csv_refuses_binary_content(tmp_path):
    path = tmp_path / "pixels.csv"
    with open(path, "wb") as file:
        np.save(file, np.arange(300, dtype=np.uint8))
    with pytest.raises(DataFormatError, match="not UTF-8 text"):
        read_csv(path)


@pytest.mark.parametrize(
    "label_column, message",
    [
        ("label", "no column named 'label'.*'a', 'b', 'c'"),
        (3, "label_column=3 but the rows .* have 3 columns; expected an index from -3 to 2"),
        (-4, "label_column=-4"),
    ],
)
def test_read_csv_label_column_must_exist(tmp_path, label_column, message):
    with pytest.raises(DataFormatError, match=message):
        read_csv(_csv(tmp_path, "a,b,c\n1,2,3\n"), label_column=label_column)


def test_read_csv_label_name_needs_a_header_and_must_be_unique(tmp_path):
    with pytest.raises(DataFormatError, match="has no header line"):
        read_csv(_csv(tmp_path, "1,2\n"), label_column="label")
    with pytest.raises(DataFormatError, match="2 columns named 'a'"):
        read_csv(_csv(tmp_path, "a,a,b\n1,2,3\n"), label_column="a")


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"delimiter": ",,"}, ValueError, "single character"),
        ({"delimiter": '"'}, ValueError, "single character"),
        ({"dtype": np.int32}, TypeError, "floating dtype"),
        ({"label_column": True}, TypeError, "label_column"),
        ({"label_column": 1.0}, TypeError, "label_column"),
        ({"header": "yes"}, TypeError, "header"),
    ],
)
def test_read_csv_checks_its_options(tmp_path, options, error, message):
    with pytest.raises(error, match=message):
        read_csv(_csv(tmp_path, "1,2\n"), **options)


def test_read_csv_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_csv(tmp_path / "nowhere.csv")


# --- memory-mapped prediction, chunk by chunk ------------------------------------------------


class _ReleaseSpy:
    def __init__(self) -> None:
        self.calls: list[bool] = []
        self._release = _mapped.release_pages

    def __call__(self, array: np.ndarray) -> bool:
        released = self._release(array)
        self.calls.append(released)
        return released


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 20 rows of 784 uint8 pixels; returns a spy on the page releases."""
    monkeypatch.setattr(_mapped, "CHUNK_BYTES", 20 * FEATURES)
    spy = _ReleaseSpy()
    monkeypatch.setattr(_mapped, "release_pages", spy)
    return spy


def _mapped_pixels(tmp_path: Path, rng, shape=(333, FEATURES), dtype=np.uint8, order="C"):
    array = np.asarray(rng.integers(0, 256, size=shape), dtype=dtype, order=order)
    path = tmp_path / "pixels.npy"
    np.save(path, array)
    return read_npy(path, mmap=True), array


@pytest.mark.parametrize("method", ["predict_proba", "predict_log_proba", "predict"])
def test_memmap_results_equal_the_in_memory_call(tmp_path, rng, model, small_chunks, method):
    X, in_memory = _mapped_pixels(tmp_path, rng)
    result = getattr(model, method)(X)
    expected = getattr(model, method)(in_memory)
    assert result.dtype == expected.dtype and np.array_equal(result, expected)
    assert len(small_chunks.calls) == -(-len(in_memory) // 20)  # one release per chunk
    assert all(small_chunks.calls)  # a read-only shared mapping: every chunk released


@pytest.mark.parametrize(
    "shape, dtype, order",
    [
        ((333, 28, 28), np.uint8, "C"),
        ((333, FEATURES), np.uint8, "F"),
        ((333, FEATURES), np.float64, "C"),
        ((333, FEATURES), np.int16, "C"),  # converted chunk by chunk
        ((333, FEATURES), ">f4", "C"),
    ],
)
def test_memmap_of_any_layout_and_dtype_is_chunked(
    tmp_path, rng, model, small_chunks, shape, dtype, order
):
    X, in_memory = _mapped_pixels(tmp_path, rng, shape, dtype, order)
    assert np.array_equal(model.predict_proba(X), model.predict_proba(in_memory))
    assert np.array_equal(model.predict(X), model.predict(in_memory))
    assert len(small_chunks.calls) > 2


def test_memmap_with_out_batch_size_and_threads(tmp_path, rng, model, small_chunks):
    X, in_memory = _mapped_pixels(tmp_path, rng)
    out = np.full((len(in_memory), 10), np.nan, dtype=model.dtype)
    returned = model.predict_proba(X, 7, threads=1, out=out)
    assert returned is out
    assert np.array_equal(out, model.predict_proba(in_memory))
    with pytest.raises(ValueError, match="out has shape"):
        model.predict_proba(X, out=out[:-1])


def test_views_and_raw_mmaps_are_chunked_too(tmp_path, rng, model, small_chunks):
    X, in_memory = _mapped_pixels(tmp_path, rng)
    view = np.asarray(X)  # a plain ndarray whose base is the memmap
    assert type(view) is np.ndarray
    assert np.array_equal(model.predict_proba(view), model.predict_proba(in_memory))
    assert small_chunks.calls and all(small_chunks.calls)
    small_chunks.calls.clear()
    with open(tmp_path / "pixels.npy", "rb") as file:
        mapping = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        raw = np.frombuffer(mapping, np.uint8, offset=X.offset).reshape(in_memory.shape)
        assert np.array_equal(model.predict(raw), model.predict(in_memory))
        assert small_chunks.calls and all(small_chunks.calls)
        del raw
    finally:
        mapping.close()


def test_arrays_in_memory_are_not_chunked(rng, model, small_chunks):
    X = rng.integers(0, 256, size=(333, FEATURES), dtype=np.uint8)
    model.predict_proba(X)
    model.predict(X)
    model.predict_proba(X[::2])  # a view, but of memory, not of a file
    assert small_chunks.calls == []


def test_copy_on_write_memmap_keeps_the_callers_changes(tmp_path, rng, model, small_chunks):
    # MADV_DONTNEED would discard a private mapping's written pages: they must not be released.
    _, original = _mapped_pixels(tmp_path, rng)
    X = np.load(tmp_path / "pixels.npy", mmap_mode="c")
    X[:] = 255 - X  # changed in memory only, every page
    assert np.array_equal(model.predict_proba(X), model.predict_proba(255 - original))
    assert np.array_equal(X, 255 - original)  # the changes are still there
    assert small_chunks.calls and not any(small_chunks.calls)
    assert np.array_equal(np.load(tmp_path / "pixels.npy"), original)  # file untouched


def test_writable_shared_memmap_loses_no_writes(tmp_path, rng, model, small_chunks):
    _, original = _mapped_pixels(tmp_path, rng)
    X = np.load(tmp_path / "pixels.npy", mmap_mode="r+")
    X[:] = 255 - X
    assert np.array_equal(model.predict_proba(X), model.predict_proba(255 - original))
    assert all(small_chunks.calls)
    assert np.array_equal(X, 255 - original)


def test_without_madvise_results_are_the_same(tmp_path, rng, model, small_chunks, monkeypatch):
    # Where madvise or MADV_DONTNEED is missing (Windows), the chunks run all the same.
    monkeypatch.setattr(_mapped, "_MADV_DONTNEED", None)
    X, in_memory = _mapped_pixels(tmp_path, rng)
    assert np.array_equal(model.predict_proba(X), model.predict_proba(in_memory))
    assert small_chunks.calls and not any(small_chunks.calls)


def test_release_pages_refuses_what_it_cannot_release(tmp_path, rng):
    assert _mapped.release_pages(np.zeros((4, 4))) is False  # memory, not a file
    X, _ = _mapped_pixels(tmp_path, rng)
    assert _mapped.release_pages(X[:0]) is False  # nothing to release
    if _mapped._MADV_DONTNEED is not None:
        assert _mapped.release_pages(X[5:9]) is True
        assert _mapped.release_pages(X[::-3]) is True  # negative strides: the span is found


def test_memmap_of_the_wrong_width_gives_the_usual_error(tmp_path, rng, model, small_chunks):
    X, _ = _mapped_pixels(tmp_path, rng, shape=(333, 100))
    with pytest.raises(ValueError, match=r"X has shape \(333, 100\)"):
        model.predict_proba(X)
    with pytest.raises(ValueError, match=r"X has shape \(333, 100\)"):
        model.predict(X)


def test_memmap_regressor_and_binary_outputs(tmp_path, rng, small_chunks):
    X, in_memory = _mapped_pixels(tmp_path, rng)
    regressor = _network(rng, output="identity")
    assert np.array_equal(regressor.predict(X), regressor.predict(in_memory))
    binary = fastmlp.MLP([(rng.normal(size=(FEATURES, 1)), np.zeros(1), "sigmoid")])
    assert np.array_equal(binary.predict(X), binary.predict(in_memory))


_PEAK_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import fastmlp
    from fastmlp.datasets import read_npy

    def peak_bytes():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM")

    rng = np.random.default_rng(1)
    model = fastmlp.MLP(
        [(rng.normal(size=(784, 16)), np.zeros(16), "sigmoid"),
         (rng.normal(size=(16, 10)), np.zeros(10), "softmax")],
        input_scale=1 / 255, dtype=np.float32,
    )
    X = read_npy(sys.argv[1], mmap=True)
    before = peak_bytes()
    proba = model.predict_proba(X)
    labels = model.predict(X)
    after = peak_bytes()
    n = len(X)
    equal = True
    for start in (0, n // 2 - 7, n - 300):  # slices from the start, middle and end
        rows = slice(start, start + 300)
        in_memory = np.array(X[rows])
        equal &= bool(np.array_equal(proba[rows], model.predict_proba(in_memory)))
        equal &= bool(np.array_equal(labels[rows], model.predict(in_memory)))
    print(json.dumps({"before": before, "after": after, "rows": n, "equal": equal}))
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's VmHWM")
def test_a_large_memmap_is_predicted_in_bounded_memory(tmp_path, rng):
    # 320 MiB of uint8 pixels, written in 4 MiB pieces so the test itself stays small.
    rows = 320 * 2**20 // FEATURES
    path = tmp_path / "large.npy"
    piece = np.frombuffer(rng.bytes(4 * 2**20), np.uint8)  # not a whole number of rows
    with open(path, "wb") as file:
        header = {"descr": "|u1", "fortran_order": False, "shape": (rows, FEATURES)}
        np.lib.format.write_array_header_1_0(file, header)
        remaining = rows * FEATURES
        while remaining:
            count = min(remaining, piece.size)
            file.write(piece[:count].tobytes())
            remaining -= count
    file_size = rows * FEATURES
    result = subprocess.run(
        [sys.executable, "-c", _PEAK_MEMORY_SCRIPT, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["rows"] == rows and report["equal"]
    # All pages mapped at once would add the whole file; chunks add ~64 MiB plus the outputs.
    growth = report["after"] - report["before"]
    assert growth < file_size / 2, (growth, file_size)
    assert report["after"] < file_size, (report, file_size)
    os.remove(path)
