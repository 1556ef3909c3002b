"""Command line: ``python -m susc list`` and ``python -m susc run <experiment> --profile P``.

``run`` writes ``data/results/<experiment>/<profile>/`` (``arrays.npz`` + ``record.json`` with the
config, git commit, device, package versions and timings; see `susc.experiments`). An interrupted
run resumes from ``work/`` when started again; ``--force`` discards earlier results and starts over.
Estimators follow the package conventions: p(w) ∝ exp{−nβ L_n(w) − (γ/2)‖w − w*‖²} and
χ = −Cov[φ, ΔL].
"""
from __future__ import annotations

import argparse
import json
import sys

__all__ = ["main"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m susc", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the registered experiments")
    r = sub.add_parser("run", help="run one experiment and save its results")
    r.add_argument("experiment")
    r.add_argument("--profile", choices=("tiny", "small", "full"), default=None,
                   help="run size (default: $SUSC_PROFILE, else small)")
    r.add_argument("--out", default=None, help="results root (default: data/results)")
    r.add_argument("--force", action="store_true", help="recompute even if results exist")
    r.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                   help="override a config field, e.g. --set num_draws=20 (value parsed as JSON)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.add_argument("--stage-seconds", type=float, default=None, metavar="S",
                   help="stop at the next safe point after S seconds (state saved; exit code 3); "
                        "rerun the same command to continue")
    args = parser.parse_args(argv)

    from . import config, experiments
    config.setup()   # the persistent JAX compilation cache: the CLI opts in (importing susc does not)
    if args.command == "list":
        for exp in experiments.list_experiments():
            print(f"{exp.name:28s} {exp.description}")
        return 0
    overrides = {}
    for item in args.set:
        field, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set expects FIELD=VALUE, got {item!r}")
        try:
            overrides[field] = json.loads(value)
        except json.JSONDecodeError:
            overrides[field] = value
    from .experiments.common import StageTimeout, set_deadline
    set_deadline(args.stage_seconds)
    try:
        res = experiments.run(args.experiment, args.profile, root=args.out, force=args.force,
                              progress=not args.quiet, **overrides)
    except StageTimeout as err:
        print(f"stopped: {err}", file=sys.stderr)
        return 3
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        set_deadline(None)
    print(f"wrote {res.path} (profile {res.profile}, {res.record['timings']['total_s']:.1f} s)")
    print(json.dumps(res.summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
