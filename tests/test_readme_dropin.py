"""The README's drop-in section: every Python code block in it runs as written."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Drop-in: scikit-learn, ONNX Runtime and threadpoolctl code, unchanged"


def _blocks() -> "list[str]":
    text = README.read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end != -1 else len(text)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def test_the_section_has_its_three_examples():
    blocks = _blocks()
    assert len(blocks) == 3
    assert "fastmlp.sklearn" in blocks[0]
    assert "fastmlp.onnx" in blocks[1]
    assert "threadpool_limits" in blocks[2]


@pytest.mark.parametrize(
    ("index", "needs"),
    [(0, ["sklearn"]), (1, ["sklearn", "skl2onnx", "onnx"]), (2, ["threadpoolctl"])],
    ids=["sklearn", "onnx", "threadpoolctl"],
)
def test_readme_example_runs(index, needs, tmp_path, monkeypatch):
    for module in needs:
        pytest.importorskip(module)
    monkeypatch.chdir(tmp_path)  # the ONNX example writes mlp.onnx
    code = _blocks()[index]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's ConvergenceWarning on short fits
        exec(compile(code, f"README.md example {index}", "exec"), {"__name__": "__readme__"})
