"""Image sets made here: the position toy (where only *where* matters) and the CIFAR stand-in
(what smoke mode reads when no copy of CIFAR is found)."""

from __future__ import annotations

import torch

from .images import CIFAR10_CLASSES, EXPECTED_COUNTS, MEAN_STD, ImageData

QUADRANTS = ("top-left", "top-right", "bottom-left", "bottom-right")


STANDIN_PER_CLASS = {"cifar10": (50, 20), "cifar100": (5, 2)}  # train, test images per class


def make_standin(name: str, seed: int = 0) -> ImageData:
    """A small CIFAR-shaped stand-in for ``name`` (32 x 32 RGB, its number of classes), made here:
    what smoke mode reads when no copy of the real data is found. Each class is a colour and a
    stripe direction under noise, so a model can learn something; the ``source`` (which every load
    and every results.json reports) and the class names say plainly that this is not CIFAR."""
    classes_n = EXPECTED_COUNTS[name][0]
    per_train, per_test = STANDIN_PER_CLASS[name]
    g = torch.Generator().manual_seed(seed)
    labels = [torch.arange(classes_n).repeat_interleave(n) for n in (per_train, per_test)]
    palette = torch.rand(classes_n, 3, generator=g)  # one colour per class, shared by both splits
    xs = []
    for y in labels:
        colour = palette[y][:, :, None, None]
        grid = torch.arange(32.0)
        angle = (y.float() * 2.399)[:, None, None]  # the golden angle: a different stripe direction per class
        stripes = torch.sin((grid[None, :, None] * torch.cos(angle) + grid[None, None, :] * torch.sin(angle)) * 0.8)
        image = colour * (0.6 + 0.3 * stripes[:, None]) + 0.15 * torch.randn(len(y), 3, 32, 32, generator=g)
        xs.append((image.clamp(0, 1) * 255).to(torch.uint8))
    names = tuple(f"{c} (stand-in)" for c in CIFAR10_CLASSES) if name == "cifar10" else tuple(f"class_{i} (stand-in)" for i in range(classes_n))
    return ImageData(xs[0], labels[0], xs[1], labels[1], names, *MEAN_STD[name],
                     f"stand-in:{name} (generated in smoke mode: no {name} copy was found; NOT {name}, its numbers mean nothing)")


def make_position_toy(n_train: int = 2000, n_test: int = 500, img_size: int = 32, patch: int = 4, seed: int = 0) -> ImageData:
    """A dataset where only *where* matters: the label is the quadrant of a marker patch.

    Each image is low-amplitude noise plus one bright, randomly coloured ``patch x patch``
    marker aligned to the patch grid, and one dimmer distractor marker anywhere. Every class
    has the same patch contents, so a ViT whose patch size is ``patch`` and has no PE (its patch
    tokens are a bag) is at chance (25 %), and any model that uses position can reach ~100 %.
    A convolutional tokenizer (CCT's) zero-pads the border, which leaks where a marker lies next
    to an edge: without a PE it can do better than chance.
    """
    if img_size % (2 * patch):
        raise ValueError(f"img_size {img_size} must be a multiple of 2*patch={2 * patch}")
    g = torch.Generator().manual_seed(seed)
    n = n_train + n_test
    cells = img_size // patch
    x = (torch.rand(n, 3, img_size, img_size, generator=g) * 60).to(torch.uint8)
    y = torch.randint(0, 4, (n,), generator=g)
    half = cells // 2
    row = torch.randint(0, half, (n,), generator=g) + (y // 2) * half
    col = torch.randint(0, half, (n,), generator=g) + (y % 2) * half
    colour = (torch.rand(n, 3, generator=g) * 80 + 175).to(torch.uint8)
    d_row, d_col = torch.randint(0, cells, (n,), generator=g), torch.randint(0, cells, (n,), generator=g)
    for i in range(n):
        r, c = int(d_row[i]) * patch, int(d_col[i]) * patch
        x[i, :, r:r + patch, c:c + patch] = 110
        r, c = int(row[i]) * patch, int(col[i]) * patch
        x[i, :, r:r + patch, c:c + patch] = colour[i, :, None, None]
    return ImageData(
        x[:n_train], y[:n_train], x[n_train:], y[n_train:], QUADRANTS,
        (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), f"toy:quadrant(seed={seed})",
    )
