#!/usr/bin/env bash
# graphc's branch-point study (issue 22): for each trunk (VGG-like, residual), generate the family of
# sharing topologies, score it cheaply, train every member with 3 seeds, rank it, and correlate each
# cheap score with the trained result (benchmarks/branching/correlate.py).
#
#   benchmarks/branching/study.sh CIFAR10_DIR OUT_DIR
#
# CIFAR10_DIR: the CIFAR-10 pictures as image folders (train/<class>/*.jpg, test/<class>/*.jpg).
# Budget (2 CPU cores): 7 members per trunk, 4 epochs on 6,000 training images, 2,000 test images.
set -euo pipefail
data=${1:?give the CIFAR-10 image folder}
out=${2:?give an output folder}
here=$(cd "$(dirname "$0")" && pwd)
for trunk in vgg resnet; do
  start=$(date +%s)
  graphc branch "$here/${trunk}_three_tasks.toml" --out "$out/$trunk" --max-specs 7 \
    --score --score-epochs 2 --score-images 2048 --metric mean_acc \
    --train --seeds 3 --jobs 1 --epochs 4 --limit-train 6000 --limit-test 2000 --data-dir "$data" --quiet
  echo "$trunk: $(( $(date +%s) - start )) s in all"
  python "$here/correlate.py" "$out/$trunk"
done
