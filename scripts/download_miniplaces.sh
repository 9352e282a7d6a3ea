#!/usr/bin/env bash
# Download the MiniPlaces scene images (128x128 px, about 460 MB) for the `paper` recipe.
#
#   scripts/download_miniplaces.sh [DEST]   (default DEST: data/miniplaces)
#
# Layout after extraction: DEST/images/train/<letter>/<class>[/<sub>]/*.jpg, e.g.
# DEST/images/train/t/track/outdoor/00000001.jpg; pass DEST as `--scenes`.
# Override the mirror with MINIPLACES_URL if the default one moves.
set -euo pipefail

DEST="${1:-data/miniplaces}"
URL="${MINIPLACES_URL:-http://miniplaces.csail.mit.edu/data/data.tar.gz}"
mkdir -p "$DEST"
cd "$DEST"

if [ ! -d images/train ]; then
    echo "downloading $URL"
    curl -fL --retry 3 -C - -o data.tar.gz "$URL"
    tar -tzf data.tar.gz > /dev/null  # integrity check before extracting
    tar -xzf data.tar.gz
    rm -f data.tar.gz
fi
for cls in b/bamboo_forest b/bedroom b/bowling_alley b/bus_interior c/cockpit c/corn_field \
           l/laundromat r/runway s/ski_slope t/track/outdoor; do
    [ -d "images/train/$cls" ] || { echo "missing images/train/$cls after extraction" >&2; exit 1; }
done
echo "MiniPlaces ready in $(pwd): pass --scenes $(pwd)"
