"""Keep one jupyter-cache per run-size profile (``SUSC_PROFILE`` = tiny | small | full).

jupyter-cache keys executed notebooks on their code cells only, so a chapter executed under
``tiny`` would be reused verbatim for a ``small`` build. ``_config.yml`` cannot read environment
variables, so this extension overrides ``nb_execution_cache_path`` at ``config-inited`` (before
myst-nb reads it at ``builder-inited``) to ``<build>/.jupyter_cache_<profile>``, where
``<build>`` is the parent of the HTML output (``_build/``). An explicit ``execute.cache`` in
``_config.yml`` is respected.
"""
from __future__ import annotations

from pathlib import Path

from sphinx.application import Sphinx

__all__ = ["setup"]


def _set_cache(app: Sphinx, config) -> None:
    from susc.config import get_profile  # validates SUSC_PROFILE with a clear error

    if not config.nb_execution_cache_path:
        profile = get_profile()
        config.nb_execution_cache_path = str(Path(app.outdir).parent.resolve() / f".jupyter_cache_{profile}")


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", _set_cache, priority=400)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
