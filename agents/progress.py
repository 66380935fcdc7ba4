"""Progress of a training run: a tqdm bar on a terminal, a periodic line in a log file.

Without a terminal (a batch job, ``nohup``, CI) a redrawn bar either prints nothing useful or
fills the log with carriage returns, so training prints one plain line every
:data:`LINE_EVERY_S` seconds instead, and one at the end. Every agent makes its progress through
:func:`progress_bar`, the one place to switch to a project-wide helper.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol, TextIO

LINE_EVERY_S = 30.0  # seconds between two progress lines without a terminal


class Progress(Protocol):
    """What the agents call on a progress display (tqdm's names)."""

    total: int
    n: int

    def update(self, n: int = 1) -> Any: ...

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True) -> None: ...

    def close(self) -> None: ...


class ProgressLines:
    """tqdm's ``update``/``set_postfix``/``close`` as a line every ``every_s`` seconds (and a last one).

    A line reads ``ppo: 384/768 step (50 %), 12 s, ~12 s left, return=-0.41 accuracy=0.82``."""

    def __init__(self, total: int, initial: int, description: str, unit: str, stream: TextIO,
                 every_s: float | None = None):
        self.total, self.n, self.description, self.unit = total, initial, description, unit
        self.stream, self.every_s = stream, LINE_EVERY_S if every_s is None else every_s
        self.initial = initial
        self.started = self.last_line = time.monotonic()
        self.postfix: dict[str, Any] = {}

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self.last_line >= self.every_s:
            self.write_line()

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True) -> None:
        self.postfix = dict(ordered_dict or {})

    def close(self) -> None:
        self.write_line()

    def write_line(self) -> None:
        self.last_line = time.monotonic()
        elapsed = self.last_line - self.started
        percent = 100 * self.n / self.total if self.total else 100.0
        done_here = self.n - self.initial  # what this process did: a resumed run's earlier work took no time here
        left = ""
        if 0 < done_here and self.n < self.total:
            left = f", ~{elapsed * (self.total - self.n) / done_here:.0f} s left"
        postfix = "".join(f" {name}={value}" for name, value in self.postfix.items())
        print(f"{self.description}: {self.n}/{self.total} {self.unit} ({percent:.0f} %), {elapsed:.0f} s{left}"
              f"{',' if postfix else ''}{postfix}", file=self.stream, flush=True)


def progress_bar(total: int, initial: int, description: str, unit: str) -> Progress:
    """A tqdm bar where stderr is a terminal, else :class:`ProgressLines` on stderr."""
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=description, unit=unit, dynamic_ncols=True)
    return ProgressLines(total, initial, description, unit, sys.stderr)
