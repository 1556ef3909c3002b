"""Checkpoints of a running `susc.sample` call that cannot corrupt.

Layout: ``checkpoint_dir/block-<draws_done>/`` holds ``draws.npz`` (the draws of that block only),
``meta.json`` (fingerprint, first and last draw) and, in the newest block, ``state.npz`` (the
`RunState`: chain states, accumulators, counters). A block is written into a temporary folder and
renamed into place, so it is either there whole or not at all; a crash between its files leaves
an unrenamed temporary folder that the next run deletes. After a block lands, the state of the
block before it is removed (its draws stay).

The fingerprint hashes every input that changes the result: settings, key, params, data, weights,
center, masks, perturbation, observable data, the (qualified) names of the functions, the
accumulators. Functions themselves cannot be hashed across processes: change a function's body and
keep its name, and the checkpoint will not notice.
Resuming with anything else is refused. Because each chain's random stream is indexed by its
global step, a resumed run is bitwise the uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import jax
import numpy as np

__all__ = ["fingerprint", "tree_digest", "CheckpointStore"]


def tree_digest(tree) -> list:
    """[(path, shape, dtype, sha256[:16])] of every leaf (arrays are copied to the host once)."""
    out = []
    for p, x in jax.tree_util.tree_leaves_with_path(tree):
        if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        a = np.ascontiguousarray(np.asarray(x))
        out.append((jax.tree_util.keystr(p), list(a.shape), str(a.dtype), hashlib.sha256(a).hexdigest()[:16]))
    return out


def _fn_name(f) -> str | None:
    """The qualified name only: a notebook and a script defining the same function must agree."""
    return None if f is None else getattr(f, "__qualname__", type(f).__name__)


def fingerprint(settings: dict, *, key, arrays: dict, functions: dict) -> str:
    """sha256 over settings, the key, digests of ``arrays`` ({name: PyTree}) and ``functions`` names."""
    rec = {"settings": {k: v for k, v in settings.items() if k not in ("progress", "devices", "wall_time")},
           "key": tree_digest(key), "arrays": {k: tree_digest(v) for k, v in arrays.items()},
           "functions": {k: _fn_name(f) for k, f in functions.items()}}
    return hashlib.sha256(json.dumps(rec, sort_keys=True, default=str).encode()).hexdigest()


def _to_host(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]   # RunState keys are raw words


class CheckpointStore:
    """Block folders under ``folder`` for the run with fingerprint ``fp``."""

    def __init__(self, folder, fp: str):
        self.folder, self.fp = Path(folder), fp

    def _blocks(self) -> list[tuple[int, Path]]:
        if not self.folder.exists():
            return []
        out = []
        for d in self.folder.iterdir():
            if d.is_dir() and d.name.startswith("block-") and ".tmp" not in d.name:
                out.append((int(d.name[6:]), d))
        return sorted(out)

    def save(self, state, draws: dict, start: int, done: int):
        """Write block ``[start, done)``: its draws, the state after it, and its meta, atomically."""
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / f"block-{done:09d}"
        tmp = self.folder / f"block-{done:09d}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        np.savez(tmp / "state.npz", **{f"l{i}": x for i, x in enumerate(_to_host(state))})
        np.savez(tmp / "draws.npz", **draws)
        (tmp / "meta.json").write_text(json.dumps({"fingerprint": self.fp, "start": int(start),
                                                   "draws_done": int(done)}))
        os.rename(tmp, final)               # the block lands whole, or not at all
        for d_done, d in self._blocks():    # older states are not needed any more
            if d_done < done and (d / "state.npz").exists():
                os.remove(d / "state.npz")

    def load(self, template):
        """(draws_done, state, [draws of each block]) of the newest block, or None if none landed.

        ``template`` is a PyTree with the structure of the state."""
        if self.folder.exists():
            for d in self.folder.iterdir():          # leftovers of a crash mid-block
                if d.is_dir() and ".tmp" in d.name:
                    shutil.rmtree(d, ignore_errors=True)
        blocks = self._blocks()
        if not blocks:
            return None
        metas = [json.loads((d / "meta.json").read_text()) for _, d in blocks]
        if any(m["fingerprint"] != self.fp for m in metas):
            raise ValueError(f"checkpoint_dir {str(self.folder)!r} holds a run with different inputs (key, "
                             "hyperparameters, params, data, weights, masks, center, perturbation, observables "
                             "or accumulators). Use a fresh checkpoint_dir, or delete this one to start over.")
        prev = 0
        for m in metas:
            if m["start"] != prev:
                raise ValueError(f"checkpoint_dir {str(self.folder)!r} is missing the draws [{prev}, {m['start']}); "
                                 "delete it to start over")
            prev = m["draws_done"]
        done, last = blocks[-1]
        with np.load(last / "state.npz") as z:
            leaves = [z[f"l{i}"] for i in range(len(z.files))]
        treedef = jax.tree_util.tree_structure(template)
        draws = []
        for _, d in blocks:
            with np.load(d / "draws.npz") as z:
                draws.append({k: z[k] for k in z.files})
        return done, jax.tree_util.tree_unflatten(treedef, leaves), draws
