"""Images/s of graphc's batched augmentation vs a per-sample torchvision.transforms.v2 loop.

Both sides get the same float32 (N, 3, 32, 32) images in [0, 1] and the reference
recipe's parameters (rotation 60, shift 0.3, zoom 0.7-1.3, shear 0.3); the peer is
the usual per-image pipeline: ``v2.RandomAffine`` called once per image (it has no
reflect fill, so it fills with zeros, which only flatters it). Flip + crop is compared
with ``v2.RandomCrop(32, padding=4)`` + ``v2.RandomHorizontalFlip``. Rows for CUDA
appear when a GPU is present. Run::

    python benchmarks/augment_throughput.py [--images 4096] [--batch-size 256] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import torch
from torchvision.transforms import v2

from graphc.lang.spec import FlipCropAugment, KerasAffineAugment
from graphc.runtime.data.augment import make_augment


def images_per_second(run, count: int, device: str, repeats: int = 3) -> float:
    run()  # warm-up (kernels, caches)
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return count / best


def batched(augment, images: torch.Tensor, batch_size: int):
    generator = torch.Generator().manual_seed(0)

    def run():
        for start in range(0, len(images), batch_size):
            augment(images[start : start + batch_size], generator)

    return run


def per_sample(transform, images: torch.Tensor):
    def run():
        for image in images:
            transform(image)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = torch.rand(args.images, 3, 32, 32)
    keras = KerasAffineAugment(preset="keras_affine", rotation=60, shift=0.3, zoom=(0.7, 1.3), shear=0.3)
    crop = FlipCropAugment(preset="flip_crop", padding=4)
    peers = {
        "keras_affine": v2.RandomAffine(degrees=60, translate=(0.3, 0.3), scale=(0.7, 1.3), shear=0.3),
        "flip_crop": v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()]),
    }
    # The per-sample peer is slow: time it on a slice and report images/s.
    peer_images = images[: min(len(images), 1024)]
    print(
        f"{args.images} images 3x32x32, batch {args.batch_size}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads"
    )
    print(f"{'preset':<14}{'device':<8}{'graphc batched':>16}{'v2 per-sample (cpu)':>22}{'ratio':>9}")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for name, spec in (("keras_affine", keras), ("flip_crop", crop)):
        peer = images_per_second(per_sample(peers[name], peer_images), len(peer_images), "cpu")
        for device in devices:
            ours = images_per_second(
                batched(make_augment(spec), images.to(device), args.batch_size), len(images), device
            )
            print(f"{name:<14}{device:<8}{ours:>14,.0f}/s{peer:>20,.0f}/s{ours / peer:>8.1f}x")


if __name__ == "__main__":
    main()
