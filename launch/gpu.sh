#!/usr/bin/env bash
# Train mat_jax on one host with one or more NVIDIA GPUs.
#
#   launch/gpu.sh --workdir=DIR [--config=configs/ffpp.py] [--venv=.venv-gpu] [--cuda=cuda12] \
#                 [--dry-run] [-- --config.data.root=RECORDS --config.train.batch_size=64 ...]
#
# One process drives every local GPU: the batch is sharded over a ("data",) mesh of all
# devices and BatchNorm statistics are global, as SyncBatchNorm is in the official code.
# The script creates the venv with jax[<cuda>] once, then runs mat_jax.main; arguments
# after "--" go to mat_jax.main unchanged. Re-running the same command resumes from the
# workdir's last checkpoint. For several nodes, see README "Several GPU nodes".
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
config="configs/ffpp.py"
workdir=""
venv="${repo}/.venv-gpu"
cuda="cuda12"
python="${PYTHON:-python3}"
dry_run=0
extra=()

while (($#)); do
  case "$1" in
    --config=*) config="${1#*=}" ;;
    --workdir=*) workdir="${1#*=}" ;;
    --venv=*) venv="${1#*=}" ;;
    --cuda=*) cuda="${1#*=}" ;;
    --dry-run) dry_run=1 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "gpu.sh: unknown argument $1 (mat_jax flags go after --)" >&2; exit 2 ;;
  esac
  shift
done
if [[ -z "$workdir" ]]; then
  echo "gpu.sh: --workdir=DIR is required" >&2
  exit 2
fi

run() {
  local words=() w
  for w in "$@"; do words+=("$(printf '%q' "$w")"); done
  echo "${words[*]}"
  if ((dry_run == 0)); then "$@"; fi
}

if [[ ! -x "${venv}/bin/python" ]]; then
  run "$python" -m venv "$venv"
  run "${venv}/bin/pip" install -q --upgrade pip
  run "${venv}/bin/pip" install -q -e "${repo}" "jax[${cuda}]>=0.10.2,<0.11"
fi
if ((dry_run == 0)); then
  # Fail early, with the fix, if JAX does not see a GPU.
  "${venv}/bin/python" - <<'PY'
import sys
import jax
gpus = [d for d in jax.devices() if d.platform == "gpu"]
if not gpus:
    sys.exit("gpu.sh: JAX sees no GPU: check the NVIDIA driver (nvidia-smi) and the --cuda extra")
print(f"gpu.sh: {len(gpus)} GPU(s): {', '.join(d.device_kind for d in gpus)}")
PY
fi
cd "$repo"
run "${venv}/bin/python" -m mat_jax.main "--config=${config}" "--workdir=${workdir}" "${extra[@]}"
