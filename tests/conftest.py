"""Shared fixtures for the unit tests: an explicit PRNG key and JAX's persistent compile cache."""
import os

import pytest

# Kernels and workers inherit these; set before JAX initialises so repeated runs reuse compiles.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(_ROOT, "_build", "jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


@pytest.fixture
def rng():
    """A fresh ``jax.random.key(0)`` per test; split it, never reuse it."""
    import jax

    return jax.random.key(0)


_LOWERED: list = []
_LISTENING = [False]


@pytest.fixture
def lowerings():
    """A list that receives the name of every program XLA lowers (compiles) during the test.

    Lowering happens on every in-memory jit-cache miss, whether or not the persistent cache then
    serves the binary, so an empty list means nothing was traced or compiled anew."""
    import jax

    if not _LISTENING[0]:
        jax.monitoring.register_event_duration_secs_listener(
            lambda event, secs, **kw: _LOWERED.append(kw.get("fun_name"))
            if event == "/jax/core/compile/jaxpr_to_mlir_module_duration" else None)
        _LISTENING[0] = True
    _LOWERED.clear()
    return _LOWERED
