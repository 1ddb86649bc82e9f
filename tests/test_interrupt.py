"""Ctrl-C stops a long call promptly, and SIGTERM's default still ends the process.

A call that runs for seconds with the GIL released would otherwise notice a signal only when
it returns. Each test runs the call in a child interpreter, signals it once the call is under
way, and bounds how long the child takes to stop.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

# A network wide enough that 100,000 uint8 rows take many seconds (5.6M multiply-adds a row).
CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    import fastmlp

    rng = np.random.default_rng(0)
    sizes = (784, 2000, 2000, 10)
    model = fastmlp.MLP(
        [(rng.normal(0, 0.03, size=(a, b)).astype(np.float32), np.zeros(b, np.float32), act)
         for a, b, act in zip(sizes, sizes[1:], ("relu", "relu", "softmax"))]
    )
    rows = rng.integers(0, 256, size=(100_000, 784), dtype=np.uint8)
    model.predict_proba(rows[:2000])  # warm up, and measure the rate
    start = time.perf_counter()
    model.predict_proba(rows[:2000])
    per_row = (time.perf_counter() - start) / 2000
    print(f"ready {per_row * 100_000:.3f}", flush=True)
    try:
        model.predict_proba(rows)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(3)
    print("finished", flush=True)
    """
)


def test_ctrl_c_stops_a_long_predict_proba_within_a_fraction_of_its_time():
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        ready = child.stdout.readline().split()
        assert ready and ready[0] == "ready", child.stderr.read()
        whole_call = float(ready[1])
        time.sleep(min(0.3, whole_call / 4))
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=120)
        stopped_after = time.monotonic() - sent
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert "interrupted" in out, (out, err)
    assert child.returncode == 3
    # The whole call takes whole_call seconds; a slice is 1/10 of a second or less at the
    # SIMD levels. Allow for a loaded machine, but far less than the call itself.
    assert stopped_after < max(1.0, whole_call / 4), (stopped_after, whole_call)
