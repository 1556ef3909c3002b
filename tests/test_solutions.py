"""Exercise solutions cannot rot: their code runs under nbval, and these tests guard the harness.

The root ``conftest.py`` appends the ```python code of every ``:::{solution}`` block of a chapter
to that chapter's notebook (``read_with_solutions``), so ``make test`` (nbval, tiny profile) runs
each solution in the chapter's own kernel after the chapter's cells: the state a reader has when
they reach the exercises, for the cost of the solution alone (the chapter is not executed twice).
The tests here check that the extraction finds every solution and its code, that the code parses
and fits the page, and, in a subprocess (slow), that a raising solution fails nbval while the same
chapter with a working solution passes.
"""
from __future__ import annotations

import ast
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_pipeline import NOTEBOOK, _env  # tests/ is on sys.path (no __init__.py)

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "book").glob("*.md"))

_spec = importlib.util.spec_from_file_location("susc_root_conftest", ROOT / "conftest.py")
root_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(root_conftest)


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_every_solution_block_is_found():
    """Each ``{solution}`` directive is parsed, with the label of an exercise on the same page."""
    for path in CHAPTERS:
        text = _text(path)
        blocks = root_conftest.solution_blocks(text)
        assert len(blocks) == text.count(":::{solution}"), path.name
        exercises = set(re.findall(r"^:label:\s*(\S+)", text, re.M))
        for label, _ in blocks:
            assert label in exercises, (path.name, label)


def test_solution_code_is_found_parses_and_fits_the_page():
    cells = [(p.name, label, code) for p in CHAPTERS
             for label, code in root_conftest.solution_cells(_text(p))]
    # The book has coding exercises in most chapters: finding few means the extraction broke.
    assert len(cells) >= 16, cells
    for name, label, code in cells:
        ast.parse(code, filename=f"{name}:{label}")
        long = [line for line in code.splitlines() if len(line) > 88]
        assert not long, (name, label, long)


def test_solutions_are_appended_to_the_chapter_notebook():
    """nbval reads the chapter through ``read_with_solutions``: its cells, then the solutions."""
    import jupytext

    for path in CHAPTERS:
        text = _text(path)
        if not root_conftest._is_text_notebook(path):
            assert not root_conftest.solution_cells(text), f"{path.name}: not executed"
            continue
        plain = jupytext.read(path)
        nb = root_conftest.read_with_solutions(path)
        k = len(plain.cells)
        assert [c.source for c in nb.cells[:k]] == [c.source for c in plain.cells]
        extra = nb.cells[k:]
        assert [c.source.split("\n", 1)[0] for c in extra] == [
            f"# solution {label}" for label, _ in root_conftest.solution_cells(text)]
        assert all(c.cell_type == "code" for c in extra)


# test_pipeline's throwaway chapter (header and a first cell defining x), then an exercise.
SOLUTION_PAGE = NOTEBOOK.split("```{{code-cell}} ipython3\n{body}")[0] + """:::{{exercise}}
:label: ex-throwaway

Check x.
:::

:::{{solution}} ex-throwaway
:class: dropdown

```python
{body}
```

Prose.
:::
"""


def _nbval(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    src = tmp_path / f"nb_{abs(hash(body))}"
    src.mkdir()
    shutil.copy(ROOT / "conftest.py", src / "conftest.py")
    (src / "chapter.md").write_text(SOLUTION_PAGE.format(body=body))
    env = _env()
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--rootdir", str(src),
           "--nbval-lax", "--nbval-current-env", "chapter.md"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=src)


@pytest.mark.slow
def test_nbval_fails_on_a_failing_solution(tmp_path):
    # The solution sees the chapter's state (x) and its assert can fail.
    bad = _nbval(tmp_path, "assert x == 3, 'deliberate failure'")
    assert bad.returncode == 1, bad.stdout[-2000:]
    assert "1 failed" in bad.stdout and "deliberate failure" in bad.stdout
    good = _nbval(tmp_path, "assert x == 2")
    assert good.returncode == 0 and "2 passed" in good.stdout, good.stdout[-2000:]
