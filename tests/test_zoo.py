"""trained_models: train a small pair once, save it, load it the next time."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lape_lib.zoo import trained_models


def test_trains_saves_then_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAPE_SMOKE", "1")  # the tiny fallback
    first, where = trained_models([None], cache=tmp_path)
    assert "trained just now" in where and set(first) == {"add", "lape"}
    second, where = trained_models([None], cache=tmp_path)
    assert where.startswith("loaded from") and "smoke" in where
    x = torch.randn(2, 3, 32, 32)
    for join in ("add", "lape"):
        torch.testing.assert_close(second[join](x), first[join](x), atol=2e-2, rtol=2e-2)  # saved as fp16
    assert second["lape"].join == "lape" and second["add"].pos_embed is not None


def test_notebook_02_is_looked_in_by_default_only_where_it_trains_the_class_preset(tmp_path: Path,
                                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from lape_lib.zoo import notebook_02_weights

    for gpu, expected in ((False, None), (True, tmp_path / "02_train")):
        monkeypatch.setattr("torch.cuda.is_available", lambda: gpu)
        assert notebook_02_weights(tmp_path) == expected  # a CPU's 02 run is too short for its PEs to move
        assert notebook_02_weights(tmp_path, use=True) == tmp_path / "02_train"  # what the learner sets wins
        assert notebook_02_weights(tmp_path, use=False) is None
