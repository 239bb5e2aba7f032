#!/usr/bin/env bash
# The accelerator check: about 8 minutes on one GPU. From the repository root:
#
#     bash benchmarks/gpu_check.sh [OUT_DIR]          (default runs/gpu_check)
#
# 1. installs the package with its GPU extra (pip install -e ".[gpu]": TensorFlow with CUDA from
#    PyPI) into .venv, unless TFAUX_GPU_CHECK_PYTHON names a Python that already has TensorFlow;
# 2. prints TensorFlow's version and devices (devices.txt);
# 3. runs the default job (apps.train: JTDS on digits) under MirroredStrategy (default_job.txt);
# 4. times JTDS against STL (benchmarks.cost: 2 interleaved rounds) on ResNet-18 over CIFAR-10-shaped
#    batches (generated files in the official python format: 32 x 32 x 3, 10 classes, + rotation),
#    batch 128, M = 20, K = 3, under MirroredStrategy, XLA off for both (cost.md, cost.json);
# 5. profiles the upper step's parts on the same model (upper_profile.md; time only is meaningful
#    on a GPU: its memory column is host memory).
# Every number lands in OUT_DIR; summary.md gathers them. GPU_CHECK_STEPS (40) and GPU_CHECK_CALLS (5)
# shorten steps 4 and 5 (e.g. to check the script itself on a CPU).
set -euo pipefail
OUT=${1:-runs/gpu_check}
mkdir -p "$OUT"
PY=${TFAUX_GPU_CHECK_PYTHON:-}
if [ -z "$PY" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install -q -e ".[gpu]"
  PY=.venv/bin/python
fi
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
{
  "$PY" -c "import tensorflow as tf; print('tensorflow', tf.__version__); print(tf.config.list_physical_devices())"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
} 2>&1 | tee "$OUT/devices.txt"

start=$(date +%s)
"$PY" -m apps.train --output_dir="$OUT/digits_jtds" --overwrite --distribute=mirrored --verbose=0 2>&1 \
  | tail -n 3 | tee "$OUT/default_job.txt"
echo "default job: $(( $(date +%s) - start )) s" | tee -a "$OUT/default_job.txt"

"$PY" - "$OUT/cifar" <<'EOF'
import os, pickle, sys
import numpy as np
root = os.path.join(sys.argv[1], "cifar-10-batches-py")
os.makedirs(root, exist_ok=True)
rng = np.random.default_rng(0)
for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
    rows = rng.integers(0, 256, (1000, 3072), dtype=np.uint8)
    with open(os.path.join(root, name), "wb") as f:
        pickle.dump({b"data": rows, b"labels": rng.integers(0, 10, 1000).tolist(), b"batch_label": b"x"}, f)
EOF

COMMON=(--dataset=cifar10 --data_dir="$OUT/cifar" --encoder=resnet18 --batch_size=128)
"$PY" -m benchmarks.cost "${COMMON[@]}" --methods=stl,jtds --distribute=mirrored --jit_compile=off \
  --steps="${GPU_CHECK_STEPS:-40}" --epochs=1 --rounds=2 --json="$OUT/cost.json" | tee "$OUT/cost.md"
"$PY" -m benchmarks.upper_profile "${COMMON[@]}" --rounds=1 --calls="${GPU_CHECK_CALLS:-5}" | tee "$OUT/upper_profile.md"

{
  echo "# GPU check, $(date -u +%Y-%m-%dT%H:%MZ)"; echo
  echo '```'; cat "$OUT/devices.txt"; echo '```'; echo
  echo "## Default job (apps.train, mirrored)"; echo; echo '```'; cat "$OUT/default_job.txt"; echo '```'; echo
  echo "## JTDS vs STL, ResNet-18, CIFAR-10-shaped batches of 128, mirrored, no XLA"; echo; cat "$OUT/cost.md"; echo
  cat "$OUT/upper_profile.md"
} > "$OUT/summary.md"
echo "wrote $OUT/summary.md"
