"""Matplotlib for the comparison figures: a file backend and no font-cache chatter in the output."""

from __future__ import annotations

import logging
from typing import Any


def quiet_pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend, with the font manager's notices
    ("generated new fontManager", "building the font cache") silenced: on a first run they would
    otherwise land in ``prune-gym compare``'s output, which people read and paste as results."""
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
