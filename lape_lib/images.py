"""What every image source shares: its error, decoding, stacking, the epoch order, and the
dataset interface the trainer reads through.

``data`` (CIFAR in its formats, ImageFolder trees, the toy and the stand-in), ``hub`` (the
Hugging Face parquet copy) and ``stream`` (ImageFolder read from disk in loader workers) stand
on this module and not on each other's insides.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

if TYPE_CHECKING:  # typing.Self is Python 3.11+; the package supports 3.10
    from typing_extensions import Self

# CIFAR-10's class names in label order (for copies that do not carry them, and the stand-in).
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# Files an ImageFolder tree's readers take as images (the suffix compared lower-cased): see is_image_file.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

Batch = dict[int, tuple[torch.Tensor, torch.Tensor]]  # per seed: uint8 images (N, 3, H, W) and int64 labels


class DataError(RuntimeError):
    """Data that is missing, corrupt or in no layout we read; the message says what to do."""


class ImageDataset(Protocol):
    """A labelled image set as the trainer reads it: in memory (``data.ImageData``) or streamed
    from disk (``stream.StreamingImageFolder``)."""

    @property
    def classes(self) -> tuple[str, ...]: ...

    @property
    def mean(self) -> tuple[float, float, float]: ...

    @property
    def std(self) -> tuple[float, float, float]: ...

    @property
    def source(self) -> str: ...

    @property
    def num_classes(self) -> int: ...

    @property
    def n_train(self) -> int: ...

    @property
    def n_test(self) -> int: ...

    def identity(self) -> str:
        """What the images are (content, not path): part of a run's identity."""
        ...

    def to(self, device: str | torch.device) -> Self: ...

    def train_batches(self, seeds: list[int], epoch: int, batch_size: int, rank: int, world: int,
                      device: torch.device) -> Iterator[Batch]:
        """Per step, for each seed, this process's share (every world-th sample) of the global batch
        drawn in ``epoch_order(seed, epoch)`` (drop_last), on ``device``."""
        ...

    def eval_batches(self, rank: int, world: int, device: torch.device,
                     batch_size: int = 500) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This process's share (every world-th image) of the test split, in fixed order."""
        ...


def is_image_file(name: str) -> bool:
    """Whether a file in an ImageFolder tree is one of its images: the rule of both readers (in
    memory and streamed). An image suffix in any case; hidden files (``.DS_Store``, macOS's ``._x.jpg``)
    and anything else (a README, a label list) are not images."""
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES


def epoch_order(seed: int, epoch: int, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The order of the ``n`` training images in ``epoch`` for ``seed``: a pure function of the three,
    so models of one seed see the same batches and a resumed run needs no RNG state."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g).to(device)


def decode_image(blob: bytes, where: str, size: int | None = None) -> np.ndarray:
    """An encoded image (PNG, JPEG...) as H x W x 3 uint8, resized to ``size`` x ``size`` if given;
    ``DataError`` naming ``where`` if it cannot be decoded."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(blob)) as im:
            rgb = im.convert("RGB")
            if size is not None and rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
            return np.asarray(rgb)
    except Exception as err:
        raise DataError(f"cannot decode image {where}: {err}") from err


def stack_images(images: list[np.ndarray], where: str) -> torch.Tensor:
    """Decoded H x W x 3 images as one uint8 (N, 3, H, W) tensor; refused, naming ``where``, when
    their sizes differ."""
    sizes = {im.shape for im in images}
    if len(sizes) != 1:
        raise DataError(f"{where} holds images of several sizes {sorted(sizes)}; expected one size")
    return torch.from_numpy(np.stack(images).transpose(0, 3, 1, 2).copy())
