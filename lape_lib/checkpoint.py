"""Checkpoints written atomically and loaded safely; trained weights as safetensors.

A training checkpoint (``checkpoint.pt``) holds only tensors and plain values, so it loads
with ``torch.load(weights_only=True)``; it records the config it belongs to and is refused,
with the differing keys named, when resumed under another one. It also records a sha256 of
every tensor it holds: PyTorch's zip reader checks no tensor data, so a damaged file would
otherwise load (and train on) whatever bytes it finds. A restored tensor that is not finite
is refused too. Trained weights for sharing
(``*.safetensors``, fp16) carry the model's description in their metadata, so
``load_model(path)`` rebuilds the model without any code or pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .files import atomic_write, hash_tensor

FORMAT = 1


class CheckpointMismatchError(ValueError):
    """A checkpoint that cannot be resumed here: unreadable, corrupt, non-finite, or made under another configuration."""


def _leaves(obj: Any, prefix: str = ""):
    """Every leaf (tensor or plain value) in nested dicts/lists, with its path, in a fixed order."""
    if isinstance(obj, dict):
        for key in sorted(obj, key=str):
            yield from _leaves(obj[key], f"{prefix}/{key}")
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            yield from _leaves(item, f"{prefix}/{i}")
    else:
        yield prefix, obj


def _tensors(obj: Any, prefix: str = ""):
    """Every tensor in nested dicts/lists, with its path, in a fixed order."""
    return ((key, leaf) for key, leaf in _leaves(obj, prefix) if isinstance(leaf, torch.Tensor))


DIGEST_COVERS = "everything"  # since schema 2 of results: the epoch, wall time and histories too, not only tensors


def payload_digest(state: dict[str, Any], everything: bool = True) -> str:
    """sha256 over every tensor's path, dtype, shape and bytes in ``state`` and (``everything``)
    every plain value's path, type and repr: the epoch to resume from, the histories, the sources."""
    h = hashlib.sha256()
    for key, leaf in _leaves(state):
        if isinstance(leaf, torch.Tensor):
            hash_tensor(h, key, leaf)
        elif everything:
            h.update(f"{key}|{type(leaf).__name__}|{leaf!r}|".encode())
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any], fingerprint: dict[str, Any]) -> None:
    """Write ``state`` (tensors and plain values) with its config fingerprint, atomically."""
    payload = {"format": FORMAT, "fingerprint": json.dumps(fingerprint, sort_keys=True), **state}
    payload["digest"] = payload_digest(state)
    payload["digest_covers"] = DIGEST_COVERS
    atomic_write(Path(path), lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | os.PathLike, fingerprint: dict[str, Any] | None, device: str | torch.device = "cpu",
                    defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load a checkpoint safely; with ``fingerprint``, refuse one made under another config.

    A setting the checkpoint does not record (one added to the config in a later version) is
    taken to have its value in ``defaults``, so checkpoints survive an upgrade that adds options.
    """
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:
        raise CheckpointMismatchError(f"cannot read checkpoint {path} ({err}); delete it to start afresh") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointMismatchError(f"{path} is not a lape_lib checkpoint of format {FORMAT}")
    digest = state.pop("digest", None)  # checkpoints written before the digest existed have none
    covers = state.pop("digest_covers", "tensors")  # older digests cover the tensors only
    body = {k: v for k, v in state.items() if k not in ("format", "fingerprint")}
    if digest is not None and payload_digest(body, everything=covers == DIGEST_COVERS) != digest:
        raise CheckpointMismatchError(
            f"{path} is corrupt: its content does not match the checksum written with it (a damaged, edited or "
            "partly overwritten file). Delete it to start afresh, or restore it from a copy."
        )
    bad = next((key for key, t in _tensors(body) if t.is_floating_point() and not torch.isfinite(t).all()), None)
    if bad is not None:
        raise CheckpointMismatchError(f"{path} holds non-finite values in {bad.lstrip('/')}; it cannot be resumed. "
                                      "Delete it to start afresh.")
    if fingerprint is not None:
        saved = {**json.loads(json.dumps(defaults or {}, sort_keys=True)), **json.loads(state["fingerprint"])}
        expected = json.loads(json.dumps(fingerprint, sort_keys=True))
        if saved != expected:
            keys = sorted(k for k in set(saved) | set(expected) if saved.get(k) != expected.get(k))
            diffs = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {expected.get(k)!r}" for k in keys)
            raise CheckpointMismatchError(
                f"{path} belongs to another configuration ({diffs}). Use another output folder, or delete it to start afresh."
            )
    return state


def save_weights(path: str | os.PathLike, model: nn.Module, description: dict[str, Any]) -> None:
    """Save a model's floating-point weights as fp16 safetensors, with ``description`` as metadata."""
    from safetensors.torch import save_file

    tensors = {k: (v.half() if v.is_floating_point() else v).contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata={"lape_model": json.dumps(description)}))


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Rebuild a model saved by ``save_weights`` (float32, eval mode)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from .models import from_description

    with safe_open(str(path), "pt") as f:
        meta = json.loads((f.metadata() or {}).get("lape_model", "null"))
    if not meta:
        raise ValueError(f"{path} has no lape_model metadata; it was not written by lape_lib.save_weights")
    model = from_description(meta)
    model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return model.to(device).eval()
