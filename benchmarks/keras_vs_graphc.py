"""graphc's default training step vs the original Keras model on TensorFlow's CPU backend.

The peer is the study's own stack: shared_reuse_coarse written in Keras exactly as
/work/shared/REFERENCE.md states it (NHWC, the TensorFlow CPU default; batch norm momentum
0.99, epsilon 1e-3; Glorot-uniform kernels; loss 2 x fine + 1 x coarse cross-entropy on logits;
Adam 5e-4, epsilon 1e-7), trained with ``train_on_batch`` (the compiled tf.function step
``fit`` runs). graphc's side is ``graphc train``'s training step in the execution
``precision = "auto"`` picks on this CPU (bf16 autocast and channels-last with AMX, fp32 and
channels-last without), plus its fp32 steps (channels-last: what auto picks on a CPU without
AMX; contiguous: graphc before ``auto``) for reference. To see a CPU without AMX on one with it,
set ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16`` (or ``AVX2``): it limits oneDNN in both libraries. Both get the same random
batch (100 images by default) and the same number of threads; measurements alternate, best of
``--repeats``. The last line is the ratio graphc (auto) / Keras. Needs the ``bench`` extra
(``pip install -e '.[bench]'``: tensorflow-cpu). Run from the repository root::

    python benchmarks/keras_vs_graphc.py [--threads 1] [--batch 100] [--seconds 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
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


def main() -> None:
    args = parse()
    # torch (with torch._dynamo, which the optimisers import) first: importing it after TensorFlow
    # crashes the process (seen with torch 2.14 and tensorflow-cpu 2.21).
    import numpy as np
    import torch
    import torch._dynamo  # noqa: F401

    sys.path.insert(0, str(ROOT))
    import graphc
    from runtime.bench import Bench, machine, rate
    from runtime.device import plan_execution

    # Thread counts must be set before either library starts its pools.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    try:
        import tensorflow as tf
    except ImportError:
        sys.exit("needs TensorFlow: pip install -e '.[bench]' (tensorflow-cpu)")
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras

    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")

    rng = np.random.default_rng(0)
    x = rng.random((args.batch, 32, 32, 3), dtype=np.float32)
    fine, coarse = rng.integers(0, 100, args.batch), rng.integers(0, 20, args.batch)
    model = keras_model(keras)

    def keras_step():
        model.train_on_batch(x, [fine, coarse])

    spec = graphc.load_spec(ROOT / "specs" / "shared_reuse_coarse.toml")
    bench = Bench(spec, cpu, args.batch)  # graphc train's Run on synthetic images, its train_step
    auto = plan_execution("auto", cpu, bench.run.model)
    sides = {
        "keras (tensorflow-cpu)": lambda: None,
        f"graphc auto: {auto.precision}, {'channels-last' if auto.channels_last else 'contiguous'}":
            lambda: bench.use(auto.precision, auto.channels_last, False),
        "graphc fp32, channels-last (auto w/o AMX)": lambda: bench.use("fp32", True, False),
        "graphc fp32, contiguous": lambda: bench.use("fp32", False, False),
    }
    steps = {name: (keras_step if name.startswith("keras") else bench.step) for name in sides}
    best = dict.fromkeys(sides, 0.0)
    for _ in range(args.repeats):
        for name, prepare in sides.items():  # alternate, so load drift hits every side
            prepare()
            best[name] = max(best[name], rate(steps[name], args.batch, args.seconds, cpu))

    info = machine(cpu)
    print(f"shared_reuse_coarse training step, batch {args.batch}, {args.threads} thread(s), best of {args.repeats} x "
          f"{args.seconds:g} s; {info['device_name']} ({', '.join(info['cpu_flags'])}); torch {torch.__version__}, "
          f"tensorflow {tf.__version__}, keras {keras.__version__}")
    keras_rate = best["keras (tensorflow-cpu)"]
    for name, value in best.items():
        print(f"{name:<40} {value:>9.1f} img/s {value / keras_rate:>7.2f}x keras")
    auto_name = next(n for n in sides if n.startswith("graphc auto"))
    print(f"ratio graphc ({auto.describe()}) / keras, {args.threads} thread(s): {best[auto_name] / keras_rate:.2f}")


if __name__ == "__main__":
    main()
