#!/usr/bin/env bash
# One-device GPU check (scripts/gpu_check.py): per-method images/s on ResNet-50 at 224 px (fp32 and
# bf16 autocast + channels_last, with the max difference between the maps), peak memory, the
# trainer's images/s, and the extrapolated wall time of the full `paper` evaluation. < 8 minutes.
#
#   scripts/gpu_check.sh [--out gpu_check.md] [--methods gradient,deeplift] [--images 32]
#
# Uses $PYTHON (default: .venv/bin/python, else python3) from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_check: no CUDA device visible to torch ($PY); nothing measured" >&2
  exit 3
fi
exec env PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$PY" scripts/gpu_check.py --device cuda "$@"
