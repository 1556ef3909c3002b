"""Drop one warning of the book's Jupyter kernels: ipykernel's "Kernel is running over TCP without
encryption", printed once per executed chapter (17 times per `make book`), which buries the real
output. The kernels talk only to the build process on the loopback interface.

The message is logged by the kernel process itself (logger ``IPKernelApp``, in
``IPKernelApp.init_sockets``), so it can only be filtered there. `install` writes an IPython
profile under ``<build>/ipython`` whose ``ipython_kernel_config.py`` adds a `logging.Filter` for
exactly that message, and points ``IPYTHONDIR`` at it; kernels started afterwards by this process
(myst-nb, jupyter-cache) inherit the variable and load the filter before they open their sockets.
Every other message, warnings and errors included, is kept. Used by this Sphinx extension
(``config-inited``) and by scripts/preexecute_book.py.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["MESSAGE", "install", "setup"]

MESSAGE = "Kernel is running over TCP without encryption"

KERNEL_CONFIG = f'''# Written by book/_ext/quiet_kernels.py for the book's kernels (do not edit).
import logging


class _DropTcpEncryptionWarning(logging.Filter):
    def filter(self, record):
        return {MESSAGE!r} not in record.getMessage()


logging.getLogger("IPKernelApp").addFilter(_DropTcpEncryptionWarning())
'''


def install(build_dir) -> Path:
    """Write ``<build_dir>/ipython/profile_default/ipython_kernel_config.py`` and set
    ``IPYTHONDIR`` to ``<build_dir>/ipython`` for this process and the kernels it starts."""
    ipython_dir = Path(build_dir).resolve() / "ipython"
    cfg = ipython_dir / "profile_default" / "ipython_kernel_config.py"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    if not cfg.is_file() or cfg.read_text() != KERNEL_CONFIG:
        cfg.write_text(KERNEL_CONFIG)
    os.environ["IPYTHONDIR"] = str(ipython_dir)
    return ipython_dir


def _on_config(app, config) -> None:
    install(Path(app.outdir).parent)


def setup(app) -> dict:
    app.connect("config-inited", _on_config)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
