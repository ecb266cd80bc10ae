#!/usr/bin/env bash
# Issue 5's GPU checks in one go, on a GPU machine (benchmarks/README.md,
# "On a GPU"): the CUDA tests, then bench_scale.py's part g (and part b, whose torch rows gain
# CUDA rows there). Everything lands in $OUT (copy that folder back from the GPU machine).
#
#   here, once, with the registries reachable:  bash benchmarks/gpu_check.sh --fetch
#   then on the GPU machine, with .whl/ copied along (about 9 minutes):
#       bash benchmarks/gpu_check.sh
#   a dry run on this machine (CUDA tests skip, part g on CPU tensors):
#       OUT=/tmp/gpu_dry PY=.venv/bin/python G_DEVICE=cpu G_SIZES=300 bash benchmarks/gpu_check.sh
#
# The GPU image has torch, numpy, scipy, pytest, pytest-timeout, hypothesis and threadpoolctl but
# not array-api-compat, which gpo_core needs for tensors: --fetch downloads its wheel into .whl/
# (git-ignored), and the run installs it into /tmp/site.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
WHEELS=("array-api-compat==1.16.0")

if [[ "${1:-}" == "--fetch" ]]; then
    mkdir -p .whl
    exec "$PY" -m pip download -q --no-deps --only-binary=:all: -d .whl "${WHEELS[@]}"
fi

OUT=${OUT:?set OUT to the folder the results go to}
mkdir -p "$OUT"
log() { echo "== $* ($(date -u +%H:%M:%S))" | tee -a "$OUT/gpu_check.log"; }

if compgen -G ".whl/*.whl" >/dev/null; then
    log "installing the carried wheels into /tmp/site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl 2>&1 | tee -a "$OUT/gpu_check.log"
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1

log "building the C kernels in place (as pip install does; steps run in numpy if this fails)"
"$PY" - <<'PY' 2>&1 | tail -3 | tee -a "$OUT/gpu_check.log"
from setuptools import Extension, setup
setup(name="gpo-kernels", script_args=["build_ext", "--inplace", "-q"], ext_modules=[Extension(
    "gpo_core._kernels", ["gpo_core/_kernels.c"], extra_compile_args=["-O3", "-ffp-contract=off"])])
PY

log "machine"
{ nvidia-smi 2>&1 | head -15; "$PY" -c "import torch, numpy, gpo_core._fused as f; print('torch',
torch.__version__, 'cuda', torch.cuda.is_available(), 'numpy', numpy.__version__, 'kernels',
f.KERNELS is not None, "vector exp", f.VECTOR_EXP)"; } 2>&1 | tee -a "$OUT/gpu_check.log"

log "tests: tensors (CUDA ones included), kernels"
timeout 200 "$PY" -m pytest -q -rs -p no:randomly tests/test_array_api.py tests/test_kernels.py \
    2>&1 | tee "$OUT/tests.log" | tail -15
echo "pytest exit: ${PIPESTATUS[0]}" | tee -a "$OUT/gpu_check.log"

log "bench_scale.py part g${G_DEVICE:+ on $G_DEVICE}"
args=(--parts g --out "$OUT/scale_gpu.md")
[[ -n "${G_DEVICE:-}" ]] && args+=(--g-device "$G_DEVICE")
[[ -n "${G_SIZES:-}" ]] && args+=(--g-sizes $G_SIZES)
timeout 240 "$PY" benchmarks/bench_scale.py "${args[@]}" 2>&1 | tee -a "$OUT/gpu_check.log" | tail -30

if [[ -z "${G_DEVICE:-}" ]]; then
    log "bench_scale.py part b, quick (its torch rows gain CUDA rows)"
    timeout 150 "$PY" benchmarks/bench_scale.py --quick --parts b --out "$OUT/scale_b_gpu.md" \
        2>&1 | tail -30
fi
log "done"
