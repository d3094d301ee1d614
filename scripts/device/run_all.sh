#!/usr/bin/env bash
# The whole GPU-box shot in one command (one H200 + 16 cores, about 8 minutes): the model benches
# of issue #4 (scripts/device/part_models.sh) and the real-data benches of issue #6
# (scripts/device/part_realdata.sh) side by side, with GPU utilisation sampled throughout.
#   bash scripts/device/run_all.sh OUT_DIR
# Carry: .whl (pure-Python wheels, trimmed jieba) and .devdata (HMC, Bilibili and generator seeds).
# Everything lands in OUT_DIR/results.tgz (the device tool returns at most 8 files) plus the two
# parts' console logs.
set -u
OUT=${1:?usage: run_all.sh OUT_DIR}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO" || exit 2
W=${RUN_ALL_WORK:-/tmp/vtag-device}
mkdir -p "$OUT" "$W/res"
T0=$(date +%s)
# jieba once for both parts (the device has none; the trimmed source is pure Python)
if ! python3 -c "import jieba" 2>/dev/null && ls .whl/jieba-*.tar.xz >/dev/null 2>&1; then
  mkdir -p "$W/jieba" && tar xJf .whl/jieba-*.tar.xz -C "$W/jieba"
  export PYTHONPATH="$(dirname "$(ls -d "$W"/jieba/*/jieba | head -1)")${PYTHONPATH:+:$PYTHONPATH}"
fi
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 2 > "$W/res/gpu_util.csv" 2>&1 &
SMI=$!
REALDATA_HMC_WORKERS=${REALDATA_HMC_WORKERS:-5} REALDATA_BILI_WORKERS=${REALDATA_BILI_WORKERS:-6} \
  bash scripts/device/part_realdata.sh "$W/res/realdata" > "$OUT/realdata.out" 2>&1 &
P1=$!
bash scripts/device/part_models.sh "$W/res/models" > "$OUT/models.out" 2>&1 &
P2=$!
wait $P1; R1=$?
wait $P2; R2=$?
kill $SMI 2>/dev/null
echo "realdata rc=$R1 models rc=$R2 wall=$(( $(date +%s) - T0 ))s" | tee "$W/res/run_all.status"
tar czf "$OUT/results.tgz" -C "$W/res" .
ls -la "$OUT"
