"""What each layer sees of the position embedding (lape_lib.analysis): per-layer PEs, the affine split, the PE's share."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_models import randomize_norms

from lape_lib import create_model, pe_similarity, per_layer_pe
from lape_lib.analysis import affine_split, lambda_coefficients


def test_per_layer_pe_of_the_controls() -> None:
    torch.manual_seed(0)
    shared = create_model("vit_lite_7_4", join="lape_shared")
    randomize_norms(shared)
    pes = per_layer_pe(shared)
    expected = shared.pe_norms[0](shared.pos_embed.weight)[0, 1:]
    for layer in pes:
        torch.testing.assert_close(layer, expected)  # one normalized PE, the same in every layer
    normed = create_model("vit_lite_7_4", join="add_norm")
    randomize_norms(normed)
    p = normed.pe_norms[0](normed.pos_embed.weight)[0]
    torch.testing.assert_close(per_layer_pe(normed, include_class_token=True)[3], normed.blocks[3].norm1(p))


def test_per_layer_pe_add_is_token_layernorm_of_P() -> None:
    model = create_model("vit_lite_7_4", join="add")
    randomize_norms(model)
    pes = per_layer_pe(model, include_class_token=True)
    P = model.pos_embed.weight[0]
    assert pes.shape == (7, 65, 256)
    for l, block in enumerate(model.blocks):
        norm = block.norm1
        expected = norm.weight * F.layer_norm(P, (256,), eps=norm.eps) + norm.bias
        torch.testing.assert_close(pes[l], expected)
    assert not torch.allclose(pes[0], pes[1])


def test_per_layer_pe_names_what_it_takes() -> None:
    with pytest.raises(TypeError, match="per_layer_pe takes a lape_lib VisionTransformer .* got Linear"):
        per_layer_pe(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("join", ["lape", "lape_parallel"])
def test_per_layer_pe_lape_chain(join: str) -> None:
    model = create_model("cct_7_3x1", join=join)
    randomize_norms(model)
    pes = per_layer_pe(model)
    assert pes.shape == (7, 256, 256)  # 16x16 grid, no class token in CCT
    prev = model.pos_embed.weight[0]
    for l, norm in enumerate(model.pe_norms):
        expected = norm(prev)
        torch.testing.assert_close(pes[l], expected)
        if join == "lape":
            prev = expected  # chained: layer l normalizes layer l-1's PE


def test_per_layer_pe_drops_class_token_by_default() -> None:
    model = create_model("vit_lite_7_4", join="lape")
    assert per_layer_pe(model).shape == (7, 64, 256)
    sim = pe_similarity(per_layer_pe(model))
    assert sim.shape == (7, 64, 64)
    torch.testing.assert_close(torch.diagonal(sim, dim1=1, dim2=2), torch.ones(7, 64))


def test_affine_identity() -> None:
    torch.manual_seed(0)
    norm = torch.nn.LayerNorm(64)
    randomize_norms(norm)
    x, p = 3 * torch.randn(10, 64) + 1, torch.randn(10, 64)
    split = affine_split(norm, x, p)
    torch.testing.assert_close(split.token + split.pe, norm(x + p))
    lam = lambda_coefficients(x, p)
    eq7 = lam["lambda1"][:, None] * F.layer_norm(x, (64,)) + lam["lambda2"][:, None] * F.layer_norm(p, (64,))
    torch.testing.assert_close(F.layer_norm(x + p, (64,)), eq7, atol=1e-4, rtol=1e-4)


def test_pe_share_is_lambda2_under_add_and_unit_scale_under_the_normed_joins() -> None:
    from lape_lib.analysis import pe_share

    images = torch.randn(4, 3, 32, 32)
    torch.manual_seed(0)
    add = create_model("vit_lite_7_4", join="add", depth=2)
    share = pe_share(add, images)
    x0 = torch.cat([add.cls_token.expand(4, -1, -1), add.tokenizer(images)], dim=1)
    lam = lambda_coefficients(x0.detach(), add.pos_embed.weight.detach().expand_as(x0))  # σ_p/σ_z: the ratio has no eps
    assert share["share"] == pytest.approx(float(lam["lambda2"].mean()), rel=1e-5)  # γ = 1 at init
    assert share["sigma_pe"] == pytest.approx(float(add.pos_embed.weight.detach().std(dim=-1, unbiased=False).mean()), rel=1e-5)
    torch.manual_seed(0)
    louder = pe_share(create_model("vit_lite_7_4", join="add", depth=2, pe_init_std=1.0), images)
    assert louder["sigma_tokens"] == pytest.approx(share["sigma_tokens"]) and louder["share"] > 2 * share["share"]
    for join in ("add_norm", "lape_shared", "lape"):
        normed = pe_share(create_model("vit_lite_7_4", join=join, depth=2), images)
        assert normed["sigma_pe"] == pytest.approx(1.0, abs=1e-3)  # LNpe hands on a unit-scale PE
    with pytest.raises(ValueError, match="pe_share needs a model with one absolute position embedding, got pe='learnable' "
                                         "and join='per_layer_pe'"):
        pe_share(create_model("vit_lite_7_4", join="per_layer_pe", depth=2), images)
    with pytest.raises(ValueError, match="pe_share needs a model with one absolute position embedding, got pe='none'$"):
        pe_share(create_model("vit_lite_7_4", pe="none", join="add", depth=2), images)


def test_layer_difference_report_reads_the_cutoff_both_ways() -> None:
    from lape_lib.analysis import LAYER_CUTOFF, layer_difference_report, layer_differences

    torch.manual_seed(0)
    at_init = {"add": create_model("vit_lite_7_4", join="add"), "lape": create_model("vit_lite_7_4", join="lape")}
    lines = layer_difference_report(at_init)
    assert "add: mean |S_l - S_1| per layer 0.000 0.000" in lines[0]
    assert lines[1] == "add: the token LayerNorms' γ, β (norm1) per layer: std of γ over channels " + \
        " ".join(["0.000"] * 7) + "; mean |β| " + " ".join(["0.000"] * 7)
    assert lines[3].startswith("lape: the PE LayerNorms' γ', β' per layer: std of γ over channels 0.000 0.000")
    shared = layer_difference_report({"lape_shared": create_model("vit_lite_7_4", join="lape_shared", depth=2)})
    assert not any("LayerNorms" in line for line in shared)  # every layer is handed the same LNpe(P): no per-layer map
    own = layer_difference_report({"per_layer_pe": create_model("vit_lite_7_4", join="per_layer_pe", depth=3)})
    assert "(norm1, each on its layer's own P^(l))" in own[1]  # its maps differ at init, with γ, β untouched
    assert own[2].startswith("per_layer_pe: its layers' maps differ from layer 1's")
    assert any(line.startswith("lape: no layer's map differs from layer 1's by more than 0.05") for line in lines)
    assert "does not show the paper's layer-adaptive pattern" in lines[-1]
    # LaPE's later LayerNorms re-weighting channels moves their maps away from layer 1's.
    moved = create_model("vit_lite_7_4", join="lape")
    with torch.no_grad():
        for norm in list(moved.pe_norms)[1:]:
            norm.weight.copy_(torch.rand_like(norm.weight) * 3)
    assert float(layer_differences(moved).max()) > LAYER_CUTOFF
    lines = layer_difference_report({"add": at_init["add"], "lape": moved})
    assert any(line.startswith("lape: its layers' maps differ from layer 1's") for line in lines)
    assert not any("does not show" in line for line in lines)
    # β' alone moves them too (γ' left at 1), and the report prints it.
    shifted = create_model("vit_lite_7_4", join="lape", depth=3)
    with torch.no_grad():
        shifted.pe_norms[1].bias.copy_(torch.randn(shifted.pe_norms[1].bias.shape))
    assert float(layer_differences(shifted).max()) > LAYER_CUTOFF
    (line,) = [ln for ln in layer_difference_report({"lape": shifted}) if "β'" in ln]
    assert "std of γ over channels 0.000 0.000 0.000; mean |β| 0.000 0." in line and not line.endswith("0.000 0.000 0.000")
