"""graphc's default training step vs the original Keras model on TensorFlow's CPU backend.

The peer is the study's own stack: shared_reuse_coarse written in Keras exactly as
/work/shared/REFERENCE.md states it (NHWC, the TensorFlow CPU default; batch norm momentum
0.99, epsilon 1e-3; Glorot-uniform kernels; loss 2 x fine + 1 x coarse cross-entropy on logits;
Adam 5e-4, epsilon 1e-7), trained with ``train_on_batch`` (the compiled tf.function step
``fit`` runs). graphc's side is ``graphc train``'s training step in the execution
``precision = "auto"`` picks on this CPU (bf16 autocast and channels-last with AMX, fp32 and
channels-last without), plus its fp32 steps (channels-last: what auto picks on a CPU without
AMX; contiguous: graphc before ``auto``) for reference. To see a CPU without AMX on one with it,
set ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16`` (or ``AVX2``): it limits oneDNN in both libraries.

Each side runs in a process of its own, started once and then told to measure in turn (best
of ``--repeats`` rounds, the sides alternating so load drift hits all of them): in one process,
the idle thread pool of one library spins on the cores while the other works (TensorFlow's
and PyTorch's pools do not know of each other), which halves the other's speed at 2 threads.
Both get the same random batch (100 images by default) and the same number of threads.
graphc's training keeps freed memory in the heap (runtime/allocator.py); a second Keras side
runs with that setting too, and a second graphc auto side without it
(``GRAPHC_HOST_ALLOCATOR=system``), to show how much of the difference it makes. The last line is the
ratio graphc (auto) / Keras as a user runs it; with ``ONEDNN_MAX_CPU_ISA`` set, that of graphc's
fp32 channels-last step, which auto picks on a CPU without AMX. Needs the ``bench`` extra (``pip install -e
'.[bench]'``: tensorflow-cpu). Run from the repository root::

    python benchmarks/keras_vs_graphc.py [--threads 1] [--batch 100] [--seconds 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERAS = "keras (tensorflow-cpu)"
KERAS_KEPT = "keras, freed memory kept"
# graphc sides: (precision, channels_last) or "auto"
GRAPHC = {"auto": "auto", "auto-system": "auto", "fp32-cl": ("fp32", True), "fp32": ("fp32", False)}
# auto-system: auto's step with the host allocator left as the system has it (runtime/allocator.py)
SYSTEM_ALLOCATOR = {"auto-system": {"GRAPHC_HOST_ALLOCATOR": "system"}}
PAUSE_S = 0.5  # before each measurement: the other processes' pools fall asleep


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one side
    return parser.parse_args()


def keras_model(keras):
    """shared_reuse_coarse in Keras, as REFERENCE.md describes the original."""
    layers = keras.layers

    def conv(x, channels):
        return layers.Conv2D(channels, 3, padding="same", activation="relu")(x)

    def block(x, channels):
        x = conv(conv(x, channels), channels)
        return layers.BatchNormalization()(layers.MaxPooling2D(2)(x))  # pool, then batch norm

    def dense(x, units):
        x = layers.Dense(units, activation="relu")(x)
        return layers.BatchNormalization()(layers.Dropout(0.25)(x))

    image = keras.Input((32, 32, 3))
    features = layers.Flatten()(block(block(conv(image, 64), 64), 128))  # 8192
    coarse = dense(dense(features, 1024), 512)
    coarse = layers.Dense(20, name="coarse")(dense(dense(coarse, 256), 128))
    fine = dense(dense(features, 1024), 512)
    fine = dense(dense(layers.Concatenate()([fine, coarse]), 256), 128)
    fine = layers.Dense(100, name="fine")(fine)
    model = keras.Model(image, [fine, coarse])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(5e-4, epsilon=1e-7), loss=[loss, loss], loss_weights=[2.0, 1.0])
    return model


def keras_side(args: argparse.Namespace, kept: bool):
    """(name, step, versions) of the Keras model; only TensorFlow is imported in this process.
    ``kept``: with graphc's allocator setting too (runtime/allocator.py), to show what of the
    difference is the allocator."""
    import numpy as np

    if kept:
        sys.path.insert(0, str(ROOT))
        from graphc.runtime.allocator import keep_freed_memory  # imports no torch

        keep_freed_memory()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    try:
        import tensorflow as tf
    except ImportError:
        sys.exit("needs TensorFlow: pip install -e '.[bench]' (tensorflow-cpu)")
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)  # before TensorFlow starts its pools
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras

    rng = np.random.default_rng(0)
    x = rng.random((args.batch, 32, 32, 3), dtype=np.float32)
    fine, coarse = rng.integers(0, 100, args.batch), rng.integers(0, 20, args.batch)
    model = keras_model(keras)
    return (
        KERAS_KEPT if kept else KERAS,
        lambda: model.train_on_batch(x, [fine, coarse]),
        f"tensorflow {tf.__version__}, keras {keras.__version__}",
    )


def graphc_side(args: argparse.Namespace, which: str):
    """(name, step, machine line) of graphc train's step in one execution; only torch is imported."""
    import torch

    sys.path.insert(0, str(ROOT))
    import graphc
    from graphc.runtime.bench import Bench, machine
    from graphc.runtime.device import plan_execution

    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    spec = graphc.load_spec(ROOT / "specs" / "shared_reuse_coarse.toml")
    bench = Bench(spec, cpu, args.batch)  # graphc train's Run on synthetic images, its train_step
    if GRAPHC[which] == "auto":
        auto = plan_execution("auto", cpu, bench.run.model)
        precision, channels_last = auto.precision, auto.channels_last
        name = f"graphc auto: {precision}, {'channels-last' if channels_last else 'contiguous'}"
        name += ", system allocator" if which in SYSTEM_ALLOCATOR else ""
        info = machine(cpu)
        about = (
            f"{info['device_name']} ({', '.join(info['cpu_flags'])}); torch {torch.__version__}; "
            f"auto = {auto.describe()}"
        )
    else:
        precision, channels_last = GRAPHC[which]
        name = f"graphc {precision}, {'channels-last' if channels_last else 'contiguous'}"
        name += " (auto w/o AMX)" if channels_last else ""
        about = ""
    bench.use(precision, channels_last, False)
    return name, bench.step, about


def rate(step, batch: int, seconds: float) -> float:
    """Images/s of ``step`` over at least ``seconds`` after 2 warm-up steps (graphc.runtime.bench.rate on
    a CPU, written here so that the Keras process need not import torch)."""
    for _ in range(2):
        step()
    count, start = 0, time.perf_counter()
    while True:
        step()
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count * batch / elapsed


def worker(args: argparse.Namespace) -> None:
    """One side: build it, say "ready", then answer each "measure" line with its images/s."""
    if args.worker.startswith("keras"):
        name, step, about = keras_side(args, kept=args.worker == "keras-kept")
    else:
        name, step, about = graphc_side(args, args.worker)
    print(f"ready\t{name}\t{about}", flush=True)
    for line in sys.stdin:
        if line.strip() != "measure":
            break
        print(rate(step, args.batch, args.seconds), flush=True)


def main() -> None:
    args = parse()
    if args.worker:
        worker(args)
        return
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))  # each library's pool sized from the start
    base = [
        sys.executable,
        __file__,
        "--threads",
        str(args.threads),
        "--batch",
        str(args.batch),
        "--seconds",
        str(args.seconds),
    ]
    sides = {}
    for which in ["keras", "keras-kept", *GRAPHC]:
        proc = subprocess.Popen(
            [*base, "--worker", which],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**env, **SYSTEM_ALLOCATOR.get(which, {})},
        )
        line = proc.stdout.readline()
        if not line.startswith("ready\t"):
            sys.exit(f"the {which} side did not start (exit code {proc.wait()})")
        _, name, about = line.rstrip("\n").split("\t")
        sides[which] = (proc, name, about)
    best = dict.fromkeys(sides, 0.0)
    try:
        for _ in range(args.repeats):
            for which, (proc, _, _) in sides.items():  # alternate, so load drift hits every side
                time.sleep(PAUSE_S)
                proc.stdin.write("measure\n")
                proc.stdin.flush()
                best[which] = max(best[which], float(proc.stdout.readline()))
    finally:
        for proc, _, _ in sides.values():
            proc.stdin.close()
            proc.wait()

    print(
        f"shared_reuse_coarse training step, batch {args.batch}, {args.threads} thread(s), best of {args.repeats} x "
        f"{args.seconds:g} s, each side in its own process; {sides['auto'][2]}; {sides['keras'][2]}"
    )
    keras_rate = best["keras"]
    for which, value in best.items():
        print(f"{sides[which][1]:<52} {value:>9.1f} img/s {value / keras_rate:>7.2f}x keras")
    print(f"graphc auto / keras with freed memory kept as graphc keeps it: {best['auto'] / best['keras-kept']:.2f}")
    print(
        f"graphc auto / graphc auto with the system allocator (what keeping freed memory gains): "
        f"{best['auto'] / best['auto-system']:.2f}"
    )
    limited = os.environ.get("ONEDNN_MAX_CPU_ISA")
    if limited:  # auto still sees the CPU's AMX; without it, auto picks fp32 channels-last
        print(
            f"ratio graphc fp32, channels-last (what auto picks without AMX) / keras, oneDNN limited to {limited}, "
            f"{args.threads} thread(s): {best['fp32-cl'] / keras_rate:.2f}"
        )
    else:
        print(
            f"ratio graphc ({sides['auto'][1].removeprefix('graphc ')}) / keras, {args.threads} thread(s): "
            f"{best['auto'] / keras_rate:.2f}"
        )


if __name__ == "__main__":
    main()
