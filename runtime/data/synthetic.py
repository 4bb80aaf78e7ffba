"""Generated images that a small CNN can learn: fine classes inside coarse groups.

Fine class ``i`` belongs to coarse group ``i // (classes // coarse_classes)``.
An image of class ``i`` in group ``g`` is::

    0.5 + contrast * (0.06 * group_pattern[g] + 0.05 * class_pattern[i]) + brightness + noise

Both patterns are smooth random fields (random values on a coarse grid,
upsampled bilinearly to the image size, unit standard deviation per image), so
the classes differ in spatial structure and colour, which convolutions pick up
quickly; all fine classes of a group share the group pattern, so the coarse
task is easier than the fine one and the hierarchy is real. Per-image
contrast, brightness and a shift of up to MAX_SHIFT pixels keep it from being
a lookup table; the pixel noise has standard deviation ``noise``.

Everything is drawn from one generator seeded with the data's ``split_seed``:
the same seed gives the same images, bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from graphc.lang.spec import SyntheticData
from graphc.runtime.data.split import Split

GROUP_GRID = 4  # the group pattern varies over a 4x4 grid of the image: broad shapes
CLASS_GRID = 6  # the class pattern is a little finer
MAX_SHIFT = 3  # pixels of random translation per image
GROUP_AMPLITUDE = 0.06  # contrast of the shared group pattern
CLASS_AMPLITUDE = 0.05  # contrast of the class's own pattern


def _smooth_fields(count: int, channels: int, grid: int, height: int, width: int, g: torch.Generator) -> torch.Tensor:
    coarse = torch.randn(count, channels, grid, grid, generator=g)  # (K, C, grid, grid)
    fields = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)  # (K, C, H, W)
    fields = fields - fields.mean(dim=(1, 2, 3), keepdim=True)
    return fields / fields.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)


def _render(labels: torch.Tensor, patterns: torch.Tensor, noise: float, g: torch.Generator) -> torch.Tensor:
    """Images of the fine classes ``labels`` from their patterns, drawn MAX_SHIFT pixels larger on each side."""
    n = len(labels)
    _, c, h, w = patterns.shape
    h, w = h - 2 * MAX_SHIFT, w - 2 * MAX_SHIFT
    # Each image sees its patterns through a window at a random offset: a shift of up to
    # MAX_SHIFT pixels, gathered straight from the (K, C, H+4, W+4) patterns.
    offset = torch.randint(0, 2 * MAX_SHIFT + 1, (n, 2), generator=g)
    rows = (offset[:, :1] + torch.arange(h))[:, None, :, None]  # (N, 1, H, 1)
    cols = (offset[:, 1:] + torch.arange(w))[:, None, None, :]  # (N, 1, 1, W)
    channel = torch.arange(c)[None, :, None, None]  # (1, C, 1, 1)
    signal = patterns[labels[:, None, None, None], channel, rows, cols]  # (N, C, H, W)
    contrast = 0.8 + 0.4 * torch.rand(n, 1, 1, 1, generator=g)
    brightness = 0.1 * (torch.rand(n, 1, 1, 1, generator=g) - 0.5)
    images = signal.mul_(contrast).add_(0.5 + brightness).add_(noise * torch.randn(n, c, h, w, generator=g))
    return images.clamp_(0, 1).mul_(255).round_().to(torch.uint8).contiguous()


def make_synthetic(options: SyntheticData, image_shape: tuple[int, int, int], seed: int):
    """Return ``(train_pool, test, class_names, hierarchy)`` of a synthetic data set."""
    c, h, w = image_shape
    per_group = options.classes // options.coarse_classes
    g = torch.Generator().manual_seed(seed)
    canvas = (h + 2 * MAX_SHIFT, w + 2 * MAX_SHIFT)
    groups = _smooth_fields(options.coarse_classes, c, GROUP_GRID, *canvas, g)  # (coarse, C, H+4, W+4)
    classes = _smooth_fields(options.classes, c, CLASS_GRID, *canvas, g)  # (fine, C, H+4, W+4)
    group_of = torch.arange(options.classes) // per_group  # fine class -> coarse group
    patterns = GROUP_AMPLITUDE * groups[group_of] + CLASS_AMPLITUDE * classes  # (fine, C, H+4, W+4)

    def split(size: int) -> Split:
        # Balanced: every class gets size // classes images (the first size % classes one more).
        fine = torch.arange(size) % options.classes
        fine = fine[torch.randperm(size, generator=g)]
        images = _render(fine, patterns, options.noise, g)
        return Split(images=images, labels={"fine": fine, "coarse": group_of[fine]})

    pool, test = split(options.train_size), split(options.test_size)
    return pool, test, synthetic_class_names(options), {("fine", "coarse"): group_of.clone()}


def synthetic_class_names(options: SyntheticData) -> dict[str, list[str]]:
    """``fine_07``, ``coarse_3``: zero-padded, so that the names sort in index order."""
    fine_digits = len(str(options.classes - 1))
    coarse_digits = len(str(options.coarse_classes - 1))
    return {
        "fine": [f"fine_{i:0{fine_digits}d}" for i in range(options.classes)],
        "coarse": [f"coarse_{i:0{coarse_digits}d}" for i in range(options.coarse_classes)],
    }
