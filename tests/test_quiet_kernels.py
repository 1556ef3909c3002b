"""book/_ext/quiet_kernels.py drops exactly ipykernel's "running over TCP without encryption"
warning, in the kernel process where it is logged, and no other message."""
from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "quiet_kernels", Path(__file__).parents[1] / "book" / "_ext" / "quiet_kernels.py")
quiet_kernels = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(quiet_kernels)


def _record(msg, level=logging.WARNING):
    return logging.LogRecord("IPKernelApp", level, __file__, 1, msg, None, None)


def test_filter_drops_only_that_message(tmp_path, monkeypatch):
    monkeypatch.delenv("IPYTHONDIR", raising=False)
    ipython_dir = quiet_kernels.install(tmp_path)
    assert os.environ["IPYTHONDIR"] == str(ipython_dir)
    cfg = ipython_dir / "profile_default" / "ipython_kernel_config.py"
    logger = logging.getLogger("IPKernelApp")
    before = list(logger.filters)
    try:
        exec(compile(cfg.read_text(), str(cfg), "exec"), {"get_config": lambda: None})
        (flt,) = [f for f in logger.filters if f not in before]
        assert not flt.filter(_record(quiet_kernels.MESSAGE + ". All communication ..."))
        assert flt.filter(_record("Failed to load connection file", logging.ERROR))
        assert flt.filter(_record("some other warning"))
    finally:
        logger.filters[:] = before


def _kernel_output(env) -> str:
    """Start an ipykernel on TCP, read its output until it has opened its sockets (it prints
    the "--existing" connection hint after that), stop it and return what it printed."""
    proc = subprocess.Popen([sys.executable, "-m", "ipykernel_launcher", "-f",
                             str(Path(env["TMP_CONN"]) / "kernel.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    watchdog = threading.Timer(120, proc.kill)
    watchdog.start()
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "--existing" in line:
                break
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait()
    out = "".join(lines)
    assert "--existing" in out, out          # the kernel got past init_sockets
    return out


def test_a_real_kernel_no_longer_prints_it(tmp_path, monkeypatch):
    monkeypatch.delenv("IPYTHONDIR", raising=False)
    base = dict(os.environ, TMP_CONN=str(tmp_path))
    plain = dict(base, IPYTHONDIR=str(tmp_path / "plain_ipython"))
    assert quiet_kernels.MESSAGE in _kernel_output(plain)      # the check can fail
    quiet = dict(base, IPYTHONDIR=str(quiet_kernels.install(tmp_path / "build")))
    assert quiet_kernels.MESSAGE not in _kernel_output(quiet)
