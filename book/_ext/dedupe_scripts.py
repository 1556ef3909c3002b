"""Drop duplicate ``<script>`` entries from every HTML page.

myst-nb's ``{nb-exec-table}`` (book/status.md) makes Sphinx read the sources a second time, and
sphinx-thebe registers its inline config script (``const THEBE_JS_URL = ...``) on every read, so
pages carried it twice and the browser logged ``SyntaxError: Identifier 'THEBE_JS_URL' has
already been declared``. Two entries count as the same script when their file name (``None`` and ``""`` both mean
inline) and attributes, inline body included, are equal; the first occurrence is kept.
"""
from __future__ import annotations

from sphinx.application import Sphinx

__all__ = ["setup"]


def _dedupe(app: Sphinx, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if scripts:
        seen, unique = set(), []
        for s in scripts:
            # inline scripts come with filename None or "" depending on who added them
            key = s if isinstance(s, str) else (s.filename or "", tuple(sorted(s.attributes.items())))
            if key not in seen:
                seen.add(key)
                unique.append(s)
        context["script_files"] = unique


def setup(app: Sphinx) -> dict:
    app.connect("html-page-context", _dedupe, priority=999)  # after the others added theirs
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
