#!/bin/sh
# Regenerates docs/results.md's figures: each report's experiment with the exact commands the page
# quotes, the PNGs copied (small) into docs/figures/. One section per report, or all:
#   sh benchmarks/results_docs.sh [000|001|002|003|004 ...]     (runs under $OUT, default /tmp/results)
# On 2 CPU cores: 000 ~6 min, 001 ~3 min, 002 ~6 min, 003 ~8 min, 004 ~5 min. Timings drift 20-50 %.
set -e
HERE=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/results}
FIG="$HERE/docs/figures"
CNNLAB=${CNNLAB:-cnnlab}
mkdir -p "$OUT" "$FIG"
cd "$OUT"
fig() { cp "$1" "$FIG/$2"; echo "figure: docs/figures/$2"; }

s000() {  # LEGO: TripleV2 (report setting) vs the dense net vs a frozen pretrained net; shear + flip only
  AUG="--augment keras --augment-option rotation=0 --augment-option width_shift=0 --augment-option height_shift=0 --augment-option zoom=0 --augment-option shear=0.2"
  DATA="--data fashion-mnist --input-size 64 --train-per-class 800 --seed 0"
  $CNNLAB train $DATA $AUG --model triple-tanh --hidden 512,64 --model-option 'filters=[32,64,64,64]' \
    --schedule exponential --decay-steps 1000 --decay-multiplier 0.96 --epochs 6 --out s000-triplev2 --overwrite
  $CNNLAB train $DATA $AUG --model mlp-lego --schedule exponential --decay-steps 1000 --decay-multiplier 0.96 \
    --epochs 6 --out s000-dense --overwrite
  $CNNLAB train $DATA --model efficientnet-lite0 --freeze backbone --epochs 10 --out s000-lite0-frozen --overwrite
  $CNNLAB compare s000-triplev2 s000-dense --out s000-compare.html --json > s000-paired.json
  $CNNLAB compare s000-triplev2 s000-lite0-frozen --out s000-compare2.html --json > s000-paired2.json
  fig s000-triplev2/report/curves.png seed000-triplev2-curves.png
}

s001() {  # dense vs CNN by steps, dev accuracy every 100 steps, both engines (the NumPy one is the report's)
  COMMON="--data fashion-mnist --init he --optimizer adam --lr 1e-3 --batch-size 128 --schedule constant --steps 2000 --eval-every 100 --seed 0"
  $CNNLAB train $COMMON --model cnn-small --engine scratch --out s001-cnn-numpy --overwrite
  $CNNLAB train $COMMON --model mlp-fys --engine scratch --out s001-dnn-numpy --overwrite
  $CNNLAB train $COMMON --model cnn-small --engine torch --out s001-cnn-torch --overwrite
  $CNNLAB compare s001-cnn-numpy s001-dnn-numpy --out s001-compare.html --json > s001-paired.json
  $CNNLAB compare s001-cnn-numpy s001-cnn-torch --out s001-engines.html --json > s001-engines.json
  fig s001-cnn-numpy/report/curves.png seed001-cnn-numpy-steps.png
}

s002() {  # cross-modal: baseline with its own head, frozen + Dense-256, fine-tuned; retrieval on test splits
  rm -rf s002-data && python "$HERE/examples/seed002_standin.py" s002-data --per-class 60
  rm -rf s002; EPOCHS=${EPOCHS:-6} FT=${FT:-3,2} sh "$HERE/examples/seed002-scene-transfer.sh" s002-data s002
  fig s002/fine-tuned/report/curves.png seed002-fine-tuned-curves.png
}

s003() {  # multi-label: the baseline CNN over the report's grid, then a study with the transfer arm
  rm -rf s003-data && python "$HERE/examples/seed003_multilabel_standin.py" s003-data --images 4000
  sed "s|source: fashion-mnist|source: $OUT/s003-data/labels.csv|; s|train_per_class: 500|train_per_class: null|" \
    "$HERE/examples/seed003-grid.yaml" > s003-grid.yaml
  rm -rf s003-grid s003-study  # a sweep or study folder is resumed, never overwritten: start afresh
  $CNNLAB sweep s003-grid.yaml --out s003-grid -q
  $CNNLAB study s003-data/labels.csv --models baseline-cnn,efficientnet-lite0:frozen --budget 5m --out s003-study -q
  fig s003-study/figures/curves.png seed003-study-curves.png
}

s004() {  # paintings recipe on stand-in data, short; the transfer arm with a frozen pretrained net
  R="--config $HERE/examples/seed004-paintings.yaml --set data.input_size=32 --set data.channels=3 --set data.train_per_class=500"
  $CNNLAB train $R --set train.epochs=8 --model mobilenetv2-small --out s004-mobilenet --overwrite
  $CNNLAB train $R --set train.epochs=10 --set data.augment=none --model efficientnet-lite0 --freeze backbone \
    --set data.normalize=auto --out s004-lite0-frozen --overwrite
  $CNNLAB compare s004-mobilenet s004-lite0-frozen --out s004-compare.html --json > s004-paired.json
  fig s004-mobilenet/report/curves.png seed004-mobilenet-curves.png
}

for s in ${@:-000 001 002 003 004}; do
  echo "== seed $s"; start=$(date +%s); "s$s"; echo "== seed $s took $(( $(date +%s) - start )) s"
done
