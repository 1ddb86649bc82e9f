"""The ``fastmlp`` command line: ``demo`` offline and on the real data, and its error paths."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import TUTORIAL_ACCURACY_RAW, TUTORIAL_ACCURACY_SCALED
from fastmlp import cli

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def nothing_to_find(tmp_path, monkeypatch):
    # An empty HOME (no ~/.keras/datasets/mnist.npz) and an empty working directory (no
    # ./sample_weight.pkl), so each test controls what the demo finds.
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return home


def _table_rows(output: str) -> list[str]:
    method_prefixes = ("  tutorial NumPy", "  fastmlp,")
    return [line for line in output.splitlines() if line.startswith(method_prefixes)]


def test_demo_offline_prints_a_table(capsys):
    assert cli.main(["demo"]) == 0
    output = capsys.readouterr().out
    assert "fastmlp demo (offline)" in output
    assert "fastmlp demo --weights sample_weight.pkl --data" in output  # how to go real
    assert "raw pixels" in output and "pixels / 255" in output
    rows = _table_rows(output)
    assert len(rows) == 6  # three methods, two conditions
    for row in rows:
        agreeing, total = row.split()[-5].split("/")  # predictions equal to the reference's
        assert total == "10000" and int(agreeing) >= 9990
    for row in rows:
        if row.startswith("  fastmlp"):
            assert float(row.split()[-1]) < 1e-4  # max |Δp| against the reference
    # The columns of a table line up: every row of a table has the same length.
    assert len({len(row) for row in rows[:3]}) == 1
    prose = " ".join(output.split())  # notes are wrapped to the terminal's width
    assert "overflow encountered in exp" in prose
    assert "fastmlp: 0 warnings" in prose


def test_python_dash_m_runs_the_same_cli(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "fastmlp", "demo", "--weights", str(tmp_path / "nowhere.pkl")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "fastmlp demo: error: cannot read weights" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "demo" in capsys.readouterr().err


def test_bench_is_dispatched_with_its_arguments(monkeypatch):
    received = []

    def fake_bench_main(argv):
        received.append(argv)
        return 0

    import fastmlp._bench

    monkeypatch.setattr(fastmlp._bench, "main", fake_bench_main)
    assert cli.main(["bench", "--help", "--rows", "7"]) == 0
    assert received == [["--help", "--rows", "7"]]


def test_bench_comparison_times_every_engine_beside_the_sgemm():
    from fastmlp import _bench

    rows = _bench.run_comparison([1, 40], threads=1, rounds=2, settle=0, sgemm_size=64)
    engines = [row["engine"] for row in rows if row["batch"] == 1]
    assert engines[0] == "fastmlp" and "numpy" in engines and _bench.SGEMM not in engines
    assert [row["batch"] for row in rows] == [1] * len(engines) + [40] * len(engines)
    for row in rows:
        assert row["seconds"] > 0 and row["peak"] > 0
        assert row["peak_share"] == pytest.approx(row["gflops"] / row["peak"])
        fastmlp_row = next(r for r in rows if r["batch"] == row["batch"])
        assert row["ratio"] == pytest.approx(row["seconds"] / fastmlp_row["seconds"])
    table = _bench.format_table(rows, threads=1)
    assert "float32, 64^3), timed in the same rounds as each batch size" in table
    assert table.count("fastmlp ") >= 2 and "numpy" in table


def test_bench_values_times_fastmlp_call_by_call_and_every_case_against_its_baseline():
    from fastmlp import _bench

    order = []
    best = _bench.time_alternating(
        {"a": lambda: order.append("a"), "b": lambda: order.append("b")}, rounds=2, sweeps=3
    )
    # One warm-up call each, then the two strictly alternating, one call at a time.
    assert order == ["a", "b"] * 7 and set(best) == {"a", "b"}

    rows = _bench.run_values(threads=1, rounds=1, elements=2000, rows=64, settle=0)
    kernels = [row for row in rows if row["group"] == "kernel"]
    assert {row["case"].split()[0] for row in kernels} == {"sigmoid", "tanh", "softmax"}
    for row in kernels:
        moderate = next(
            r for r in kernels if r["case"] == row["case"].split()[0] + " moderate (-10, 10)"
        )
        assert row["ratio"] == pytest.approx(row["seconds"] / moderate["seconds"])
    network = [row for row in rows if row["group"] == "network"]
    cases = {(row["engine"], row["case"]) for row in network}
    for case in ("raw float32", "scaled float32", "raw uint8", "scaled uint8"):
        assert ("fastmlp", f"64 rows, {case}") in cases
    # The float32 cases again, timed as the peers are; only those are set against ORT's.
    for case in ("raw float32", "scaled float32"):
        assert (_bench.TURNS, f"64 rows, {case}") in cases
    for row in network:
        if row.get("vs_onnxruntime") is not None:
            assert row["engine"] == _bench.TURNS
    assert network[0]["engine"] == "fastmlp"


def test_bench_values_places_every_input_at_its_outputs_offset_within_a_page():
    from fastmlp import _bench

    out = np.empty(1000, dtype=np.float32)[3:]  # 12 bytes past the allocation's start
    values = np.linspace(-5, 5, 997, dtype=np.float32).reshape(997, 1)
    placed = _bench.placed_like(out, values)
    assert placed.ctypes.data % 4096 == out.ctypes.data % 4096
    assert placed.dtype == values.dtype and placed.shape == values.shape
    assert np.array_equal(placed, values) and not np.shares_memory(placed, values)


def test_bench_on_images_feeds_every_engine_the_same_images(monkeypatch):
    from fastmlp import _bench

    seen = {"fastmlp": [], "numpy": []}

    def recording(name):
        def forward(X):
            seen[name].append(X.copy())
            time.sleep(0.002)
            return X[:, :10]

        return forward

    monkeypatch.setattr(_bench, "engines", lambda layers, threads: {n: recording(n) for n in seen})
    images = np.arange(7 * 784, dtype=np.float32).reshape(7, 28, 28) / 7 / 784
    rows = _bench.run_comparison(
        [1, 40], threads=1, rounds=2, settle=0, sgemm_size=64, images=images
    )
    flat = images.reshape(7, 784)
    for name, calls in seen.items():
        ones = [X for X in calls if X.shape[0] == 1]
        # A timed call of a batch of one runs through all the images in order, one per call.
        assert len(ones) >= 3 * 7 and len(ones) % 7 == 0, name
        for i, X in enumerate(ones):
            np.testing.assert_array_equal(X, flat[i % 7 : i % 7 + 1], err_msg=name)
        batches = [X for X in calls if X.shape[0] == 40]
        assert batches, name
        np.testing.assert_array_equal(batches[0], flat[np.arange(40) % 7], err_msg=name)
    assert all(row["inputs"] == "images" for row in rows)
    assert "rows: the MNIST test images / 255" in _bench.format_table(rows, threads=1)
    # ... and its time is per call (each takes 2 ms, as one call on 40 rows does), not per
    # pass over the 7 images.
    one = next(r for r in rows if r["batch"] == 1 and r["engine"] == "fastmlp")
    forty = next(r for r in rows if r["batch"] == 40 and r["engine"] == "fastmlp")
    assert 0.002 <= one["seconds"] < 3 * forty["seconds"]


def test_bench_without_the_mnist_files_is_a_usage_error(tmp_path, capsys):
    from fastmlp import _bench

    with pytest.raises(SystemExit) as exit_info:
        _bench.main(["--mnist", str(tmp_path / "nowhere"), "--batch-sizes", "1"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "error: --mnist: " in error and "nowhere" in error


def test_missing_weights_file_is_a_clean_error(tmp_path, capsys):
    assert cli.main(["demo", "--weights", str(tmp_path / "nowhere.pkl")]) == 1
    error = capsys.readouterr().err
    assert "cannot read weights" in error and "nowhere.pkl" in error


def test_garbage_weights_file_is_a_clean_error(tmp_path, capsys):
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"this is not a network")
    assert cli.main(["demo", "--weights", str(garbage)]) == 1
    assert "unknown format" in capsys.readouterr().err


def test_missing_data_path_is_a_clean_error(tmp_path, capsys):
    assert cli.main(["demo", "--data", str(tmp_path / "nowhere")]) == 1
    assert "no such file or folder" in capsys.readouterr().err


def test_bad_thread_count_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as raised:
        cli.main(["demo", "--threads", "0"])
    assert raised.value.code == 2
    assert "positive integer" in capsys.readouterr().err


def test_save_errors_needs_labels(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert cli.main(["demo", "--save-errors", str(tmp_path / "errors.png")]) == 1
    assert "needs labelled MNIST data" in capsys.readouterr().err
    assert not (tmp_path / "errors.png").exists()


def test_weights_without_data_say_so(tmp_path, capsys):
    rng = np.random.default_rng(1)
    np.savez(
        tmp_path / "net.npz",
        W1=rng.normal(size=(784, 10)).astype(np.float32),
        b1=np.zeros(10, np.float32),
    )
    assert cli.main(["demo", "--weights", str(tmp_path / "net.npz")]) == 0
    output = capsys.readouterr().out
    assert "no MNIST data found" in output
    assert "accuracy" not in output.split("raw pixels")[1].splitlines()[1]  # no accuracy column


# --- on the real data --------------------------------------------------------------------


def _accuracies(output: str) -> list[str]:
    # From the right: max |Δp|, speed-up, time unit, time, agreement, accuracy.
    return [row.split()[-6] for row in _table_rows(output)]


def test_demo_on_the_real_data_prints_the_published_accuracies(
    sample_weights_path, mnist_dir, capsys
):
    code = cli.main(
        ["demo", "--weights", str(sample_weights_path), "--data", str(mnist_dir), "--threads", "1"]
    )
    assert code == 0
    output = capsys.readouterr().out
    raw, scaled = f"{TUTORIAL_ACCURACY_RAW:.4f}", f"{TUTORIAL_ACCURACY_SCALED:.4f}"
    assert _accuracies(output) == [raw] * 3 + [scaled] * 3
    prose = " ".join(output.split())
    overflows = re.search(r'"overflow encountered in exp" ([\d,]+) times at 1 image', prose)
    assert overflows is not None and int(overflows.group(1).replace(",", "")) > 0
    assert "fastmlp: 0 warnings" in prose


def test_demo_finds_keras_mnist_in_home(sample_weights_path, mnist, nothing_to_find, capsys):
    images, labels = mnist
    datasets = nothing_to_find / ".keras" / "datasets"
    datasets.mkdir(parents=True)
    np.savez(datasets / "mnist.npz", x_test=images, y_test=labels)
    assert cli.main(["demo", "--weights", str(sample_weights_path)]) == 0
    assert _accuracies(capsys.readouterr().out)[-1] == f"{TUTORIAL_ACCURACY_SCALED:.4f}"


def test_save_errors_writes_a_png(sample_weights_path, mnist_dir, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "errors.png"
    code = cli.main(
        [
            "demo",
            "--weights",
            str(sample_weights_path),
            "--data",
            str(mnist_dir),
            "--save-errors",
            str(png),
        ]
    )
    assert code == 0
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    wrong = round((1 - TUTORIAL_ACCURACY_SCALED) * 10000)
    assert f"saved 40 of {wrong} misclassified digits" in capsys.readouterr().out


def test_save_errors_without_matplotlib_explains_how_to_install(
    sample_weights_path, mnist_dir, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    code = cli.main(
        [
            "demo",
            "--weights",
            str(sample_weights_path),
            "--data",
            str(mnist_dir),
            "--save-errors",
            str(tmp_path / "errors.png"),
        ]
    )
    assert code == 1
    assert 'pip install "fastmlp[plot]"' in capsys.readouterr().err
