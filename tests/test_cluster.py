"""The cluster path: cluster.yaml against Ray's schema, and real multi-node sweeps on one machine.

`ray.cluster_utils.Cluster` starts a head (no CPUs: it takes no trials, like cluster.yaml's) and
two worker raylets with one logical GPU each. Each worker node gets its own PRUNE_SWEEP_CACHE, as
separate machines would have separate disks.
"""

from __future__ import annotations

import re
import threading
import time
import tomllib
from pathlib import Path

import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.cluster_utils import Cluster
from support import needs_fashion_mnist, write_grid

from sweep import launch
from sweep.core.paths import CACHE_ENV
from sweep.core.plugins import PLUGINS_ENV
from sweep.results.store import read_results
from sweep.run.node_cache import ArtifactCache

ROOT = Path(__file__).parents[1]


def test_cluster_yaml_validates_against_rays_schema():
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(config))
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"] == {"CPU": 0, "GPU": 0}  # the head takes no trials
    workers = [t for name, t in config["available_node_types"].items() if name != "gpu_worker"]
    assert workers == [head]
    gpu = config["available_node_types"]["gpu_worker"]
    assert gpu["min_workers"] == 0 and gpu["resources"]["GPU"] == 1
    assert gpu["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"


def test_cluster_installs_exactly_the_ray_the_project_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = [d for d in project["dependencies"] if d.startswith("ray[")]
    assert len(pins) == 1
    pinned = re.fullmatch(r"ray\[[\w,]+\]==([\d.]+)", pins[0].split("#")[0].strip())
    assert pinned is not None and pinned[1] == ray.__version__
    setup = " ".join(yaml.safe_load((ROOT / "cluster.yaml").read_text())["setup_commands"])
    assert "pip install --python ~/venv/bin/python -e ~/prune-sweep" in setup


def test_cluster_yaml_holds_no_credentials():
    text = (ROOT / "cluster.yaml").read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}|aws_secret_access_key|aws_access_key_id", text, re.I)


RENDEZVOUS = Path(__file__).parent / "plugins" / "rendezvous.py"


@pytest.fixture
def two_gpu_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(PLUGINS_ENV, str(RENDEZVOUS))
    monkeypatch.setenv("PRUNE_SWEEP_TEST_MARKERS", str(tmp_path / "markers"))
    (tmp_path / "markers").mkdir()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "num_gpus": 0, "gcs_server_port": 6379},
    )
    caches = [tmp_path / f"cache-node{i}" for i in range(2)]
    nodes = [
        cluster.add_node(num_cpus=1, num_gpus=1, env_vars={CACHE_ENV: str(cache)})
        for cache in caches
    ]
    cluster.wait_for_nodes()
    yield cluster, nodes, caches
    ray.shutdown()
    cluster.shutdown()


def _launch(cluster: Cluster, grid: Path, out: Path, checkpoints: Path) -> int:
    return launch.main(
        ["--address", cluster.address, "--grid", str(grid), "--store", str(out),
         "--checkpoints", str(checkpoints), "--gpus-per-trial", "1", "--retries", "3"]
    )  # fmt: skip


@needs_fashion_mnist
def test_trials_spread_over_both_workers_and_each_node_fills_its_cache_once(
    two_gpu_nodes, tmp_path: Path, checkpoint_dir: Path
):
    cluster, nodes, caches = two_gpu_nodes
    # Each `rendezvous` trial waits until another one runs at the same time; with one CPU per
    # worker node, that other trial is on the other node, so both nodes must take trials.
    grid = write_grid(
        tmp_path / "g.yaml", sparsities=[0.5, 0.7, 0.9], repairs=["rendezvous", "bn_recal"]
    )
    out = tmp_path / "out"
    assert _launch(cluster, grid, out, checkpoint_dir) == 0

    frame = read_results(out)
    assert len(frame) == 12 and frame["trial_key"].is_unique
    assert set(frame["status"]) == {"ok"}
    assert set(frame["node_id"]) == {node.node_id for node in nodes}
    for cache in caches:
        fills = ArtifactCache(cache).fills()
        assert fills, f"{cache} was never used"
        assert len(fills) == len(set(fills)), f"an artefact was computed twice in {cache}"


@needs_fashion_mnist
def test_losing_a_worker_node_mid_sweep_loses_and_duplicates_nothing(
    two_gpu_nodes, tmp_path: Path, checkpoint_dir: Path
):
    cluster, nodes, _ = two_gpu_nodes
    grid = write_grid(tmp_path / "g.yaml", sparsities=[0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
    out = tmp_path / "out"
    victim = nodes[1]
    landed_at_kill: list[int] = []

    def kill_when_running() -> None:
        deadline = time.monotonic() + 240
        while len(list(out.rglob("*.parquet"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        landed_at_kill.append(len(list(out.rglob("*.parquet"))))
        cluster.remove_node(victim, allow_graceful=False)

    killer = threading.Thread(target=kill_when_running)
    killer.start()
    assert _launch(cluster, grid, out, checkpoint_dir) == 0
    killer.join()

    frame = read_results(out)
    assert len(frame) == 24 and frame["trial_key"].is_unique
    assert set(frame["status"]) == {"ok"}
    assert 3 <= landed_at_kill[0] < 24  # the node died mid-sweep
    # Every point not yet recorded at the kill ran on the survivor, except the victim's one
    # running cell (one CPU: one trial, one cell of 2 points), whose result may still have been
    # in flight to the driver.
    survivors = frame[frame["node_id"] == nodes[0].node_id]
    assert len(survivors) >= 24 - landed_at_kill[0] - 2
