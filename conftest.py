"""Root pytest hooks: let nbval collect MyST-markdown chapters (``book/*.md``) as notebooks.

nbval only collects ``.ipynb``. When ``--nbval`` or ``--nbval-lax`` is on, every ``.md`` file that
starts with a YAML header holding both ``jupytext:`` and ``kernelspec:`` is read with
``jupytext.read`` and handed to nbval's own ``IPyNbFile`` (toolchain.md §4). Plain Markdown
(README.md, notes) is left alone. The kernel runs with the chapter's folder as its working
directory, as in the book build, and inherits ``SUSC_PROFILE`` (default ``tiny`` for tests) and
the JAX compile-cache variables from this process's environment.
"""
from __future__ import annotations

import os
import types
from pathlib import Path

_ROOT = Path(__file__).resolve().parent


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
    import jupytext
    import nbformat
    import nbval.plugin as nbval_plugin

    class TextNotebookFile(nbval_plugin.IPyNbFile):
        """nbval's notebook item, reading the file through jupytext instead of nbformat."""

        def collect(self):
            shim = types.SimpleNamespace(**vars(nbformat))  # nbval calls nbformat.read(fp, 4)
            shim.read = lambda fp, as_version=4: jupytext.read(fp)
            real, nbval_plugin.nbformat = nbval_plugin.nbformat, shim
            try:
                return list(super().collect())
            finally:
                nbval_plugin.nbformat = real

    return TextNotebookFile.from_parent(parent, path=file_path)
