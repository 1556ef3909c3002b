"""Failures must fail: a chapter with an erroring cell breaks both the book build and nbval.

Each test runs the real tools in a subprocess on a throwaway MyST notebook, once with a cell that
raises and once with the cell fixed (the control), so a pass cannot come from a broken harness.
The book build uses the repository's own ``_config.yml`` (local extensions included) and the
flags of ``make book``; nbval uses a copy of the repository's root ``conftest.py`` (the MyST shim).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

NOTEBOOK = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
    format_version: 0.13
kernelspec:
  display_name: Python 3 (ipykernel)
  language: python
  name: python3
---

# Throwaway chapter

```{{code-cell}} ipython3
x = 1 + 1
```

```{{code-cell}} ipython3
{body}
```
"""
FAILING, PASSING = 'raise RuntimeError("deliberate failure")', "assert x == 2"


def _env() -> dict:
    env = dict(os.environ, SUSC_PROFILE="tiny", PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_ADDOPTS", None)
    return env


def _build_book(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    src = tmp_path / f"book_{abs(hash(body))}"
    (src / "book").mkdir(parents=True)
    (src / "book" / "page.md").write_text(NOTEBOOK.format(body=body))
    shutil.copy(ROOT / "book" / "references.bib", src / "book" / "references.bib")
    (src / "_toc.yml").write_text("format: jb-book\nroot: book/page\n")
    # The repository's config (extensions resolve relative to it), this folder's sources.
    cmd = [str(BIN / "jupyter-book"), "build", "--all", "-W", "-n", "--keep-going",
           "--config", str(ROOT / "_config.yml"), str(src)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env(), cwd=src)


def _nbval(tmp_path: Path, body: str, *flags: str, target: str = "chapter.md") -> subprocess.CompletedProcess:
    src = tmp_path / f"nb_{abs(hash(body))}_{len(flags)}"
    src.mkdir()
    shutil.copy(ROOT / "conftest.py", src / "conftest.py")
    (src / "chapter.md").write_text(NOTEBOOK.format(body=body))
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--rootdir", str(src),
           *flags, target]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env(), cwd=src)


@pytest.mark.slow
def test_book_build_fails_on_a_failing_cell(tmp_path):
    bad = _build_book(tmp_path, FAILING)
    assert bad.returncode != 0, bad.stdout[-2000:]
    assert "deliberate failure" in bad.stdout + bad.stderr
    good = _build_book(tmp_path, PASSING)
    assert good.returncode == 0, (good.stdout + good.stderr)[-3000:]


@pytest.mark.slow
def test_nbval_fails_on_a_failing_myst_notebook(tmp_path):
    flags = ("--nbval-lax", "--nbval-current-env")
    bad = _nbval(tmp_path, FAILING, *flags)
    assert bad.returncode == 1, bad.stdout[-2000:]
    assert "1 failed" in bad.stdout and "deliberate failure" in bad.stdout
    good = _nbval(tmp_path, PASSING, *flags)
    assert good.returncode == 0 and "2 passed" in good.stdout, good.stdout[-2000:]
    # Without the nbval flag the shim stays off: the folder yields no tests (pytest exit code 5).
    off = _nbval(tmp_path, FAILING, target=".")
    assert off.returncode == 5, off.stdout[-2000:]


def test_chapter_code_cells_fit_the_page():
    """Code cells are read on a page: no line over 88 columns (they would scroll sideways)."""
    import glob
    import re

    pat = re.compile(r"```\{code-cell\}[^\n]*\n(.*?)```", re.S)
    long = [(f, line) for f in sorted(glob.glob(os.path.join(ROOT, "book", "*.md")))
            for cell in pat.findall(open(f, encoding="utf-8").read())
            for line in cell.splitlines() if len(line) > 88]
    assert not long, f"{len(long)} code lines over 88 columns, first: {long[:3]}"
