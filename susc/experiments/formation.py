r"""Watching the induction circuit form: resumable training with snapshots and circuit readouts.

Olsson et al. (2022) read induction-head formation off two measurements on *repeated random
sequences* ``[r_1 .. r_m, r_1 .. r_m]`` (tokens drawn uniformly, so only in-context copying can
predict the second half):

* the **prefix-matching score** of a head: its mean attention from a query in the second half at
  ``r_j`` to the key *after* the earlier occurrence, ``r_{j+1}`` -- 1 for a perfect induction head,
  ≈ 1/t for uniform attention; and
* the **in-context (induction) loss**: mean loss on the second half minus the first; it drops
  from ≈ 0 to strongly negative when the circuit forms -- the "bump" in the training loss.

`train_with_snapshots` trains w* with AdamW (`susc.train.adamw`: warmup, cosine decay, weight
decay, clipping) in jitted ``lax.scan`` chunks, saves the full state after every chunk (resume
loses at most one chunk) and keeps a parameter snapshot and both readouts at every chunk boundary.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ..models.transformer import TransformerConfig, attention_patterns, init_params, make_loss_fn

__all__ = ["repeated_sequences", "repeat_windows", "induction_readouts", "train_with_snapshots", "formation_step",
           "crossing_step"]


def repeated_sequences(key, num: int, half: int, vocab_size: int, *, low: int = 256) -> np.ndarray:
    """``[num, 2·half + 1]`` token windows ``[r, r, x]`` with ``r`` uniform over ids ``[low, V-1)``.

    ``low`` skips the 256 byte tokens (rare as whole tokens in BPE text) and the last id (the
    document separator); the final ``x`` only pads the window to the loss contract's T + 1.
    """
    if not 0 <= low < vocab_size - 2:
        raise ValueError(f"low must be in [0, vocab_size - 2) = [0, {vocab_size - 2}), got {low}.")
    r = np.asarray(jax.random.randint(key, (num, half), low, vocab_size - 1))
    return np.concatenate([r, r, r[:, :1]], axis=1).astype(np.int32)


def repeat_windows(tokens) -> np.ndarray:
    """Natural text repeated: ``[w[:h], w[:h], w[0]]`` for each window ``w`` of ``tokens [n, T+1]``
    (h = T // 2), the input of `induction_readouts` with real token statistics."""
    tokens = np.asarray(tokens)
    h = (tokens.shape[1] - 1) // 2
    return np.concatenate([tokens[:, :h], tokens[:, :h], tokens[:, :1]], axis=1).astype(np.int32)


def induction_readouts(params, tokens, cfg: TransformerConfig) -> dict:
    """``prefix_matching [L·H]`` and ``induction_loss`` (2nd-half minus 1st-half mean loss) on
    windows from `repeated_sequences`."""
    tokens = jnp.asarray(tokens)
    half = (tokens.shape[1] - 1) // 2
    pats = attention_patterns(params, tokens[:, :-1], cfg)             # [L, B, H, T, T]
    q = jnp.arange(half, 2 * half - 1)                                 # second-half queries r_j
    pm = pats[:, :, :, q, q - half + 1].mean(axis=(1, 3))              # key r_{j+1} earlier: [L, H]
    losses = make_loss_fn(cfg)(params, {"tokens": tokens})              # [B, 2·half]
    gap = losses[:, half:].mean() - losses[:, 1:half].mean()           # skip the first token
    return {"prefix_matching": pm.reshape(-1), "induction_loss": gap}


def train_with_snapshots(cfg, mcfg: TransformerConfig, train_tokens, eval_tokens, repeat_tokens,
                         work_dir, *, chunk: int, stop_at: int | None = None,
                         on_chunk=None, progress: bool = False) -> dict:
    """Train from ``key(cfg.init_seed)``, minibatch order from ``key(cfg.train_seed)``; resumable.

    Every ``chunk`` steps: the eval loss, the readouts on ``repeat_tokens`` and a float32 snapshot of
    the parameters are appended. The snapshot is written once, to ``work_dir/snapshots/step<k>.npy``,
    then ``work_dir/train_state.npz`` (optimizer state and history, which lists the snapshots) is
    replaced atomically: a rerun continues from the last finished chunk with identical results, and
    a chunk's I/O does not grow with the number of snapshots already taken. ``stop_at`` ends the call after that step (a stage of a longer run;
    call again to continue); ``on_chunk(step)`` is called after each chunk's state is saved (an
    exception there stops the run resumably). Returns the history dict:
    ``step``, ``loss`` (per step), ``eval_step``, ``eval_loss``, ``prefix_matching`` [S, L·H],
    ``induction_loss`` [S], ``snapshots`` (list of params) and ``wall_time``.
    """
    from ..train import adamw
    if cfg.train_steps % chunk:
        raise ValueError(f"chunk={chunk} must divide train_steps={cfg.train_steps}.")
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    loss_fn = make_loss_fn(mcfg)
    opt = adamw(cfg.learning_rate, num_steps=cfg.train_steps, warmup_steps=cfg.warmup_steps)
    data = jnp.asarray(train_tokens)
    n, B = data.shape[0], cfg.train_batch
    per_epoch = n // B
    key = jax.random.key(cfg.train_seed)

    @jax.jit
    def run_chunk(carry, steps, data):
        def one(carry, step):
            p, s = carry
            perm = jax.random.permutation(jax.random.fold_in(key, step // per_epoch), n)
            idx = jax.lax.dynamic_slice(perm, ((step % per_epoch) * B,), (B,))
            loss, g = jax.value_and_grad(lambda q: loss_fn(q, {"tokens": data[idx]}).mean())(p)
            u, s = opt.update(g, s, p)
            return (jax.tree.map(jnp.add, p, u), s), loss
        return jax.lax.scan(one, carry, steps)

    eval_fn = jax.jit(lambda p, d: loss_fn(p, {"tokens": d}).mean())
    read_fn = jax.jit(lambda p, d: induction_readouts(p, d, mcfg))
    params = init_params(jax.random.key(cfg.init_seed), mcfg)
    leaves0, treedef = jax.tree.flatten((params, opt.init(params)))
    state_path, snap_dir = work / "train_state.npz", work / "snapshots"
    snap_dir.mkdir(exist_ok=True)
    hist = {"loss": [], "eval_step": [], "eval_loss": [], "prefix_matching": [],
            "induction_loss": [], "wall_time": 0.0}
    snaps = []

    def keep(step, flat):                         # written before the state that lists it
        tmp = snap_dir / f"step{step:07d}.tmp.npy"
        np.save(tmp, flat)
        os.replace(tmp, snap_dir / f"step{step:07d}.npy")
        snaps.append(flat)

    if state_path.exists():                       # replaced atomically: always consistent
        with np.load(state_path) as z:
            leaves0 = [jnp.asarray(z[f"a{i}"]) for i in range(len(leaves0))]
            hist = json.loads(str(z["history"]))
            if "snapshots" in z.files:            # the older layout kept them inside: move out
                for step, flat in zip(hist["eval_step"], z["snapshots"]):
                    keep(step, np.asarray(flat))
        if not snaps:
            snaps = [np.load(snap_dir / f"step{s:07d}.npy") for s in hist["eval_step"]]
    carry = jax.tree.unflatten(treedef, leaves0)
    # step 0 readouts (the initialization) are part of the curve
    if not hist["eval_step"]:
        p0 = carry[0]
        hist["eval_step"].append(0)
        hist["eval_loss"].append(float(eval_fn(p0, eval_tokens)))
        r = read_fn(p0, repeat_tokens)
        hist["prefix_matching"].append(np.asarray(r["prefix_matching"]).tolist())
        hist["induction_loss"].append(float(r["induction_loss"]))
        keep(0, np.asarray(ravel_pytree(p0)[0]))
    done = hist["eval_step"][-1]
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.train_steps, initial=done, desc="train", leave=False)
    end = cfg.train_steps if stop_at is None else min(int(stop_at), cfg.train_steps)
    while done < end:
        t0 = time.perf_counter()
        carry, losses = run_chunk(carry, jnp.arange(done, done + chunk), data)
        losses = np.asarray(losses)
        if not np.all(np.isfinite(losses)):
            raise FloatingPointError(f"non-finite training loss within steps {done + 1}-{done + chunk}")
        done += chunk
        r = read_fn(carry[0], repeat_tokens)
        hist["loss"] += losses.tolist()
        hist["eval_step"].append(done)
        hist["eval_loss"].append(float(eval_fn(carry[0], eval_tokens)))
        hist["prefix_matching"].append(np.asarray(r["prefix_matching"]).tolist())
        hist["induction_loss"].append(float(r["induction_loss"]))
        keep(done, np.asarray(ravel_pytree(carry[0])[0]))
        hist["wall_time"] += time.perf_counter() - t0
        tmp = work / "train_state.tmp.npz"
        np.savez(tmp, history=np.array(json.dumps(hist)),
                 **{f"a{i}": np.asarray(a) for i, a in enumerate(jax.tree.leaves(carry))})
        os.replace(tmp, state_path)
        if on_chunk is not None:
            on_chunk(done)
        if bar is not None:
            bar.update(chunk)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", ind=f"{hist['induction_loss'][-1]:.2f}")
    if bar is not None:
        bar.close()
    unravel = ravel_pytree(carry[0])[1]
    out = {k: np.asarray(v) for k, v in hist.items()}
    out["step"] = np.arange(1, cfg.train_steps + 1)
    out["snapshots"] = [unravel(jnp.asarray(s)) for s in snaps]
    out["params"] = carry[0]
    return out


def formation_step(steps, induction_loss, *, fraction: float = 0.5) -> int:
    """First logged step at which the in-context loss has fallen ``fraction`` of the way from its
    initial value to its final value (the midpoint of the bump by default)."""
    steps, y = np.asarray(steps), np.asarray(induction_loss, float)
    target = y[0] + fraction * (y[-1] - y[0])
    hit = np.nonzero((y - target) * np.sign(y[-1] - y[0]) >= 0)[0]
    return int(steps[hit[0]])


def crossing_step(steps, y, threshold: float) -> float:
    """First step at which ``y`` reaches ``threshold`` from below, linearly interpolated between
    the two readouts around the crossing; ``inf`` when it never does (formation after the run).

    Used with one threshold for every arm of a comparison (e.g. a rising prefix-matching score), so
    that an arm's formation step does not depend on where that arm's own curve ends.
    """
    steps, y = np.asarray(steps, float), np.asarray(y, float)
    if steps.shape != y.shape or steps.ndim != 1:
        raise ValueError(f"`steps` and `y` must be 1-D of one length; got {steps.shape}, {y.shape}.")
    hit = np.nonzero(y >= threshold)[0]
    if hit.size == 0:
        return float("inf")
    i = int(hit[0])
    if i == 0:
        return float(steps[0])
    frac = (threshold - y[i - 1]) / (y[i] - y[i - 1])
    return float(steps[i - 1] + frac * (steps[i] - steps[i - 1]))
