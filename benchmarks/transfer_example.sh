#!/usr/bin/env bash
# Transfer learning on the CIFAR-10 pictures (docs/research-tools.md: "Transfer learning and frozen nodes").
#
# The question of the reference study: do shared convolutional layers transfer better than
# task-specific ones? Two source networks learn the CIFAR-10 class (fine) and vehicle/animal
# (coarse) with the same convolutional layers, arranged two ways:
#   specs/examples/cifar10_trunk_shared.toml       one trunk both tasks read (shared_conv-style)
#   specs/examples/cifar10_trunk_independent.toml  a trunk per task (independent-style)
# Each trunk (block1, block2, trunk) is then transferred, frozen, to a new task - three groups of
# classes, vehicle / pet / wild (specs/examples/cifar10_transfer_groups.toml) - where only the new
# fc block and head train, and compared with that network trained from scratch:
#   scratch                    every node trained from a fresh initialisation
#   shared-frozen              the shared trunk, frozen
#   independent-fine-frozen    the fine task's own trunk, frozen (--init-map block1=fine_block1,...)
#   independent-coarse-frozen  the coarse task's own trunk, frozen
# then one graphc report table of the four, on the test split, against scratch.
#
#   benchmarks/transfer_example.sh [DATA_DIR] [more graphc train flags, given to every run]
#   benchmarks/transfer_example.sh /tmp/cifar10                                   # the full recipe (15 epochs each)
#   benchmarks/transfer_example.sh /tmp/cifar10 --limit-train 500 --epochs 1 --limit-test 200   # a smoke run
#
# DATA_DIR holds train/<class>/*.jpg and test/<class>/*.jpg (default /tmp/cifar10);
# OUT (default runs/transfer_example) receives the runs and report/. One seed per run (the specs'
# train.seed); add --seed K to the flags to repeat the study with another.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-/tmp/cifar10}
[ $# -gt 0 ] && shift
OUT=${OUT:-runs/transfer_example}
EXAMPLES=specs/examples
TRUNK=block1,block2,trunk
mkdir -p "$OUT"

# 1. The source networks: the trunks learn fine and coarse.
SHARED=$(graphc train "$EXAMPLES/cifar10_trunk_shared.toml" --data-dir "$DATA" --out "$OUT" --quiet "$@")
INDEPENDENT=$(graphc train "$EXAMPLES/cifar10_trunk_independent.toml" --data-dir "$DATA" --out "$OUT" --quiet "$@")

# 2. The new task: from scratch, and on each trunk (loaded from the run's best.pt), frozen.
TARGET="$EXAMPLES/cifar10_transfer_groups.toml"
graphc train "$TARGET" --data-dir "$DATA" --out "$OUT" --quiet --tag scratch "$@"
graphc train "$TARGET" --data-dir "$DATA" --out "$OUT" --quiet --tag shared-frozen \
    --init-from "$SHARED" --freeze "$TRUNK" "$@"
for task in fine coarse; do
    graphc train "$TARGET" --data-dir "$DATA" --out "$OUT" --quiet --tag "independent-$task-frozen" \
        --init-from "$INDEPENDENT" --init-map "block1=${task}_block1,block2=${task}_block2,trunk=${task}_trunk" \
        --freeze "$TRUNK" "$@"
done

# 3. One table: the new task's test accuracy per variant, against training from scratch.
graphc report "$OUT/cifar10_transfer_groups" --split test --baseline scratch -o "$OUT/report"
