"""Checkpoints (lape_lib.checkpoint): a damaged, edited, non-finite or incomplete one is refused, never trained on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_train import tiny

from lape_lib.checkpoint import CheckpointMismatchError, load_checkpoint, save_checkpoint
from lape_lib.train import train


def test_a_damaged_checkpoint_is_refused_not_trained_on(tmp_path: Path) -> None:
    cfg = tiny(epochs=2, warmup_epochs=0, cooldown_epochs=0, out_dir=str(tmp_path))
    train(cfg, stop_after_epochs=1)
    ckpt = tmp_path / "checkpoint.pt"
    blob = bytearray(ckpt.read_bytes())
    state = torch.load(ckpt, weights_only=True)
    first = next(iter(state["arms"].values()))["model"]["cls_token"].numpy().tobytes()
    at = bytes(blob).find(first[:16])  # the first values of a tensor, inside the zip
    assert at > 0
    blob[at:at + 16] = b"\xff" * 16  # same size, a different payload
    ckpt.write_bytes(bytes(blob))
    with pytest.raises(CheckpointMismatchError, match="is corrupt: its content does not match the checksum"):
        train(cfg)


def test_non_finite_tensors_in_a_checkpoint_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"epoch": 1, "arms": {"a": {"model": {"w": torch.tensor([1.0, float("inf")])}}}}, {"x": 1})
    with pytest.raises(CheckpointMismatchError, match="non-finite values in arms/a/model/w"):
        load_checkpoint(path, {"x": 1})


def test_a_checkpoint_edited_outside_its_tensors_is_refused(tmp_path: Path) -> None:
    """The digest covers the epoch to resume from and the histories, not only the weights."""
    train(tiny(epochs=2, warmup_epochs=0, cooldown_epochs=0, out_dir=str(tmp_path)), stop_after_epochs=1)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    state["epoch"] = 2  # "resume" past an epoch never trained
    torch.save(state, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointMismatchError, match="is corrupt: its content does not match the checksum"):
        train(tiny(epochs=2, warmup_epochs=0, cooldown_epochs=0, out_dir=str(tmp_path)))


def test_a_checkpoint_without_arms_is_named_not_a_key_error(tmp_path: Path) -> None:
    cfg = tiny(epochs=2, warmup_epochs=0, cooldown_epochs=0, out_dir=str(tmp_path))
    train(cfg, stop_after_epochs=1)
    state = load_checkpoint(tmp_path / "checkpoint.pt", None)
    fingerprint = json.loads(state["fingerprint"])
    save_checkpoint(tmp_path / "checkpoint.pt", {"epoch": 1, "wall_s": 0.0}, fingerprint)
    with pytest.raises(CheckpointMismatchError, match=r"lacks arms: it is not a snapshot of this run"):
        train(cfg)
