"""CIFAR as uint8 tensors (decoded once, cached without pickle), and ImageFolder trees held in memory.

Where data is read from, in order: an explicit ``root``, else ``$LAPE_DATA``, else ``./data``,
the checkout's ``data/``, and ``../shared/data`` beside the checkout. Inside a root the loader
takes the first layout it finds (see ``_find_source``). With ``download=True`` and nothing
found, CIFAR is downloaded into the root: first the Hugging Face Hub's parquet copy (reported to
take seconds; see ``lape_lib.hub``), then, should that fail, torchvision's download of the original archive (its
host is reported to be slow, an hour or more; not measured here). Each source gets a second try. Every load
says where it read from (``ImageData.source``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from . import hub
from .files import atomic_write, sha256_file
from .images import (DATASETS, EXPECTED_COUNTS, MEAN_STD, SPLITS, DataError, ImageData, decode_image, is_image_file,
                     splits_digest, stack_images)
from .notebook import smoke_mode
from .synthetic import make_standin

# Archives whose contents we know: a mismatch means a corrupt or different file.
KNOWN_SHA256 = {"cifar10-jpeg.tar.xz": "f7453856acd3811d8bb9297c414e1d265bfe85aaec7b1460a37e9b44e8077808"}
_ARCHIVE_SUFFIXES = (".tar", ".tar.xz", ".tar.gz", ".tgz")
_TORCHVISION_DIRS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
_REPO = Path(__file__).resolve().parents[1]
MIRROR_ENV = "LAPE_CIFAR_MIRROR"  # a base URL that serves cifar-10-python.tar.gz / cifar-100-python.tar.gz
DOWNLOAD_TRIES = 2  # per source
RETRY_WAIT_S = 5.0


def default_roots() -> list[Path]:
    """The places searched when no root is given (``$LAPE_DATA`` alone when it is set)."""
    env = os.environ.get("LAPE_DATA")
    if env:
        return [Path(env).expanduser()]
    roots = [Path.cwd() / "data", _REPO / "data", _REPO.parent / "shared" / "data"]
    return list(dict.fromkeys(r.resolve() for r in roots))


def download_root() -> Path:
    """Where a download goes when no root is given: ``$LAPE_DATA``, else the checkout's ``data/``
    when lape_lib runs from a checkout (whatever the working folder: a notebook's is
    ``notebooks/``), else ``./data``."""
    env = os.environ.get("LAPE_DATA")
    if env:
        return Path(env).expanduser()
    return _REPO / "data" if (_REPO / "pyproject.toml").is_file() else Path.cwd() / "data"


def cache_dir() -> Path:
    return Path(os.environ.get("LAPE_CACHE", Path.home() / ".cache" / "lape")).expanduser()


def load_cifar(
    name: str = "cifar10", root: str | os.PathLike | None = None, *, download: bool = False,
    n_train: int | None = None, n_test: int | None = None, seed: int = 0, cache: bool = True,
) -> ImageData:
    """Load CIFAR-10 or CIFAR-100 as uint8 tensors.

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        root: a folder (or an archive file) to read from; ``None`` searches ``default_roots()``.
        download: when no copy is found, download one into the root (Colab's path): the Hugging
            Face Hub's parquet copy, else torchvision's download of the original.
        n_train, n_test: class-balanced random subsets of that size (``None``: everything).
        seed: the subset draw.
        cache: keep decoded tensors in ``cache_dir()`` as safetensors.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS} (or 'toy' in the trainer)")
    roots = [Path(root).expanduser()] if root is not None else default_roots()
    found = next((s for r in roots if (s := _find_source(name, r)) is not None), None)
    if found is None and smoke_mode():
        # Smoke mode never waits on a download (the original host is reported to take an hour; tests
        # have no network): a fresh clone without ../shared still runs every notebook, on labelled stand-in data.
        return subset(make_standin(name), n_train, n_test, seed)
    if found is None:
        if not download:
            raise DataError(
                f"no {name} found in {[str(r) for r in roots]}. Looked for {_layouts(name)}. Give a data root "
                "that holds one (root= in Python, data_root in a notebook, --data-root for python -m lape_lib.train, "
                "--root for python -m lape_lib.data)"
                + ("" if root is not None else ", or set LAPE_DATA to one")
                + ", or turn on download (download=True / --download): the Hugging Face Hub, else the original host."
            )
        target = (roots[0] if roots[0].suffix == "" else roots[0].parent) if root is not None else download_root()
        data = _download(name, target, cache, root_given=root is not None)
    else:
        data = _load_source(name, *found, cache=cache)
    return subset(data, n_train, n_test, seed)


def _layouts(name: str) -> str:
    """The layouts of ``name`` that ``_find_source`` takes, for error messages."""
    return (f"{_TORCHVISION_DIRS[name]}/ (torchvision's), {hub.folder_for(name, Path()).name}/ (a finished Hub download), "
            f"an ImageFolder train/<class>/ with test/<class>/ (in the root or in {name}/), or an archive of one "
            f"(named {name}*.tar, .tar.xz, .tar.gz or .tgz in the root, or given as the root itself)")


def _download(name: str, target: Path, cache: bool, root_given: bool = True) -> ImageData:
    """Download ``name`` into ``target`` and load it: the Hub, then torchvision, each tried
    ``DOWNLOAD_TRIES`` times; a copy that fails its checks counts as a failed try. The error,
    when all fail, names every source and what each said."""
    def from_hub() -> ImageData:
        folder = hub.fetch(name, target)
        try:
            return _load_source(name, "hub", folder, cache=cache)
        except DataError:  # a bad copy is never kept: the next try downloads it afresh
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def from_torchvision() -> ImageData:
        _torchvision_split(name, target, train=True, download=True)
        return _load_source(name, "torchvision", target / _TORCHVISION_DIRS[name], cache=cache)

    sources = ((f"the Hugging Face Hub ({hub.HUB_REPOS[name]} at {hub.revision()})", from_hub),
               (f"torchvision ({os.environ.get(MIRROR_ENV) or 'the original host'})", from_torchvision))
    failures = []
    for label, attempt in sources:
        for i in range(1, DOWNLOAD_TRIES + 1):
            try:
                return attempt()
            except Exception as err:  # network stacks raise many kinds; every one means: try again, then the next source
                failures.append(f"{label}, try {i}: {type(err).__name__}: {err}")
                print(f"could not download {name} from {label} (try {i} of {DOWNLOAD_TRIES}): {type(err).__name__}: {err}")
                if i < DOWNLOAD_TRIES:
                    time.sleep(RETRY_WAIT_S)
    raise DataError(
        f"could not download {name} into {target}. Tried:\n  " + "\n  ".join(failures) +
        f"\nOffline? Copy {name} into {target}" + ("" if root_given else " (or set LAPE_DATA to a folder holding it)")
        + f" as {_layouts(name)}."
    )


def _find_source(name: str, root: Path) -> tuple[str, Path] | None:
    if root.is_file():
        return ("archive", root) if root.name.endswith(_ARCHIVE_SUFFIXES) else None
    if (root / _TORCHVISION_DIRS[name]).is_dir():
        return "torchvision", root / _TORCHVISION_DIRS[name]
    if (hub.folder_for(name, root) / hub.MARKER).is_file():  # written last: a finished download
        return "hub", hub.folder_for(name, root)
    for folder in (root / name, root):
        if (folder / "train").is_dir() and (folder / "test").is_dir():
            return "imagefolder", folder
    if root.is_dir():
        # Archives are named cifar10*.tar[.xz]; cifar10 must not match cifar100's.
        archives = sorted(
            p for p in root.iterdir()
            if p.name.startswith(name) and p.name.endswith(_ARCHIVE_SUFFIXES) and not p.name[len(name):][:1].isdigit()
        )
        if archives:
            return "archive", archives[0]
    return None


def check_counts(name: str, data: ImageData, where: str) -> None:
    """Refuse a copy of ``name`` that is not complete: image shape, labels, and images per class
    in each split (``EXPECTED_COUNTS``), naming ``where`` and the first mismatch."""
    if name not in EXPECTED_COUNTS:
        return
    n_classes, per_train, per_test = EXPECTED_COUNTS[name]
    if len(data.classes) != n_classes:
        raise DataError(f"{where} has {len(data.classes)} classes; {name} has {n_classes}. The copy is corrupt or not {name}")
    for split, x, y, per in (("train", data.train_x, data.train_y, per_train), ("test", data.test_x, data.test_y, per_test)):
        if tuple(x.shape[1:]) != (3, 32, 32) or x.dtype != torch.uint8 or len(x) != len(y):
            raise DataError(f"{where}: {split} images of shape {tuple(x.shape)} ({x.dtype}); expected N x 3 x 32 x 32 uint8")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= n_classes):
            raise DataError(f"{where}: {split} labels outside 0..{n_classes - 1}; the copy is corrupt")
        counts = torch.bincount(y, minlength=n_classes)
        bad = [(data.classes[c], int(counts[c])) for c in range(n_classes) if int(counts[c]) != per]
        if bad:
            raise DataError(f"{where} is corrupt or incomplete: {split} class {bad[0][0]!r} has {bad[0][1]} images, "
                            f"expected {per} (and {len(bad) - 1} more classes are off). Copy it again from its source.")


def _load_source(name: str, kind: str, path: Path, cache: bool) -> ImageData:
    key = _source_key(name, kind, path)
    cached = cache_dir() / f"{name}-{kind}-{key[:16]}.safetensors"
    if cache and cached.is_file():
        try:
            data = _read_cache(cached, name, f"{_describe(name, kind, path)} (cached in {cached})")
            check_counts(name, data, str(cached))
            return data
        except Exception as err:  # a truncated or edited cache is rebuilt, never trusted
            warnings.warn(f"ignoring the decoded-image cache {cached} ({err}); decoding {path} again", stacklevel=2)
            cached.unlink(missing_ok=True)
    if kind == "torchvision":
        train = _torchvision_split(name, path.parent, train=True, download=False)
        test = _torchvision_split(name, path.parent, train=False, download=False)
        classes = tuple(train[2])
        arrays = (train[0], train[1], test[0], test[1])
    elif kind == "hub":
        arrays, classes = hub.read(name, path)
    else:
        arrays, classes = _read_imagefolder(path) if kind == "imagefolder" else _read_archive(path)
    data = ImageData(*arrays, classes=classes, mean=MEAN_STD[name][0], std=MEAN_STD[name][1], source=_describe(name, kind, path))
    check_counts(name, data, str(path))
    if cache:
        _write_cache(cached, data)
    return data


def _describe(name: str, kind: str, path: Path) -> str:
    if kind == "hub":
        info = hub.marker(path, name)
        return f"hub:{info['repo']}@{info['revision']} ({path})"
    return f"{kind}:{path}"


def _source_key(name: str, kind: str, path: Path) -> str:
    if kind == "archive":
        digest = sha256_file(path)
        expected = KNOWN_SHA256.get(path.name)
        if expected is not None and digest != expected:
            raise DataError(
                f"{path} is corrupt or not the expected file: sha256 {digest}, expected {expected}. "
                "Copy it again from its source."
            )
        return digest
    if kind == "imagefolder":
        # Modification and change times too: an image rewritten at the same size must not be served stale,
        # even with its modification time set back (a write always moves ctime, which no user can set).
        listing = sorted((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_ctime_ns)
                         for p in path.rglob("*") if p.is_file())
        return hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    if kind == "hub":
        info = hub.marker(path, name)  # checked as a whole: every file read is hashed
        for f, expected in info["sha256"].items():
            digest = sha256_file(path / f) if (path / f).is_file() else "missing"
            if digest != expected:
                raise DataError(f"{path / f} is corrupt or changed since it was downloaded: sha256 {digest}, expected "
                                f"{expected} (from {path / hub.MARKER}). Delete {path} and download again.")
        return hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()
    return hashlib.sha256(str(path.resolve()).encode()).hexdigest()  # torchvision checks its own md5s


def _torchvision_split(name: str, root: Path, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    mirror = os.environ.get(MIRROR_ENV)
    if download and mirror:  # same archive from a faster host; torchvision still checks its md5
        cls = type(cls.__name__, (cls,), {"url": f"{mirror.rstrip('/')}/{cls.filename}"})
    if download:
        print(f"downloading {name} from {cls.url} into {root} (set {MIRROR_ENV} to use a faster mirror)")
    try:
        # torchvision verifies each file's published md5 before it unpickles anything.
        ds = cls(str(root), train=train, download=download)
    except (RuntimeError, OSError) as err:  # OSError: urllib's URLError when the host cannot be reached
        raise DataError(
            f"could not load {name} under {root}: {err}. A file that fails torchvision's md5 check is corrupt: "
            f"delete {root / _TORCHVISION_DIRS[name]} and download again (a failed download: check the network "
            f"or set {MIRROR_ENV}), or read another copy (another data root, or LAPE_DATA where no root is given)."
        ) from err
    x = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
    return x, torch.tensor(ds.targets, dtype=torch.int64), list(ds.classes)


def _stack(items: dict[str, list[tuple[str, str, np.ndarray]]], classes: tuple[str, ...], where: Path):
    out = []
    for split in ("train", "test"):
        rows = sorted(items[split], key=lambda r: (r[0], r[1]))
        if not rows:
            raise DataError(f"{where} has no {split}/<class>/ images: it is not laid out as <split>/<class>/<image>, "
                            "or it is corrupt or incomplete")
        unknown = sorted({r[0] for r in rows} - set(classes))
        if unknown:  # a renamed folder, or a damaged archive's garbled member name
            raise DataError(f"{where} is corrupt or incomplete: {split} has class folder {unknown[0]!r}, which train/ "
                            f"lacks (train has {', '.join(classes)}). Copy it again from its source.")
        x = stack_images([r[2] for r in rows], str(where))
        y = torch.tensor([classes.index(r[0]) for r in rows], dtype=torch.int64)
        out += [x, y]
    return tuple(out)


EVAL_SPLITS = ("test", "val")  # folder names read as the test split of a CIFAR tree or archive


def _split_class(parts: tuple[str, ...], eval_splits: tuple[str, ...] = EVAL_SPLITS) -> tuple[str, str] | None:
    """(split, class) of a file's path parts: ``train`` or one of ``eval_splits`` (read as the test split)."""
    for i, part in enumerate(parts[:-2]):
        if part == "train" or part in eval_splits:
            return "train" if part == "train" else "test", parts[i + 1]
    return None


def _read_imagefolder(folder: Path, size: int | None = None, eval_splits: tuple[str, ...] = EVAL_SPLITS):
    items: dict[str, list] = {"train": [], "test": []}
    for path in sorted(folder.glob("*/*/*")):
        where = _split_class(path.relative_to(folder).parts, eval_splits)
        if where is None or not path.is_file() or not is_image_file(path.name):
            continue
        items[where[0]].append((where[1], path.name, decode_image(path.read_bytes(), str(path), size)))
    classes = tuple(sorted({r[0] for r in items["train"]}))
    return _stack(items, classes, folder), classes


def _read_archive(path: Path):
    items: dict[str, list] = {"train": [], "test": []}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                where = _split_class(tuple(Path(member.name).parts))
                if where is None or not member.isfile() or not is_image_file(Path(member.name).name):
                    continue
                blob = tar.extractfile(member).read()  # type: ignore[union-attr]
                items[where[0]].append((where[1], Path(member.name).name, decode_image(blob, f"{member.name} in {path}")))
            # tarfile stops at the end-of-archive marker; reading on to the stream's end makes
            # gzip and xz check their CRC, which covers the bytes tarfile never looked at.
            while tar.fileobj is not None and tar.fileobj.read(1 << 20):
                pass
    except DataError as err:
        # A compressed stream checks its CRC only at a block's end, so a flipped bit usually
        # surfaces first as an image that will not decode: either way the archive is damaged.
        raise DataError(f"{err}. The archive {path} is corrupt or holds a damaged image; copy it again") from err
    except Exception as err:  # tarfile, lzma, zlib and bz2 each raise their own kind on a damaged file
        detail = " ".join(str(err).split())  # tarfile's message spans lines, one per method tried
        raise DataError(f"{path} is corrupt or truncated: cannot read it as an archive ({type(err).__name__}: {detail}); "
                        "copy it again") from err
    classes = tuple(sorted({r[0] for r in items["train"]}))
    return _stack(items, classes, path), classes


def _write_cache(path: Path, data: ImageData) -> None:
    """Write the decoded tensors with a sha256 of their content; the cache is only an
    optimisation, so a failure (an unwritable folder, a full disk) warns and leaves no temp file."""
    from safetensors.torch import save_file

    tensors = {k: getattr(data, k).contiguous() for k in SPLITS}
    meta = {"classes": json.dumps(data.classes), "sha256": splits_digest(tensors)}
    try:
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    except OSError as err:
        warnings.warn(f"could not write the decoded-image cache {path} ({err.strerror or err}); "
                      f"going on without it (set LAPE_CACHE to a writable folder to keep one)", stacklevel=2)


def _read_cache(path: Path, name: str, source: str) -> ImageData:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        classes = tuple(json.loads(meta["classes"]))
    t = load_file(str(path))
    if splits_digest(t) != meta.get("sha256"):
        raise DataError(f"{path}: its content does not match the checksum written with it")
    mean, std = MEAN_STD[name]
    return ImageData(t["train_x"], t["train_y"], t["test_x"], t["test_y"], classes, mean, std, source)


def balanced_indices(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` indices drawn at random, as evenly over the classes as ``n`` allows."""
    if n > len(labels):
        raise ValueError(f"subset of {n} asked from a split of {len(labels)}")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=g)
    shuffled = labels[order]
    # Rank of each sample within its class, in shuffled order; take the lowest ranks first.
    rank = torch.zeros_like(shuffled)
    for c in shuffled.unique():
        mask = shuffled == c
        rank[mask] = torch.arange(int(mask.sum()))
    chosen = order[torch.argsort(rank * len(labels) + torch.arange(len(labels)), stable=True)[:n]]
    return chosen.sort().values


def subset(data: ImageData, n_train: int | None, n_test: int | None, seed: int = 0) -> ImageData:
    """Class-balanced random subsets of the train and test splits (``None`` keeps a split whole)."""
    out = data
    if n_train is not None:
        idx = balanced_indices(data.train_y, n_train, seed)
        out = replace(out, train_x=data.train_x[idx], train_y=data.train_y[idx])
    if n_test is not None:
        idx = balanced_indices(data.test_y, n_test, seed + 1)
        out = replace(out, test_x=data.test_x[idx], test_y=data.test_y[idx])
    return out


IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def imagefolder_splits(root: str | os.PathLike) -> tuple[Path, Path]:
    """The tree's folder and its evaluation split (``val/``, else ``test/``); ``DataError`` if it is no such tree."""
    folder = Path(root).expanduser()
    test_dir = folder / "val" if (folder / "val").is_dir() else folder / "test"
    if not ((folder / "train").is_dir() and test_dir.is_dir()):
        raise DataError(f"{folder} is not an ImageFolder tree: expected train/<class>/ and val/<class>/ (or test/<class>/)")
    return folder, test_dir


def load_imagefolder(root: str | os.PathLike, img_size: int, *, n_train: int | None = None, n_test: int | None = None,
                     seed: int = 0) -> ImageData:
    """Any ``train/<class>/*`` + ``val/<class>/*`` (or ``test/``) tree, resized to ``img_size`` squares, in memory.
    Its test split is ``val/`` where there is one, else ``test/`` (as the streamed loader's).

    Meant for small ImageNet-style sets (a subset, Imagenette, a generated test tree): the
    decoded images are held as uint8 tensors, which full ImageNet-1K at 224 px does not fit.
    """
    folder, test_dir = imagefolder_splits(root)
    (x_train, y_train, x_test, y_test), classes = _read_imagefolder(folder, img_size, eval_splits=(test_dir.name,))
    mean, std = IMAGENET_MEAN_STD
    data = ImageData(x_train, y_train, x_test, y_test, classes=classes, mean=mean, std=std, source=f"imagefolder:{folder}")
    return subset(data, n_train, n_test, seed)


def main(argv: list[str] | None = None) -> None:
    """``python -m lape_lib.data cifar100 --download``: fetch (or find) a dataset ahead of a class
    and print where it was read from; the decoded cache makes every later load fast."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lape_lib.data", description=main.__doc__)
    parser.add_argument("name", choices=DATASETS)
    parser.add_argument("--root", help="a folder or archive to read (and download into); default: the search order")
    parser.add_argument("--download", action="store_true", help="download when no copy is found (the Hub, else the original host)")
    args = parser.parse_args(argv)
    try:
        print(load_cifar(args.name, args.root, download=args.download))
    except DataError as err:
        raise SystemExit(f"error: {err}") from err


if __name__ == "__main__":
    main()
