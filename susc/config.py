"""Run-size profiles, a registry of frozen experiment configs, and JAX compile-cache setup.

Every chapter and benchmark reads one *profile* from the environment variable ``SUSC_PROFILE``:

* ``tiny``  -- seconds per chapter on one CPU core; used by ``make test`` (nbval) and CI.
* ``small`` -- the default; minutes for the whole book on a laptop CPU (``make book``).
* ``full``  -- the paper-scale runs on a GPU box (``make book-full``).

The profile only changes *sizes* (chains, draws, grid points, model widths); it never changes the
estimator, the sign/factor conventions or the seeds. Conventions used throughout ``susc``
(theory.md §1): the localized tempered posterior is
``p(w) ∝ exp{-nβ L_n(w) - (γ/2)‖w - w*‖²}``, the susceptibility is
``χ(φ) = (1/nβ) ∂_h⟨φ⟩_h = -Cov[φ, ΔL]``, and only the product ``nβ`` enters the sampler.

Example::

    from susc import config
    num_draws = config.pick(tiny=50, small=400, full=4000)

    @config.register_config("toy", tiny={"num_draws": 50}, full={"num_draws": 4000})
    @dataclasses.dataclass(frozen=True)
    class Toy:
        num_draws: int = 400   # the small profile is the class defaults
        nbeta: float = 100.0

    cfg = config.get_config("toy", nbeta=50.0)   # profile from SUSC_PROFILE
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

__all__ = [
    "PROFILES",
    "ENV_VAR",
    "DEFAULT_PROFILE",
    "get_profile",
    "pick",
    "register_config",
    "get_config",
    "list_configs",
    "setup",
]

PROFILES = ("tiny", "small", "full")
ENV_VAR = "SUSC_PROFILE"
DEFAULT_PROFILE = "small"
_DEFAULT_CACHE = os.path.join("~", ".cache", "susc", "jax")


def get_profile(profile: str | None = None) -> str:
    """Return the run-size profile: ``profile`` if given, else ``$SUSC_PROFILE``, else ``"small"``.

    Raises:
        ValueError: if the value is not one of ``tiny``, ``small``, ``full``.
    """
    source = "profile"
    if profile is None:
        profile, source = os.environ.get(ENV_VAR, "").strip() or DEFAULT_PROFILE, ENV_VAR
    if not isinstance(profile, str) or profile.strip().lower() not in PROFILES:
        raise ValueError(
            f"{source}={profile!r} is not a known profile; use one of {', '.join(PROFILES)} "
            f"(e.g. `export {ENV_VAR}=tiny`)."
        )
    return profile.strip().lower()


_MISSING = object()


def pick(profile: str | None = None, *, tiny: Any, small: Any, full: Any = _MISSING) -> Any:
    """Return the value for the active profile; ``full`` falls back to ``small`` when omitted."""
    p = get_profile(profile)
    if p == "full" and full is _MISSING:
        return small
    return {"tiny": tiny, "small": small, "full": full}[p]


# name -> (frozen dataclass type, {profile: field overrides}); the class defaults are `small`.
_REGISTRY: dict[str, tuple[type, dict[str, dict[str, Any]]]] = {}


def _check_fields(cls: type, overrides: Mapping[str, Any], what: str) -> None:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(
            f"{what}: unknown field(s) {unknown} for {cls.__name__}; valid fields are {sorted(names)}."
        )


def register_config(
    name: str,
    cls: type | None = None,
    *,
    tiny: Mapping[str, Any] | None = None,
    small: Mapping[str, Any] | None = None,
    full: Mapping[str, Any] | None = None,
) -> Any:
    """Register a frozen dataclass under ``name`` with per-profile field overrides.

    The class defaults define the ``small`` profile unless ``small=`` overrides them; ``tiny=`` and
    ``full=`` are dicts of field values applied on top of the defaults. Usable as a decorator
    (``@register_config("name", tiny={...})``) or called with the class. Re-registering a name with
    a class of the same qualified name replaces it (so re-running a notebook cell works); a
    different class under a taken name is an error.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string, got {name!r}.")

    def decorate(klass: type) -> type:
        if not (dataclasses.is_dataclass(klass) and isinstance(klass, type)):
            raise TypeError(
                f"register_config({name!r}) needs a dataclass type; decorate the class with "
                "@dataclasses.dataclass(frozen=True) first."
            )
        if not klass.__dataclass_params__.frozen:
            raise TypeError(f"{klass.__name__} must be frozen: use @dataclasses.dataclass(frozen=True).")
        profiles = {}
        for prof, over in (("tiny", tiny), ("small", small), ("full", full)):
            over = dict(over or {})
            _check_fields(klass, over, f"register_config({name!r}, {prof}=...)")
            profiles[prof] = over
        old = _REGISTRY.get(name)
        if old is not None and old[0].__qualname__ != klass.__qualname__:
            raise ValueError(
                f"config name {name!r} is already registered to {old[0].__qualname__}; pick another name."
            )
        _REGISTRY[name] = (klass, profiles)
        return klass

    return decorate if cls is None else decorate(cls)


def get_config(name: str, profile: str | None = None, **overrides: Any) -> Any:
    """Instantiate the registered config ``name`` for ``profile`` (default: ``$SUSC_PROFILE``).

    Precedence: explicit ``overrides`` > the profile's overrides > the class defaults.
    """
    if name not in _REGISTRY:
        raise ValueError(
            f"no config registered as {name!r}; known: {sorted(_REGISTRY)}. "
            "Register it with susc.config.register_config first."
        )
    klass, profiles = _REGISTRY[name]
    _check_fields(klass, overrides, f"get_config({name!r})")
    values = {**profiles[get_profile(profile)], **overrides}
    return klass(**values)


def list_configs() -> list[str]:
    """Names of all registered configs, sorted."""
    return sorted(_REGISTRY)


def setup(cache_dir: str | os.PathLike | None = None) -> str:
    """Turn on JAX's persistent compilation cache and return its directory. Idempotent.

    The directory is ``cache_dir`` if given, else ``$JAX_COMPILATION_CACHE_DIR``, else
    ``~/.cache/susc/jax``. The minimum compile time to cache is set to 0 s (JAX's default of 1 s
    caches almost nothing on CPU) unless ``$JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` says
    otherwise. Kernels started by nbval or jupyter-book inherit the environment variables, so the
    Makefile exports them and this function is a no-op beyond reading them.
    """
    import jax  # local: importing susc.config must not import JAX

    path = cache_dir or os.environ.get("JAX_COMPILATION_CACHE_DIR") or _DEFAULT_CACHE
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    os.makedirs(path, exist_ok=True)
    min_secs = float(os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0"))
    if jax.config.jax_compilation_cache_dir != path:
        jax.config.update("jax_compilation_cache_dir", path)
    if jax.config.jax_persistent_cache_min_compile_time_secs != min_secs:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", min_secs)
    return path
