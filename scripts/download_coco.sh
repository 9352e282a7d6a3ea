#!/usr/bin/env bash
# Download COCO train2017 images and annotations for the `paper` recipe (about 19 GB).
#
#   scripts/download_coco.sh [DEST]        (default DEST: data/coco)
#
# Then:
#   bam build-data --recipe paper --out runs/paper-data \
#       --coco-images DEST/train2017 --coco-annotations DEST/annotations/instances_train2017.json \
#       --scenes data/miniplaces
#
# Only the instances annotation file is used. Downloads resume (curl -C -); archives are checked
# for integrity by unzip -t before extraction.
set -euo pipefail

DEST="${1:-data/coco}"
BASE="http://images.cocodataset.org"
mkdir -p "$DEST"
cd "$DEST"

fetch() {  # fetch URL FILE
    echo "downloading $1"
    curl -fL --retry 3 -C - -o "$2" "$1"
}

if [ ! -f annotations/instances_train2017.json ]; then
    fetch "$BASE/annotations/annotations_trainval2017.zip" annotations_trainval2017.zip
    unzip -tq annotations_trainval2017.zip
    unzip -oq annotations_trainval2017.zip annotations/instances_train2017.json
    rm -f annotations_trainval2017.zip
fi
if [ ! -d train2017 ] || [ "$(find train2017 -name '*.jpg' | head -n 1)" = "" ]; then
    fetch "$BASE/zips/train2017.zip" train2017.zip
    unzip -tq train2017.zip
    unzip -oq train2017.zip
    rm -f train2017.zip
fi
echo "COCO ready in $(pwd): train2017/ and annotations/instances_train2017.json"
