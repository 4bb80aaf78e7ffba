#!/usr/bin/env bash
# Gradient-conflict diagnostics on the CIFAR-10 pictures (docs/research-tools.md: "Gradient-conflict diagnostics").
#
# The question of the reference study: in a shared-trunk + reuse-coarse network, how much of
# the coarse branch's gradient comes from the fine task (through the fine head reading the
# coarse head's output), and does it hurt the coarse task? Two runs of
# specs/examples/cifar10_folders.toml (shared trunk, fine_concat reads coarse_head), both with
# --diagnostics:
#   reuse          as written: the fine loss's gradient flows back into coarse_fc and coarse_head
#   reuse_nograd   the same with reuse_gradient = false on coarse_head: it does not (share 0)
# then one graphc report (the table compares the heads' accuracies; diag_share.png and
# diag_<node>.png show the diagnostics per epoch), the per-epoch share of the fine task in the
# coarse branch's gradient, and the diagram coloured by the last epoch.
#
#   benchmarks/diagnostics_example.sh [DATA_DIR] [more graphc train flags]
#   benchmarks/diagnostics_example.sh /tmp/cifar10                                        # the full recipe (15 epochs; a GPU)
#   benchmarks/diagnostics_example.sh /tmp/cifar10 --limit-train 500 --epochs 1 --no-test # a smoke run
#
# DATA_DIR holds train/<class>/*.png and test/<class>/*.png (default /tmp/cifar10);
# OUT (default runs/diagnostics_example) receives the runs, report/ and diagnostics.svg.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-/tmp/cifar10}
[ $# -gt 0 ] && shift
OUT=${OUT:-runs/diagnostics_example}
SPEC=specs/examples/cifar10_folders.toml
mkdir -p "$OUT"
NOGRAD="$OUT/cifar10_folders_nograd.toml"
# The same spec with the fine task's gradient stopped where it reads the coarse head.
sed 's/^reuse_as = "probabilities"$/reuse_as = "probabilities"\nreuse_gradient = false/' "$SPEC" > "$NOGRAD"
grep -q '^reuse_gradient = false$' "$NOGRAD"

REUSE=$(graphc train "$SPEC" --data-dir "$DATA" --diagnostics --tag reuse --out "$OUT" --quiet "$@")
NOGRAD_RUN=$(graphc train "$NOGRAD" --data-dir "$DATA" --diagnostics --tag reuse_nograd --out "$OUT" --quiet "$@")

graphc report "$REUSE" "$NOGRAD_RUN" -o "$OUT/report" --baseline reuse
python - "$REUSE" "$NOGRAD_RUN" <<'PY'
import sys
from graphc.runtime.runs.rundir import read_metrics
for label, run in zip(("reuse", "reuse_nograd"), sys.argv[1:]):
    print(f"{label}: {run}")
    print(f"  {'epoch':>5}  {'fine share of coarse branch grad':>32}  {'cos fine:coarse on trunk':>24}  {'coarse_fc':>9}  {'coarse_head':>11}")
    for row in read_metrics(run):
        if row["split"] == "train" and "diag/coarse_head/share/fine" in row:
            cos = lambda node: row.get(f"diag/{node}/cos/fine:coarse")
            text = lambda v: "-" if v is None else f"{v:+.3f}"
            print(f"  {row['epoch']:>5}  {row['diag/coarse_head/share/fine']:>32.3f}  {text(cos('trunk')):>24}"
                  f"  {text(cos('coarse_fc')):>9}  {text(cos('coarse_head')):>11}")
PY
graphc render "$SPEC" --diagnostics "$REUSE" -o "$OUT/diagnostics.svg"
