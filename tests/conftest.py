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
