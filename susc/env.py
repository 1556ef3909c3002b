"""What this run executed on: versions, JAX backend and devices, CPU count, git commit, date.

``device_report()`` returns a flat ``dict[str, str]`` so that chapters can print it as a table
and benchmarks can store it next to their numbers; ``python -m susc.env`` prints it
(``--json`` for machine-readable output). Nothing here changes JAX's state beyond starting its
backend to list the devices.
"""
from __future__ import annotations

import datetime as _dt
import importlib.metadata as _md
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

__all__ = ["device_report", "format_report", "main"]

_PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpyro", "numpy", "scipy", "matplotlib")


def _version(dist: str) -> str:
    try:
        return _md.version(dist)
    except _md.PackageNotFoundError:
        return "not installed"


def _git_commit() -> str:
    """Short commit of the checkout holding this package (with ``-dirty``), or ``"unknown"``."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True, text=True, timeout=5, check=True,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"  # not a git checkout (installed wheel), git missing, or no commits yet


def device_report() -> dict[str, str]:
    """Versions, backend, devices, CPU count, git commit and date, as ``{name: text}``."""
    import jax

    devices = jax.devices()
    report = {"python": platform.python_version()}
    report.update({name: _version(name) for name in _PACKAGES})
    report.update(
        backend=jax.default_backend(),
        devices=", ".join(f"{d.platform}:{d.id} ({d.device_kind})" for d in devices),
        device_count=str(len(devices)),
        cpu_count=str(os.cpu_count()),
        platform=platform.platform(terse=True),
        profile=os.environ.get("SUSC_PROFILE", "small (default)"),
        x64=str(bool(jax.config.jax_enable_x64)),
        git_commit=_git_commit(),
        date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )
    return report


def format_report(report: dict[str, str]) -> str:
    """Two aligned columns, one key per line."""
    width = max(map(len, report))
    return "\n".join(f"{k:<{width}}  {v}" for k, v in report.items())


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m susc.env [--json]``."""
    args = sys.argv[1:] if argv is None else argv
    if any(a not in ("--json",) for a in args):
        print("usage: python -m susc.env [--json]", file=sys.stderr)
        return 2
    report = device_report()
    print(json.dumps(report, indent=2) if "--json" in args else format_report(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
