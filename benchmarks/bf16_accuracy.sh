#!/usr/bin/env bash
# bf16 autocast vs fp32 on real pictures: does bf16 reach the same accuracy within seed noise?
#
#   bash benchmarks/bf16_accuracy.sh [OUT_DIR] [EPOCHS] [EXTRA graphc train FLAGS...]     (repository root)
#
# Trains specs/examples/cifar10_folders.toml (shared trunk + coarse reuse, flip + crop, AdamW,
# one-cycle) on the CIFAR-10 pictures of /work/shared/data/cifar10-jpeg.tar.gz, once with
# precision = "bf16" and once with precision = "fp32", 2 seeds each (seeds 0 and 1: the same
# initialisation, batch order and augmentation in both precisions), then prints graphc report's
# comparison of the four runs on the test split (mean and sd over the seeds per precision) and
# on the validation split. Default 15 epochs (the spec's recipe): about 4 x 15 x 45,000 images;
# on a 2-core CPU with AMX that is about 1-2 hours. To check the script itself in a minute:
#
#   bash benchmarks/bf16_accuracy.sh /tmp/bf16_check 1 --limit-train 512 --limit-val 256 --limit-test 256
set -euo pipefail

OUT=${1:-bf16_accuracy_out}
EPOCHS=${2:-15}
shift $(( $# > 2 ? 2 : $# ))
ARCHIVE=${ARCHIVE:-/work/shared/data/cifar10-jpeg.tar.gz}
DATA=${DATA:-/tmp/cifar10}
mkdir -p "$OUT"

if [ ! -d "$DATA/train" ]; then
    mkdir -p "$DATA"
    tar -xzf "$ARCHIVE" -C "$DATA"
    # the archive may hold one top folder around train/ and test/
    if [ ! -d "$DATA/train" ]; then
        top=$(dirname "$(find "$DATA" -maxdepth 3 -type d -name train | head -n 1)")
        DATA=$top
    fi
fi
echo "data: $DATA ($(find "$DATA/train" -type f | wc -l) training pictures)"

for precision in bf16 fp32; do
    spec="$OUT/cifar10_folders_$precision.toml"
    # the same spec with only [train] precision set (name kept, so the report groups by the tag)
    sed "s/^\[train\]$/[train]\nprecision = \"$precision\"/" specs/examples/cifar10_folders.toml > "$spec"
    grep -q "^precision = \"$precision\"" "$spec"
    start=$(date +%s)
    graphc train "$spec" --data-dir "$DATA" --seeds 2 --epochs "$EPOCHS" --tag "$precision" --out "$OUT/runs" --quiet "$@"
    echo "$precision: $(( $(date +%s) - start )) s for 2 seeds"
done

graphc report "$OUT/runs" -o "$OUT/report" --split test --baseline fp32
graphc report "$OUT/runs" -o "$OUT/report_val" --split val --baseline fp32
