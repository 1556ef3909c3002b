"""A per-run progress bar, advanced by the driver between blocks (never from compiled code).

It is on for interactive runs and quiet in tests, nbval and book builds: it is disabled when
``progress=False``, when ``SUSC_PROGRESS=0`` is set (the Makefile and CI set it), or under pytest.

The first block of a run includes tracing and compilation, which can take far longer than the
sampling itself (an ETA of 8 min 29 s was once shown for a 2.75 s run). So the bar shows no ETA
until a block *after* the first one has completed, and then extrapolates from the blocks since
the first (`eta_seconds`), not from the start of the run.
"""
from __future__ import annotations

import os
import time

__all__ = ["enabled", "Bar", "NUM_UPDATES", "eta_seconds"]

NUM_UPDATES = 20   # without checkpoints, an interactive run is cut into this many blocks


def enabled(progress: bool) -> bool:
    if not progress or os.environ.get("SUSC_PROGRESS", "1") == "0":
        return False
    return "PYTEST_CURRENT_TEST" not in os.environ


def eta_seconds(total: int, marks) -> float | None:
    """Seconds left, from ``marks`` = [(time, draws done)] at the end of each block so far.

    The first mark closes the block that paid for compilation, so the rate is measured from it to
    the latest mark: None until there are two marks (or no draws between them).
    """
    if len(marks) < 2:
        return None
    (t0, n0), (t1, n1) = marks[0], marks[-1]
    if n1 <= n0:
        return None
    return (total - n1) * (t1 - t0) / (n1 - n0)


class Bar:
    """tqdm bar counting draws, owned by one run; its ETA excludes the compiling first block."""

    _FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"

    def __init__(self, total: int, desc: str, initial: int = 0, *, file=None, clock=time.perf_counter):
        from tqdm.auto import tqdm
        self._clock, self._marks, self._total = clock, [], int(total)
        # at most NUM_UPDATES (or one per checkpoint) updates: draw every one of them
        self._bar = tqdm(total=total, desc=desc, initial=initial, leave=False, dynamic_ncols=True,
                         bar_format=self._FORMAT, file=file, mininterval=0, miniters=1)

    def update_to(self, n):
        n = int(n)
        self._marks.append((self._clock(), n))
        eta = eta_seconds(self._total, self._marks)
        if eta is not None:
            self._bar.set_postfix_str(f"ETA {self._bar.format_interval(eta)}", refresh=False)
        if n > self._bar.n:
            self._bar.update(n - self._bar.n)
        else:
            self._bar.refresh()

    def close(self):
        self._bar.close()
