"""Root pytest hooks: let nbval collect MyST-markdown chapters (``book/*.md``) as notebooks.

nbval only collects ``.ipynb``. When ``--nbval`` or ``--nbval-lax`` is on, every ``.md`` file that
starts with a YAML header holding both ``jupytext:`` and ``kernelspec:`` is read with
``jupytext.read`` and handed to nbval's own ``IPyNbFile`` (toolchain.md §4). Plain Markdown
(README.md, notes) is left alone. The kernel runs with the chapter's folder as its working
directory, as in the book build, and inherits ``SUSC_PROFILE`` (default ``tiny`` for tests) and
the JAX compile-cache variables from this process's environment.

Exercise solutions run too. The fenced ```python blocks of every ``:::{solution}`` block are
appended to the chapter's notebook as extra code cells (``solution_cells``), so nbval runs them in
the same kernel after the chapter's own cells: a solution sees exactly the state a reader has at
the end of the chapter, and the chapter is executed once, not once per solution.
"""
from __future__ import annotations

import os
import re
import types
from pathlib import Path

_ROOT = Path(__file__).resolve().parent


# A solution block: an opening fence of 3+ colons, its label, and the same fence closing it.
_SOLUTION = re.compile(r"^(:{3,})\{solution\}[ \t]*(\S+)[^\n]*\n(.*?)^\1[ \t]*$", re.S | re.M)
_PYTHON = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def solution_blocks(text: str) -> list[tuple[str, str]]:
    """(label, body) of every ``{solution}`` block of a MyST page, in page order."""
    return [(m.group(2), m.group(3)) for m in _SOLUTION.finditer(text)]


def solution_cells(text: str) -> list[tuple[str, str]]:
    """(label, code) of every solution holding ```python code, its fences joined in order."""
    out = []
    for label, body in solution_blocks(text):
        code = [c.rstrip("\n") for c in _PYTHON.findall(body)]
        if code:
            out.append((label, "\n\n".join(code)))
    return out


def read_with_solutions(path) -> "object":
    """The chapter as a notebook (jupytext) with its solutions appended as tagged code cells."""
    import jupytext
    import nbformat

    text = Path(path).read_text(encoding="utf-8")
    nb = jupytext.reads(text, fmt="md:myst")
    for label, code in solution_cells(text):
        nb.cells.append(nbformat.v4.new_code_cell(
            f"# solution {label}\n{code}", metadata={"tags": ["solution"]}))
    return nb


def _nbval_on(config) -> bool:
    opt = config.option
    return bool(getattr(opt, "nbval", False) or getattr(opt, "nbval_lax", False))


def pytest_configure(config):
    # Environment for notebook kernels (jupyter_client passes os.environ to the kernel).
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_ROOT / "_build" / "jax_cache"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    if _nbval_on(config):
        os.environ.setdefault("SUSC_PROFILE", "tiny")


def _is_text_notebook(path: Path) -> bool:
    if path.suffix != ".md":
        return False
    head = path.read_text(encoding="utf-8")[:4000]
    return head.startswith("---") and "jupytext:" in head and "kernelspec:" in head


def pytest_collect_file(file_path, parent):
    if not (_nbval_on(parent.config) and _is_text_notebook(file_path)):
        return None
    import nbformat
    import nbval.plugin as nbval_plugin

    class TextNotebookFile(nbval_plugin.IPyNbFile):
        """nbval's notebook item, read through jupytext with the solutions appended."""

        def collect(self):
            shim = types.SimpleNamespace(**vars(nbformat))  # nbval calls nbformat.read(fp, 4)
            shim.read = lambda fp, as_version=4: read_with_solutions(self.path)
            real, nbval_plugin.nbformat = nbval_plugin.nbformat, shim
            try:
                return list(super().collect())
            finally:
                nbval_plugin.nbformat = real

    return TextNotebookFile.from_parent(parent, path=file_path)
