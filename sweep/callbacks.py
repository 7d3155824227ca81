"""Tune callbacks that run in the driver: the store's single writer, and the progress line."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from ray import cloudpickle
from ray.tune import Callback

from sweep.identity import TrialConfig
from sweep.rows import MEASUREMENT_COLUMNS, build_row
from sweep.store import ResultStore


def _trial_config(trial: Any) -> TrialConfig:
    return TrialConfig.from_dict(trial.config["trial"])


def _failures(trial: Any) -> int:
    return trial.run_metadata.num_failures


def error_message(trial: Any) -> str:
    """The trial's last exception as 'Type: message' (the root cause, not Ray's wrapper).

    Read from the driver-side error files Tune writes before calling on_trial_error; Tune's own
    getters read the storage copy, which is synced later and may not exist yet.
    """
    pickled, text = trial.pickled_error_file, trial.error_file
    if pickled and os.path.exists(pickled):
        with open(pickled, "rb") as handle:
            error = cloudpickle.load(handle)
        while getattr(error, "cause", None) is not None:
            error = error.cause
        return f"{type(error).__name__}: {error}"
    if text and os.path.exists(text):
        lines = Path(text).read_text().strip().splitlines()
        return lines[-1] if lines else "unknown error"
    return "unknown error"


class StoreWriter(Callback):
    """Writes each finished trial's row the moment it reports: the store's only writer."""

    def __init__(self, store: ResultStore, grid: str) -> None:
        self.store, self.grid = store, grid
        self.failed: list[tuple[TrialConfig, str]] = []
        self.written = 0

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info):
        measurements = {name: result[name] for name in MEASUREMENT_COLUMNS if name in result}
        row = build_row(
            _trial_config(trial), measurements, grid=self.grid, attempts=_failures(trial) + 1
        )
        self.store.write(row)
        self.written += 1

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info):
        config, message = _trial_config(trial), error_message(trial)
        row = build_row(config, None, grid=self.grid, attempts=_failures(trial), error=message)
        self.store.write(row)
        self.failed.append((config, message))


class ProgressLine(Callback):
    """One line with done / running / failed / total and an ETA, redrawn in place on a TTY."""

    def __init__(self, total: int, every_s: float = 10.0) -> None:
        self.total, self.every_s = total, every_s
        self.done = self.failed = self.retried = self.running = 0
        self.started_at = time.monotonic()
        self._last_print = 0.0

    @property
    def stream(self) -> TextIO:
        """Looked up when printing: Tune pickles callbacks, and a stream does not pickle."""
        return sys.stdout

    @property
    def _tty(self) -> bool:
        return self.stream.isatty()

    def line(self) -> str:
        finished = self.done + self.failed
        elapsed = time.monotonic() - self.started_at
        if finished:
            eta = elapsed / finished * (self.total - finished)
            eta_text = f"ETA {int(eta // 60)}m{int(eta % 60):02d}s"
        else:
            eta_text = "ETA --"
        return (
            f"{finished}/{self.total} finished ({self.done} ok, {self.failed} failed) · "
            f"{self.running} running · {self.retried} retried · {eta_text}"
        )

    def _show(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._tty:
            self.stream.write("\r\033[K" + self.line())
            self.stream.flush()
        elif force or now - self._last_print >= self.every_s:
            print(self.line(), file=self.stream, flush=True)
            self._last_print = now

    def _count_running(self, trials: list) -> None:
        self.running = sum(trial.status == "RUNNING" for trial in trials)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info):
        self._count_running(trials)
        self._show()

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info):
        self.retried += 1
        self._show()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info):
        self.done += 1
        self._count_running(trials)
        self._show()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info):
        self.failed += 1
        self._count_running(trials)
        self._show(force=True)

    def on_experiment_end(self, trials: list, **info):
        if self._tty:
            self.stream.write("\n")
        self._show(force=not self._tty)
