#!/usr/bin/env bash
# CI regression gate for bam (see docs/ci.md).
#
#   tiny synthetic dataset -> brief, seeded CPU training (baselines/ci_train.yaml) of every model
#   role the ci evaluation needs -> bam evaluate --config configs/eval/ci.yaml -> bam report ->
#   bam compare against the committed baseline. Exit status: 0 = no regression, 1 = regression (or a row went missing),
#   2 = bad input / setup error. Everything is seeded and runs on CPU with one thread, so the same
#   code on the same kind of machine reproduces the baseline exactly. A drop fails when it is beyond
#   the tolerance and resolved by the interval test (bam compare's default).
#
# Usage: scripts/ci_regression.sh [--work DIR] [--tolerance T] [--use-ci] [--tolerance-only]
#                                  [--update-baseline] [--fresh] [--no-invertible]
#   --work DIR          where data, models and results go (default: runs/ci under the repository)
#   --tolerance T       allowed absolute drop of a higher-is-better metric (default 0.05)
#   --use-ci            measure drops from the baseline's CI low instead of its value
#   --tolerance-only    fail on any drop beyond the tolerance, resolved by the intervals or not
#   --update-baseline   write the new results.csv over baselines/ci_results.csv instead of comparing
#   --fresh             delete DIR first (otherwise finished steps are reused: bam resumes them)
#   --no-invertible     do not train the i-RevNets (invertible-<role>, config
#                       baselines/ci_train_irevnet.yaml): the invertible methods are then skipped and
#                       their baseline rows are MISSING (use with --allow-missing in your own gate)
# Environment: BAM (the bam executable; default: bam on PATH, else .venv/bin/bam),
#   BAM_CI_TRAIN_CONFIG (default baselines/ci_train.yaml), BAM_CI_EVAL_CONFIG (default configs/eval/ci.yaml),
#   BAM_CI_RECIPE (default tiny), BAM_CI_SEED (default 0), BAM_CI_BASELINE (default baselines/ci_results.csv),
#   BAM_CI_INVERTIBLE_ARCH (default irevnet; e.g. iresnet, which is far slower).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$ROOT/runs/ci"
TOLERANCE=0.05
USE_CI=--no-use-ci
REAL=--require-real
UPDATE=0
FRESH=0
INVERTIBLE=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --work) WORK="$2"; shift 2 ;;
    --tolerance) TOLERANCE="$2"; shift 2 ;;
    --use-ci) USE_CI=--use-ci; shift ;;
    --tolerance-only) REAL=--tolerance-only; shift ;;
    --update-baseline) UPDATE=1; shift ;;
    --fresh) FRESH=1; shift ;;
    --with-invertible) INVERTIBLE=1; shift ;;  # the default; kept for old command lines
    --no-invertible) INVERTIBLE=0; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "error: unknown argument '$1'; accepted: --work DIR, --tolerance T, --use-ci, --tolerance-only, --update-baseline, --fresh, --no-invertible" >&2; exit 2 ;;
  esac
done

if [[ -n "${BAM:-}" ]]; then
  :
elif command -v bam >/dev/null 2>&1; then
  BAM=bam
elif [[ -x "$ROOT/.venv/bin/bam" ]]; then
  BAM="$ROOT/.venv/bin/bam"
else
  echo "error: no bam executable; install the package (pip install -e .) or set BAM=/path/to/bam" >&2
  exit 2
fi

RECIPE="${BAM_CI_RECIPE:-tiny}"
SEED="${BAM_CI_SEED:-0}"
TRAIN_CONFIG="${BAM_CI_TRAIN_CONFIG:-$ROOT/baselines/ci_train.yaml}"
EVAL_CONFIG="${BAM_CI_EVAL_CONFIG:-$ROOT/configs/eval/ci.yaml}"
BASELINE="${BAM_CI_BASELINE:-$ROOT/baselines/ci_results.csv}"

# Determinism: one thread for every math library (float reductions then run in a fixed order),
# no CUDA even when present, fixed hash seed.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 CUDA_VISIBLE_DEVICES="" PYTHONHASHSEED=0

[[ "$FRESH" == 1 ]] && rm -rf -- "$WORK"
mkdir -p "$WORK"
DATA="$WORK/data"
MODELS="$WORK/models"
EVAL="$WORK/eval"

step() { echo; echo "== $* =="; }

step "build data (recipe $RECIPE, seed $SEED)"
"$BAM" -q build-data --recipe "$RECIPE" --out "$DATA" --seed "$SEED"

# Roles: obj, scene, scene_only and commonality-1..K (K = number of scene classes of the recipe).
K="$(python3 - "$DATA" <<'PY' 2>/dev/null || true
import json, pathlib, sys
manifest = json.loads((pathlib.Path(sys.argv[1]) / "manifest.json").read_text())
print(len(manifest.get("recipe", {}).get("scene_classes", [])))
PY
)"
if ! [[ "$K" =~ ^[1-9][0-9]*$ ]]; then
  echo "error: cannot tell the number of scene classes of $DATA (manifest.json recipe.scene_classes)" >&2
  exit 2
fi
ROLES=(obj scene scene_only)
for ((k = 1; k <= K; k++)); do ROLES+=("commonality-$k"); done

for role in "${ROLES[@]}"; do
  step "train $role (config $TRAIN_CONFIG)"
  if [[ -f "$MODELS/$role/card.json" ]]; then
    echo "already trained: $MODELS/$role"
    continue
  fi
  "$BAM" -q train --data "$DATA" --role "$role" --config "$TRAIN_CONFIG" --out "$MODELS/$role" \
    --seed "$SEED" --device cpu
done

if [[ "$INVERTIBLE" == 1 ]]; then
  ARCH="${BAM_CI_INVERTIBLE_ARCH:-irevnet}"
  for role in "${ROLES[@]}"; do
    step "train invertible-$role ($ARCH; config beside $TRAIN_CONFIG for $ARCH if any)"
    if [[ -f "$MODELS/invertible-$role/card.json" ]]; then
      echo "already trained: $MODELS/invertible-$role"
      continue
    fi
    "$BAM" -q train --data "$DATA" --role "$role" --arch "$ARCH" --config "$TRAIN_CONFIG" \
      --out "$MODELS/invertible-$role" --seed "$SEED" --device cpu
  done
fi

step "evaluate ($EVAL_CONFIG)"
"$BAM" -q evaluate --data "$DATA" --models "$MODELS" --config "$EVAL_CONFIG" --out "$EVAL" \
  --seed "$SEED" --device cpu

step "report"
"$BAM" -q report "$EVAL" --out "$EVAL/report.html"

if [[ "$UPDATE" == 1 ]]; then
  step "update baseline"
  mkdir -p "$(dirname "$BASELINE")"
  cp "$EVAL/results.csv" "$BASELINE"
  echo "baseline written: $BASELINE ($(($(wc -l < "$BASELINE") - 1)) rows); review it with git diff and commit it" \
    "with the change that moved it, saying why in the commit message (docs/ci.md)"
  exit 0
fi

step "compare with $BASELINE (tolerance $TOLERANCE)"
REGENERATE="bash scripts/ci_regression.sh --fresh --update-baseline"  # printed when the baseline is out of date
set +e
"$BAM" compare "$BASELINE" "$EVAL/results.csv" --tolerance "$TOLERANCE" "$USE_CI" "$REAL" --out "$EVAL/diff.csv" \
  --regenerate-with "$REGENERATE"
status=$?
set -e
if [[ $status -eq 1 ]]; then
  echo "REGRESSION: see $EVAL/diff.csv and $EVAL/report.html" >&2
fi
exit $status
