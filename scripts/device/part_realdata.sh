#!/usr/bin/env bash
# Real-data benchmarks of issue #6 on a borrowed GPU machine: bench/hmc.py (DHMCN heads on the public
# HMC data sets, 5 seeds) and bench/bilibili.py (vtag vs peers on Bilibili titles, 3 seeds), run at
# the same time, each under its own `timeout` so that one failing or overrunning cannot eat the other.
#
#   bash scripts/device/part_realdata.sh OUTDIR
#
# Needs (carried with the working tree, all git-ignored):
#   .devdata/hmc.tar.xz                 hmc/<data set>/*.arff (+ README) of ../shared/data/hmc
#   .devdata/bilibili_videos.jsonl.xz   ../shared/data/zh_titles/bilibili_popular_2023/videos.jsonl
#                                       (only the fields bench/bilibili.py reads)
#   .whl/hiclass-*.whl, .whl/networkx-*.whl (pure Python; unzipped onto PYTHONPATH)
#   .whl/jieba-*.tar.gz                 (sdist, pure Python; used only when `import jieba` fails)
# Writes to OUTDIR: hmc.md, hmc.json, hmc.log, bilibili.md, bilibili.json, bilibili.log, env.txt,
# realdata.status (one line per part: name, exit code, seconds; 124 = timed out). The .md files are
# rewritten after every data set / run, so a part stopped by its timeout still leaves what it did;
# copy them to bench/results/.
#
# Knobs (environment): VTAG_PYTHON (python3), REALDATA_WORK (/tmp/vtag-realdata),
# REALDATA_DEVICE (cuda when torch sees one, else cpu), REALDATA_HMC_WORKERS (6 processes, all on
# the GPU), REALDATA_BILI_WORKERS (8 processes: the 6 vtag runs on the GPU, the 5 peer runs on the
# CPU), REALDATA_HMC_TIMEOUT (360 s), REALDATA_BILI_TIMEOUT (400 s),
# REALDATA_VTAG_MAX_MINUTES (3.5: wall budget of one vtag training run; it then stops and is scored), REALDATA_SEQUENTIAL=1 (one part
# after the other instead of both at once; the default in a rehearsal), REALDATA_PARTS ("hmc bilibili").
# VTAG_DEVICE_REHEARSAL=1: tiny settings on the CPU (1 seed, 2 small HMC data sets, a slice of the
# Bilibili file), the repo's .venv python, and an importable `pyspark` that raises (proves the
# benches never import it).
set -u

OUTDIR=${1:?usage: $0 OUTDIR}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO" || exit 2
REHEARSAL=${VTAG_DEVICE_REHEARSAL:-0}
WORK=${REALDATA_WORK:-/tmp/vtag-realdata}
if [ "$REHEARSAL" = 1 ] && [ -z "${VTAG_PYTHON:-}" ] && [ -x "$REPO/.venv/bin/python" ]; then
  PY="$REPO/.venv/bin/python"
else
  PY=${VTAG_PYTHON:-python3}
fi
T0=$(date +%s)
log() { echo "[realdata $(($(date +%s) - T0))s] $*" | tee -a "$OUTDIR/realdata.log"; }

# ------------------------------------------------------------------ unpack data and pure-Python wheels
mkdir -p "$WORK"
log "unpacking into $WORK (python: $PY)"
"$PY" - "$REPO" "$WORK" "$REHEARSAL" <<'EOF' 2>&1 | tee -a "$OUTDIR/realdata.log"
import glob, lzma, os, shutil, sys, tarfile, zipfile
repo, work, rehearsal = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
data = os.path.join(work, "shared", "data")
hmc = os.path.join(data, "hmc")
if not os.path.isdir(hmc):
    with tarfile.open(os.path.join(repo, ".devdata", "hmc.tar.xz")) as tf:
        try:
            tf.extractall(data, filter="data")
        except TypeError:  # Python without extraction filters
            tf.extractall(data)
print("hmc:", sorted(os.listdir(hmc)))
bili_dir = os.path.join(data, "zh_titles", "bilibili_popular_2023")
bili = os.path.join(bili_dir, "videos.jsonl")
if not os.path.isfile(bili):
    os.makedirs(bili_dir, exist_ok=True)
    with lzma.open(os.path.join(repo, ".devdata", "bilibili_videos.jsonl.xz"), "rb") as src, open(bili + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.replace(bili + ".part", bili)
print("bilibili:", bili, os.path.getsize(bili), "bytes")
pylib = os.path.join(work, "pylib")
os.makedirs(pylib, exist_ok=True)
for whl in sorted(glob.glob(os.path.join(repo, ".whl", "hiclass-*.whl")) + glob.glob(os.path.join(repo, ".whl", "networkx-*.whl"))):
    with zipfile.ZipFile(whl) as z:
        z.extractall(pylib)
    print("unzipped", os.path.basename(whl))
try:
    import jieba  # noqa: F401
    print("jieba: importable here")
except ImportError:
    sdists = sorted(glob.glob(os.path.join(repo, ".whl", "jieba-*.tar.gz")))
    if not sdists:
        print("jieba: NOT importable and no .whl/jieba-*.tar.gz: the peers and vtag will fail")
    else:
        src = os.path.join(work, "jieba-src")
        with tarfile.open(sdists[-1]) as tf:
            try:
                tf.extractall(src, filter="data")
            except TypeError:
                tf.extractall(src)
        pkg = glob.glob(os.path.join(src, "*", "jieba", "__init__.py"))[0]
        dst = os.path.join(pylib, "jieba")
        if not os.path.isdir(dst):
            shutil.copytree(os.path.dirname(pkg), dst)
        print("jieba: from", os.path.basename(sdists[-1]))
if rehearsal:  # any import of pyspark fails loudly
    blk = os.path.join(work, "blocker", "pyspark")
    os.makedirs(blk, exist_ok=True)
    with open(os.path.join(blk, "__init__.py"), "w") as fh:
        fh.write("raise ImportError('rehearsal: pyspark must not be imported by the real-data benches')\n")
EOF

export VTAG_SHARED_DATA="$WORK/shared/data"
PYPATH="$WORK/pylib:$REPO"
[ "$REHEARSAL" = 1 ] && PYPATH="$WORK/blocker:$PYPATH"
export PYTHONPATH="$PYPATH${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false

"$PY" - > "$OUTDIR/env.txt" 2>&1 <<'EOF'
import platform, sys
print("python", sys.version.split()[0], platform.machine())
for m in ("numpy", "pandas", "pyarrow", "sklearn", "scipy", "torch", "yaml", "jieba", "networkx", "hiclass", "pyspark"):
    try:
        mod = __import__(m)
        print(m, getattr(mod, "__version__", "?"), getattr(mod, "__file__", ""))
    except Exception as e:  # noqa: BLE001
        print(m, "NOT IMPORTABLE:", type(e).__name__, e)
import torch
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF
cat "$OUTDIR/env.txt" | tee -a "$OUTDIR/realdata.log"

if [ -n "${REALDATA_DEVICE:-}" ]; then
  DEV=$REALDATA_DEVICE
elif [ "$REHEARSAL" = 1 ]; then
  DEV=cpu
else
  DEV=$("$PY" -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')" 2>/dev/null || echo cpu)
fi
NOTE="run by scripts/device/part_realdata.sh ($( [ "$REHEARSAL" = 1 ] && echo "REHEARSAL, tiny settings" || echo "full settings"))"
HMC_DATA="$VTAG_SHARED_DATA/hmc"
BILI_DATA="$VTAG_SHARED_DATA/zh_titles/bilibili_popular_2023/videos.jsonl"

if [ "$REHEARSAL" = 1 ]; then
  HMC_ARGS=(--data "$HMC_DATA/pheno_GO" "$HMC_DATA/enron_others" --seeds 1 --max-epochs 3 --patience 1
            --widths 1 --workers "${REALDATA_HMC_WORKERS:-2}")
  head -n 1000 "$BILI_DATA" > "$WORK/bilibili_slice.jsonl"
  BILI_ARGS=(--data "$WORK/bilibili_slice.jsonl" --seeds 1 --vtag-epochs 1 --workers "${REALDATA_BILI_WORKERS:-2}")
  HMC_TO=${REALDATA_HMC_TIMEOUT:-240}
  BILI_TO=${REALDATA_BILI_TIMEOUT:-300}
else
  HMC_ARGS=(--data "$HMC_DATA" --seeds 5 --workers "${REALDATA_HMC_WORKERS:-6}")
  BILI_ARGS=(--data "$BILI_DATA" --seeds 3 --workers "${REALDATA_BILI_WORKERS:-8}"
             --vtag-max-minutes "${REALDATA_VTAG_MAX_MINUTES:-3.5}")
  HMC_TO=${REALDATA_HMC_TIMEOUT:-360}
  BILI_TO=${REALDATA_BILI_TIMEOUT:-400}
fi

# ------------------------------------------------------------------ the two parts
run_part() {  # name timeout_s md cmd...
  local name=$1 to=$2 md=$3
  shift 3
  local t=$(date +%s)
  log "$name: start (timeout ${to}s): $*"
  timeout -k 20 "$to" "$@" > "$OUTDIR/$name.log" 2>&1
  local rc=$?
  local dt=$(($(date +%s) - t))
  echo "$name rc=$rc seconds=$dt" >> "$OUTDIR/realdata.status"
  if [ ! -s "$md" ]; then  # stopped before its first result: say so where the report would be
    { echo "# $name: no result (exit $rc after ${dt}s; 124/137 = stopped by the timeout)"; echo; echo '```'
      tail -n 40 "$OUTDIR/$name.log"; echo '```'; } > "$md"
  fi
  log "$name: exit $rc after ${dt}s; last lines:"
  tail -n 4 "$OUTDIR/$name.log" | cut -c1-400 | tee -a "$OUTDIR/realdata.log"
}

PARTS=${REALDATA_PARTS:-hmc bilibili}
rm -f "$OUTDIR/realdata.status"
pids=()
for part in $PARTS; do
  case $part in
    hmc)
      run_part hmc "$HMC_TO" "$OUTDIR/hmc.md" "$PY" bench/hmc.py "${HMC_ARGS[@]}" --device "$DEV" --threads 1 \
        --md-out "$OUTDIR/hmc.md" --json-out "$OUTDIR/hmc.json" --note "$NOTE" &
      ;;
    bilibili)
      run_part bilibili "$BILI_TO" "$OUTDIR/bilibili.md" "$PY" bench/bilibili.py "${BILI_ARGS[@]}" --device "$DEV" \
        --threads 1 --md-out "$OUTDIR/bilibili.md" --json-out "$OUTDIR/bilibili.json" --note "$NOTE" &
      ;;
    *) log "unknown part $part"; continue ;;
  esac
  pids+=($!)
  if [ "${REALDATA_SEQUENTIAL:-$REHEARSAL}" = 1 ]; then wait "$!"; fi
done
wait "${pids[@]}" 2>/dev/null
log "done in $(($(date +%s) - T0))s: $(tr '\n' ' ' < "$OUTDIR/realdata.status")"
# exit 0 only when every part exited 0
! grep -qv ' rc=0 ' "$OUTDIR/realdata.status"
