"""What every image source shares: CIFAR's facts, the error, decoding, stacking, the epoch order,
the dataset interface the trainer reads through (``ImageDataset``) and its in-memory form (``ImageData``).

``data`` (CIFAR in its formats, ImageFolder trees), ``synthetic`` (the toy and the stand-in),
``hub`` (the Hugging Face parquet copy) and ``stream`` (ImageFolder read from disk in loader
workers) stand on this module and not on each other's insides.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from .files import tensors_sha256

if TYPE_CHECKING:  # typing.Self is Python 3.11+; the package supports 3.10
    from typing_extensions import Self

DATASETS = ("cifar10", "cifar100")
MEAN_STD = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
}
# (classes, train images per class, test images per class): what a complete copy holds, whatever
# its source; a damaged archive can end early (tarfile takes a bad header for the end) and look fine.
EXPECTED_COUNTS = {"cifar10": (10, 5000, 1000), "cifar100": (100, 500, 100)}
# CIFAR-10's class names in label order (for copies that do not carry them, and the stand-in).
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# Files an ImageFolder tree's readers take as images (the suffix compared lower-cased): see is_image_file.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

Batch = dict[int, tuple[torch.Tensor, torch.Tensor]]  # per seed: uint8 images (N, 3, H, W) and int64 labels
SPLITS = ("train_x", "train_y", "test_x", "test_y")  # an ImageData's tensors, in the order its digest reads them


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


def splits_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of a dataset's four tensors (``SPLITS``): an ImageData's identity and its cache's checksum."""
    return tensors_sha256(((key, tensors[key]) for key in SPLITS), layout=False)


@dataclass(frozen=True)
class ImageData:
    """A labelled image classification dataset held as tensors.

    Images are uint8 (N, 3, H, W); labels int64 (N,). ``mean``/``std`` are the per-channel
    normalization constants on the [0, 1] scale.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def n_train(self) -> int:
        return len(self.train_y)

    @property
    def n_test(self) -> int:
        return len(self.test_y)

    def to(self, device: str | torch.device) -> ImageData:
        return replace(self, **{k: getattr(self, k).to(device) for k in SPLITS})

    def identity(self) -> str:
        """What the images are, wherever and in whatever format they were read: a sha256 of the
        tensors (labels included). Runs on other data never resume each other or share a report row."""
        return "sha256:" + splits_digest({k: getattr(self, k).cpu() for k in SPLITS})

    def train_batches(self, seeds: list[int], epoch: int, batch_size: int, rank: int, world: int,
                      device: torch.device) -> Iterator[Batch]:
        """See ``images.ImageDataset``: the images are indexed where they are held (on the device)."""
        orders = {s: epoch_order(s, epoch, self.n_train, self.train_y.device) for s in seeds}
        for step in range(self.n_train // batch_size):
            batch = {}
            for s in seeds:
                idx = orders[s][step * batch_size:(step + 1) * batch_size][rank::world]
                batch[s] = (self.train_x[idx].to(device), self.train_y[idx].to(device))
            yield batch

    def eval_batches(self, rank: int, world: int, device: torch.device,
                     batch_size: int = 500) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """See ``images.ImageDataset``."""
        x_all, y_all = self.test_x[rank::world], self.test_y[rank::world]
        for i in range(0, len(y_all), batch_size):
            yield x_all[i:i + batch_size].to(device), y_all[i:i + batch_size].to(device)

    def __repr__(self) -> str:
        return (
            f"ImageData({len(self.train_y)} train / {len(self.test_y)} test, {self.num_classes} classes, "
            f"{tuple(self.train_x.shape[1:])}, from {self.source})"
        )
