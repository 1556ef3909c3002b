"""Experiments behind one CLI: ``python -m susc run <experiment> --profile tiny|small|full``.

An *experiment* is a function ``run(cfg, work_dir, *, progress) -> (arrays, summary)`` registered
under a name together with a frozen config dataclass (`susc.config.register_config`, one set of
sizes per profile). `run` writes its output to ``data/results/<experiment>/<profile>/``:

- ``arrays.npz`` — every array the chapters plot or check;
- ``record.json`` — the experiment name, profile, config, summary numbers, timings, the sha256 of
  ``arrays.npz`` and the provenance of `susc.artifacts.provenance` (git commit, device, versions);
- ``work/`` — resumable intermediate state (training checkpoints, `susc.sample` checkpoints).
  An interrupted run restarts where it stopped; ``force=True`` deletes it and starts over.

Chapters call `load_or_run`: it loads the ``full`` results when a GPU run has shipped them and
otherwise runs the ``tiny`` profile live; the returned `Results.profile` says which one is shown.
The estimators follow the package conventions: p(w) ∝ exp{−nβ L_n(w) − (γ/2)‖w − w*‖²},
χ = −Cov[φ, ΔL] (negative after standardization ⇒ the component expresses the token).
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from .. import config as _config

__all__ = ["Experiment", "Results", "register", "get", "list_experiments", "results_dir", "run",
           "load_results", "load_or_run", "save_results", "DEFAULT_ROOT"]

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "data" / "results"


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A registered experiment: its ``run`` function, config name and one-line description."""

    name: str
    config_name: str
    fn: Callable[..., tuple[dict, dict]]
    description: str


class Results(NamedTuple):
    """What an experiment wrote: ``arrays`` (name → NumPy array), ``record`` (the JSON), ``path``."""

    arrays: dict
    record: dict
    path: Path

    @property
    def profile(self) -> str:
        return self.record["profile"]

    @property
    def summary(self) -> dict:
        return self.record["summary"]

    @property
    def display_path(self) -> str:
        """``path`` relative to the repository root when it lies inside it, else ``path``: for
        printing, so that the book shows no absolute paths of the machine that built it."""
        try:
            return str(Path(self.path).resolve().relative_to(DEFAULT_ROOT.parents[1]))
        except ValueError:
            return str(self.path)


_EXPERIMENTS: dict[str, Experiment] = {}


def register(name: str, config_name: str, description: str):
    """Decorator registering ``fn(cfg, work_dir, *, progress) -> (arrays, summary)`` as ``name``."""
    def deco(fn):
        _EXPERIMENTS[name] = Experiment(name, config_name, fn, description)
        return fn
    return deco


def _load_modules():
    from . import transformer  # noqa: F401  (registers the transformer experiments)
    from . import corpus_run  # noqa: F401  (imports corpus: its config)
    from . import attribution  # noqa: F401
    from . import token_influence  # noqa: F401
    from . import circuit_patterning_run  # noqa: F401  (imports circuit_patterning: its config)
    from . import dyck_patterning  # noqa: F401


def get(name: str) -> Experiment:
    """The registered experiment ``name`` (ValueError listing the known names otherwise)."""
    _load_modules()
    if name not in _EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known: {sorted(_EXPERIMENTS)} "
                         f"(`python -m susc list`)")
    return _EXPERIMENTS[name]


def list_experiments() -> list[Experiment]:
    """All registered experiments, sorted by name."""
    _load_modules()
    return [_EXPERIMENTS[k] for k in sorted(_EXPERIMENTS)]


def results_dir(name: str, profile: str, root=None) -> Path:
    """``<root>/<name>/<profile>`` with ``root`` defaulting to the repository's ``data/results``."""
    return Path(DEFAULT_ROOT if root is None else root) / name / _config.get_profile(profile)


def save_results(out: Path, arrays: dict, record: dict) -> dict:
    """Write ``arrays.npz`` (atomically) and ``record.json`` (with the npz's sha256) into ``out``."""
    from ..artifacts import sha256_file
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "arrays.npz.tmp"
    with open(tmp, "wb") as f:
        np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
    tmp.replace(out / "arrays.npz")
    record = {**record, "sha256": sha256_file(out / "arrays.npz"),
              "arrays": {k: [list(np.shape(v)), str(np.asarray(v).dtype)] for k, v in arrays.items()}}
    (out / "record.json").write_text(json.dumps(record, indent=2, default=_json_default) + "\n")
    return record


def _json_default(x):
    from ..artifacts import json_default   # local: `python -m susc list` must not import JAX
    return json_default(x)


def load_results(name: str, profile: str, root=None, *, verify: bool = True) -> Results | None:
    """The saved results of ``name`` at ``profile`` (None if absent); checks the npz's sha256."""
    out = results_dir(name, profile, root)
    if not ((out / "arrays.npz").exists() and (out / "record.json").exists()):
        return None
    record = json.loads((out / "record.json").read_text())
    if verify:
        from ..artifacts import ChecksumError, sha256_file
        if sha256_file(out / "arrays.npz") != record.get("sha256"):
            raise ChecksumError(f"{out / 'arrays.npz'} does not match the sha256 in record.json; "
                                f"rerun `python -m susc run {name} --profile {profile} --force`")
    with np.load(out / "arrays.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return Results(arrays, record, out)


def run(name: str, profile: str | None = None, *, root=None, force: bool = False,
        progress: bool = True, **overrides: Any) -> Results:
    """Run experiment ``name`` at ``profile`` (default ``$SUSC_PROFILE``) and save its results.

    Existing results with the same config are returned without recomputation unless ``force``.
    ``overrides`` replace config fields (e.g. smaller sizes in tests); they are part of the record.
    """
    exp = get(name)
    profile = _config.get_profile(profile)
    cfg = _config.get_config(exp.config_name, profile, **overrides)
    out = results_dir(name, profile, root)
    cfg_json = json.loads(json.dumps(dataclasses.asdict(cfg), default=_json_default))
    if force and out.exists():
        shutil.rmtree(out)
    done = load_results(name, profile, root) if not force else None
    if done is not None and done.record.get("config") == cfg_json:
        return done
    work = out / "work"
    stamp = work / "config.json"
    if work.exists() and (not stamp.exists() or json.loads(stamp.read_text()) != cfg_json):
        shutil.rmtree(work)            # intermediate state of another config: never resume from it
    work.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(cfg_json, indent=2) + "\n")
    t0 = time.perf_counter()
    arrays, summary = exp.fn(cfg, work, progress=progress)
    from ..artifacts import provenance
    timings = summary.pop("timings", {})
    record = {"experiment": name, "profile": profile, "description": exp.description,
              "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "config": cfg_json, "summary": summary,
              "timings": {"total_s": time.perf_counter() - t0, **timings},
              "provenance": provenance()}
    record = save_results(out, arrays, record)
    return Results(arrays, record, out)


def load_or_run(name: str, *, prefer=("full", "small", "tiny"), fallback: str = "tiny", root=None,
                progress: bool = False) -> Results:
    """For chapters: the first saved results among the ``prefer`` profiles whose record matches the
    current config of that profile, else a live run at ``fallback``. ``Results.profile`` says which."""
    exp = get(name)
    for profile in ([prefer] if isinstance(prefer, str) else prefer):
        found = load_results(name, profile, root)
        if found is None:
            continue
        cfg = _config.get_config(exp.config_name, profile)
        if found.record.get("config") == json.loads(json.dumps(dataclasses.asdict(cfg), default=_json_default)):
            return found
    return run(name, fallback, root=root, progress=progress)
