"""Serve MathJax 3 from the book's own HTML output instead of a CDN.

The MathJax 3.2.2 ``es5`` bundle ships in the PyPI package ``django-static-mathjax`` (pure static
files, no dependencies; it installs a top-level ``mathjax`` package). At ``builder-inited`` this
extension copies that folder to ``<outdir>/_static/mathjax/`` and points Sphinx's ``mathjax_path``
at ``mathjax/tex-chtml.js`` (a relative ``mathjax_path`` is resolved against ``_static/``), so the
built book typesets math with no network. Fonts load relative to the script, so the whole bundle
is copied (about 24 MB; only files not already present are written).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError

__all__ = ["mathjax_source", "setup"]

_SCRIPT = "tex-chtml.js"  # TeX input, CommonHTML output: what dollarmath/amsmath produce


def mathjax_source() -> Path:
    """The installed MathJax 3 ``es5`` folder; raises ``ExtensionError`` if it is missing."""
    try:
        import mathjax  # provided by django-static-mathjax
    except ImportError as err:
        raise ExtensionError(
            "offline_mathjax: the MathJax files are missing; install them with "
            "`pip install django-static-mathjax` (in the docs extra of pyproject.toml)."
        ) from err
    src = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    if not (src / _SCRIPT).is_file():
        raise ExtensionError(f"offline_mathjax: {src / _SCRIPT} not found; reinstall django-static-mathjax.")
    return src


def _copy_mathjax(app: Sphinx) -> None:
    if app.builder.format != "html":
        return
    dest = Path(app.outdir) / "_static" / "mathjax"
    src = mathjax_source()
    if not (dest / _SCRIPT).is_file() or (dest / _SCRIPT).stat().st_size != (src / _SCRIPT).stat().st_size:
        shutil.copytree(src, dest, dirs_exist_ok=True)


def _use_local_path(app: Sphinx, config) -> None:
    # Override JB1's CDN default unless the user set a local path explicitly.
    if "://" in (config.mathjax_path or "") or not config.mathjax_path:
        config.mathjax_path = f"mathjax/{_SCRIPT}"


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", _use_local_path)
    app.connect("builder-inited", _copy_mathjax)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
