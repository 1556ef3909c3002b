#!/usr/bin/env bash
# susc GPU benchmarks in one command (≤ 8 min on one H100/H200), from the repository root:
#
#   bash benchmarks/gpu.sh [--dry-run|--tiny] [--force] [--only mlp,transformer,structural,corpus]
#                          [--budget SECONDS] [--out FILE] [--copy-to DIR] [--python PY | --no-install]
#
# 1. Python: --python PY as given; else a venv ($SUSC_GPU_VENV, default .venv-gpu), reused when it
#    already imports susc and (GPU runs) sees a GPU. A new one uses --system-site-packages when
#    ${PYTHON:-python3} already has a CUDA jax (then `pip install -e .`, offline first, deps
#    from the system), else `pip install -e ".[$SUSC_GPU_EXTRAS,cuda13]"` (default extras: dev),
#    falling back to cuda12 when the cuda13 wheels see no GPU (drivers < 580). --dry-run reuses
#    .venv when it imports susc. Then `python -m susc.env`.
# 2. benchmarks/gpu_bench.py: the stages mlp, transformer, structural, corpus (see its docstring),
#    each with a time budget, writing benchmarks/results/<UTC date>-gpu.json after every
#    measurement (--dry-run: _build/gpu-bench/<date>-gpu-tiny.json, toy sizes on CPU, ~1-2 min).
#    Stages already done in that file are skipped (--force reruns them).
# The whole run, install included, is kept within --budget seconds (default 470; dry run 170) by
# skipping stages that no longer fit, and hard-stopped by `timeout` 30 s after it.
set -uo pipefail
START=$(date +%s)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DRY=0; PY=""; NO_INSTALL=0; BUDGET=""; ARGS=(); COPY=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run|--tiny) DRY=1; ARGS+=(--tiny) ;;
    --python) PY=$2; shift ;;
    --python=*) PY=${1#*=} ;;
    --no-install) NO_INSTALL=1 ;;
    --copy-to) COPY+=("$2"); ARGS+=("$1" "$2"); shift ;;
    --budget) BUDGET=$2; shift ;;
    --budget=*) BUDGET=${1#*=} ;;
    -h|--help) sed -n '2,/^set /p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) ARGS+=("$1") ;;
  esac
  shift
done
[ -n "$BUDGET" ] || BUDGET=$([ $DRY = 1 ] && echo 170 || echo 470)
DEADLINE=$((START + ${BUDGET%.*}))

export PYTHONUNBUFFERED=1 SUSC_PROGRESS=0 PYTHONDONTWRITEBYTECODE=1
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$ROOT/_build/jax_cache}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=${JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS:-0}
if [ $DRY = 1 ]; then
  export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
else
  # 16 heads × 4 chains of the full model need most of the card: allow 90% instead of JAX's 75%.
  export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}
fi
# This checkout's susc first, whatever the python has installed.
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

LOGDIR=$ROOT/_build/gpu-bench; mkdir -p "$LOGDIR"; INSTALL_LOG=$LOGDIR/install.log; : > "$INSTALL_LOG"
say() { echo "[gpu.sh $(( $(date +%s) - START ))s] $*"; }
keep_log() { local d; for d in ${COPY[@]+"${COPY[@]}"}; do mkdir -p "$d" && cp -f "$INSTALL_LOG" "$d/gpu-install.log"; done; }
trap keep_log EXIT

# 0 when $1 imports susc from this checkout (and, for GPU runs, jax sees a GPU)
usable() {
  [ -x "$1" ] || command -v "$1" >/dev/null 2>&1 || return 1
  GPU_CHECK=$([ $DRY = 1 ] && echo 0 || echo 1) "$1" - "$ROOT" <<'PY' >>"$INSTALL_LOG" 2>&1
import os, sys
import susc, jax
assert os.path.realpath(os.path.dirname(susc.__file__)) == os.path.realpath(os.path.join(sys.argv[1], "susc")), susc.__file__
if os.environ["GPU_CHECK"] == "1":
    assert any(d.platform == "gpu" for d in jax.devices()), jax.devices()
PY
}
has_gpu_jax() {
  "$1" - <<'PY' >>"$INSTALL_LOG" 2>&1
import jax
assert any(d.platform == "gpu" for d in jax.devices()), jax.devices()
PY
}
pipi() { "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@" >>"$INSTALL_LOG" 2>&1; }

VENV=${SUSC_GPU_VENV:-.venv-gpu}
EXTRAS=${SUSC_GPU_EXTRAS-dev}
MODE=""
if [ -n "$PY" ]; then
  MODE="given"
elif [ $NO_INSTALL = 1 ]; then
  PY=${PYTHON:-python3}; MODE="no-install (PYTHONPATH)"
elif usable "$VENV/bin/python"; then
  PY=$VENV/bin/python; MODE="reused $VENV"
elif [ $DRY = 1 ] && usable .venv/bin/python; then
  PY=.venv/bin/python; MODE="reused .venv (dry run)"
else
  BASE=${PYTHON:-python3}
  if [ $DRY = 0 ] && has_gpu_jax "$BASE"; then
    say "$BASE has a CUDA jax: venv $VENV with --system-site-packages"
    rm -rf "$VENV"
    if "$BASE" -m venv --system-site-packages "$VENV" >>"$INSTALL_LOG" 2>&1 \
       || { rm -rf "$VENV"; "$BASE" -m venv --system-site-packages --without-pip "$VENV" >>"$INSTALL_LOG" 2>&1; }; then
      # A venv made from a venv's python (the H200 image's python3 is /opt/torch/.venv/bin/python3) sees the
      # base interpreter's site-packages, not that venv's: add the latter with a .pth file.
      if ! "$VENV/bin/python" -c "import jax" >>"$INSTALL_LOG" 2>&1; then
        SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
        "$BASE" -c "import site, sys; print('\n'.join(site.getsitepackages() + [site.getusersitepackages()]))" \
          > "$SITE/_susc_parent_site.pth"
      fi
    fi
    if "$VENV/bin/python" -c "import jax" >>"$INSTALL_LOG" 2>&1; then
      PY=$VENV/bin/python
      if ! "$PY" -m pip --version >/dev/null 2>&1; then pipi() { "$BASE" -m pip --python "$PY" install --disable-pip-version-check -q "$@" >>"$INSTALL_LOG" 2>&1; }; fi
      if pipi --no-index --no-build-isolation -e .; then MODE="system-site-packages, pip install -e . (offline)"
      elif pipi --retries 0 --timeout 10 -e .; then MODE="system-site-packages, pip install -e ."
      elif pipi --no-index --no-deps --no-build-isolation -e .; then MODE="system-site-packages, pip install --no-deps -e ."
      else MODE="system-site-packages venv, susc from PYTHONPATH (pip failed)"; fi
    else
      PY=$BASE; MODE="$BASE as is, susc from PYTHONPATH (no venv could see its jax)"
    fi
  else
    say "creating $VENV: pip install -e .[${EXTRAS:+$EXTRAS,}cuda13] (a few minutes)"
    rm -rf "$VENV" && "$BASE" -m venv "$VENV"
    pipi --upgrade pip
    if [ $DRY = 1 ]; then
      pipi -e ".[${EXTRAS}]" && MODE="new venv, .[${EXTRAS}]"
    elif pipi -e ".[${EXTRAS:+$EXTRAS,}cuda13]" && has_gpu_jax "$VENV/bin/python"; then
      MODE="new venv, .[${EXTRAS:+$EXTRAS,}cuda13]"
    else
      say "cuda13 wheels see no GPU: trying cuda12"
      "$VENV/bin/python" -m pip uninstall -y -q jax-cuda13-plugin jax-cuda13-pjrt >>"$INSTALL_LOG" 2>&1
      pipi -e ".[${EXTRAS:+$EXTRAS,}cuda12]" && MODE="new venv, .[${EXTRAS:+$EXTRAS,}cuda12]"
    fi
    PY=$VENV/bin/python
  fi
fi
INSTALL_S=$(( $(date +%s) - START ))
if ! "$PY" -c "import susc, jax" >>"$INSTALL_LOG" 2>&1; then
  say "no usable python (mode: ${MODE:-install failed}); end of $INSTALL_LOG:"; tail -n 30 "$INSTALL_LOG"; exit 2
fi
say "python: $PY ($MODE, ${INSTALL_S}s)"
"$PY" -m susc.env || { say "python -m susc.env failed"; exit 2; }

export SUSC_GPU_SETUP="{\"mode\": \"$MODE\", \"python\": \"$PY\", \"install_s\": $INSTALL_S, \"dry_run\": $([ $DRY = 1 ] && echo true || echo false), \"budget_s\": $BUDGET, \"env_s\": $(( $(date +%s) - START - INSTALL_S ))}"
REMAIN=$(( DEADLINE - $(date +%s) ))
say "benchmarks: $REMAIN s of the ${BUDGET}s budget left"
timeout -k 15 $(( REMAIN > 0 ? REMAIN + 30 : 30 )) "$PY" benchmarks/gpu_bench.py --deadline "$DEADLINE" ${ARGS[@]+"${ARGS[@]}"}
RC=$?
[ $RC = 124 ] && say "stopped by timeout: the record keeps every finished measurement; run again to resume"
say "done (exit $RC) in $(( $(date +%s) - START ))s"
exit $RC
