#!/bin/bash
# One GPU session in one command: the SciFact study, then the quick start, the tests that need a GPU and the
# GPU speed figures, each under its own time limit so that the whole stays inside the device's 10-minute
# command limit. Run from the
# repository root on the GPU machine (with .carry/ from `bash ../shared/tools/gpu-carry.sh`):
#   OUT=/some/dir bash benchmarks/device_run.sh [STUDY_SECONDS] [TOTAL_SECONDS]
# The study gets STUDY_SECONDS or what TOTAL_SECONDS leaves less 40 s, whichever is less: the resume bundle is
# written before anything else, so a call cut at the device's limit still brings its progress back.
# RUN_STUDY=0, RUN_GPU_TESTS=0, RUN_BENCH=0 or RUN_QUICK=0 leave a part out (e.g. a second call that only resumes the study).
# STUDY_WORKERS=N runs N cells side by side instead of the config's pool (not part of any artifact's key, so a
# resumed study is unchanged by it); the log gives the cells finished and the seconds, to compare pool sizes.
# The study writes runs/scifact-study (kept between calls of a warm machine, so a second call resumes it from
# its artifacts). If it is cut short, its cells finish seed by seed and a report is written from the seeds
# that finished. Results land in $OUT, eight files at most (the device tool brings back no more): study.tgz
# (report, plots, costs, manifests, per-cell training.json), study.log, bench.tgz (one JSON per benchmark and
# the suite's logs), quickstart.tgz (its report and log), gpu-util.csv (the GPU's utilisation every 5 s while the
# study ran), cpu-util.txt (the CPU's busy and idle jiffies every 5 s, likewise), resume.tar.xz and
# device_run.log.
# Across sessions (a fresh machine each time): the study's finished artifacts, without models, come back as
# $OUT/resume.tar.xz (`python -m rankdistill.experiments.bundle`); commit it as results/scifact-study/resume.tar.xz
# at once with `bash benchmarks/keep_bundle.sh <files_at> <label>` (these machines keep no git-ignored file
# between sessions: the first bundle was lost in .carry/), and the next session's study resumes where this one
# stopped (the bundle is unpacked when runs/ has no study yet; .carry/resume.tar.xz, if there is one, comes
# first). It has to fit beside .carry/ and the working tree in the 64 MiB that may travel: the log says how much
# room it leaves.
# STUDY_MPS=1 runs the study's cells through CUDA MPS (the control daemon started for the study and quit after
# it), so that the pool's processes share the GPU instead of time-slicing it; where the daemon is missing or a
# CUDA context fails under it, the study runs without it (the log says which).
set -uo pipefail
STUDY_S=${1:-400}
TOTAL_S=${2:-575}
OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT"
start=$(date +%s)
left() { echo $(( TOTAL_S - ($(date +%s) - start) )); }
log() { echo "[device_run +$(( $(date +%s) - start ))s] $*" | tee -a "$OUT/device_run.log"; }
. benchmarks/gpu_env.sh || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/device_run.log"
python3 -c "import torch, transformers, sentence_transformers as st; print('torch', torch.__version__, 'transformers', transformers.__version__, 'sentence-transformers', st.__version__)" | tee -a "$OUT/device_run.log"
log "setup done"

# 1. the study
study=runs/scifact-study
# The bundle to resume from in a later session; worth it once the cells have started (before that, the
# teacher's model is still needed and is not carried). Written as soon as the study stops, before anything
# else can run into the command's time limit, and again after the reports below if they computed more.
# limited SECONDS CMD...: CMD under `timeout`, which leads a process group of its own; whatever of that group
# outlives it (the cell workers of a run that was stopped) is stopped after it, and no process outside it (a
# `pkill -f spawn_main` here once stopped another program's pool on the same machine)
limited() {
  local limit=$1 pid rc
  shift
  timeout -k 20 "$limit" "$@" & pid=$!  # -k: a stop that hangs in its unwinding is killed 20 s later
  wait "$pid"; rc=$?
  if pgrep -g "$pid" >/dev/null; then pkill -TERM -g "$pid"; sleep 1; pkill -KILL -g "$pid"; fi 2>/dev/null
  return $rc
}
pack_resume() {
  grep -q "train+evaluate" "$OUT/study.log" || return 0
  python3 -m rankdistill.experiments.bundle pack "$study" "$OUT/resume.tar.xz" >>"$OUT/study.log" 2>&1
  # what travels: the working tree as sent (.carry/ and the committed bundle in it), less runs/ and .carry's bundle
  rest=$(du -sb --exclude=./runs --exclude=./.git --exclude=./.carry/resume.tar.xz --exclude=./.carry/resume.tgz . | cut -f1)
  log "resume bundle: $(stat -c %s "$OUT/resume.tar.xz") bytes, $(ls "$study"/artifacts/train | wc -l) trained cells;" \
    "room beside the rest of the working tree ($rest bytes, .carry/ included) in 64 MiB: $(( 67108864 - rest )) bytes"
}
if [ "${RUN_STUDY:-1}" = 1 ]; then
resume=$(ls .carry/resume.tar.xz .carry/resume.tgz results/scifact-study/resume.tar.xz 2>/dev/null | head -1)
if [ -n "$resume" ] && [ ! -d "$study/artifacts" ]; then
  python3 -m rankdistill.experiments.bundle unpack "$resume" "$study" >>"$OUT/study.log" 2>&1
  log "resumed from $resume: $(ls "$study"/artifacts/train 2>/dev/null | wc -l) trained cells"
fi
mps=off
if [ "${STUDY_MPS:-0}" = 1 ]; then
  if command -v nvidia-cuda-mps-control >/dev/null; then
    export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    if nvidia-cuda-mps-control -d >>"$OUT/study.log" 2>&1 && timeout 60 python3 -c \
        "import torch; torch.zeros(1, device='cuda').add_(1); torch.cuda.synchronize()" >>"$OUT/study.log" 2>&1; then
      mps=on; trap 'echo quit | nvidia-cuda-mps-control >/dev/null 2>&1' EXIT
    else
      echo quit | nvidia-cuda-mps-control >/dev/null 2>&1
      unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
      mps="failed to start (see study.log), so off"
    fi
  else
    mps="not available (no nvidia-cuda-mps-control), so off"
  fi
  log "MPS: $mps"
fi
s=$(( $(left) - 40 )); [ "$s" -gt "$STUDY_S" ] && s=$STUDY_S  # 40 s kept for packing within TOTAL_SECONDS
log "study: up to ${s}s"
workers=(); [ -n "${STUDY_WORKERS:-}" ] && workers=(--set "executor.workers=$STUDY_WORKERS")
cells_before=$(ls "$study"/artifacts/train 2>/dev/null | grep -vc partial)
# how busy the GPU is while the study runs (every 5 s): near 100% means the cells are bound by the GPU's
# kernels (fusion or larger steps would help), well below it that they wait on the CPU or on each other
nvidia-smi --query-gpu=timestamp,utilization.gpu,utilization.memory,memory.used --format=csv -l 5 \
  >>"$OUT/gpu-util.csv" 2>/dev/null & util_pid=$!
# and the CPU's (all cores; /proc/stat's cumulative jiffies: seconds, busy, idle + iowait): a GPU well below
# 100% with the CPU near it means the cells wait on the CPU, and more of them side by side would not help
( while :; do read -r _ u n s i w q sq st _ </proc/stat
    echo "$(date +%s) $(( u + n + s + q + sq + st )) $(( i + w ))"; sleep 5; done >>"$OUT/cpu-util.txt" ) & cpu_pid=$!
limited "$s" python3 -m rankdistill.cli run examples/scifact-study.toml --data-dir "$RANKDISTILL_DATA" \
  --output "$study" "${workers[@]}" >>"$OUT/study.log" 2>&1
rc=$?
kill $util_pid $cpu_pid 2>/dev/null
log "GPU busy while the study ran (mean of the 5-s samples): $(awk -F', ' 'NR > 1 && $2 ~ /^[0-9]/ \
  { n++; s += $2 } END { if (n) printf "%.0f%% over %d samples", s / n, n; else print "not sampled" }' \
  "$OUT/gpu-util.csv" 2>/dev/null); CPU busy: $(awk -v cores="$(nproc)" 'NR == 1 { b = $2; i = $3 } \
  { n++; B = $2; I = $3 } END { if (n > 1 && B + I > b + i) printf "%.0f%% of %d cores", 100 * (B - b) / (B - b + I - i), \
  cores; else print "not sampled" }' "$OUT/cpu-util.txt" 2>/dev/null)"
if [ "$mps" = on ]; then
  echo quit | nvidia-cuda-mps-control >/dev/null 2>&1; trap - EXIT
  unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
fi
log "study exit $rc; $(( $(ls "$study"/artifacts/train 2>/dev/null | grep -vc partial) - cells_before )) cells" \
  "trained in this call (pool ${STUDY_WORKERS:-of the config}, MPS $mps)"
pack_resume
if [ $rc -ne 0 ] && [ -d "$study/artifacts/train" ]; then
  ran=0
  for seeds in "[0, 1]" "[0]"; do
    t=$(( $(left) - 30 )); [ "$t" -gt 60 ] && t=60
    [ "$t" -lt 10 ] && { log "no time left for a report from fewer seeds"; break; }
    log "study cut short: report from seeds $seeds, up to ${t}s"
    ran=1
    limited "$t" python3 -m rankdistill.cli run examples/scifact-study.toml --data-dir "$RANKDISTILL_DATA" \
      --output "$study" --set "grid.seeds=$seeds" --set "entropy_study.seeds=$seeds" --set budget_study=none \
      --set "executor.workers=8" >>"$OUT/study.log" 2>&1 && break
  done
  [ $ran = 1 ] && [ "$(left)" -gt 20 ] && pack_resume
fi
tar czf "$OUT/study.tgz" -C runs $(cd runs && { find scifact-study -maxdepth 1 -type f; find scifact-study/plots -type f;
  find scifact-study/artifacts \( -name manifest.json -o -name training.json -o -name '*.meta.json' \
  -o -name per_query.tsv -o -name losses.tsv \); } 2>/dev/null) 2>/dev/null
log "study packed: $(du -h "$OUT/study.tgz" | cut -f1)"
fi

# 2. the quick start from scratch (fresh output and cache), before the GPU tests and the speed figures: its
# end-to-end time on a GPU is the one figure of the issue no session has measured yet (QUICK_S caps it, 240 s)
if [ "${RUN_QUICK:-1}" = 1 ] && [ "${QUICK_S:-240}" -gt 0 ] && [ "$(left)" -gt 45 ]; then
  q=$(( $(left) - 25 )); [ "$q" -gt "${QUICK_S:-240}" ] && q=${QUICK_S:-240}  # 20 s of it for `limited`'s kill
  log "quick start: up to ${q}s"
  rm -rf runs/quickstart runs/qs-cache
  t0=$(date +%s.%N)
  RANKDISTILL_CACHE=$PWD/runs/qs-cache limited "$q" python3 -m rankdistill.cli run examples/quickstart.toml \
    --data-dir "$RANKDISTILL_DATA" --output runs/quickstart >runs/quickstart.log 2>&1
  rc=$?
  log "quick start exit $rc in $(python3 -c "import time; print(round(time.time() - $t0, 1))") s"
  tar czf "$OUT/quickstart.tgz" -C runs quickstart.log $(cd runs && find quickstart -maxdepth 1 -type f) 2>/dev/null
fi

# 3. the tests that need a GPU (skipped everywhere else): two deterministic training runs, byte for byte
if [ "${RUN_GPU_TESTS:-1}" = 1 ] && [ "$(left)" -gt 120 ]; then
  log "GPU tests: up to 90s"
  RANKDISTILL_SHARED_DATA=$RANKDISTILL_DATA timeout 90 python3 -m pytest -q -p no:cacheprovider -rs \
    tests/test_training_determinism.py >runs/gpu-tests.log 2>&1
  log "GPU tests exit $?: $(tail -n 1 runs/gpu-tests.log)"
  grep -E "^(FAILED|E  )" runs/gpu-tests.log | head -n 20 | while IFS= read -r line; do log "  $line"; done
fi

# 4. the speed figures
if [ "${RUN_BENCH:-1}" = 1 ] && [ "$(left)" -gt 60 ]; then
  b=$(( $(left) - 45 )); [ $b -gt 150 ] && b=150
  log "benchmarks: up to ${b}s"
  mkdir -p runs/bench
  SUITE_BUDGET_S=$b timeout "$b" bash benchmarks/suite.sh runs/bench gpu >runs/bench/bench.log 2>&1
  log "benchmarks exit $?"
  tar czf "$OUT/bench.tgz" -C runs bench
fi

log "done"
