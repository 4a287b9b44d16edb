"""Where a run's time goes: seconds per phase (loading, tokenizing, training, evaluating, saving), for
the manifest. Training includes the evaluations and checkpoints made during training; evaluating is the
final validation and test predictions; saving is the model and artifacts written at the end."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

PHASES = ("loading", "tokenizing", "training", "evaluating", "saving")


class PhaseClock:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._open: dict[str, float] = {}

    def start(self, name: str) -> None:
        """A phase that ends where the figures are read (`rounded`): the saving, which ends with the
        manifest."""
        self._open[name] = time.perf_counter()

    def add(self, name: str, seconds: float) -> None:
        if name not in PHASES:
            raise ValueError(f"unknown phase {name!r}: one of {', '.join(PHASES)}")
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def rounded(self) -> dict[str, float]:
        for name, started in self._open.items():
            self.add(name, time.perf_counter() - started)
        self._open.clear()
        return {name: round(self.seconds[name], 2) for name in PHASES if name in self.seconds}
