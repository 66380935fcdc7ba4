"""The benchmarks' one output format: a JSON line on stdout, also appended to a file when asked."""

from __future__ import annotations

import json
from typing import Any


def print_summary(summary: dict[str, Any], path: str | None = None) -> None:
    """Print ``summary`` as one JSON line and, when ``path`` is given, append the same line to it
    (one file collects the runs of several commands, e.g. ``docs/arena-episode-seconds.jsonl``)."""
    line = json.dumps(summary)
    print(line)
    if path:
        with open(path, "a") as file:
            file.write(line + "\n")
