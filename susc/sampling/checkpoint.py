"""Checkpoints of a running `susc.sample` call: chain states, accumulators and draws so far.

A checkpoint is a folder with ``state.npz`` (the flattened leaves of the chain states and
accumulators), ``draws.npz`` (stored losses and observables) and ``meta.json`` (a fingerprint of
every setting that changes the result, and the number of finished draws). Files are written to a
temporary name and renamed, so an interruption mid-write leaves the previous checkpoint intact.
Resuming with the same settings continues from the last finished block and, because each chain's
random stream is indexed by its global step, gives a result bitwise identical to an uninterrupted run.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import jax
import numpy as np

__all__ = ["fingerprint", "save", "load"]


def fingerprint(settings: dict, key, params, observables) -> str:
    rec = {
        "settings": {k: v for k, v in settings.items() if k not in ("checkpoint_dir", "progress", "devices")},
        "key": np.asarray(jax.random.key_data(key) if jax.dtypes.issubdtype(
            getattr(key, "dtype", None), jax.dtypes.prng_key) else key).tolist(),
        "params": [(jax.tree_util.keystr(p), list(np.shape(x)), str(np.asarray(x).dtype),
                    hashlib.sha256(np.ascontiguousarray(np.asarray(x))).hexdigest()[:16])
                   for p, x in jax.tree_util.tree_leaves_with_path(params)],
        "observables": sorted(observables),
    }
    return hashlib.sha256(json.dumps(rec, sort_keys=True, default=str).encode()).hexdigest()


def _atomic_savez(path: Path, arrays: dict):
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def save(folder, fp: str, draws_done: int, states, accs, loss_blocks, obs_blocks):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    leaves = jax.tree_util.tree_leaves((states, accs))
    _atomic_savez(folder / "state.npz", {f"l{i}": np.asarray(x) for i, x in enumerate(leaves)})
    draws = {"loss": np.concatenate(loss_blocks, axis=1)} if loss_blocks else {}
    for name in (obs_blocks[0] if obs_blocks else {}):
        draws[f"obs/{name}"] = np.concatenate([b[name] for b in obs_blocks], axis=1)
    _atomic_savez(folder / "draws.npz", draws)
    tmp = folder / "meta.json.tmp"
    tmp.write_text(json.dumps({"fingerprint": fp, "draws_done": int(draws_done)}))
    os.replace(tmp, folder / "meta.json")


def load(folder, fp: str, template):
    """Return (draws_done, (states, accs), loss_blocks, obs_blocks) or None if nothing is saved.

    ``template`` is a PyTree with the structure of (states, accs), used to rebuild the leaves.
    """
    folder = Path(folder)
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        return None
    meta = json.loads(meta_path.read_text())
    if meta["fingerprint"] != fp:
        raise ValueError(f"checkpoint_dir {str(folder)!r} holds a run with different settings (key, "
                         "hyperparameters, params or observables). Use a fresh checkpoint_dir, or "
                         "delete this one to start over.")
    with np.load(folder / "state.npz") as z:
        leaves = [z[f"l{i}"] for i in range(len(z.files))]
    treedef = jax.tree_util.tree_structure(template)
    restored = jax.tree_util.tree_unflatten(treedef, leaves)
    with np.load(folder / "draws.npz") as z:
        loss_blocks = [z["loss"]] if "loss" in z.files else []
        obs = {k[4:]: z[k] for k in z.files if k.startswith("obs/")}
    return meta["draws_done"], restored, loss_blocks, ([obs] if obs else [])
