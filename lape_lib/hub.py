"""CIFAR from the Hugging Face Hub's parquet copy, reported to take seconds where the original host takes an hour.

The Hub datasets ``uoft-cs/cifar10`` and ``uoft-cs/cifar100`` hold the same images as the original
archives, stored losslessly as PNG cells of parquet files (one file per split). ``fetch`` downloads
them into ``<root>/<name>-hf/`` and writes ``hub.json`` last, naming the repository, the exact
commit read and each file's sha256, so a half-finished download is never taken for a copy and a
copy edited later is refused. ``read`` decodes a fetched folder into uint8 tensors.

The revision: ``HUB_REVISION`` (``main`` unless ``$LAPE_HUB_REVISION`` names a commit, branch or
tag) is resolved to a commit once per download, and every file is fetched at that commit; the
commit goes into ``hub.json`` and the data's ``source``, so a run says which copy it read. The
content is then checked like any other copy: image count and shape, and images per class.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from .files import atomic_write, sha256_file
from .images import CIFAR10_CLASSES, DataError, decode_image, stack_images

HUB_REPOS = {"cifar10": "uoft-cs/cifar10", "cifar100": "uoft-cs/cifar100"}
HUB_REVISION_ENV = "LAPE_HUB_REVISION"
HUB_REVISION = "main"
MARKER = "hub.json"
# The columns the Hub's CIFAR parquet files use, in the order we look for them.
IMAGE_COLUMNS = ("img", "image")
LABEL_COLUMNS = {"cifar10": ("label",), "cifar100": ("fine_label", "label")}
_SHARD = re.compile(r"(^|/)(train|test)-\d+-of-\d+\.parquet$")


class HubError(DataError):
    """The Hub repository does not hold what we expect (no parquet splits, unknown columns)."""


def folder_for(name: str, root: Path) -> Path:
    return root / f"{name}-hf"


def revision() -> str:
    return os.environ.get(HUB_REVISION_ENV) or HUB_REVISION


def split_files(filenames: list[str]) -> dict[str, list[str]]:
    """The parquet shards of the train and test splits among a repository's files; one folder only
    (a repository with several configurations would otherwise mix them)."""
    splits: dict[str, list[str]] = {"train": [], "test": []}
    for f in sorted(filenames):
        m = _SHARD.search(f)
        if m:
            splits[m.group(2)].append(f)
    folders = {str(Path(f).parent) for files in splits.values() for f in files}
    if not splits["train"] or not splits["test"] or len(folders) != 1:
        raise HubError(f"expected train-*.parquet and test-*.parquet in one folder; the repository has "
                       f"{[f for f in filenames if f.endswith('.parquet')] or 'no parquet files'}")
    return splits


def fetch(name: str, root: Path) -> Path:
    """Download ``name``'s parquet files from the Hub into ``folder_for(name, root)``; returns it."""
    from huggingface_hub import HfApi, hf_hub_download

    repo, asked = HUB_REPOS[name], revision()
    info = HfApi().dataset_info(repo, revision=asked, files_metadata=True)
    commit = info.sha
    siblings = {s.rfilename: s for s in info.siblings or []}
    splits = split_files(list(siblings))
    folder = folder_for(name, root)
    print(f"downloading {name} from the Hugging Face Hub: {repo} at {asked} (commit {commit}) into {folder}")
    digests = {}
    for split, files in splits.items():
        for f in files:
            path = Path(hf_hub_download(repo, f, repo_type="dataset", revision=commit, local_dir=folder))
            digests[f] = sha256_file(path)
            stated = getattr(siblings[f].lfs, "sha256", None)  # the Hub states each large file's sha256: the download must match it
            if stated and stated != digests[f]:
                raise HubError(f"{path}: sha256 {digests[f]}, but the Hub states {stated} for {repo}/{f} at {commit}")
            if not stated:
                print(f"the Hub states no sha256 for {repo}/{f} at {commit}: its sha256 {digests[f]} is recorded, not checked")
    marker = {"repo": repo, "revision": commit, "asked": asked, "splits": splits, "sha256": digests}
    atomic_write(folder / MARKER, lambda tmp: tmp.write_text(json.dumps(marker, indent=1)))
    return folder


_HEX40, _HEX64 = re.compile(r"^[0-9a-f]{40}$"), re.compile(r"^[0-9a-f]{64}$")


def marker(folder: Path, name: str) -> dict[str, Any]:
    """``hub.json`` of a fetched folder, checked as a whole before anything trusts it: the
    repository is ``name``'s, the revision a full commit, every file the splits name lies inside
    the folder and has a sha256, and no sha256 names a file the splits do not read. Refused with
    a DataError naming the file and what is wrong (a copy edited by hand is not a download)."""
    path = folder / MARKER
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{path} cannot be read ({err}); delete {folder} and download again") from None

    def bad(what: str) -> DataError:
        return DataError(f"{path} {what}; it was not written by a finished download. Delete {folder} and download again.")

    if not isinstance(info, dict):
        raise bad(f"holds a {type(info).__name__}, not the download's record")
    if info.get("repo") != HUB_REPOS[name]:
        raise bad(f"names the repository {info.get('repo')!r}; {name} comes from {HUB_REPOS[name]!r}")
    if not isinstance(info.get("revision"), str) or not _HEX40.match(info["revision"]):
        raise bad(f"names the revision {info.get('revision')!r}; a download records the full 40-hex commit it read")
    splits, digests = info.get("splits"), info.get("sha256")
    if not isinstance(splits, dict) or set(splits) != {"train", "test"} or not all(
            isinstance(files, list) and files and all(isinstance(f, str) for f in files) for files in splits.values()):
        raise bad(f"has splits {splits!r}; expected lists of files under 'train' and 'test'")
    if not isinstance(digests, dict) or not all(isinstance(d, str) and _HEX64.match(d) for d in digests.values()):
        raise bad("has no sha256 table of 64-hex digests")
    read = [f for files in splits.values() for f in files]
    for f in read:
        inside = (folder / f).resolve().is_relative_to(folder.resolve())
        if Path(f).is_absolute() or not inside or not _SHARD.search(f):
            raise bad(f"names the file {f!r}, which is not a train-/test- parquet shard inside the folder")
    if set(read) != set(digests):
        unhashed, extra = sorted(set(read) - set(digests)), sorted(set(digests) - set(read))
        raise bad(f"does not hash every file it reads (without a sha256: {unhashed}; hashed but not read: {extra})")
    return info


def _column(names: list[str], wanted: tuple[str, ...], what: str, where: Path) -> str:
    found = next((c for c in wanted if c in names), None)
    if found is None:
        raise HubError(f"{where}: no {what} column (looked for {list(wanted)}; the file has {names})")
    return found


def _class_names(schema_metadata: dict[bytes, bytes] | None, label: str, name: str, where: Path) -> tuple[str, ...]:
    """The label names the Hub stores in the parquet schema (datasets' ClassLabel feature)."""
    try:
        features = json.loads((schema_metadata or {})[b"huggingface"])["info"]["features"]
        return tuple(features[label]["names"])
    except (KeyError, TypeError, ValueError):
        if name == "cifar10":
            return CIFAR10_CLASSES
        raise HubError(f"{where} does not name its classes (no ClassLabel names in the parquet metadata)") from None


Arrays = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def read(name: str, folder: Path) -> tuple[Arrays, tuple[str, ...]]:
    """Decode a fetched folder: ((train_x, train_y, test_x, test_y), classes). The caller checks the
    sha256s first (``data._source_key``) and the counts after."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    info = marker(folder, name)
    arrays: list[torch.Tensor] = []
    classes: tuple[str, ...] = ()
    for split in ("train", "test"):
        xs, ys = [], []
        for f in info["splits"][split]:
            path = folder / f
            schema = pq.read_schema(path)
            image = _column(schema.names, IMAGE_COLUMNS, "image", path)
            label = _column(schema.names, LABEL_COLUMNS[name], "label", path)
            label_type = schema.field(label).type
            if not pa.types.is_integer(label_type):  # a float label would be truncated to a class silently
                raise HubError(f"{path}: the {label!r} column holds {label_type}, not integer class indices")
            classes = classes or _class_names(schema.metadata, label, name, path)
            table = pq.read_table(path, columns=[image, label])
            cells = table.column(image).to_pylist()
            for i, cell in enumerate(cells):
                blob = cell["bytes"] if isinstance(cell, dict) else cell
                xs.append(decode_image(blob, f"row {i} of {path}"))
            ys.extend(table.column(label).to_pylist())
        arrays.append(stack_images(xs, f"{folder} ({split})"))
        arrays.append(torch.tensor(ys, dtype=torch.int64))
    train_x, train_y, test_x, test_y = arrays
    return (train_x, train_y, test_x, test_y), classes
