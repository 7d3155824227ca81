"""Optional plugin modules, named in $PRUNE_SWEEP_PLUGINS, that register extra registry entries.

Why an environment variable: Ray workers are separate processes, so a repair method registered
only in the driver would be unknown where trials run. Workers inherit the variable and import the
same modules before the first trial. Entries are module names or paths to .py files, separated
by the OS path separator.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path

PLUGINS_ENV = "PRUNE_SWEEP_PLUGINS"
_loaded: set[str] = set()


def load_plugins() -> None:
    """Import every plugin named in the environment, once per process."""
    for entry in filter(None, os.environ.get(PLUGINS_ENV, "").split(os.pathsep)):
        if entry in _loaded:
            continue
        if entry.endswith(".py"):
            path = Path(entry)
            spec = importlib.util.spec_from_file_location(f"prune_sweep_plugin_{path.stem}", path)
            if spec is None or spec.loader is None or not path.is_file():
                raise ImportError(f"{PLUGINS_ENV}: cannot load plugin file {entry!r}")
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
        else:
            importlib.import_module(entry)
        _loaded.add(entry)
