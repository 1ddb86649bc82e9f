"""The version is written once (Cargo.toml) and reported everywhere; `fastmlp --version` and
`fastmlp info` say what a bug report needs; the dependency floors are the ones CI tests."""

from __future__ import annotations

import importlib.metadata
import platform
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

import fastmlp
from fastmlp import _core
from fastmlp.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _cargo_version() -> str:
    with open(ROOT / "Cargo.toml", "rb") as file:
        return tomllib.load(file)["package"]["version"]


def _pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as file:
        return tomllib.load(file)["project"]


def test_version_comes_from_cargo_toml_alone():
    version = _cargo_version()
    assert fastmlp.__version__ == version
    assert _core.__version__ == version
    assert importlib.metadata.version("fastmlp") == version
    project = _pyproject()
    assert "version" not in project
    assert "version" in project["dynamic"]


def test_version_flag_prints_the_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"fastmlp {fastmlp.__version__}\n"


def test_module_entry_point_prints_the_version():
    result = subprocess.run(
        [sys.executable, "-m", "fastmlp", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"fastmlp {fastmlp.__version__}"


def _info(capsys) -> str:
    assert main(["info"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    return captured.out


def test_info_reports_versions_cpu_threads_and_build(capsys):
    out = _info(capsys)
    lines = out.splitlines()
    assert lines[0] == f"fastmlp {fastmlp.__version__}"
    assert f"Python: {platform.python_implementation()} {platform.python_version()}" in out
    assert f"NumPy: {np.__version__}\n" in out
    assert re.search(r"^CPU: .+ \(\d+ logical CPUs available\)$", out, re.MULTILINE)
    levels = ", ".join(_core.supported_levels())
    assert f"dispatch level: {fastmlp.cpu_level()} (this CPU can run: {levels})" in out
    assert f"threads: {fastmlp.get_num_threads()} by default" in out
    build = _core.build_info()
    assert f"build, Cargo profile: {build['profile']}\n" in out
    assert f"build, rustc: {build['rustc']}\n" in out


def test_info_follows_the_level_in_force(capsys):
    if "portable" not in _core.supported_levels():
        pytest.skip("this CPU has no portable level to force")
    _core.force_cpu_level("portable")
    try:
        out = _info(capsys)
    finally:
        _core.force_cpu_level(None)
    assert "dispatch level: portable (" in out


def test_info_names_the_thread_variable(capsys, monkeypatch):
    monkeypatch.setenv("FASTMLP_NUM_THREADS", "3")
    assert "(FASTMLP_NUM_THREADS set to '3')" in _info(capsys)
    monkeypatch.delenv("FASTMLP_NUM_THREADS")
    assert "(FASTMLP_NUM_THREADS unset)" in _info(capsys)


def test_cpu_features_are_the_ones_dispatch_decides_on():
    features = dict(_core.cpu_features())
    supported = _core.supported_levels()
    if platform.machine().lower() in ("aarch64", "arm64"):
        # NEON is part of every aarch64 CPU: the level is always there, with nothing to detect.
        assert features == {"neon": True}
        assert supported == ["neon", "portable"]
        return
    if platform.machine().lower() not in ("x86_64", "amd64"):
        assert features == {}
        return
    assert set(features) == {"avx2", "fma", "popcnt", "avx512f"}
    avx2 = features["avx2"] and features["fma"] and features["popcnt"]
    assert ("avx2" in supported) == avx2
    assert ("avx512" in supported) == (avx2 and features["avx512f"])


def test_build_info_describes_this_binary():
    build = _core.build_info()
    assert build["version"] == fastmlp.__version__
    # The profile is the name of Cargo's output directory: "release", "dist" or a custom one.
    assert re.fullmatch(r"[A-Za-z0-9_-]+", build["profile"]), build["profile"]
    assert build["opt_level"] in ("0", "1", "2", "3", "s", "z")
    assert build["debug_assertions"] in ("on", "off")
    assert build["rustc"].startswith("rustc ")
    major, minor = sys.version_info[:2]
    built_for = re.fullmatch(r"CPython 3\.(\d+)(\+ \(stable ABI\))?", build["python"])
    assert built_for, build["python"]
    # A version-specific build loads only in its own Python; an abi3 build in any later one.
    if built_for.group(2):
        assert int(built_for.group(1)) <= minor
    else:
        assert (major, int(built_for.group(1))) == (3, minor)
    assert platform.machine().lower().replace("amd64", "x86_64") in build["target"]


def test_numpy_floor_is_the_version_ci_tests():
    requirement = next(r for r in _pyproject()["dependencies"] if r.startswith("numpy"))
    floor = re.fullmatch(r"numpy>=([0-9.]+)", requirement)
    assert floor, requirement
    ci = (ROOT / ".ci" / "run").read_text()
    assert f'"numpy=={floor.group(1)}"' in ci


def test_license_file_matches_the_metadata():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")
    assert _pyproject()["license"] == {"text": "MIT"}
    with open(ROOT / "Cargo.toml", "rb") as file:
        assert tomllib.load(file)["package"]["license"] == "MIT"
