"""Position embeddings (lape_lib.pos_embed): sinusoids laid out in 2-D, fixed ones frozen."""

from __future__ import annotations

import pytest
import torch

from lape_lib import create_model


@pytest.mark.parametrize("pe", ["sin1d", "sin2d"])
def test_fixed_pe_is_frozen_and_not_saved(pe: str) -> None:
    model = create_model("vit_lite_7_4", pe=pe, join="lape")
    assert not any("pos_embed" in k for k in model.state_dict())
    assert not any("pos_embed" in n for n, _ in model.named_parameters())
    assert any("pe_norms" in n for n, _ in model.named_parameters())  # its PE LayerNorms still learn


def test_sin2d_class_token_row_is_zero_and_patch_rows_are_2d() -> None:
    P = create_model("vit_lite_7_4", pe="sin2d", join="add").pos_embed.weight[0]
    assert torch.all(P[0] == 0)
    grid = P[1:].reshape(8, 8, 256)
    # The first half of the channels depends on the column only, the second on the row only.
    torch.testing.assert_close(grid[0, :, :128], grid[5, :, :128])
    torch.testing.assert_close(grid[:, 0, 128:], grid[:, 3, 128:])
