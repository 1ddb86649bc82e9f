"""``fastmlp predict`` and ``fastmlp convert``: results equal to the Python API, exit codes."""

from __future__ import annotations

import gzip
import os
import resource
import shutil
import signal
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fastmlp
from fastmlp import cli
from fastmlp._formats import read_weights_file

FEATURES = 784


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(31337)


@pytest.fixture
def model(rng) -> fastmlp.MLP:
    return fastmlp.MLP(
        [
            (rng.normal(size=(FEATURES, 24)).astype(np.float32), np.zeros(24, np.float32), "relu"),
            (rng.normal(size=(24, 10)).astype(np.float32), np.zeros(10, np.float32), "softmax"),
        ],
        input_scale=1 / 255,
    )


@pytest.fixture
def model_path(model, tmp_path) -> Path:
    return model.save(tmp_path / "model.safetensors")


@pytest.fixture
def images(rng) -> np.ndarray:
    return rng.integers(0, 256, size=(250, 28, 28), dtype=np.uint8)


@pytest.fixture
def images_path(images, tmp_path) -> Path:
    path = tmp_path / "images.npy"
    np.save(path, images)
    return path


def _folder_names(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir()}


# --- predict: results ------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_rows", [None, 1, 7, 250, 10_000])
def test_predict_writes_the_outputs_of_predict_proba(
    model, model_path, images, images_path, tmp_path, capsys, chunk_rows
):
    out = tmp_path / "proba.npy"
    argv = ["predict", str(images_path), str(out), "--model", str(model_path)]
    if chunk_rows is not None:
        argv += ["--chunk-rows", str(chunk_rows)]
    assert cli.main(argv) == 0
    written = np.load(out)
    expected = model.predict_proba(images)
    assert written.dtype == expected.dtype and np.array_equal(written, expected)
    captured = capsys.readouterr()
    assert "wrote" in captured.out and "(250, 10)" in captured.out
    assert captured.err == ""  # no progress bar when stderr is not a terminal


def test_predict_labels(model, model_path, images, images_path, tmp_path):
    out = tmp_path / "labels.npy"
    argv = ["predict", str(images_path), str(out), "--model", str(model_path), "--labels"]
    assert cli.main([*argv, "--chunk-rows", "33", "--threads", "1"]) == 0
    labels = np.load(out)
    assert labels.dtype == np.int64 and np.array_equal(labels, model.predict(images))


def test_predict_model_options_override_the_file(model, model_path, images, images_path, tmp_path):
    out = tmp_path / "out.npy"
    argv = ["predict", str(images_path), str(out), "--model", str(model_path)]
    argv += ["--hidden", "tanh", "--output", "sigmoid", "--input-scale", "1/128"]
    assert cli.main(argv) == 0
    changed = fastmlp.load(model_path, hidden="tanh", output="sigmoid", input_scale=1 / 128)
    assert np.array_equal(np.load(out), changed.predict_proba(images))
    assert not np.array_equal(np.load(out), model.predict_proba(images))
    argv = ["predict", str(images_path), str(out), "--model", str(model_path)]
    assert cli.main([*argv, "--activations", "sigmoid,softmax"]) == 0
    changed = fastmlp.load(model_path, activations=["sigmoid", "softmax"])
    assert np.array_equal(np.load(out), changed.predict_proba(images))


def test_predict_reads_csv_input(model, model_path, images, tmp_path):
    flat = images.reshape(len(images), -1)
    labels = np.arange(len(images)) % 10
    with_labels = tmp_path / "with_labels.csv"
    header = "label," + ",".join(f"p{i}" for i in range(FEATURES))
    np.savetxt(with_labels, np.column_stack([labels, flat]), fmt="%d", delimiter=",")
    with_labels.write_text(header + "\n" + with_labels.read_text())
    features_only = tmp_path / "features.txt"
    np.savetxt(features_only, flat, fmt="%d", delimiter=",")
    expected = model.predict_proba(flat.astype(np.float32))
    out = tmp_path / "out.npy"
    argv = ["predict", str(features_only), str(out), "--model", str(model_path)]
    assert cli.main(argv) == 0
    assert np.array_equal(np.load(out), expected)
    for column in ("label", "0"):
        argv = ["predict", str(with_labels), str(out), "--model", str(model_path)]
        assert cli.main([*argv, "--csv-label-column", column]) == 0
        assert np.array_equal(np.load(out), expected)


@pytest.mark.parametrize("gz", [False, True])
def test_predict_reads_idx_input(model, model_path, images, tmp_path, gz):
    content = bytes([0, 0, 8, 3]) + struct.pack(">3I", *images.shape) + images.tobytes()
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(gzip.compress(content) if gz else content)
    out = tmp_path / "out.npy"
    assert cli.main(["predict", str(path), str(out), "--model", str(model_path), "--labels"]) == 0
    assert np.array_equal(np.load(out), model.predict(images))


def test_predict_with_the_books_weights(sample_weights_path, images, images_path, tmp_path):
    out = tmp_path / "out.npy"
    argv = ["predict", str(images_path), str(out), "--model", str(sample_weights_path)]
    assert cli.main([*argv, "--input-scale", "1/255"]) == 0
    book = fastmlp.load(sample_weights_path, input_scale=1 / 255)
    assert np.array_equal(np.load(out), book.predict_proba(images))


def test_predict_of_no_rows_writes_an_empty_array(model_path, tmp_path):
    source = tmp_path / "none.npy"
    np.save(source, np.zeros((0, FEATURES), np.uint8))
    out = tmp_path / "out.npy"
    assert cli.main(["predict", str(source), str(out), "--model", str(model_path)]) == 0
    assert np.load(out).shape == (0, 10)


# --- predict: progress -----------------------------------------------------------------------


def test_progress_is_shown_when_asked(model_path, images_path, tmp_path, capsys):
    out = tmp_path / "out.npy"
    argv = ["predict", str(images_path), str(out), "--model", str(model_path), "--progress"]
    assert cli.main([*argv, "--chunk-rows", "50"]) == 0
    err = capsys.readouterr().err
    assert "250 / 250 rows (100.0%)" in err and "rows/s" in err
    assert err.startswith("\r") and err.endswith("\n")


def test_progress_follows_the_terminal_unless_turned_off(
    model_path, images_path, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "out.npy"
    argv = ["predict", str(images_path), str(out), "--model", str(model_path)]
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert cli.main(argv) == 0
    assert "250 / 250 rows" in capsys.readouterr().err
    assert cli.main([*argv, "--no-progress"]) == 0
    assert capsys.readouterr().err == ""


# --- predict: errors -------------------------------------------------------------------------


def _fails(argv: list[str], capsys, code: int, message: str) -> None:
    assert cli.main(argv) == code
    captured = capsys.readouterr()
    assert captured.err.startswith(f"fastmlp {argv[0]}: error: "), captured.err
    assert message in captured.err, captured.err
    assert "Traceback" not in captured.err


def test_predict_unreadable_inputs_exit_1(model_path, tmp_path, capsys):
    out = tmp_path / "out.npy"
    model = ["--model", str(model_path)]
    _fails(["predict", str(tmp_path / "nowhere.npy"), str(out), *model], capsys, 1, "nowhere")
    truncated = tmp_path / "truncated.npy"
    np.save(truncated, np.zeros((10, FEATURES), np.uint8))
    truncated.write_bytes(truncated.read_bytes()[:-100])
    _fails(["predict", str(truncated), str(out), *model], capsys, 1, "truncated")
    archive = tmp_path / "archive.npz"
    np.savez(archive, x=np.zeros((2, FEATURES)))
    _fails(["predict", str(archive), str(out), *model], capsys, 1, "zip archive")
    text = tmp_path / "bad.csv"
    text.write_text("1,2\n3,x\n")
    _fails(["predict", str(text), str(out), *model], capsys, 1, "line 2, column 2")
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([None, 1], dtype=object), allow_pickle=True)
    _fails(["predict", str(objects), str(out), *model], capsys, 1, "Python objects")
    assert not out.exists()


def test_predict_input_that_does_not_fit_the_model_exits_1(model_path, tmp_path, capsys):
    out = tmp_path / "out.npy"
    model = ["--model", str(model_path)]
    for array, message in [
        (np.zeros((5, 100), np.uint8), "100 values per row (shape (5, 100)) but the model takes"),
        (np.zeros(FEATURES, np.uint8), "shape (784,); expected rows"),
        (np.zeros((5, FEATURES), bool), "holds bool data"),
    ]:
        source = tmp_path / "x.npy"
        np.save(source, array)
        _fails(["predict", str(source), str(out), *model], capsys, 1, message)


def test_predict_unreadable_model_exits_1(images_path, tmp_path, capsys):
    out = tmp_path / "out.npy"
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"not weights at all")
    _fails(
        ["predict", str(images_path), str(out), "--model", str(garbage)],
        capsys,
        1,
        "cannot read the model",
    )
    _fails(
        ["predict", str(images_path), str(out), "--model", str(tmp_path / "no.npz")],
        capsys,
        1,
        "no.npz",
    )


def test_predict_usage_errors_exit_2(model_path, images_path, tmp_path, capsys, rng):
    out = tmp_path / "out.npy"
    base = ["predict", str(images_path), str(out), "--model", str(model_path)]
    _fails([*base, "--activations", "relu,softmax", "--hidden", "relu"], capsys, 2, "not both")
    _fails(
        ["predict", str(images_path), str(images_path), "--model", str(model_path)],
        capsys,
        2,
        "same file",
    )
    _fails([*base, "--csv-label-column", "0"], capsys, 2, "CSV input only")
    regressor = fastmlp.MLP([(rng.normal(size=(FEATURES, 2)), np.zeros(2), "identity")])
    regressor_path = regressor.save(tmp_path / "regressor.npz")
    _fails(
        ["predict", str(images_path), str(out), "--model", str(regressor_path), "--labels"],
        capsys,
        2,
        "--labels needs a classifier",
    )
    for bad in (
        ["predict", str(images_path), str(out)],  # no --model
        [*base, "--threads", "0"],
        [*base, "--chunk-rows", "-5"],
        [*base, "--hidden", "swish"],
        [*base, "--input-scale", "1/0"],
        [*base, "--input-scale", "nan"],
    ):
        with pytest.raises(SystemExit) as caught:
            cli.main(bad)
        assert caught.value.code == 2
    assert "fastmlp predict: error:" in capsys.readouterr().err
    assert not out.exists()


def test_a_failed_predict_leaves_no_file_behind(
    model_path, images_path, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "out.npy"
    out.write_bytes(b"the previous result")
    before = _folder_names(tmp_path)
    calls = []

    def failing_predict_proba(self, X, *args, **kwargs):
        calls.append(len(X))
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return original(self, X, *args, **kwargs)

    original = fastmlp.MLP.predict_proba
    monkeypatch.setattr(fastmlp.MLP, "predict_proba", failing_predict_proba)
    argv = ["predict", str(images_path), str(out), "--model", str(model_path)]
    _fails([*argv, "--chunk-rows", "20"], capsys, 1, "No space left on device")
    assert out.read_bytes() == b"the previous result"  # untouched: no half file
    assert _folder_names(tmp_path) == before  # and no temporary file left

    def interrupted(self, X, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fastmlp.MLP, "predict_proba", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cli.main(argv)
    assert _folder_names(tmp_path) == before


def test_predict_into_a_missing_folder_exits_1(model_path, images_path, tmp_path, capsys):
    out = tmp_path / "missing" / "out.npy"
    _fails(
        ["predict", str(images_path), str(out), "--model", str(model_path)],
        capsys,
        1,
        "cannot write",
    )


def test_predict_runs_as_a_command(model, model_path, images, images_path, tmp_path):
    out = tmp_path / "out.npy"
    argv = [sys.executable, "-m", "fastmlp", "predict", str(images_path), str(out)]
    result = subprocess.run(
        [*argv, "--model", str(model_path), "--progress"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "rows/s" in result.stderr
    assert np.array_equal(np.load(out), model.predict_proba(images))
    failed = subprocess.run(
        [*argv[:-2], str(tmp_path / "no.npy"), str(out), "--model", str(model_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert failed.returncode == 1
    assert failed.stderr.startswith("fastmlp predict: error: ")


# --- convert ---------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix, format", [(".npz", "npz"), (".safetensors", "safetensors")])
def test_convert_the_books_pickle(sample_weights_path, tmp_path, capsys, suffix, format):
    out = tmp_path / f"book{suffix}"
    assert cli.main(["convert", str(sample_weights_path), str(out), "--input-scale", "1/255"]) == 0
    assert f"({format})" in capsys.readouterr().out
    assert read_weights_file(out).format == format
    original = fastmlp.load(sample_weights_path, input_scale=1 / 255)
    assert fastmlp.load(out) == original  # activations and scale recorded: no options needed


@pytest.mark.parametrize("format", ["npz", "safetensors"])
def test_convert_a_plain_npz_with_named_activations(tmp_path, rng, capsys, format):
    plain = tmp_path / "plain.npz"
    weights = {
        "W1": rng.normal(size=(6, 5)),
        "b1": rng.normal(size=5),
        "W2": rng.normal(size=(5, 5)),
        "b2": rng.normal(size=5),
        "W3": rng.normal(size=(5, 3)),
        "b3": rng.normal(size=3),
    }
    np.savez(plain, **weights)
    out = tmp_path / "converted.weights"  # the suffix says nothing: --format decides
    argv = ["convert", str(plain), str(out), "--format", format]
    assert cli.main([*argv, "--activations", "relu,tanh,identity"]) == 0
    converted = fastmlp.load(out)
    assert converted.activations == ("relu", "tanh", "identity")
    assert converted == fastmlp.load(plain, activations=["relu", "tanh", "identity"])
    assert converted.dtype == np.float64
    assert cli.main([*argv, "--hidden", "relu", "--output", "sigmoid"]) == 0
    assert fastmlp.load(out).activations == ("relu", "relu", "sigmoid")
    assert "wrote" in capsys.readouterr().out


def test_convert_torch_checkpoint_needs_activations(tmp_path, capsys):
    checkpoint = Path(__file__).parent / "fixtures" / "tiny_mlp_state_dict.pt"  # committed
    out = tmp_path / "tiny.safetensors"
    _fails(
        ["convert", str(checkpoint), str(out)],
        capsys,
        2,
        "name them with --activations A,B,... (3 names) or --hidden and --output",
    )
    assert not out.exists()
    argv = ["convert", str(checkpoint), str(out), "--hidden", "relu", "--output", "softmax"]
    assert cli.main(argv) == 0
    assert fastmlp.load(out) == fastmlp.load(checkpoint, hidden="relu", output="softmax")


def test_convert_errors(model_path, tmp_path, capsys):
    _fails(
        ["convert", str(model_path), str(tmp_path / "out.bin")], capsys, 2, ".npz or .safetensors"
    )
    _fails(["convert", str(tmp_path / "no.npz"), str(tmp_path / "o.npz")], capsys, 1, "no.npz")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"\x00" * 64)
    _fails(["convert", str(garbage), str(tmp_path / "o.npz")], capsys, 1, "cannot read the model")
    _fails(
        ["convert", str(model_path), str(tmp_path / "o.npz"), "--activations", "relu"],
        capsys,
        2,
        "one name per layer",
    )
    _fails(
        ["convert", str(model_path), str(tmp_path / "o.npz"), "--activations", "relu,softmax"]
        + ["--output", "softmax"],
        capsys,
        2,
        "not both",
    )
    with pytest.raises(SystemExit) as caught:
        cli.main(["convert", str(model_path), str(tmp_path / "o.npz"), "--format", "onnx"])
    assert caught.value.code == 2
    assert "invalid choice: 'onnx'" in capsys.readouterr().err
    _fails(
        ["convert", str(model_path), str(tmp_path / "missing" / "o.npz")], capsys, 1, "cannot write"
    )
    assert _folder_names(tmp_path) == {"model.safetensors", "garbage.npz"}


def test_demo_and_bench_are_still_listed(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    listing = capsys.readouterr().out
    for command in ("demo", "bench", "predict", "convert"):
        assert command in listing


# --- output paths that name an input; full disks; SIGTERM -------------------------------------


def _spellings_of(path: Path, folder: Path) -> list[str]:
    """Other names of the file ``path``: itself, ``./name``, a symbolic link, a hard link."""
    symbolic = folder / f"symbolic-{path.name}"
    symbolic.symlink_to(path)
    hard = folder / f"hard-{path.name}"
    os.link(path, hard)
    return [str(path), f"./{path.name}", str(symbolic), str(hard)]


def test_predict_refuses_an_out_that_is_the_model_or_in(
    model_path, images_path, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    weights, pixels = model_path.read_bytes(), images_path.read_bytes()
    for out in _spellings_of(model_path, tmp_path):
        _fails(["predict", str(images_path), out, "--model", str(model_path)], capsys, 2, "model")
    for out in _spellings_of(images_path, tmp_path):
        _fails(["predict", str(images_path), out, "--model", str(model_path)], capsys, 2, "IN")
    assert model_path.read_bytes() == weights and images_path.read_bytes() == pixels


def test_convert_refuses_an_out_that_is_in(sample_weights_path, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = tmp_path / "book.pkl"
    source.write_bytes(sample_weights_path.read_bytes())
    for out in _spellings_of(source, tmp_path):
        _fails(["convert", str(source), out, "--format", "npz"], capsys, 2, "same file")
    assert source.read_bytes() == sample_weights_path.read_bytes()


def _write_npy(path: Path, rows: int, features: int) -> None:
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, features))
    array[:] = np.linspace(-1, 1, features, dtype=np.float32)
    array.flush()
    del array


@pytest.fixture
def small_model_path(tmp_path) -> Path:
    rng = np.random.default_rng(5)
    model = fastmlp.MLP(
        [(rng.normal(size=(4, 10)).astype(np.float32), np.zeros(10, np.float32), "softmax")]
    )
    return model.save(tmp_path / "small.npz")


_FULL_DISK_SCRIPT = """
mount -t tmpfs -o size=256k fastmlp-test "$1" || exit 77
"$2" -m fastmlp predict "$3" "$1/out.npy" --model "$4" --chunk-rows 1000 --no-progress
echo "exit=$?"
ls -A "$1"
"""


def test_predict_onto_a_full_disk_says_so_and_leaves_nothing(small_model_path, tmp_path):
    # 20,000 rows x 10 float32 outputs: 800 kB for a 256 kB filesystem. Written through a
    # memory map, this died of SIGBUS (exit 135) and left its temporary file filling the disk.
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to mount a small tmpfs in a private mount namespace")
    source = tmp_path / "rows.npy"
    _write_npy(source, 20_000, 4)
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    command = ["unshare", "--mount"]
    if os.geteuid() != 0:
        command[1:1] = ["--user", "--map-root-user"]  # a private user namespace to mount in
    done = subprocess.run(
        [
            *command,
            "sh",
            "-c",
            _FULL_DISK_SCRIPT,
            "sh",
            str(mount_point),
            sys.executable,
            str(source),
            str(small_model_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode == 77 or "exit=" not in done.stdout:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()[-300:]}")
    lines = done.stdout.split()
    assert "exit=1" in lines, done.stdout + done.stderr
    assert "cannot write" in done.stderr and "No space left on device" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert lines[lines.index("exit=1") + 1 :] == [], "files left on the full disk"


def _limit_file_size() -> None:
    # Writes past 100 kB fail with EFBIG; SIGXFSZ ignored so that write() returns the error.
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _predict_command(source: Path, out: Path, model: Path, *, chunk_rows: int) -> list[str]:
    """The command line of ``fastmlp predict`` run as its own process, for the tests that limit
    or signal that process."""
    return [
        sys.executable,
        "-m",
        "fastmlp",
        "predict",
        str(source),
        str(out),
        "--model",
        str(model),
        "--chunk-rows",
        str(chunk_rows),
    ]


def test_predict_past_a_file_size_limit_says_so_and_leaves_nothing(small_model_path, tmp_path):
    source = tmp_path / "rows.npy"
    _write_npy(source, 20_000, 4)  # 320 kB of input is read, never written: no limit on it
    out_folder = tmp_path / "out"
    out_folder.mkdir()
    done = subprocess.run(
        _predict_command(source, out_folder / "out.npy", small_model_path, chunk_rows=1000),
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_limit_file_size,
    )
    assert done.returncode == 1, done.stderr
    assert "fastmlp predict: error: cannot write" in done.stderr and "too large" in done.stderr
    assert list(out_folder.iterdir()) == []


def test_sigterm_during_predict_removes_the_temporary_file(small_model_path, tmp_path):
    source = tmp_path / "rows.npy"
    _write_npy(source, 2_000_000, 4)
    out_folder = tmp_path / "out"
    out_folder.mkdir()
    process = subprocess.Popen(
        _predict_command(source, out_folder / "out.npy", small_model_path, chunk_rows=20),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not any(out_folder.iterdir()):  # the temporary file is being written
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "predict never started writing"
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "terminated" in stderr
    assert list(out_folder.iterdir()) == [], "the temporary file was left behind"


def test_predict_replacing_a_file_keeps_its_permissions(model_path, images_path, tmp_path, capsys):
    out = tmp_path / "out.npy"
    out.write_bytes(b"old")
    out.chmod(0o600)
    assert cli.main(["predict", str(images_path), str(out), "--model", str(model_path)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    np.load(out)  # and it is the new result


def test_sigterm_handler_is_restored_after_a_command(model_path, images_path, tmp_path, capsys):
    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        cli.main(["predict", str(images_path), str(tmp_path / "o.npy"), "--model", str(model_path)])
        cli.main(["convert", str(model_path), str(tmp_path / "o.npz")])
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)
