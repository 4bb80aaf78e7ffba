#!/usr/bin/env bash
# The GPU check of issues 13 and 16, prepared to run in one go on a machine lent for minutes.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        (from the repository root)
#
# It uses, in this order: an active virtual environment; ./.venv; wheels in ./wheels
# (pip install --no-index); else `pip install -e .` (needs the package index). It prints every
# figure and keeps the JSON and logs in OUT_DIR (default gpu_check_out/):
#
#   1. the GPU, torch and what precision = "auto" picks there;
#   2. benchmarks/cuda_path_check.py: augmentation and a training epoch under
#      torch.cuda.set_sync_debug_mode("warn") (expect no synchronising call in the step loop);
#   3. graphc bench for the six reference specs at batch 100, shared_reuse_coarse also at batch 512
#      and with --compile (training images/s per precision and memory format, a real epoch vs the
#      bare step, inference in PyTorch and ONNX Runtime, augmentation, peak memory);
#   4. a timed 5-epoch graphc train of shared_reuse_coarse on 50,000 synthetic images (its log
#      has images/s per epoch), then graphc eval, export and predict on that run.
#
# Budget: about 6-9 minutes on one H100/H200 with 16 CPU cores (the compiled bench is the longest).
# SECONDS_PER_FIGURE (default 2) and REPEATS (default 2) shorten or lengthen every bench figure.
# DEVICE=cpu SPECS=tiny-list TRAIN_SIZE=N EPOCHS=N QUICK=1 run the same steps on the CPU with small
# settings (QUICK=1 skips the batch-512 and --compile benches): how the script itself is checked
# where there is no GPU (the sync checks need CUDA; cuda_path_check.py then runs its CPU part).
set -euo pipefail

OUT=${1:-gpu_check_out}
SECONDS_PER_FIGURE=${SECONDS_PER_FIGURE:-2}
REPEATS=${REPEATS:-2}
DEVICE=${DEVICE:-cuda}
SPECS=${SPECS:-independent shared_conv reuse_coarse reuse_fine shared_reuse_coarse shared_reuse_fine}
TRAIN_SIZE=${TRAIN_SIZE:-50000}
EPOCHS=${EPOCHS:-5}
QUICK=${QUICK:-0}
export DEVICE TRAIN_SIZE
mkdir -p "$OUT"
log() { printf '\n=== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

if [ -z "${VIRTUAL_ENV:-}" ]; then
    if [ -f .venv/bin/activate ]; then
        . .venv/bin/activate
    else
        python3 -m venv "$OUT/venv" && . "$OUT/venv/bin/activate"
        if [ -d wheels ]; then pip install -q --no-index --find-links wheels graphc; else pip install -q -e .; fi
    fi
fi

log "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
python - <<'EOF'
import os
import torch
from graphc.runtime.device import plan_execution, resolve_device
import graphc
device = resolve_device(os.environ["DEVICE"])
model, _ = graphc.model_from_spec("specs/shared_reuse_coarse.toml", seed=0)
if device.type == "cuda":
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(device)}, "
          f"compute capability {torch.cuda.get_device_capability(device)}, bf16 supported {torch.cuda.is_bf16_supported()}")
print(f"torch {torch.__version__} on {device}; auto picks:", plan_execution("auto", device, model).describe())
EOF

log "synchronising calls and host-device traffic (benchmarks/cuda_path_check.py, issue 16)"
# keras_affine and flip_crop augmentation under torch.cuda.set_sync_debug_mode("warn") (expect 0
# warnings), a training epoch's step loop resident and streamed; on the CPU only its epoch part runs.
python benchmarks/cuda_path_check.py 2>&1 | tee "$OUT/cuda_path_check.txt" || echo "cuda_path_check: FAILED (see above)"

log "graphc bench: six reference specs, batch 100"
for spec in $SPECS; do
    graphc bench "specs/$spec.toml" --device "$DEVICE" --batch-size 100 --seconds "$SECONDS_PER_FIGURE" --repeats "$REPEATS" \
        --json > "$OUT/bench_${spec}_100.json"
done
if [ "$QUICK" != 1 ]; then
    log "graphc bench: shared_reuse_coarse, batch 512, and with torch.compile"
    graphc bench specs/shared_reuse_coarse.toml --device "$DEVICE" --batch-size 512 --seconds "$SECONDS_PER_FIGURE" \
        --repeats "$REPEATS" --json > "$OUT/bench_shared_reuse_coarse_512.json"
    graphc bench specs/shared_reuse_coarse.toml --device "$DEVICE" --batch-size 100 --compile --seconds "$SECONDS_PER_FIGURE" \
        --repeats "$REPEATS" --json > "$OUT/bench_shared_reuse_coarse_100_compile.json"
fi
python - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
for path in sorted(Path(sys.argv[1]).glob("bench_*.json")):
    d = json.loads(path.read_text())
    train = ", ".join(f"{r['precision']}/{r['memory_format']}{'/compiled' if r['compiled'] else ''} "
                      f"{r['images_per_s'] or 0:,.0f}" for r in d["training"])
    p = d["pipeline"]
    infer = ", ".join(f"{r['engine']} {r['precision']} {r['images_per_s'] or 0:,.0f}" for r in d["inference"])
    print(f"{d['spec']} batch {d['batch_size']}: train img/s {train}")
    print(f"    epoch {p['epoch_images_per_s']:,.0f} vs bare step {p['step_images_per_s']:,.0f} img/s = {p['ratio']:.3f} "
          f"({p['precision']}, {p['memory_format']}); inference {infer}; "
          f"augmentation {d['augmentation']['images_per_s']:,.0f}; peak {d['peak_memory']['bytes'] / 2**20:,.0f} MiB")
EOF

log "timed graphc train: shared_reuse_coarse, $TRAIN_SIZE synthetic images, $EPOCHS epochs"
python - "$OUT" <<'EOF'
import os, sys
from pathlib import Path
text = Path("specs/shared_reuse_coarse.toml").read_text()
size = int(os.environ["TRAIN_SIZE"])
text = text.replace('dataset = "cifar100"', f'dataset = "synthetic"\nsynthetic = {{ train_size = {size}, test_size = {size // 5} }}', 1)
Path(sys.argv[1], "shared_reuse_coarse_synthetic.toml").write_text(text)
EOF
start=$(date +%s)
graphc train "$OUT/shared_reuse_coarse_synthetic.toml" --epochs "$EPOCHS" --device "$DEVICE" --quiet --out "$OUT/runs" \
    2> >(tee "$OUT/train.log" >&2) | tee "$OUT/run_dir.txt"
echo "graphc train wall time: $(( $(date +%s) - start )) s (data generation, $EPOCHS epochs with validation, test)"
RUN=$(tail -n 1 "$OUT/run_dir.txt")

log "graphc eval / export / predict on $RUN"
graphc eval "$RUN" --device "$DEVICE" --json | tee "$OUT/eval.json"
graphc eval "$RUN" --split test --device "$DEVICE"
graphc export "$RUN/spec.toml" --checkpoint "$RUN" --onnx "$OUT/model.onnx"
python - "$OUT" <<'EOF'
import sys
from pathlib import Path
import numpy as np
from PIL import Image
rng = np.random.default_rng(0)
for i in range(3):
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(Path(sys.argv[1], f"image{i}.png"))
EOF
graphc predict "$OUT/model.onnx" "$OUT"/image*.png
graphc predict "$RUN" "$OUT"/image*.png
log "done: figures above, files in $OUT"
