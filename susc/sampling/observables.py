r"""Observables evaluated at every draw inside the compiled loop, with data passed at run time.

An observable is either a plain callable ``fn(params) -> array`` or an `Observable` declared with
its own data: ``susc.observable(fn, data, chunk_size=m)`` evaluates ``fn(params, batch)`` over the
rows of ``data`` (a PyTree with a shared leading axis), ``m`` rows at a time, and concatenates the
results along that axis. The data are an *argument* of the compiled program, never a constant
baked into it: a second run with other data of the same shapes (and the same ``fn`` object)
compiles nothing, and memory for a large probe set is bounded by the chunk (one
``[chains, m, ...]`` block at a time, via `jax.lax.map`).

Per-sample losses are the common case: ``susc.observable(loss_fn, query_data)`` gives
``[n_query(, T)]`` per draw, the input of the influence matrix.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Observable", "observable", "normalize", "evaluate", "check_observables"]


@dataclasses.dataclass(frozen=True, eq=False)
class Observable:
    """``fn(params, batch) -> [rows, *s]`` over ``data`` in chunks of ``chunk_size`` rows
    (``data=None``: ``fn(params) -> array``). Build with `observable`."""

    fn: Callable
    data: Any = None
    chunk_size: int | None = None

    @property
    def rows(self) -> int | None:
        if self.data is None:
            return None
        return int(np.shape(jax.tree_util.tree_leaves(self.data)[0])[0])


def observable(fn: Callable, data=None, *, chunk_size: int | None = None) -> Observable:
    """Declare an observable with its own data, evaluated ``chunk_size`` rows at a time.

    Args:
        fn: ``fn(params, batch) -> array`` whose leading axis is the batch's rows (e.g. a loss_fn
            giving per-sample losses), or ``fn(params)`` when ``data`` is None.
        data: PyTree of arrays with a shared leading axis (the rows), passed at run time.
        chunk_size: rows per evaluation (None: all at once). Need not divide the row count.
    """
    if not callable(fn):
        raise TypeError(f"observable: fn must be callable, got {type(fn).__name__}")
    if data is not None:
        sizes = {int(np.shape(x)[0]) if np.ndim(x) else -1 for x in jax.tree_util.tree_leaves(data)}
        if len(sizes) != 1 or -1 in sizes or 0 in sizes:
            raise ValueError("observable: data leaves must share one non-empty leading axis (the rows)")
    if chunk_size is not None and (int(chunk_size) != chunk_size or chunk_size < 1):
        raise ValueError(f"observable: chunk_size must be a positive integer or None, got {chunk_size!r}")
    if data is None and chunk_size is not None:
        raise ValueError("observable: chunk_size needs data to chunk over")
    data = None if data is None else jax.tree_util.tree_map(jnp.asarray, data)
    return Observable(fn, data, None if chunk_size is None else int(chunk_size))


def normalize(observables: Mapping[str, Any] | None) -> dict[str, Observable]:
    """Plain callables become data-free `Observable`s; names are checked."""
    out = {}
    for name, o in (observables or {}).items():
        if name == "loss":
            raise ValueError("'loss' is reserved (the loss at each draw is always recorded); rename the observable")
        if isinstance(o, Observable):
            out[name] = o
        elif callable(o):
            out[name] = Observable(o)
        else:
            raise TypeError(f"observable {name!r} must be a callable fn(params) -> array or "
                            f"susc.observable(fn, data), got {type(o).__name__}")
    return out


def evaluate(fn: Callable, chunk_size: int | None, params, data):
    """Value of one observable at ``params`` (traceable); ``data`` None means ``fn(params)``."""
    if data is None:
        return jnp.asarray(fn(params))
    m = int(jax.tree_util.tree_leaves(data)[0].shape[0])
    if chunk_size is None or chunk_size >= m:
        return jnp.asarray(fn(params, data))
    k = -(-m // chunk_size)
    pad = k * chunk_size - m   # pad with copies of row 0; the padded outputs are dropped

    def blocks(x):
        x = jnp.concatenate([x, jnp.broadcast_to(x[:1], (pad, *x.shape[1:]))]) if pad else x
        return x.reshape(k, chunk_size, *x.shape[1:])

    out = jax.lax.map(lambda b: jnp.asarray(fn(params, b)), jax.tree_util.tree_map(blocks, data))
    return out.reshape(k * chunk_size, *out.shape[2:])[:m]


def check_observables(observables: Mapping[str, Observable], params) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes of what each observable returns, checked abstractly; errors name the observable."""
    shapes = {}
    for name, o in observables.items():
        try:
            out = jax.eval_shape(lambda p, d: evaluate(o.fn, o.chunk_size, p, d), params, o.data)
        except Exception as e:
            raise TypeError(f"observable {name!r} failed when called on params: {e}") from e
        if not isinstance(out, jax.ShapeDtypeStruct):
            raise TypeError(f"observable {name!r} must return one array, got {type(out).__name__} "
                            "(return jnp.stack([...]) or register each piece as its own observable)")
        if o.data is not None and (not out.shape or out.shape[0] != o.rows):
            raise ValueError(f"observable {name!r}: fn(params, batch) must return one row per data row "
                             f"(leading axis {o.rows}), got shape {out.shape}")
        shapes[name] = out
    return shapes
