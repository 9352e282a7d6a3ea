#!/usr/bin/env bash
# Train every model role BAM needs (SPEC §3) into MODELS_DIR, skipping finished ones (resumable):
#   obj, scene, scene_only, commonality-1..K (K = number of scene classes of the data), and the
#   invertible models for §5.6: invertible-obj, invertible-scene, invertible-scene_only,
#   invertible-commonality-1..K (the folders `bam run` uses).
#
# usage: scripts/train_all.sh DATA_DIR MODELS_DIR [extra `bam train` flags, e.g. --device cuda]
# env:   CONFIG_SET=synthetic (default: configs/train/synthetic*.yaml) or paper (configs/train/paper*.yaml):
#        <set>, <set>_commonality, <set>_<arch>, <set>_commonality_<arch> (when it exists, else <set>_<arch>)
#        INVERTIBLE=irevnet (default), iresnet (the slower option; no commonality models) or none
#        BAM=bam  PYTHON=python3  (the commands to run)
# Re-running continues an interrupted role (--resume) and skips roles whose card.json exists.
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 DATA_DIR MODELS_DIR [extra bam train flags]" >&2
    exit 2
fi
DATA=$1
MODELS=$2
shift 2
SET=${CONFIG_SET:-synthetic}
BAM=${BAM:-bam}
PYTHON=${PYTHON:-python3}

K=$("$PYTHON" -c 'import sys; from bam.data import open_dataset; print(len(open_dataset(sys.argv[1]).scene_classes))' "$DATA")

train() {  # train ROLE SUBDIR CONFIG [flags]
    local role=$1 sub=$2 cfg=$3
    shift 3
    if [ -f "$MODELS/$sub/card.json" ]; then
        echo "== $sub: done, skipping"
        return
    fi
    echo "== $sub: bam train --role $role --config $cfg"
    local t0=$SECONDS
    "$BAM" train --data "$DATA" --role "$role" --out "$MODELS/$sub" --config "$cfg" --resume "$@"
    echo "== $sub: $((SECONDS - t0)) s"
}

START=$SECONDS
for role in obj scene scene_only; do
    train "$role" "$role" "$SET" "$@"
done
for k in $(seq 1 "$K"); do
    train "commonality-$k" "commonality-$k" "${SET}_commonality" "$@"
done
INV=${INVERTIBLE:-irevnet}
if [ "$INV" != none ]; then
    for role in obj scene scene_only; do
        train "$role" "invertible-$role" "${SET}_${INV}" "$@"
    done
    if [ "$INV" = irevnet ]; then
        for k in $(seq 1 "$K"); do
            train "commonality-$k" "invertible-commonality-$k" "${SET}_commonality_${INV}" "$@"
        done
    fi
fi
echo "== all models in $MODELS ($((SECONDS - START)) s)"
"$BAM" models list "$MODELS"
