"""The progress bar's ETA ignores the first block, which pays for tracing and compilation."""
from __future__ import annotations

import io

from susc.sampling import progress


def test_eta_waits_for_a_block_after_the_compiling_one():
    assert progress.eta_seconds(100, []) is None
    assert progress.eta_seconds(100, [(500.0, 5)]) is None              # compile block only
    # 5 draws in 1 s after the first block: 90 draws left take 18 s (not 90·500/5 s)
    assert progress.eta_seconds(100, [(500.0, 5), (501.0, 10)]) == 18.0
    assert progress.eta_seconds(100, [(500.0, 5), (501.0, 10), (503.0, 20)]) == 16.0
    assert progress.eta_seconds(100, [(500.0, 5), (501.0, 5)]) is None


class _Clock:
    def __init__(self, times):
        self.times = list(times)

    def __call__(self):
        return self.times.pop(0)


def test_bar_shows_no_eta_until_the_second_block_then_the_measured_one():
    out = io.StringIO()
    # a 2.75 s run: 2.5 s of compilation in block 1, then 20 blocks of 5 draws at 0.0125 s each
    bar = progress.Bar(100, "sgld ×4", file=out, clock=_Clock([2.5, 2.5125, 2.525]))
    bar.update_to(5)
    assert "ETA" not in out.getvalue()
    bar.update_to(10)
    bar.update_to(15)
    text = out.getvalue()
    assert "ETA 00:00" in text and "ETA 08:" not in text, text
    bar.close()
