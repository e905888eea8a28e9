#!/bin/bash
# After each GPU call of benchmarks/device_run.sh, keep what it returned, at once (run it beside the next call):
#   bash benchmarks/keep_bundle.sh FILES_AT [LABEL]
# FILES_AT is the folder the device tool put the call's $OUT files in. Everything there is copied to
# ../gpu-runs/LABEL (outside the repository: the logs, study.tgz, gpu-util.csv); the call's resume.tar.xz, if it
# is whole and holds at least as many finished artifacts as the committed one, replaces
# results/scifact-study/resume.tar.xz and is committed, since no git-ignored file outlives the session.
set -uo pipefail
src=${1:?usage: bash benchmarks/keep_bundle.sh FILES_AT [LABEL]}
label=${2:-$(date -u +%Y%m%dT%H%M%S)}
[ -d "$src" ] || { echo "keep_bundle: $src: no such folder (give the call's files_at)" >&2; exit 2; }
keep=../gpu-runs/$label
mkdir -p "$keep" && cp -r "$src"/. "$keep"/ || { echo "keep_bundle: could not copy $src to $keep" >&2; exit 2; }
echo "keep_bundle: the call's files are in $keep"
new=$src/resume.tar.xz
[ -f "$new" ] || { echo "keep_bundle: the call returned no resume.tar.xz (the study had not reached its cells)"; exit 0; }
dest=results/scifact-study/resume.tar.xz
python3 - "$new" "$dest" <<'PY' || exit 2
import logging, sys
from pathlib import Path
from rankdistill.errors import UserInputError
from rankdistill.experiments.bundle import check
logging.disable(logging.INFO)
new, dest = Path(sys.argv[1]), Path(sys.argv[2])
try:
    got = check(new)
except UserInputError as e:
    sys.exit(f"keep_bundle: {e}")
had = check(dest) if dest.is_file() else {}
if sum(got.values()) < sum(had.values()):
    sys.exit(f"keep_bundle: {new} holds {sum(got.values())} finished artifacts, the committed bundle "
             f"{sum(had.values())}: kept the committed one (copy it over by hand if that is meant)")
print(f"keep_bundle: {got.get('train', 0)} cells (the committed bundle had {had.get('train', 0)})")
PY
cp "$new" "$dest" && git add "$dest" && git commit -q -m "The study's resume bundle after GPU call $label" -- "$dest" \
  && echo "keep_bundle: committed $dest" || { echo "keep_bundle: could not commit $dest" >&2; exit 2; }
