"""threadpoolctl sees and limits fastmlp's pool; joblib's loky workers do not oversubscribe."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import fastmlp
from fastmlp import _threadpool
from fastmlp._common import available_cores

threadpoolctl = pytest.importorskip("threadpoolctl")
if not hasattr(threadpoolctl, "register"):  # pragma: no cover - threadpoolctl < 3.5
    pytest.skip("threadpoolctl has no register()", allow_module_level=True)


def _fastmlp_entries(info):
    return [entry for entry in info if entry["user_api"] == "fastmlp"]


def _run_python(code: str, **env: str) -> str:
    environment = {k: v for k, v in os.environ.items() if not k.endswith("NUM_THREADS")}
    environment.update(env)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_threadpool_info_lists_fastmlp():
    entries = _fastmlp_entries(threadpoolctl.threadpool_info())
    assert len(entries) == 1
    entry = entries[0]
    assert entry["internal_api"] == "fastmlp"
    assert entry["num_threads"] == fastmlp.get_num_threads()
    assert entry["version"] == fastmlp.__version__
    assert os.path.realpath(entry["filepath"]) == os.path.realpath(fastmlp._core.__file__)


def test_threadpool_limits_limits_and_restores():
    fastmlp.set_num_threads(2)
    before = fastmlp.get_num_threads()
    try:
        with threadpoolctl.threadpool_limits(1):
            assert fastmlp.get_num_threads() == 1
            model = fastmlp.MLP([(np.ones((4, 3)), np.zeros(3), "softmax")])
            model.predict_proba(np.ones((10, 4)))  # still computes inside the block
        assert fastmlp.get_num_threads() == before
        with threadpoolctl.threadpool_limits(limits=1, user_api="fastmlp"):
            assert fastmlp.get_num_threads() == 1
        with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
            assert fastmlp.get_num_threads() == before  # not ours
    finally:
        fastmlp.set_num_threads(0)


def test_threadpool_controller_limits_fastmlp():
    controller = threadpoolctl.ThreadpoolController()
    selected = controller.select(user_api="fastmlp")
    assert len(selected.lib_controllers) == 1
    with controller.limit(limits=1, user_api="fastmlp"):
        assert fastmlp.get_num_threads() == 1


def test_registration_waits_for_threadpoolctl_and_costs_no_import():
    # In a fresh interpreter: importing fastmlp does not import threadpoolctl, and importing
    # threadpoolctl afterwards registers fastmlp.
    out = _run_python(
        "import sys, fastmlp\n"
        "print('threadpoolctl' in sys.modules)\n"
        "import threadpoolctl\n"
        "print([e['user_api'] for e in threadpoolctl.threadpool_info()].count('fastmlp'))\n"
        "import fastmlp._threadpool as t\n"
        "print(sum(isinstance(f, t._RegisterOnImport) for f in sys.meta_path))\n"
        "print(threadpoolctl.__spec__.loader.__class__.__name__ != '_RegisteringLoader')\n"
    )
    assert out.split() == ["False", "1", "0", "True"]


def test_registration_when_threadpoolctl_came_first():
    out = _run_python(
        "import threadpoolctl, fastmlp\n"
        "print([e['user_api'] for e in threadpoolctl.threadpool_info()].count('fastmlp'))\n"
    )
    assert out == "1"


def test_a_foreign_core_extension_is_not_taken_for_fastmlp(tmp_path):
    # threadpoolctl matches by file name; a library of the same name elsewhere is skipped.
    controller_class = [
        c for c in threadpoolctl._ALL_CONTROLLERS if getattr(c, "user_api", "") == "fastmlp"
    ][0]
    with pytest.raises(OSError, match="not fastmlp's extension"):
        controller_class.set_additional_attributes(
            type("Fake", (), {"filepath": str(tmp_path / "_core.so")})()
        )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"OMP_NUM_THREADS": "1"}, 1),
        ({"OMP_NUM_THREADS": "1,1"}, 1),
        ({"OMP_NUM_THREADS": "1", "FASTMLP_NUM_THREADS": "2"}, None),  # ours wins
        ({"OMP_NUM_THREADS": "lots"}, None),  # ignored, as OpenMP ignores it
        ({}, None),
    ],
)
def test_omp_num_threads_sets_the_default(env, expected):
    out = _run_python(
        "import fastmlp, os\n"
        "print(fastmlp.get_num_threads())\n"
        "fastmlp.set_num_threads(0)\n"
        "print(fastmlp.get_num_threads())\n",
        **env,
    )
    if expected is None:
        fresh = _run_python(
            "import fastmlp\nprint(fastmlp.get_num_threads())",
            **{k: v for k, v in env.items() if k != "OMP_NUM_THREADS"},
        )
        expected = int(fresh)
    assert out.split() == [str(expected)] * 2  # set_num_threads(0) restores it


def test_environment_threads_parsing(monkeypatch):
    monkeypatch.delenv("FASTMLP_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert _threadpool.environment_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "0")
    assert _threadpool.environment_threads() == 0
    monkeypatch.setenv("OMP_NUM_THREADS", "100000")
    assert _threadpool.environment_threads() == available_cores()
    monkeypatch.setenv("FASTMLP_NUM_THREADS", "1")
    assert _threadpool.environment_threads() == 0


def _worker_threads(_):
    import threadpoolctl as worker_threadpoolctl

    import fastmlp as worker_fastmlp

    model = worker_fastmlp.MLP([(np.ones((4, 3)), np.zeros(3), "softmax")])
    model.predict_proba(np.ones((5, 4)))
    entries = _fastmlp_entries(worker_threadpoolctl.threadpool_info())
    return worker_fastmlp.get_num_threads(), [e["num_threads"] for e in entries]


def test_loky_workers_do_not_oversubscribe():
    joblib = pytest.importorskip("joblib")
    from joblib.externals.loky import get_reusable_executor

    # joblib gives each worker its share of the cores through OMP_NUM_THREADS and friends
    # (or passes the parent's setting through); fastmlp in the worker follows it.
    share = max(joblib.cpu_count() // 2, 1)
    expected = int(os.environ.get("OMP_NUM_THREADS", str(share)).split(",")[0])
    if os.environ.get("FASTMLP_NUM_THREADS"):
        expected = int(os.environ["FASTMLP_NUM_THREADS"])
    results = joblib.Parallel(n_jobs=2, backend="loky")(
        joblib.delayed(_worker_threads)(i) for i in range(4)
    )
    get_reusable_executor().shutdown(wait=True)
    for threads, listed in results:
        assert threads == min(expected, os.cpu_count() or 1)
        assert listed == [threads]
