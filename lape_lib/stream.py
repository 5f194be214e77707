"""ImageNet-scale ImageFolder trees read from disk in DataLoader workers.

ImageNet-1K at 224 px does not fit in memory as uint8 tensors, so for it the workers decode
each JPEG and take DeiT's random resized crop (train) or resize + centre crop (eval), bicubic
as DeiT's, and the
device does the rest of the recipe on the batch (flip, RandAugment, erasing, mixup/cutmix),
as for CIFAR. Batches follow the same (seed, epoch) order as the in-memory path, and each
sample's crop comes from a generator seeded by (seed, epoch, index), so a run gives the same
batches for any number of workers and resumes exactly.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from .augment import derive_seed
from .data import IMAGENET_MEAN_STD, balanced_indices, imagefolder_splits
from .images import IMAGE_SUFFIXES, Batch, DataError, epoch_order, is_image_file

EVAL_CROP_FRACTION = 0.875  # DeiT: resize to img_size / 0.875, then a centre crop of img_size


class FolderSplit(Dataset):
    """One split (``train``, ``val`` or ``test``) of a ``<split>/<class>/<image>`` tree.

    Items are uint8 (3, img_size, img_size) tensors and int labels. ``train=True`` takes a
    random resized crop with scale ``crop_scale`` (aspect 3/4 to 4/3, as torchvision's); with a
    key (index, seed, epoch) it is drawn from a generator seeded by (seed, epoch, index), and a
    plain int key stands for seed 0, epoch 0. ``crop_scale=None`` resizes the whole image instead.
    ``train=False`` takes DeiT's eval transform. Every resize is bicubic, as DeiT's.
    """

    def __init__(self, folder: Path, classes: tuple[str, ...], img_size: int, train: bool,
                 crop_scale: tuple[float, float] | None = (0.08, 1.0)) -> None:
        from torchvision.transforms import InterpolationMode, v2

        BICUBIC = InterpolationMode.BICUBIC

        self.samples = sorted(
            (str(p), classes.index(p.parent.name)) for p in folder.glob("*/*")
            if is_image_file(p.name) and p.parent.name in classes
        )
        if not self.samples:
            raise DataError(f"{folder} holds no images under <class>/ (looked for {', '.join(IMAGE_SUFFIXES[:5])})")
        self.random_crop = train and crop_scale is not None
        if self.random_crop:
            self.transform = v2.RandomResizedCrop(img_size, scale=crop_scale, interpolation=BICUBIC, antialias=True)
        elif train:
            self.transform = v2.Resize((img_size, img_size), interpolation=BICUBIC, antialias=True)
        else:
            self.transform = v2.Compose([v2.Resize(int(img_size / EVAL_CROP_FRACTION), interpolation=BICUBIC, antialias=True),
                                         v2.CenterCrop(img_size)])

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([y for _, y in self.samples], dtype=torch.int64)

    def restrict(self, indices: torch.Tensor) -> None:
        self.samples = [self.samples[int(i)] for i in indices]

    def __getitem__(self, key: int | tuple[int, int, int]) -> tuple[torch.Tensor, int]:
        from PIL import Image, UnidentifiedImageError
        from torchvision.transforms.v2.functional import pil_to_tensor

        i, seed, epoch = key if isinstance(key, tuple) else (key, 0, 0)
        path, label = self.samples[i]
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
        except (UnidentifiedImageError, OSError) as err:
            raise DataError(f"cannot decode image {path}: {err}; remove or replace the file") from err
        if self.random_crop:
            # fork_rng: the crop draws from a per-sample seed without touching the trainer's RNG.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(seed, epoch, i))
                img = self.transform(img)
        else:
            img = self.transform(img)
        return pil_to_tensor(img), label


@dataclass
class StreamingImageFolder:
    """A ``train/`` + ``val/`` (or ``test/``) tree read lazily; the trainer's stand-in for ``ImageData``."""

    train: FolderSplit
    test: FolderSplit
    classes: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str
    workers: int

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def identity(self) -> str:
        """What the tree holds, without reading every image: a sha256 of each split's files
        (path below the split, size, label). A streamed run's counterpart of ``ImageData.identity``."""
        h = hashlib.sha256()
        for split in (self.train, self.test):
            for path, label in split.samples:
                p = Path(path)
                h.update(f"{p.parent.name}/{p.name}\t{p.stat().st_size}\t{label}\n".encode())
            h.update(b"--\n")
        return "files-sha256:" + h.hexdigest()

    @property
    def n_train(self) -> int:
        return len(self.train)

    @property
    def n_test(self) -> int:
        return len(self.test)

    def train_batches(self, seeds: list[int], epoch: int, batch_size: int, rank: int, world: int,
                      device: torch.device) -> Iterator[Batch]:
        """See ``images.ImageDataset``: the order stays on the host, where the loader's workers read
        and crop the images; the batches move to ``device`` as they arrive."""
        streams = [self.seed_batches(s, epoch, epoch_order(s, epoch, self.n_train), batch_size, rank, world) for s in seeds]
        for items in zip(*streams):
            yield {s: (x.to(device, non_blocking=True), y.to(device, non_blocking=True)) for s, (x, y) in zip(seeds, items)}

    def seed_batches(self, seed: int, epoch: int, order: torch.Tensor, batch_size: int, rank: int, world: int
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One seed's share of each global batch of ``order`` (drop_last), as uint8 images and labels on the host."""
        order = order.cpu()
        steps = len(order) // batch_size
        batches = [[(i, seed, epoch) for i in order[s * batch_size:(s + 1) * batch_size][rank::world].tolist()]
                   for s in range(steps)]
        return iter(self._loader(self.train, batches))

    def eval_batches(self, rank: int, world: int, device: torch.device,
                     batch_size: int = 500) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """See ``images.ImageDataset``."""
        mine = list(range(rank, len(self.test), world))
        for x, y in self._loader(self.test, [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]):
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    def _loader(self, split: FolderSplit, batches: list[list[Any]]) -> DataLoader:
        # Its own generator: the loader's base seed (unused, every crop is seeded per sample) is then
        # not drawn from the trainer's global RNG.
        return DataLoader(split, batch_sampler=batches, num_workers=self.workers, pin_memory=torch.cuda.is_available(),
                          prefetch_factor=4 if self.workers else None, generator=torch.Generator().manual_seed(0))

    def to(self, device: str | torch.device) -> StreamingImageFolder:
        return self  # images stay on disk; batches move to the device as they are used


def open_imagefolder(root: str | os.PathLike, img_size: int, *, crop_scale: tuple[float, float] | None = (0.08, 1.0),
                     n_train: int | None = None, n_test: int | None = None, workers: int = 8, seed: int = 0
                     ) -> StreamingImageFolder:
    """Index a ``train/<class>/*`` + ``val/<class>/*`` (or ``test/``) tree without reading its images.

    ``n_train``/``n_test`` keep class-balanced random subsets, as ``load_cifar`` does.
    """
    folder, test_dir = imagefolder_splits(root)
    classes = tuple(sorted(p.name for p in (folder / "train").iterdir() if p.is_dir()))
    train = FolderSplit(folder / "train", classes, img_size, train=True, crop_scale=crop_scale)
    test = FolderSplit(test_dir, classes, img_size, train=False)
    for split, n, offset in ((train, n_train, 0), (test, n_test, 1)):
        if n is not None:
            split.restrict(balanced_indices(split.labels, n, seed + offset))
    mean, std = IMAGENET_MEAN_STD
    return StreamingImageFolder(train, test, classes, mean, std, f"imagefolder-stream:{folder}", workers)
