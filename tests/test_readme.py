"""The README's "From Python" snippet runs as written (in a scratch working directory)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import ray
from support import needs_fashion_mnist

from sweep.core.paths import CACHE_ENV

README = Path(__file__).parents[1] / "README.md"


def _snippet() -> str:
    section = README.read_text().split("## From Python", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's From Python section has no python block"
    return match.group(1)


@needs_fashion_mnist
def test_the_from_python_snippet_runs_as_written(
    tmp_path: Path, checkpoint_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    shutil.copytree(checkpoint_dir, tmp_path / "checkpoints")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    namespace: dict = {}
    try:
        exec(compile(_snippet(), str(README), "exec"), namespace)
    finally:
        ray.shutdown()
    frame = namespace["frame"]
    assert frame.groupby("replicate")["repair_variant"].apply(sorted).to_dict() == {
        r: ["bn_recal", "channel_var_shrink", "none"] for r in (0, 1)
    }
    assert set(frame["status"]) == {"ok"}
    assert namespace["summary"].exit_code == 0
    assert "top-1" in capsys.readouterr().out
