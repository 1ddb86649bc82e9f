"""``fastmlp --version`` and ``fastmlp info``: what a bug report needs to say about the install."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from typing import Any

import numpy as np

from .. import _core
from .._common import available_cores

# The build facts worth a line of their own, in the order a reader looks for them.
BUILD_FIELDS = (
    ("profile", "Cargo profile"),
    ("profile_overrides", "profile overrides"),
    ("opt_level", "opt-level"),
    ("debug_assertions", "debug assertions"),
    ("python", "built for"),
    ("target", "target"),
    ("target_features", "compile-time target features"),
    ("rustc", "rustc"),
)


def version_line() -> str:
    """``fastmlp X.Y.Z``, as ``fastmlp --version`` prints it."""
    return f"fastmlp {_core.__version__}"


def cpu_model() -> str:
    """The CPU's marketing name (Linux: /proc/cpuinfo's "model name"), else what Python knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def info_lines() -> list[str]:
    """The report ``fastmlp info`` prints, one fact per line."""
    build = _core.build_info()
    features = _core.cpu_features()
    seen = ", ".join(f"{name} {'yes' if has else 'no'}" for name, has in features) or "none"
    threads_variable = os.environ.get("FASTMLP_NUM_THREADS")
    threads_source = "unset" if threads_variable is None else f"set to {threads_variable!r}"
    lines = [
        version_line(),
        f"Python: {platform.python_implementation()} {platform.python_version()} "
        f"({sys.executable})",
        f"NumPy: {np.__version__}",
        f"platform: {platform.platform()}",
        f"CPU: {cpu_model()} ({available_cores()} logical CPUs available)",
        f"dispatch level: {_core.cpu_level()} "
        f"(this CPU can run: {', '.join(_core.supported_levels())})",
        f"CPU features dispatch checks: {seen}",
        f"threads: {_core.get_num_threads()} by default (FASTMLP_NUM_THREADS {threads_source})",
    ]
    for key, label in BUILD_FIELDS:
        lines.append(f"build, {label}: {build.get(key) or 'none'}")
    return lines


def add_parser(commands: Any) -> None:
    commands.add_parser(
        "info",
        help="print versions, the CPU, dispatch level, threads and build: for bug reports",
        description="Print what a bug report needs: the fastmlp, Python and NumPy versions, "
        "the CPU model, the instruction-set level and the features dispatch checked, the "
        "default thread count, and how the compiled core was built.",
    )


def run(options: argparse.Namespace) -> int:
    print("\n".join(info_lines()))
    return 0
