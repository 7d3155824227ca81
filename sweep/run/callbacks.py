"""Tune callbacks that run in the driver: the store's single writer, and the progress line."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from ray import cloudpickle
from ray.tune import Callback

from sweep.plan.cells import Cell
from sweep.plan.identity import TrialConfig
from sweep.results.rows import build_row
from sweep.results.store import ResultStore

POINTS = "points"  # the result key under which a trial reports its cell's point outcomes


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
    """Writes each finished point's row the moment its cell reports: the store's only writer.

    A trial reports one result per cell, holding each point's measurements or error. The rows
    are written, the ledger hears of their keys (a restarted trial skips them), and the bulky
    payload is dropped from the result, so Tune keeps no per-image data in the driver.
    """

    def __init__(
        self,
        store: ResultStore,
        grid: str,
        chunks: Sequence[Sequence[Cell]],
        ledger: Any,
        progress: ProgressLine,
    ) -> None:
        self.store, self.grid, self.ledger, self.progress = store, grid, ledger, progress
        self.chunk_keys = [[p.key for cell in chunk for p in cell.points] for chunk in chunks]
        self.points = {
            key: point
            for chunk, keys in zip(chunks, self.chunk_keys, strict=True)
            for key, point in zip(keys, (p for cell in chunk for p in cell.points), strict=True)
        }
        self.failed: list[tuple[TrialConfig, str]] = []
        self.written_keys: set[str] = set()

    @property
    def written(self) -> int:
        """Points written with an ok row."""
        return len(self.written_keys) - len(self.failed)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info):
        earlier = _failures(trial)
        keys = []
        for point in result.pop(POINTS, None) or []:
            if point["key"] in self.written_keys:  # a restarted trial reported it again
                continue
            config = self.points[point["key"]]
            self._write(config, point["measurements"], earlier + point["attempts"], point["error"])
            keys.append(point["key"])
        self.ledger.add.remote(keys)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info):
        """The cell itself kept failing (not one point): each unwritten point gets an error row."""
        message = error_message(trial)
        for key in self.chunk_keys[trial.config["chunk"]]:
            if key not in self.written_keys:
                self._write(self.points[key], None, _failures(trial), message)

    def _write(
        self, config: TrialConfig, measurements: dict | None, attempts: int, error: str | None
    ) -> None:
        row = build_row(config, measurements, grid=self.grid, attempts=attempts, error=error)
        self.store.write(row)
        self.written_keys.add(config.key)
        if error is not None:
            self.failed.append((config, error))
        self.progress.add(ok=error is None)


class ProgressLine(Callback):
    """One line with points done / failed / total, cells running and an ETA, redrawn in place
    on a TTY. Points are counted as the store writer lands them; cells as Tune runs them."""

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
            f"{finished}/{self.total} points finished ({self.done} ok, {self.failed} failed) · "
            f"{self.running} trials running · {self.retried} retried · {eta_text}"
        )

    def add(self, ok: bool) -> None:
        """One point's row landed."""
        if ok:
            self.done += 1
        else:
            self.failed += 1
        self._show(force=not ok)

    def _show(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._tty:
            if force or now - self._last_print >= 0.2:
                self.stream.write("\r\033[K" + self.line())
                self.stream.flush()
                self._last_print = now
        elif force or now - self._last_print >= self.every_s:
            print(self.line(), file=self.stream, flush=True)
            self._last_print = now

    def _count_running(self, trials: list) -> None:
        self.running = sum(trial.status == "RUNNING" for trial in trials)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info):
        self._count_running(trials)
        self._show()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info):
        self._count_running(trials)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info):
        self.retried += 1
        self._show()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info):
        self._count_running(trials)
        self._show()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info):
        self._count_running(trials)
        self._show()

    def on_experiment_end(self, trials: list, **info):
        if self._tty:
            self.stream.write("\r\033[K" + self.line() + "\n")
            self.stream.flush()
        else:
            self._show(force=True)
