"""Data: every layout, checksums, subsets, the cache, the toy set."""

from __future__ import annotations

import io
import os
import pickle
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lape_lib.data as data_module
from lape_lib.data import DataError, balanced_indices, load_cifar, load_imagefolder, subset
from lape_lib.synthetic import make_position_toy

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg.tar.xz"
CLASSES = ("airplane", "automobile", "bird")


REAL_COUNTS = dict(data_module.EXPECTED_COUNTS)


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LAPE_SMOKE", "0")  # these test the loaders: no stand-in where a copy is missing
    monkeypatch.delenv("LAPE_DATA", raising=False)
    # The small copies these tests make are not complete CIFARs; tests of the count check set their own.
    monkeypatch.setattr(data_module, "EXPECTED_COUNTS", {})
    monkeypatch.setattr(data_module, "RETRY_WAIT_S", 0.0)


def png_bytes(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), value, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def make_imagefolder(root: Path, per_class: int = 4) -> Path:
    for split in ("train", "test"):
        for c, name in enumerate(CLASSES):
            folder = root / "cifar10" / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                (folder / f"{i:04d}.png").write_bytes(png_bytes(10 * c + i))
    return root


def test_imagefolder_layout(tmp_path: Path) -> None:
    data = load_cifar("cifar10", make_imagefolder(tmp_path))
    assert data.classes == CLASSES
    assert data.train_x.shape == (12, 3, 32, 32) and data.train_x.dtype == torch.uint8
    assert data.train_y.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert int(data.train_x[5, 0, 0, 0]) == 11  # class 1, image 1
    assert data.source.startswith("imagefolder:")


def test_archive_layout_and_cache(tmp_path: Path) -> None:
    make_imagefolder(tmp_path / "src")
    archive = tmp_path / "cifar10-mini.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tmp_path / "src" / "cifar10", arcname="cifar10")
    first = load_cifar("cifar10", archive)
    assert first.source.startswith("archive:")
    second = load_cifar("cifar10", archive)
    assert "cached in" in second.source
    torch.testing.assert_close(first.train_x, second.train_x)
    assert list((tmp_path / "cache").glob("*.safetensors"))


def test_env_var_names_the_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAPE_DATA", str(make_imagefolder(tmp_path)))
    assert load_cifar().classes == CLASSES


def write_torchvision_layout(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 255, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list("abcdefghij")}))
    return folder


def test_torchvision_layout_refused_before_unpickling_when_md5_differs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_torchvision_layout(tmp_path)
    unpickled = []
    monkeypatch.setattr(pickle, "load", lambda *a, **k: unpickled.append(1))
    with pytest.raises(DataError, match="md5"):
        load_cifar("cifar10", tmp_path)
    assert not unpickled


def test_torchvision_layout_loads_when_checksums_match(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision import datasets
    from torchvision.datasets.utils import calculate_md5

    folder = write_torchvision_layout(tmp_path)
    # Point torchvision's published md5 list at our synthetic files: the reading path is real.
    monkeypatch.setattr(datasets.CIFAR10, "train_list", [[f"data_batch_{i}", calculate_md5(str(folder / f"data_batch_{i}"))] for i in range(1, 6)])
    monkeypatch.setattr(datasets.CIFAR10, "test_list", [["test_batch", calculate_md5(str(folder / "test_batch"))]])
    monkeypatch.setitem(datasets.CIFAR10.meta, "md5", calculate_md5(str(folder / "batches.meta")))
    data = load_cifar("cifar10", tmp_path)
    assert data.train_x.shape == (20, 3, 32, 32) and data.test_x.shape == (4, 3, 32, 32)
    assert data.classes == tuple("abcdefghij")


def test_missing_data_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_cifar("cifar10", tmp_path)
    assert str(tmp_path) in str(err.value) and "download=True" in str(err.value)


def test_unknown_dataset() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        load_cifar("mnist")


def test_known_archive_with_wrong_checksum_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "cifar10-jpeg.tar.xz"
    bad.write_bytes(b"not the real archive")
    with pytest.raises(DataError, match="corrupt"):
        load_cifar("cifar10", bad)


def test_truncated_archive(tmp_path: Path) -> None:
    make_imagefolder(tmp_path / "src")
    archive = tmp_path / "cifar10-mini.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tmp_path / "src" / "cifar10", arcname="cifar10")
    archive.write_bytes(archive.read_bytes()[:3000])
    with pytest.raises(DataError):
        load_cifar("cifar10", archive)


def test_balanced_subset() -> None:
    labels = torch.arange(10).repeat_interleave(50)
    idx = balanced_indices(labels, 30, seed=1)
    assert len(idx) == 30 and len(set(idx.tolist())) == 30
    assert labels[idx].bincount().tolist() == [3] * 10
    assert not torch.equal(idx, balanced_indices(labels, 30, seed=2))
    torch.testing.assert_close(idx, balanced_indices(labels, 30, seed=1))
    with pytest.raises(ValueError, match="subset of 600"):
        balanced_indices(labels, 600, seed=0)


def test_toy_is_deterministic_and_position_only() -> None:
    a, b = make_position_toy(40, 10, seed=3), make_position_toy(40, 10, seed=3)
    torch.testing.assert_close(a.train_x, b.train_x)
    assert a.num_classes == 4 and a.train_x.shape == (40, 3, 32, 32)
    # The marker (the brightest 4x4 patch) lies in the labelled quadrant.
    for x, y in zip(a.train_x, a.train_y):
        patches = x.float().mean(0).unfold(0, 4, 4).unfold(1, 4, 4).mean((-1, -2))
        r, c = divmod(int(patches.argmax()), 8)
        assert (r // 4) * 2 + (c // 4) == int(y)


@pytest.mark.skipif(not SHARED.exists(), reason="the offline CIFAR-10 copy is not beside this checkout")
def test_offline_cifar10_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_module, "EXPECTED_COUNTS", REAL_COUNTS)  # the real copy passes the real check
    data = load_cifar("cifar10", SHARED, n_train=500, n_test=100, seed=0)
    assert data.classes[0] == "airplane" and data.classes[-1] == "truck"
    assert data.train_x.shape == (500, 3, 32, 32)
    assert data.train_y.bincount().tolist() == [50] * 10
    assert data.test_y.bincount().tolist() == [10] * 10
    full = subset(data, None, None)
    assert full is data
    assert 0.3 < data.train_x.float().div(255).mean() < 0.7
    assert os.path.basename(str(SHARED)) in data.source


def test_download_uses_the_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision import datasets

    urls = []

    def fake_download(self) -> None:  # record where torchvision would fetch from; no network here
        urls.append(self.url)
        raise RuntimeError("offline")

    monkeypatch.setattr(datasets.CIFAR10, "download", fake_download)
    monkeypatch.setenv("LAPE_CIFAR_MIRROR", "https://mirror.example/cifar/")
    with pytest.raises(DataError):
        load_cifar("cifar10", tmp_path, download=True)
    assert urls == ["https://mirror.example/cifar/cifar-10-python.tar.gz"] * data_module.DOWNLOAD_TRIES


def mini_archive(tmp_path: Path, suffix: str = ".tar") -> Path:
    make_imagefolder(tmp_path / "src")
    archive = tmp_path / f"cifar10-mini{suffix}"
    with tarfile.open(archive, "w:xz" if suffix == ".tar.xz" else "w") as tar:
        tar.add(tmp_path / "src" / "cifar10", arcname="cifar10")
    return archive


def test_per_class_counts_are_checked_whatever_the_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_module, "EXPECTED_COUNTS", {"cifar10": (3, 4, 4)})
    assert load_cifar("cifar10", make_imagefolder(tmp_path / "ok"), cache=False).n_train == 12
    short = make_imagefolder(tmp_path / "short")
    (short / "cifar10" / "test" / "bird" / "0003.png").unlink()
    with pytest.raises(DataError, match="is corrupt or incomplete: test class 'bird' has 3 images, expected 4"):
        load_cifar("cifar10", short, cache=False)
    monkeypatch.setattr(data_module, "EXPECTED_COUNTS", {"cifar10": (10, 4, 4)})
    with pytest.raises(DataError, match="has 3 classes; cifar10 has 10"):
        load_cifar("cifar10", make_imagefolder(tmp_path / "three"), cache=False)


def test_a_damaged_compressed_archive_is_called_corrupt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_module, "EXPECTED_COUNTS", {"cifar10": (3, 4, 4)})
    archive = mini_archive(tmp_path, ".tar.xz")
    good = archive.read_bytes()
    for at in (len(good) // 3, len(good) // 2, 2 * len(good) // 3):
        damaged = bytearray(good)
        damaged[at] ^= 0x10
        archive.write_bytes(bytes(damaged))
        with pytest.raises(DataError, match=r"cifar10-mini.tar.xz.*(corrupt|incomplete)"):
            load_cifar("cifar10", archive, cache=False)


def test_an_image_that_will_not_decode_marks_the_archive_corrupt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The path a flipped bit in a compressed archive usually takes (the stream's CRC is checked
    # only at a block's end), made deterministic: one member's PNG is cut short.
    monkeypatch.setattr(data_module, "EXPECTED_COUNTS", {"cifar10": (3, 4, 4)})
    src = make_imagefolder(tmp_path / "src")
    png = src / "cifar10" / "test" / "bird" / "0001.png"
    png.write_bytes(png.read_bytes()[:40])
    archive = tmp_path / "cifar10-cut.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(src / "cifar10", arcname="cifar10")
    with pytest.raises(DataError, match=r"cannot decode image cifar10/test/bird/0001.png in .*cifar10-cut.tar.*"
                                        r"The archive .*cifar10-cut.tar is corrupt or holds a damaged image"):
        load_cifar("cifar10", archive, cache=False)


def test_an_edited_cache_is_not_trusted(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    archive = mini_archive(tmp_path)
    first = load_cifar("cifar10", archive)
    (cached,) = (tmp_path / "cache").glob("*.safetensors")
    with safe_open(str(cached), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(cached))
    tensors["train_y"][0] = 99  # labels edited inside the cache, checksum left as it was
    save_file(tensors, str(cached), metadata=meta)
    with pytest.warns(UserWarning, match="ignoring the decoded-image cache .* does not match the checksum"):
        again = load_cifar("cifar10", archive)
    assert "cached in" not in again.source
    torch.testing.assert_close(again.train_y, first.train_y)


def test_an_unwritable_cache_is_skipped_with_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    monkeypatch.setenv("LAPE_CACHE", str(blocker / "cache"))
    with pytest.warns(UserWarning, match="could not write the decoded-image cache"):
        data = load_cifar("cifar10", mini_archive(tmp_path))
    assert data.n_train == 12 and blocker.read_text() == "x"


def test_an_imagefolder_image_rewritten_at_the_same_size_is_not_served_stale(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path)
    before = load_cifar("cifar10", root)
    image = root / "cifar10" / "train" / "automobile" / "0001.png"  # value 11, train index 5
    size, mtime = image.stat().st_size, image.stat().st_mtime_ns
    value = next(v for v in range(12, 256) if len(png_bytes(v)) == size)  # the same size, other pixels
    image.write_bytes(png_bytes(value))
    os.utime(image, ns=(mtime + 10**9, mtime + 10**9))  # a later write, even on a coarse clock
    after = load_cifar("cifar10", root)
    assert int(before.train_x[5, 0, 0, 0]) == 11 and int(after.train_x[5, 0, 0, 0]) == value


def test_an_offline_download_is_a_data_error_naming_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import urllib.error

    from torchvision import datasets

    def offline(self) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(datasets.CIFAR10, "download", offline)
    with pytest.raises(DataError, match=rf"could not load cifar10 under {re.escape(str(tmp_path))}: .*name resolution"):
        load_cifar("cifar10", tmp_path, download=True)


def test_an_image_rewritten_with_its_modification_time_restored_is_not_served_stale(tmp_path: Path) -> None:
    """#21: same size and mtime set back (rsync -t, a restore): the change time still moves."""
    root = make_imagefolder(tmp_path)
    before = load_cifar("cifar10", root)
    image = root / "cifar10" / "train" / "automobile" / "0001.png"
    size, mtime = image.stat().st_size, image.stat().st_mtime_ns
    value = next(v for v in range(12, 256) if len(png_bytes(v)) == size)
    image.write_bytes(png_bytes(value))
    os.utime(image, ns=(mtime, mtime))  # the old modification time, exactly
    after = load_cifar("cifar10", root)
    assert int(before.train_x[5, 0, 0, 0]) == 11 and int(after.train_x[5, 0, 0, 0]) == value


def test_imagefolder_resizes_and_labels(tmp_path: Path) -> None:
    from test_stream import make_tree

    data = load_imagefolder(make_tree(tmp_path), img_size=16)
    assert data.train_x.shape == (16, 3, 16, 16) and data.test_x.shape == (8, 3, 16, 16)
    assert data.classes == ("cat", "dog") and data.train_y.tolist() == [0] * 8 + [1] * 8
    with pytest.raises(DataError, match="not an ImageFolder tree"):
        load_imagefolder(tmp_path / "train", img_size=16)


def test_both_imagefolder_readers_take_the_same_files(tmp_path: Path) -> None:
    """One rule for which files are images, in memory and streamed: stray files (a hidden .DS_Store,
    macOS's ._ copies, a README) are skipped by both, and an upper-case .PNG is read by both."""
    from test_stream import make_tree

    from lape_lib.images import is_image_file
    from lape_lib.stream import open_imagefolder

    tree = make_tree(tmp_path / "tree")
    for stray in ("train/cat/.DS_Store", "train/cat/._0.jpg", "train/dog/README.txt", "val/cat/labels.csv"):
        (tree / stray).write_bytes(b"not an image")
    Image.fromarray(np.zeros((20, 24, 3), dtype=np.uint8)).save(tree / "train" / "dog" / "EXTRA.PNG")
    held = load_imagefolder(tree, img_size=16)
    streamed = open_imagefolder(tree, img_size=16, workers=0)
    assert (held.n_train, held.n_test) == (streamed.n_train, streamed.n_test) == (17, 8)
    (tree / "test" / "cat").mkdir(parents=True)  # a test/ beside val/: both readers evaluate on val/ alone
    Image.fromarray(np.zeros((20, 24, 3), dtype=np.uint8)).save(tree / "test" / "cat" / "t.jpg")
    assert load_imagefolder(tree, img_size=16).n_test == open_imagefolder(tree, img_size=16, workers=0).n_test == 8
    assert [is_image_file(n) for n in ("a.jpg", "b.JPEG", "c.webp", ".DS_Store", "._a.jpg", "notes.txt")] == [
        True, True, True, False, False, False]
