"""Models trained on a GPU reach the notebooks' CPU code safely (issue 22: two cells crashed on CUDA).

No GPU here, so the "other device" is ``meta``: a helper that forgets to move its inputs to the
model's device fails on it exactly as it would with a CUDA model and CPU images.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from lape_lib import create_model, zoo
from lape_lib.analysis import block_inputs, pe_share


@pytest.mark.parametrize("join", ["add", "lape"])
def test_helpers_move_cpu_images_to_the_models_device(join: str) -> None:
    model = create_model("vit_lite_7_4", join=join, depth=2, dim=32, num_heads=2).to("meta")
    images = torch.randn(2, 3, 32, 32)  # made on the CPU, as the notebooks make them
    xs = block_inputs(model, images)
    assert len(xs) == 2 and all(x.device.type == "meta" and x.shape == (2, 65, 32) for x in xs)
    with pytest.raises(RuntimeError, match="cannot be called on meta"):  # computed on meta, not refused for its device
        pe_share(model, images)


class _Trained(torch.nn.Module):
    """Stands in for a model the trainer left on a GPU: records being moved to the CPU."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 2)
        self.moved_to_cpu = False

    def cpu(self) -> Any:
        self.moved_to_cpu = True
        return super().cpu()


def test_trained_models_are_returned_on_the_cpu(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    made: dict[str, _Trained] = {}

    def fake_train(cfg: Any) -> dict[str, Any]:
        names = [f"learnable-{j}-s0" for j in cfg.joins]
        made.update({n: _Trained() for n in names})
        return {"arms": {n: {"final": {"test_acc": 50.0}} for n in names}, "models": dict(made)}

    monkeypatch.setattr(zoo, "train", fake_train)
    monkeypatch.setattr(zoo, "REPO_CHECKPOINTS", tmp_path / "none")
    models, where = zoo.trained_models([None])
    assert "trained just now" in where and set(models) == {"add", "lape"}
    assert all(m.moved_to_cpu and not m.training for m in models.values())  # type: ignore[attr-defined]
