"""susc.config (profiles, registry, compile cache) and susc.env (device report)."""
import dataclasses
import json
import subprocess
import sys

import pytest

from susc import config, env


@pytest.mark.parametrize("value", ["tiny", "small", "full", " Full "])
def test_profile_from_env(monkeypatch, value):
    monkeypatch.setenv("SUSC_PROFILE", value)
    assert config.get_profile() == value.strip().lower()


def test_profile_default_and_errors(monkeypatch):
    monkeypatch.delenv("SUSC_PROFILE", raising=False)
    assert config.get_profile() == "small"
    monkeypatch.setenv("SUSC_PROFILE", "")
    assert config.get_profile() == "small"
    monkeypatch.setenv("SUSC_PROFILE", "huge")
    with pytest.raises(ValueError, match="SUSC_PROFILE='huge'.*tiny, small, full"):
        config.get_profile()
    with pytest.raises(ValueError, match="profile='medium'"):
        config.get_profile("medium")


def test_pick(monkeypatch):
    assert [config.pick(p, tiny=1, small=2, full=3) for p in config.PROFILES] == [1, 2, 3]
    assert config.pick("full", tiny=1, small=2) == 2  # full falls back to small
    monkeypatch.setenv("SUSC_PROFILE", "tiny")
    assert config.pick(tiny="a", small="b", full="c") == "a"


@dataclasses.dataclass(frozen=True)
class _Toy:
    num_draws: int = 400
    nbeta: float = 100.0


def test_registry_profiles_and_overrides(monkeypatch):
    config.register_config("_toy", _Toy, tiny={"num_draws": 20}, full={"num_draws": 4000})
    assert "_toy" in config.list_configs()
    assert config.get_config("_toy", "tiny") == _Toy(num_draws=20)
    assert config.get_config("_toy", "small") == _Toy()
    assert config.get_config("_toy", "full", nbeta=5.0) == _Toy(num_draws=4000, nbeta=5.0)
    monkeypatch.setenv("SUSC_PROFILE", "tiny")
    assert config.get_config("_toy").num_draws == 20
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.get_config("_toy").num_draws = 1  # type: ignore[misc]


def test_registry_decorator_and_errors():
    @config.register_config("_toy2", tiny={"n": 1})
    @dataclasses.dataclass(frozen=True)
    class Toy2:
        n: int = 10

    assert config.get_config("_toy2", "tiny").n == 1
    with pytest.raises(ValueError, match="unknown field.*'m'"):
        config.get_config("_toy2", "small", m=3)
    with pytest.raises(ValueError, match="unknown field"):
        config.register_config("_bad", _Toy, tiny={"num_draw": 1})
    with pytest.raises(ValueError, match="already registered"):
        config.register_config("_toy2", _Toy)
    with pytest.raises(ValueError, match="no config registered"):
        config.get_config("_nope")

    @dataclasses.dataclass
    class Mutable:
        n: int = 1

    with pytest.raises(TypeError, match="frozen"):
        config.register_config("_mut", Mutable)
    with pytest.raises(TypeError, match="dataclass"):
        config.register_config("_cls", int)


def test_setup_sets_cache_idempotently(tmp_path, monkeypatch):
    import jax

    old_dir = jax.config.jax_compilation_cache_dir
    old_min = jax.config.jax_persistent_cache_min_compile_time_secs
    try:
        monkeypatch.delenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", raising=False)
        path = config.setup(tmp_path / "cache")
        assert path == str(tmp_path / "cache") and (tmp_path / "cache").is_dir()
        assert jax.config.jax_compilation_cache_dir == path
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
        assert config.setup(tmp_path / "cache") == path  # second call: same state, no error
        monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "env"))
        assert config.setup() == str(tmp_path / "env")
    finally:
        jax.config.update("jax_compilation_cache_dir", old_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", old_min)


def test_device_report_fields():
    import jax

    report = env.device_report()
    for key in ("python", "jax", "jaxlib", "flax", "optax", "numpyro", "backend", "devices",
                "cpu_count", "git_commit", "date"):
        assert isinstance(report[key], str) and report[key], key
    assert report["jax"] == jax.__version__
    assert report["backend"] == jax.default_backend()
    assert int(report["device_count"]) == len(jax.devices())
    assert env.format_report({"a": "1", "bbb": "2"}) == "a    1\nbbb  2"


def test_env_cli_json():
    out = subprocess.run([sys.executable, "-m", "susc.env", "--json"], capture_output=True,
                         text=True, timeout=60, check=True)
    assert json.loads(out.stdout)["python"] == ".".join(map(str, sys.version_info[:3]))
    bad = subprocess.run([sys.executable, "-m", "susc.env", "--nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "usage" in bad.stderr
