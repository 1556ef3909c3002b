r"""More training seeds for the induction-timing arms of ``transformer-patterning`` (a GPU job).

The ``small`` run of `circuit_patterning_run` retrains 3 seeds; the formation step moves by more
between random reweightings than between seeds, so 3 cannot separate an arm from the null. This
module retrains many seeds at once (``vmap`` over seeds of the same compiled chunk as `train_arm`:
seed s uses init key(s) and minibatch order key(1000 + s), exactly as `train_arm`) under the
*shipped* per-sequence weights of the ``small`` results (baseline, accelerate, delay, random) and
the null reweightings `null_weights` of the same config, and records the formation step with each
seed's own threshold (midway between its baseline's largest prefix-matching score at the start and
at the end). Each arm is saved to ``work/`` as it finishes, so a rerun resumes.

    python -m susc.experiments.circuit_patterning_seeds --seeds 3:19 [--tiny] [--out DIR]

Arrays (``<out>/arrays.npz``): ``arm_names`` [A], ``seeds`` [S], ``formation_step`` [S, A] (inf:
not formed), ``threshold`` [S], ``readout_steps`` [R], ``prefix_matching_max`` /
``induction_loss`` [S, A, R].
"""
from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .. import config as _config
from ..models.transformer import init_params
from . import DEFAULT_ROOT, common, formation, load_results, save_results
from .circuit_patterning import (_chunk_fn, _readout_fn, model_config, null_weights, synthetic_config,
                                 training_weights)
from .transformer import make_data

__all__ = ["train_arm_seeds", "train_arms_cached", "run_seeds", "load_shipped", "seeds_cli"]


def train_arm_seeds(cfg, seeds, weights, train_tokens, repeat_tokens) -> dict:
    """`train_arm` for many seeds at once: ``steps`` [R], ``prefix_matching`` [S, R, L·H],
    ``induction_loss`` [S, R]; per-sequence weights ρ [n] or per-token ρ [n, T] (normalized to
    mean 1)."""
    mcfg = model_config(synthetic_config(cfg))
    n = train_tokens.shape[0]
    rho = training_weights(weights, train_tokens)
    run, opt = _chunk_fn(mcfg, cfg.learning_rate, cfg.train_steps, cfg.warmup_steps, n, cfg.train_batch)
    vrun = jax.jit(jax.vmap(run, in_axes=(0, None, None, None, 0)))
    read_one = _readout_fn(mcfg)
    reps = jnp.asarray(repeat_tokens)
    read = jax.jit(jax.vmap(lambda p: read_one(p, reps)))
    seeds = [int(s) for s in seeds]
    params = jax.vmap(lambda k: init_params(k, mcfg))(jnp.stack([jax.random.key(s) for s in seeds]))
    carry = (params, jax.vmap(opt.init)(params))
    keys = jnp.stack([jax.random.key(1000 + s) for s in seeds])
    data = jnp.asarray(train_tokens)
    pm, il, steps = [], [], [0]

    def readout(p):
        r = read(p)
        pm.append(np.asarray(r["prefix_matching"]))
        il.append(np.asarray(r["induction_loss"]))

    readout(params)
    done = 0
    while done < cfg.train_steps:
        carry, _ = vrun(carry, jnp.arange(done, done + cfg.readout_every), data, rho, keys)
        done += cfg.readout_every
        steps.append(done)
        readout(carry[0])
    return {"steps": np.array(steps), "prefix_matching": np.stack(pm, 1), "induction_loss": np.stack(il, 1)}


def train_arms_cached(cfg, seeds, arms: dict, train_tokens, repeat_tokens, work: Path, *,
                      progress: bool = False, timings: dict | None = None) -> dict:
    """`train_arm_seeds` for each ``{name: ρ}`` of ``arms``, each kept in ``work/<name>.npz`` as
    soon as it is done (a rerun resumes; a fault loses no finished arm). Wall times go to
    ``timings`` (``<name>_s``, ``"cached"`` for an arm loaded from ``work``) when given."""
    work.mkdir(parents=True, exist_ok=True)
    res = {}
    for a, rho in arms.items():
        t, cached = time.perf_counter(), (work / f"{a}.npz").exists()
        res[a] = common.cached_stage(work / f"{a}.npz", lambda rho=rho: train_arm_seeds(
            cfg, seeds, rho, train_tokens, repeat_tokens))
        dt = time.perf_counter() - t
        if timings is not None:
            timings[f"{a}_s"] = "cached" if cached else dt
        if progress:
            print(f"{a}: {len(seeds)} seeds in {dt:.1f} s", flush=True)
    return res


def run_seeds(profile: str, seeds, out: Path, *, arms=("baseline", "accelerate", "delay", "random"),
              shipped_root=None, progress: bool = True) -> dict:
    """Retrain ``seeds`` under the shipped weights of ``transformer-patterning`` at ``profile``
    and its null reweightings; save arrays + record to ``out`` (resuming from ``out/work``)."""
    from ..artifacts import provenance
    t0 = time.perf_counter()
    shipped = load_shipped(profile, shipped_root)
    cfg = _config.get_config("transformer-patterning", profile)
    names = [str(a) for a in shipped.arrays["arm_names"]]
    W = shipped.arrays["weights"]
    tr, _ = make_data(synthetic_config(cfg))
    tokens = np.asarray(tr["tokens"])
    rep = formation.repeated_sequences(jax.random.key(7), cfg.repeat_sequences, cfg.seq_len // 2,
                                       cfg.vocab_size, low=19)
    todo = {a: (np.ones(len(tokens)) if a == "baseline" else W[names.index(a)]) for a in arms}
    for k, r in enumerate(null_weights(cfg, W[names.index("accelerate")])):
        todo[f"null{k}"] = r
    res = train_arms_cached(cfg, seeds, todo, tokens, rep, Path(out) / "work", progress=progress)
    steps = res["baseline"]["steps"]
    pm = np.stack([res[a]["prefix_matching"].max(axis=2) for a in todo], 1)         # [S, A, R]
    th = 0.5 * (pm[:, 0, 0] + pm[:, 0, -1])
    formed = np.array([[formation.crossing_step(steps, p, t) for p in row] for row, t in zip(pm, th)])
    arrays = {"arm_names": np.array(list(todo)), "seeds": np.array(seeds), "formation_step": formed,
              "threshold": th, "readout_steps": steps, "prefix_matching_max": pm,
              "induction_loss": np.stack([res[a]["induction_loss"] for a in todo], 1)}
    record = {"experiment": "transformer-patterning-seeds", "profile": profile,
              "description": "more seeds for the induction-timing arms under the shipped weights",
              "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "config": {"seeds": list(seeds), "arms": list(todo), "weights_sha256": shipped.record["sha256"]},
              "timings": {"total_s": time.perf_counter() - t0}, "provenance": provenance()}
    save_results(Path(out), arrays, record)
    return arrays


def load_shipped(profile: str, root=None):
    """The saved ``transformer-patterning`` results at ``profile`` (weights, thresholds), or a
    clear error saying how to make them."""
    shipped = load_results("transformer-patterning", profile, root)
    if shipped is None:
        raise FileNotFoundError(f"no transformer-patterning results at profile {profile!r}: run "
                                f"`python -m susc run transformer-patterning --profile {profile}` first")
    return shipped


def seeds_cli(doc: str, argv, *, default: str, tiny: str, suffix: str, extra=()):
    """The command line shared by the many-seed jobs: ``(args, profile, seeds, out)``. ``extra``
    holds ``(flag, kwargs)`` pairs for `argparse.ArgumentParser.add_argument`. Parsing only: the
    caller turns on the compilation cache (`susc.config.setup`)."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--seeds", default=default, help=f"first:stop (Python range), default {default}")
    ap.add_argument("--profile", default="small")
    ap.add_argument("--tiny", action="store_true", help=f"CPU check: tiny profile, seeds {tiny}")
    ap.add_argument("--out", default=None)
    ap.add_argument("--shipped-root", default=None, help="results root holding transformer-patterning")
    for flag, kw in extra:
        ap.add_argument(flag, **kw)
    a = ap.parse_args(argv)
    profile = "tiny" if a.tiny else a.profile
    lo, hi = (int(x) for x in (tiny if a.tiny else a.seeds).split(":"))
    out = Path(a.out) if a.out else DEFAULT_ROOT / "transformer-patterning" / f"{profile}-{suffix}"
    return a, profile, range(lo, hi), out


def _main(argv=None):
    a, profile, seeds, out = seeds_cli(__doc__, argv, default="3:19", tiny="3:5", suffix="seeds")
    _config.setup()
    arr = run_seeds(profile, seeds, out, shipped_root=a.shipped_root)
    print(dict(zip(arr["arm_names"].tolist(), arr["formation_step"].T.tolist())))


if __name__ == "__main__":
    _main()
