"""Parameter checkpoints with provenance: ``<path>.npz`` + ``<path>.json``, checksum-verified.

A trained w* (the localization point of p(w) ∝ exp{-nβ L_n(w) - (γ/2)||w - w*||²}) is the expensive
input of every transformer chapter, so it is saved once (often on a GPU box) and loaded later.
The ``.npz`` holds one array per params leaf (named ``leaf_0``, ``leaf_1``, ...); the ``.json``
record holds each leaf's PyTree path, shape and dtype, plus the provenance: config, git commit,
device, package versions, wall time, creation time, free-form metadata and the sha256 of the
``.npz``. ``load_params`` recomputes the sha256 and refuses a mismatching file.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["json_default", "save_params", "load_params", "load_or_compute", "provenance", "sha256_file",
           "ChecksumError", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "numpyro")


class ChecksumError(ValueError):
    """The ``.npz`` on disk does not match the sha256 recorded in its ``.json``."""


def _paths(path) -> tuple[Path, Path]:
    base = Path(path)
    if base.suffix in (".npz", ".json"):
        base = base.with_suffix("")
    return base.with_name(base.name + ".npz"), base.with_name(base.name + ".json")


def json_default(x):
    """``json.dumps(..., default=json_default)``: NumPy scalars and arrays as Python numbers and lists."""
    if isinstance(x, (np.integer, np.floating, np.bool_)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def sha256_file(path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _git_commit() -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip() != ""
        return {"commit": sha, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def provenance() -> dict[str, Any]:
    """Where and with what this process runs: git commit, device, Python and package versions."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    dev = jax.devices()[0]
    return {
        "git": _git_commit(),
        "device": {"platform": dev.platform, "kind": getattr(dev, "device_kind", str(dev)),
                   "count": jax.device_count()},
        "host": platform.node(),
        "python": sys.version.split()[0],
        "packages": versions,
    }


def _jsonable(config):
    if config is None:
        return None
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {"type": type(config).__name__, **dataclasses.asdict(config)}
    json.dumps(config)  # raises TypeError early for a non-JSON config
    return config


def _encode_path(path) -> list:
    out = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            out.append(["dict", k.key])
        elif isinstance(k, jax.tree_util.SequenceKey):
            out.append(["seq", k.idx])
        else:
            raise TypeError(f"save_params supports nested dicts/lists/tuples of arrays; got key {k!r}")
        if out[-1][0] == "dict" and not isinstance(out[-1][1], str):
            raise TypeError(f"params dict keys must be str, got {out[-1][1]!r}")
    return out


def _rebuild(entries):
    """Nested dicts/lists from ``[(encoded_path, array), ...]``."""
    if len(entries) == 1 and not entries[0][0]:
        return entries[0][1]
    kind = entries[0][0][0][0]
    groups: dict = {}
    for path, arr in entries:
        groups.setdefault(path[0][1], []).append((path[1:], arr))
    if kind == "dict":
        return {k: _rebuild(v) for k, v in groups.items()}
    return [_rebuild(groups[i]) for i in sorted(groups)]


def save_params(path, params, *, config=None, metadata: dict | None = None,
                wall_time: float | None = None) -> dict:
    """Write ``params`` to ``<path>.npz`` and its provenance record to ``<path>.json``.

    Args:
        path: base path (a trailing ``.npz``/``.json`` is stripped); parent folders are created.
        params: nested dicts (str keys) / lists / tuples of arrays.
        config: a dataclass (e.g. TransformerConfig) or JSON-able dict describing the model/run.
        metadata: further JSON-able information (training settings, final loss, data checksum).
        wall_time: seconds the artifact took to compute.

    Returns:
        The JSON record that was written.
    """
    npz_path, json_path = _paths(path)
    npz_path.parent.mkdir(parents=True, exist_ok=True)
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    if not flat:
        raise ValueError("params has no array leaves")
    arrays, leaves = {}, []
    for i, (p, leaf) in enumerate(flat):
        arr = np.asarray(leaf)
        arrays[f"leaf_{i}"] = arr
        leaves.append({"name": f"leaf_{i}", "path": _encode_path(p),
                       "shape": list(arr.shape), "dtype": str(arr.dtype)})
    tmp = npz_path.with_name(npz_path.name + ".tmp")
    with open(tmp, "wb") as f:  # a file object keeps np.savez from appending ".npz" to tmp
        np.savez(f, **arrays)
    os.replace(tmp, npz_path)  # atomic: a crash never leaves a half-written checkpoint
    record = {
        "format_version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "npz": npz_path.name,
        "sha256": sha256_file(npz_path),
        "num_params": int(sum(a.size for a in arrays.values())),
        "config": _jsonable(config),
        "wall_time": wall_time,
        "metadata": metadata or {},
        "provenance": provenance(),
        "leaves": leaves,
    }
    json_path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return record


def load_params(path, *, verify: bool = True, like=None):
    """Read ``<path>.npz`` + ``<path>.json``; returns ``(params, record)``.

    Args:
        path: base path as given to ``save_params``.
        verify: recompute the sha256 of the ``.npz`` and raise ``ChecksumError`` on mismatch.
        like: optional template PyTree; the loaded leaves are put into its structure (e.g. to
            restore tuples), after checking the shapes agree.

    Returns:
        params (nested dicts/lists of ``jax.Array``) and the JSON record.
    """
    npz_path, json_path = _paths(path)
    for p in (npz_path, json_path):
        if not p.exists():
            raise FileNotFoundError(f"checkpoint file {p} not found "
                                    f"(write it with susc.artifacts.save_params)")
    record = json.loads(json_path.read_text())
    if verify:
        actual = sha256_file(npz_path)
        if actual != record.get("sha256"):
            raise ChecksumError(f"sha256 of {npz_path} is {actual} but {json_path.name} records "
                                f"{record.get('sha256')}: the file is corrupt or was replaced; "
                                f"recompute it or restore the matching pair")
    with np.load(npz_path) as npz:
        entries = []
        for leaf in record["leaves"]:
            arr = npz[leaf["name"]]
            if list(arr.shape) != leaf["shape"]:
                raise ValueError(f"leaf {leaf['name']} has shape {arr.shape}, record says {leaf['shape']}")
            entries.append((leaf["path"], jnp.asarray(arr)))
    if like is not None:
        ref, treedef = jax.tree.flatten(like)
        if len(ref) != len(entries) or any(np.shape(r) != a.shape for r, (_, a) in zip(ref, entries)):
            raise ValueError("the checkpoint's leaves do not match the shapes of `like`")
        return jax.tree.unflatten(treedef, [a for _, a in entries]), record
    return _rebuild(entries), record


def load_or_compute(path, compute: Callable[[], Any], *, config=None, metadata=None):
    """Load the checkpoint at ``path`` if present, else run ``compute() -> params`` and save it.

    Returns ``(params, record)``; the record's ``wall_time`` is the compute time of the run that
    made the file.
    """
    npz_path, json_path = _paths(path)
    if npz_path.exists() and json_path.exists():
        return load_params(path)
    t0 = time.perf_counter()
    params = jax.block_until_ready(compute())
    record = save_params(path, params, config=config, metadata=metadata,
                         wall_time=time.perf_counter() - t0)
    return load_params(path)[0], record
