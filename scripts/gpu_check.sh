#!/usr/bin/env bash
# The tutorials on an NVIDIA GPU: install this package, train LeNet (convolutional_mlp,
# 2 epochs) and the MLP (1 epoch) in JAX mode on the GPU and in the default NUMBA mode
# on the CPU, print the seconds per epoch and the errors of each, and fail unless the
# GPU's errors are the CPU's.  A few minutes on an H100.
#
#   scripts/gpu_check.sh [WHEELHOUSE | --installed]
#
# Needs: nvidia-smi, a Python >= 3.12 with JAX built for CUDA (pip install ".[gpu]"), and
# data/mnist.pkl.gz (or DATASET=path).  The package is installed from this source tree
# into a virtual environment that sees the system's packages (so the JAX already there
# is used); from WHEELHOUSE, a folder of wheels, where there is no package index (make
# it where there is one: pip wheel . -w wheelhouse); --installed: $PYTHON has it already.
# Environment: PYTHON (python3), DATASET (data/mnist.pkl.gz), FLOATX (float64: the GPU's
# errors equal the CPU's; float32 runs faster on the GPU, and its errors may differ by
# an image or two, since XLA multiplies float32 matrices in TF32 there), PLATFORM
# (cuda; cpu runs the whole check on the CPU, to try this script without a GPU).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
DATASET=$(realpath "${DATASET:-$REPO/data/mnist.pkl.gz}")
FLOATX=${FLOATX:-float64}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

PLATFORM=${PLATFORM:-cuda}
if [ "$PLATFORM" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
        || { echo "error: no NVIDIA GPU here (nvidia-smi failed)" >&2; exit 1; }
fi
[ -f "$DATASET" ] || { echo "error: no dataset at $DATASET (set DATASET, or run scripts/prepare_data.py)" >&2; exit 1; }

if [ "${1:-}" = --installed ]; then
    python=$PYTHON
else
    "$PYTHON" -m venv --system-site-packages "$WORK/venv"
    python=$WORK/venv/bin/python
    if [ -n "${1:-}" ]; then
        "$python" -m pip install --quiet --no-index --find-links "$1" deeplearning_tutorial
    else
        "$python" -m pip install --quiet --no-build-isolation "$REPO"
    fi
fi
cd "$WORK"  # the runs' checkpoints and best models go here, not into the source tree
JAX_PLATFORMS=$PLATFORM "$python" -c 'import jax; print("JAX", jax.__version__, "devices:", jax.devices())'

run() {  # run NAME MODE PLATFORM MODULE ARGS...: a run, its lines on stdout, its result in NAME.json
    local name=$1 mode=$2 platform=$3 module=$4
    shift 4
    echo "== $name: $module $* in $mode on the $platform, floatX=$FLOATX"
    mkdir -p "$name"
    (cd "$name" && JAX_PLATFORMS=$platform PYTENSOR_FLAGS="floatX=$FLOATX" "$python" -m \
        "deeplearning_tutorial.$module" --mode "$mode" --dataset "$DATASET" --history-file "../$name.json" "$@")
}

run lenet_cpu NUMBA cpu convolutional_mlp --n-epochs 2
run lenet_gpu JAX "$PLATFORM" convolutional_mlp --n-epochs 2
run mlp_cpu NUMBA cpu mlp --n-epochs 1
run mlp_gpu JAX "$PLATFORM" mlp --n-epochs 1

"$python" - <<'EOF'
import json
import math
import sys

failed = False
print(f"{'program':8s} {'device':6s} {'s/epoch':>8s} {'best validation':>16s} {'test':>10s}")
for program in ("lenet", "mlp"):
    runs = {device: json.load(open(f"{program}_{device}.json")) for device in ("cpu", "gpu")}
    for device, run in runs.items():
        print(f"{program:8s} {device:6s} {run['train_seconds'] / run['epochs']:8.2f} "
              f"{run['validation']:15.4f}% {run['test']:9.4f}%")
    cpu, gpu = ([(h["iteration"], h["validation"], h["test"]) for h in runs[d]["history"]] for d in ("cpu", "gpu"))
    close = lambda a, b: a == b or (None not in (a, b) and math.isclose(a, b, rel_tol=1e-9))  # noqa: E731
    same = len(cpu) == len(gpu) and all(c[0] == g[0] and close(c[1], g[1]) and close(c[2], g[2])
                                        for c, g in zip(cpu, gpu))
    print(f"{program}: the GPU's errors {'equal' if same else 'DIFFER FROM'} the CPU's at every validation")
    failed |= not same
sys.exit(1 if failed else 0)
EOF
