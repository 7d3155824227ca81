"""The environment a benchmark gives the launcher it starts in a subprocess."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def launcher_env() -> dict[str, str]:
    """This checkout importable, output unbuffered, and a Ray of its own.

    Without an address, ray.init() joins the cluster a `ray start` (or a test's
    ray.cluster_utils.Cluster) last announced in /tmp/ray/ray_current_cluster; a benchmark must
    not measure someone else's cluster.
    """
    variables = dict(os.environ)
    paths = [str(ROOT), os.environ.get("PYTHONPATH")]
    variables["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    variables["RAY_ADDRESS"] = "local"
    variables["PYTHONUNBUFFERED"] = "1"  # logs date the launcher's steps
    return variables
