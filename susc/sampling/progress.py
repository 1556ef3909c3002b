"""A per-run progress bar, advanced by the driver between blocks (never from compiled code).

It is on for interactive runs and quiet in tests, nbval and book builds: it is disabled when
``progress=False``, when ``SUSC_PROGRESS=0`` is set (the Makefile and CI set it), or under pytest.
"""
from __future__ import annotations

import os

__all__ = ["enabled", "Bar", "NUM_UPDATES"]

NUM_UPDATES = 20   # without checkpoints, an interactive run is cut into this many blocks


def enabled(progress: bool) -> bool:
    if not progress or os.environ.get("SUSC_PROGRESS", "1") == "0":
        return False
    return "PYTEST_CURRENT_TEST" not in os.environ


class Bar:
    """tqdm bar counting draws, owned by one run."""

    def __init__(self, total: int, desc: str, initial: int = 0):
        from tqdm.auto import tqdm
        self._bar = tqdm(total=total, desc=desc, initial=initial, leave=False, dynamic_ncols=True)

    def update_to(self, n):
        n = int(n)
        if n > self._bar.n:
            self._bar.update(n - self._bar.n)

    def close(self):
        self._bar.close()
