#!/usr/bin/env bash
# Issue 20's GPU figures in one short run (about 4-6 min on one H100/H200 + 16 cores):
#   (1) xception (legacy_xception @ 299 px), 480x270 JPEG covers, whole Predictor.predict path on CUDA:
#       new path (nvJPEG decode + resize on the GPU, prefetch, bf16, channels-last, folded BatchNorm)
#       against the path before issue 20 (Predictor.use_legacy_path) in the same process, interleaved;
#       rows/s, GPU busy share (NVML), stage costs, label agreement (primary leaf, score diff);
#   (2) the same for cpu-small, with a coverless pass;
#   (3) the CUDA-only test (tests/test_predictor_speed.py -m gpu).
# Results: $OUT_DIR/predict_speed_gpu.md (+ .json, logs); copy the .md to bench/results/predict_speed_gpu.md.
#
# Prepare once, here (jieba is pure Python and not on the GPU machine; .gpuenv is git-ignored):
#   scripts/gpu_predict_check.sh --prepare
# Then on the lent GPU (device tool):
#   run(command="scripts/gpu_predict_check.sh \"$OUT\"", carry=[".gpuenv"], timeout_s=540)
# VTAG_GPU_CHECK_REHEARSAL=1: tiny sizes on the CPU, to check the script end to end.
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO" || exit 2
if [ "${1:-}" = "--prepare" ]; then
  SRC=$(.venv/bin/python -c "import jieba, os; print(os.path.dirname(jieba.__file__))") || exit 2
  mkdir -p .git/info && (grep -qx '/.gpuenv/' .git/info/exclude 2>/dev/null || echo '/.gpuenv/' >> .git/info/exclude)
  rm -rf .gpuenv && mkdir -p .gpuenv/jieba
  (cd "$SRC" && cp -r __init__.py _compat.py dict.txt finalseg "$REPO/.gpuenv/jieba/")
  find .gpuenv -name __pycache__ -prune -exec rm -rf {} +
  du -sh .gpuenv
  exit 0
fi
OUT_DIR=${1:-${OUT:-/tmp/vtag-gpu-check}}
mkdir -p "$OUT_DIR" && OUT_DIR=$(cd "$OUT_DIR" && pwd)
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && .venv/bin/python -c "import torch" 2>/dev/null && PY=.venv/bin/python
export PYTHONPATH="$REPO/.gpuenv:$REPO${PYTHONPATH:+:$PYTHONPATH}" VTAG_JIEBA_CACHE_DIR=/tmp PYTHONUNBUFFERED=1
T0=$(date +%s)
note() { echo "[gpu_check +$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT_DIR/status.txt"; }
"$PY" - <<'EOF' 2>&1 | tee "$OUT_DIR/env.txt"
import importlib
for m in ("torch", "torchvision", "timm", "PIL", "jieba", "pynvml"):
    try:
        print(m, getattr(importlib.import_module(m), "__version__", "?"))
    except Exception as e:  # noqa: BLE001
        print(m, "MISSING", e)
import torch
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "-")
EOF
if [ "${VTAG_GPU_CHECK_REHEARSAL:-0}" = 1 ]; then
  DEV=cpu; ROWS=300; REP=1; THREADS=2; T1=500; T2=400
else
  DEV=cuda; ROWS=4096; REP=3; THREADS=8; T1=300; T2=150
fi
note "xception on $DEV, $ROWS rows, old vs new (timeout ${T1}s)"
timeout -k 5 "$T1" "$PY" bench/predict_speed.py --device "$DEV" --rows "$ROWS" --repeats "$REP" --threads "$THREADS" \
  --batch 256 --compare --configs conf/model/xception.yaml --timeout "$((T1 - 10))" \
  --out "$OUT_DIR/predict_speed_gpu_xception.md" --json-out "$OUT_DIR/predict_speed_gpu_xception.json" \
  > "$OUT_DIR/xception.log" 2>&1
note "xception rc=$?"
note "cpu-small on $DEV, covers + coverless, old vs new (timeout ${T2}s)"
timeout -k 5 "$T2" "$PY" bench/predict_speed.py --device "$DEV" --rows "$ROWS" --repeats "$REP" --threads "$THREADS" \
  --batch 256 --compare --coverless --configs conf/model/cpu-small.yaml --timeout "$((T2 - 10))" \
  --out "$OUT_DIR/predict_speed_gpu_cpu_small.md" --json-out "$OUT_DIR/predict_speed_gpu_cpu_small.json" \
  > "$OUT_DIR/cpu_small.log" 2>&1
note "cpu-small rc=$?"
if [ "$DEV" = cuda ]; then
  timeout -k 5 90 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_predictor_speed.py > "$OUT_DIR/pytest_gpu.log" 2>&1
  note "pytest -m gpu rc=$? ($(tail -1 "$OUT_DIR/pytest_gpu.log"))"
fi
{ cat "$OUT_DIR/predict_speed_gpu_xception.md" 2>/dev/null; echo; echo "---"; echo;
  cat "$OUT_DIR/predict_speed_gpu_cpu_small.md" 2>/dev/null; } > "$OUT_DIR/predict_speed_gpu.md"
cat "$OUT_DIR/predict_speed_gpu.md"
tail -n 30 "$OUT_DIR"/*.log
