"""A driver killed with SIGKILL mid-sweep: the rerun runs only what is missing, once."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
from support import needs_fashion_mnist, write_grid

from sweep.results.store import read_results

ROOT = Path(__file__).parents[1]


def _command(grid: Path, out: Path, checkpoints: Path, cache: Path) -> list[str]:
    return [
        sys.executable, "-m", "sweep.launch", "--grid", str(grid), "--store", str(out),
        "--checkpoints", str(checkpoints), "--cache-dir", str(cache), "--max-concurrent", "1",
    ]  # fmt: skip


@needs_fashion_mnist
def test_sigkill_mid_sweep_then_rerun_runs_each_trial_exactly_once(
    tmp_path: Path, checkpoint_dir: Path
):
    grid = write_grid(tmp_path / "kill.yaml", sparsities=[0.5, 0.7, 0.8, 0.9, 0.95, 0.97])
    total = 2 * 6 * 2
    out = tmp_path / "out"
    command = _command(grid, out, checkpoint_dir, tmp_path / "cache")
    driver = subprocess.Popen(
        command, cwd=ROOT, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while len(list(out.rglob("*.parquet"))) < 3:
        assert driver.poll() is None, "the sweep ended before it could be killed"
        assert time.monotonic() < deadline, "no results within 240 s"
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()

    landed = sorted(out.rglob("*.parquet"))
    assert 3 <= len(landed) < total
    for path in landed:  # every visible file is complete
        assert pq.read_table(path).num_rows == 1
    before = read_results(out).set_index("trial_key")["finished_at"]

    rerun = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    done = re.search(r"(\d+) already done, (\d+) to run", rerun.stdout)
    assert done is not None, rerun.stdout
    assert (int(done[1]), int(done[2])) == (len(before), total - len(before))

    raw = pq.ParquetDataset(sorted(out.rglob("*.parquet"))).read()
    assert raw.num_rows == total
    assert len(set(raw.column("trial_key").to_pylist())) == total
    after = read_results(out).set_index("trial_key")["finished_at"]
    assert (after.loc[before.index] == before).all()  # the first run's rows were not redone
    assert not list(out.rglob(".*.tmp"))
