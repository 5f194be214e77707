"""CIFAR from the Hugging Face Hub, tested offline: small parquet files made here with the Hub's
schema (PNG cells, ClassLabel names in the schema metadata), served by a fake Hub client."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import lape_lib.data as data_module
import lape_lib.hub as hub
from lape_lib.data import DataError, load_cifar

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

CLASSES = ("airplane", "automobile", "bird")
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LAPE_SMOKE", "0")  # smoke mode reads a stand-in instead of downloading: these test the downloads
    monkeypatch.delenv("LAPE_DATA", raising=False)
    monkeypatch.delenv(hub.HUB_REVISION_ENV, raising=False)
    monkeypatch.setattr(data_module, "EXPECTED_COUNTS", {"cifar10": (3, 4, 2), "cifar100": (3, 4, 2)})
    monkeypatch.setattr(data_module, "RETRY_WAIT_S", 0.0)


def image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def write_split(path: Path, labels: list[int], label_column: str = "label", names: tuple[str, ...] | None = CLASSES,
                seed: int = 0) -> list[np.ndarray]:
    """A parquet file laid out as the Hub's CIFAR: img {bytes, path}, an int label, ClassLabel names."""
    pixels = [image(seed + i) for i in range(len(labels))]
    table = pa.table({
        "img": pa.array([{"bytes": png(p), "path": None} for p in pixels],
                        type=pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        label_column: pa.array(labels, type=pa.int64()),
    })
    if names is not None:
        features = {"img": {"_type": "Image"}, label_column: {"names": list(names), "_type": "ClassLabel"}}
        table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return pixels


def make_repo(root: Path, folder: str = "plain_text", label_column: str = "label",
              names: tuple[str, ...] | None = CLASSES, train_per_class: int = 4) -> dict[str, list[np.ndarray]]:
    """The files of a fake Hub repository under ``root``: train 4 per class, test 2 per class."""
    train = [c for c in range(3) for _ in range(train_per_class)]
    test = [c for c in range(3) for _ in range(2)]
    return {
        "train": write_split(root / folder / "train-00000-of-00001.parquet", train, label_column, names, seed=0),
        "test": write_split(root / folder / "test-00000-of-00001.parquet", test, label_column, names, seed=1000),
    }


class FakeHub:
    """Stands in for huggingface_hub: serves files from a folder, records what was asked."""

    def __init__(self, repo_root: Path, monkeypatch: pytest.MonkeyPatch, fail: int = 0, stated: dict[str, str] | None = None,
                 unstated: tuple[str, ...] = ()):
        self.root, self.fail, self.calls, self.stated, self.unstated = repo_root, fail, [], stated or {}, unstated
        import huggingface_hub

        monkeypatch.setattr(huggingface_hub, "HfApi", lambda: self)
        monkeypatch.setattr(huggingface_hub, "hf_hub_download", self.download)

    def dataset_info(self, repo: str, revision: str, files_metadata: bool = False) -> SimpleNamespace:
        self.calls.append(("info", repo, revision))
        if self.fail:
            self.fail -= 1
            raise ConnectionError("[Errno -2] Name or service not known")
        files = sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file())
        files.append("README.md")
        siblings = [SimpleNamespace(rfilename=f, lfs=self.lfs(f) if f.endswith(".parquet") and f not in self.unstated
                                    else None) for f in files]
        return SimpleNamespace(sha=COMMIT, siblings=siblings)

    def lfs(self, filename: str):
        """What the Hub states of a large file (huggingface_hub's own type), its sha256 overridable."""
        from huggingface_hub.hf_api import BlobLfsInfo

        path = self.root / filename
        return BlobLfsInfo(size=path.stat().st_size, sha256=self.stated.get(filename, sha(path)), pointer_size=134)

    def download(self, repo: str, filename: str, *, repo_type: str, revision: str, local_dir: Path) -> str:
        self.calls.append(("download", repo, filename, repo_type, revision))
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.root / filename, target)
        return str(target)


def no_torchvision(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(*args: object, **kwargs: object) -> None:
        raise OSError("the original host cannot be reached")

    monkeypatch.setattr(data_module, "_torchvision_split", unreachable)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_split_files_finds_one_folders_shards() -> None:
    files = ["README.md", "plain_text/test-00000-of-00001.parquet", "plain_text/train-00001-of-00002.parquet",
             "plain_text/train-00000-of-00002.parquet"]
    assert hub.split_files(files) == {"train": ["plain_text/train-00000-of-00002.parquet",
                                                "plain_text/train-00001-of-00002.parquet"],
                                      "test": ["plain_text/test-00000-of-00001.parquet"]}
    with pytest.raises(hub.HubError, match="no parquet files"):
        hub.split_files(["README.md", "cifar10.py"])
    with pytest.raises(hub.HubError, match="one folder"):  # two configurations: never mix them
        hub.split_files(files + ["other/train-00000-of-00001.parquet"])


def test_download_reads_the_hub_at_one_commit_lossless(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    pixels = make_repo(tmp_path / "repo")
    fake = FakeHub(tmp_path / "repo", monkeypatch)
    data = load_cifar("cifar10", tmp_path / "data", download=True)

    assert fake.calls[0] == ("info", "uoft-cs/cifar10", "main")
    assert {c[4] for c in fake.calls if c[0] == "download"} == {COMMIT}  # every file at the resolved commit
    assert data.classes == CLASSES and data.n_train == 12 and data.n_test == 6
    assert torch.equal(data.train_x[5], torch.from_numpy(pixels["train"][5]).permute(2, 0, 1))  # PNG: lossless
    assert torch.equal(data.test_y, torch.tensor([0, 0, 1, 1, 2, 2]))
    assert data.source.startswith(f"hub:uoft-cs/cifar10@{COMMIT}")
    assert "Hugging Face Hub: uoft-cs/cifar10 at main" in capsys.readouterr().out
    marker = json.loads((tmp_path / "data" / "cifar10-hf" / hub.MARKER).read_text())
    assert marker["revision"] == COMMIT and len(marker["sha256"]) == 2

    # A second load reads the folder it wrote (no Hub), then the decoded cache.
    calls = len(fake.calls)
    again = load_cifar("cifar10", tmp_path / "data", download=True)
    assert len(fake.calls) == calls and torch.equal(again.train_x, data.train_x)
    assert "cached in" in load_cifar("cifar10", tmp_path / "data").source


def test_revision_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_repo(tmp_path / "repo")
    fake = FakeHub(tmp_path / "repo", monkeypatch)
    monkeypatch.setenv(hub.HUB_REVISION_ENV, "refs/convert/parquet")
    load_cifar("cifar10", tmp_path / "data", download=True)
    assert fake.calls[0] == ("info", "uoft-cs/cifar10", "refs/convert/parquet")


def test_cifar100_uses_its_fine_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = ("apple", "aquarium_fish", "baby")
    make_repo(tmp_path / "repo", folder="cifar100", label_column="fine_label", names=names)
    fake = FakeHub(tmp_path / "repo", monkeypatch)
    data = load_cifar("cifar100", tmp_path / "data", download=True)
    assert fake.calls[0][1] == "uoft-cs/cifar100"
    assert data.classes == names and data.train_y.bincount().tolist() == [4, 4, 4]
    assert data.mean == data_module.MEAN_STD["cifar100"][0]


def test_cifar10_without_label_names_gets_the_standard_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_repo(tmp_path / "repo", names=None)
    FakeHub(tmp_path / "repo", monkeypatch)
    monkeypatch.setattr(data_module, "EXPECTED_COUNTS", {})
    assert load_cifar("cifar10", tmp_path / "data", download=True).classes == hub.CIFAR10_CLASSES


def test_a_failed_try_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_repo(tmp_path / "repo")
    fake = FakeHub(tmp_path / "repo", monkeypatch, fail=1)
    data = load_cifar("cifar10", tmp_path / "data", download=True)
    assert [c[0] for c in fake.calls[:2]] == ["info", "info"] and data.n_train == 12


def test_hub_down_falls_back_to_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision import datasets

    make_repo(tmp_path / "repo")
    FakeHub(tmp_path / "repo", monkeypatch, fail=99)
    fetched = []

    def torchvision_download(self) -> None:  # lay out what torchvision's download would leave
        fetched.append(self.url)
        folder = Path(self.root) / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)

    def torchvision_load(name, root, train, download):
        if download:
            torchvision_download(SimpleNamespace(url=datasets.CIFAR10.url, root=root))
        labels = [c for c in range(3) for _ in range(4 if train else 2)]
        return torch.zeros(len(labels), 3, 32, 32, dtype=torch.uint8), torch.tensor(labels), list(CLASSES)

    monkeypatch.setattr(data_module, "_torchvision_split", torchvision_load)
    data = load_cifar("cifar10", tmp_path / "data", download=True)
    assert fetched == [datasets.CIFAR10.url] and data.source.startswith("torchvision:")


def test_offline_the_error_names_every_source(tmp_path: Path) -> None:
    # HF_HUB_OFFLINE (conftest) makes the real client fail at once; torchvision's download is
    # made to fail the way an unreachable host does.
    import urllib.error

    from torchvision import datasets

    def offline(self) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(datasets.CIFAR10, "download", offline)
        with pytest.raises(DataError) as err:
            load_cifar("cifar10", tmp_path / "data", download=True)
    message = str(err.value)
    for part in ("Hub (uoft-cs/cifar10 at main), try 1", "Hub (uoft-cs/cifar10 at main), try 2", "torchvision (the original host), try 2",
                 "name resolution", f"Copy cifar10 into {tmp_path / 'data'} as cifar-10-batches-py/ (torchvision's), "
                 "cifar10-hf/ (a finished Hub download), an ImageFolder train/<class>/ with test/<class>/ (in the root or "
                 "in cifar10/)"):
        assert part in message, part
    assert "(or set LAPE_DATA" not in message  # a root was given: LAPE_DATA would not be read


def test_a_hub_copy_with_wrong_counts_is_not_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_repo(tmp_path / "repo", train_per_class=3)  # one image short per class
    FakeHub(tmp_path / "repo", monkeypatch)
    no_torchvision(monkeypatch)
    with pytest.raises(DataError, match=r"train class 'airplane' has 3 images, expected 4"):
        load_cifar("cifar10", tmp_path / "data", download=True)
    assert not (tmp_path / "data" / "cifar10-hf").exists()  # never taken for a copy later


def test_a_download_that_differs_from_the_hubs_checksum_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_repo(tmp_path / "repo")
    FakeHub(tmp_path / "repo", monkeypatch, stated={"plain_text/test-00000-of-00001.parquet": "0" * 64})
    no_torchvision(monkeypatch)
    with pytest.raises(DataError, match="but the Hub states 0000"):
        load_cifar("cifar10", tmp_path / "data", download=True)


def test_a_file_the_hub_states_no_checksum_for_is_recorded_and_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture) -> None:
    make_repo(tmp_path / "repo")
    shard = "plain_text/test-00000-of-00001.parquet"
    FakeHub(tmp_path / "repo", monkeypatch, unstated=(shard,))
    load_cifar("cifar10", tmp_path / "data", download=True, cache=False)
    digest = sha(tmp_path / "repo" / shard)
    assert f"the Hub states no sha256 for uoft-cs/cifar10/{shard} at {COMMIT}: its sha256 {digest} is recorded, not checked" \
        in capsys.readouterr().out
    assert json.loads((tmp_path / "data" / "cifar10-hf" / "hub.json").read_text())["sha256"][shard] == digest
    assert "states no sha256 for uoft-cs/cifar10/plain_text/train" not in capsys.readouterr().out


def test_a_fetched_file_changed_later_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_repo(tmp_path / "repo")
    FakeHub(tmp_path / "repo", monkeypatch)
    load_cifar("cifar10", tmp_path / "data", download=True, cache=False)
    shard = tmp_path / "data" / "cifar10-hf" / "plain_text" / "test-00000-of-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"corrupt or changed since it was downloaded.*Delete .*cifar10-hf"):
        load_cifar("cifar10", tmp_path / "data")


def test_a_half_finished_download_is_not_a_copy(tmp_path: Path) -> None:
    make_repo(tmp_path / "data" / "cifar10-hf")  # the files, but no hub.json: the download never finished
    with pytest.raises(DataError, match="no cifar10 found"):
        load_cifar("cifar10", tmp_path / "data")


def test_unknown_columns_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_repo(tmp_path / "repo", label_column="target")
    FakeHub(tmp_path / "repo", monkeypatch)
    no_torchvision(monkeypatch)
    with pytest.raises(DataError, match=r"no label column \(looked for \['label'\]; the file has \['img', 'target'\]\)"):
        load_cifar("cifar10", tmp_path / "data", download=True)


def test_the_command_line_fetches_and_says_where_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    make_repo(tmp_path / "repo")
    FakeHub(tmp_path / "repo", monkeypatch)
    data_module.main(["cifar10", "--root", str(tmp_path / "data"), "--download"])
    assert f"from hub:uoft-cs/cifar10@{COMMIT}" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"error: no cifar100 found.* cifar-100-python/ \(torchvision's\).*--root for python -m lape_lib.data"):
        data_module.main(["cifar100", "--root", str(tmp_path / "data")])


def _edit(marker: dict, how: str) -> dict | str:
    shard = "plain_text/test-00000-of-00001.parquet"
    if how == "no sha256":
        return {**marker, "sha256": {}}
    if how == "one sha256 missing":
        return {**marker, "sha256": {k: v for k, v in marker["sha256"].items() if k != shard}}
    if how == "outside the folder":
        return {**marker, "splits": {**marker["splits"], "test": ["../../test-00000-of-00001.parquet"]},
                "sha256": {**marker["sha256"], "../../test-00000-of-00001.parquet": "0" * 64}}
    if how == "another repository":
        return {**marker, "repo": "someone/cifar10"}
    if how == "a branch, not a commit":
        return {**marker, "revision": "main"}
    if how == "a hash of a file not read":
        return {**marker, "sha256": {**marker["sha256"], "plain_text/extra.parquet": "0" * 64}}
    return "{not json"


@pytest.mark.parametrize(("how", "needle"), [
    ("no sha256", r"does not hash every file it reads \(without a sha256: \['plain_text/test-00000-of-00001.parquet', 'plain_text/train"),
    ("one sha256 missing", r"without a sha256: \['plain_text/test-00000-of-00001.parquet'\]"),
    ("outside the folder", r"names the file '\.\./\.\./test-00000-of-00001.parquet', which is not a train-/test- parquet shard inside"),
    ("another repository", r"names the repository 'someone/cifar10'; cifar10 comes from 'uoft-cs/cifar10'"),
    ("a branch, not a commit", r"names the revision 'main'; a download records the full 40-hex commit"),
    ("a hash of a file not read", r"hashed but not read: \['plain_text/extra.parquet'\]"),
    ("not json", r"hub.json cannot be read"),
])
def test_an_edited_hub_json_is_refused_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str, needle: str) -> None:
    """#21: a hub.json listing fewer hashes than files read (the labels of an unhashed file could be
    anything), a path out of the folder, or edited provenance is refused, naming what is wrong."""
    make_repo(tmp_path / "repo")
    FakeHub(tmp_path / "repo", monkeypatch)
    load_cifar("cifar10", tmp_path / "data", download=True, cache=False)
    path = tmp_path / "data" / "cifar10-hf" / hub.MARKER
    edited = _edit(json.loads(path.read_text()), how)
    path.write_text(edited if isinstance(edited, str) else json.dumps(edited))
    with pytest.raises(DataError, match=needle):
        load_cifar("cifar10", tmp_path / "data")


def test_float_labels_are_refused_not_truncated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_repo(tmp_path / "repo")
    shard = tmp_path / "repo" / "plain_text" / "test-00000-of-00001.parquet"
    table = pq.read_table(shard)
    labels = table.column("label").to_pylist()
    pq.write_table(table.set_column(1, "label", pa.array([v + 0.7 for v in labels], type=pa.float64())), shard)
    FakeHub(tmp_path / "repo", monkeypatch)
    no_torchvision(monkeypatch)
    with pytest.raises(DataError, match=r"the 'label' column holds double, not integer class indices"):
        load_cifar("cifar10", tmp_path / "data", download=True)
