"""Progress of long loops that a person can read, with or without a terminal.

On a terminal, :func:`track_progress` is a tqdm bar. Without one (CI, ``nohup``, cluster logs) a
bar is either hidden (tqdm's ``disable=None``) or a wall of carriage returns, and a job that runs
for minutes prints nothing; there it is :class:`ProgressLines`, which writes one plain line at most
every ``interval_s`` seconds — step/total, elapsed time, ETA and the loop's latest figures::

    pretrain cnn4 on cifar10 (full width): 450/1500 steps (30 %), 2 min 01 s elapsed, ETA 4 min 42 s, loss=1.234

Loops shorter than one interval print nothing, so short inner loops (an env step's few optimiser
steps) stay silent. Lines go to the ``prune_gym.progress`` logger when logging is configured (the
``prune-gym`` command does that), else straight to stderr.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

# Seconds between two plain progress lines: frequent enough to show a job is alive, rare enough
# to keep a day-long log readable.
DEFAULT_INTERVAL_S = 30.0

logger = logging.getLogger("prune_gym.progress")


def is_interactive(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default: stderr, where bars are drawn) is a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def format_duration(seconds: float) -> str:
    """``"42 s"``, ``"3 min 05 s"`` or ``"2 h 07 min"``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def emit_line(line: str) -> None:
    """Log ``line`` at INFO on ``prune_gym.progress`` when logging is configured, else print it
    to stderr (so a script without logging set up still shows progress)."""
    if logger.hasHandlers():
        logger.info(line)
    else:
        print(line, file=sys.stderr, flush=True)


class ProgressLines:
    """Iterate over ``iterable`` and emit a plain progress line at most every ``interval_s`` seconds.

    The same small interface as a tqdm bar (iteration, :meth:`set_postfix`, :meth:`close`), so a
    loop does not care which one it got. A line is written when an item is fetched and
    ``interval_s`` has passed since the start or the last line; :meth:`close` writes a last line
    only when earlier lines were written.
    """

    def __init__(self, iterable: Iterable[Any] | None, total: int | None, description: str, unit: str = "step",
                 interval_s: float = DEFAULT_INTERVAL_S, clock: Callable[[], float] = time.monotonic,
                 emit: Callable[[str], None] = emit_line, initial: int = 0):
        self.iterable, self.total, self.description, self.unit = iterable, total, description, unit
        self.interval_s, self.clock, self.emit = interval_s, clock, emit
        # Items done so far; ``initial`` of them before this process (a resumed run), which took no
        # time here and so do not count towards the ETA.
        self.started = self.initial = initial
        self.postfix: dict[str, Any] = {}
        self.lines_written = 0
        self._start = self._last_line = clock()

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable:
            if self.started and self.clock() - self._last_line >= self.interval_s:
                self._write(done=self.started)
            self.started += 1
            yield item

    @property
    def n(self) -> int:
        """Items done so far (tqdm's name)."""
        return self.started

    def update(self, n: int = 1) -> None:
        """Count ``n`` more items done, for loops that are not an iterable (an SB3 callback, an
        agent's iterations), as tqdm's ``update``; a line when one is due."""
        self.started += n
        if self.clock() - self._last_line >= self.interval_s:
            self._write(done=self.started)

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **figures: Any) -> None:
        """Figures appended to the next lines (``loss=…``, ``policy=…``), as tqdm's ``set_postfix``."""
        self.postfix = {**(ordered_dict or {}), **figures}

    def close(self) -> None:
        """A last line (``done``) if this loop wrote any, so a log shows where it ended."""
        if self.lines_written:
            self._write(done=self.started, finished=True)

    def line(self, done: int, finished: bool = False) -> str:
        """``description: done/total units (percent), elapsed, ETA, figures``."""
        elapsed = self.clock() - self._start
        parts = [f"{done}/{self.total} {self.unit}s" if self.total else f"{done} {self.unit}s"]
        if self.total:
            parts[0] += f" ({100 * done / self.total:.0f} %)"
        parts.append(f"{format_duration(elapsed)} elapsed")
        if finished:
            parts.append("done")
        elif self.total and done > self.initial:
            parts.append(f"ETA {format_duration(elapsed / (done - self.initial) * (self.total - done))}")
        figures = " ".join(f"{name}={value}" for name, value in self.postfix.items())
        return f"{self.description}: {', '.join(parts)}" + (f", {figures}" if figures else "")

    def _write(self, done: int, finished: bool = False) -> None:
        self.emit(self.line(done, finished))
        self.lines_written += 1
        self._last_line = self.clock()


def track_progress(iterable: Iterable[Any], description: str, total: int | None = None, unit: str = "step",
                   interval_s: float | None = None, leave: bool = False) -> Any:
    """A tqdm bar over ``iterable`` on a terminal, else :class:`ProgressLines` (one line at most
    every ``interval_s`` seconds, default :data:`DEFAULT_INTERVAL_S`).

    Both iterate like ``iterable`` and offer ``set_postfix(**figures)`` and ``close()``. ``leave``
    keeps the finished bar on screen (terminal only)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if is_interactive():
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=description, unit=unit, leave=leave)
    return ProgressLines(iterable, total, description, unit,
                         DEFAULT_INTERVAL_S if interval_s is None else interval_s)


def progress_counter(total: int, description: str, unit: str = "step", initial: int = 0) -> Any:
    """:func:`track_progress` for a loop counted by hand (``update(n)``, ``set_postfix``, ``close``,
    ``n`` and ``total`` as tqdm's): a tqdm bar on a terminal, else :class:`ProgressLines`."""
    if is_interactive():
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=description, unit=unit, dynamic_ncols=True)
    return ProgressLines(None, total, description, unit, DEFAULT_INTERVAL_S, initial=initial)
