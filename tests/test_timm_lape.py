"""lapeify against timm itself."""

from __future__ import annotations

import io

import pytest
import timm
import torch

from lape_lib import lapeify

# Small variants of DeiT-Ti / ViT shapes keep the tests fast; the code path is the same.
CASES = {
    "deit_tiny_patch16_224": dict(img_size=32, patch_size=8, depth=3),
    "vit_small_patch16_224": dict(img_size=32, patch_size=8, depth=2, embed_dim=96, num_heads=3),
    "vit_small_patch16_224-avgpool": dict(img_size=32, patch_size=8, depth=2, embed_dim=96, num_heads=3, class_token=False, global_pool="avg"),
    "deit_tiny_distilled_patch16_224": dict(img_size=32, patch_size=8, depth=2),  # class + distillation token
    "vit_base_patch16_224-noembedcls": dict(img_size=32, patch_size=8, depth=2, embed_dim=96, num_heads=3, no_embed_class=True, reg_tokens=2),
}


def make(case: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(case.split("-")[0], pretrained=False, num_classes=10, **CASES[case]).eval()


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("case", CASES)
def test_lape_off_reproduces_timm_exactly(case: str) -> None:
    vit = make(case)
    x = torch.randn(2, 3, 32, 32)
    expected = vit(x)
    keys = set(vit.state_dict())
    wrapped = lapeify(vit, lape=False).eval()
    assert torch.equal(wrapped(x), expected)
    assert {k.removeprefix("vit.") for k in wrapped.state_dict()} == keys  # no unused PE norms


@pytest.mark.parametrize("case", CASES)
def test_lape_keeps_weights_and_adds_2DL(case: str) -> None:
    vit = make(case)
    before = {k: v.clone() for k, v in vit.state_dict().items()}
    base = n_params(vit)
    model = lapeify(vit)
    dim, depth = vit.embed_dim, len(vit.blocks)
    assert n_params(model) - base == 2 * dim * depth
    after = model.state_dict()
    for key, value in before.items():
        assert torch.equal(after["vit." + key], value)
    x = torch.randn(2, 3, 32, 32)
    out = model.eval()(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert not torch.allclose(out, vit(x))  # the PE now enters per layer, not at the input


def test_lape_chain_matches_the_equations() -> None:
    vit = make("deit_tiny_patch16_224")
    model = lapeify(vit).eval()
    with torch.no_grad():
        for b in vit.blocks:
            b.pe_norm.weight.normal_(1, 0.3)
            b.pe_norm.bias.normal_(0, 0.3)
    x = torch.randn(2, 3, 32, 32)
    tokens = torch.cat([vit.cls_token.expand(2, -1, -1), vit.patch_embed(x)], dim=1)  # no PE at the input
    p = vit.pos_embed
    for b in vit.blocks:
        p = b.pe_norm(p)
        tokens = tokens + b.attn(b.norm1(tokens) + p)
        tokens = tokens + b.mlp(b.norm2(tokens))
    expected = vit.forward_head(vit.norm(tokens))
    torch.testing.assert_close(model(x), expected)


def test_state_dict_round_trip() -> None:
    a = lapeify(make("deit_tiny_patch16_224")).eval()
    with torch.no_grad():
        a.vit.blocks[1].pe_norm.weight.fill_(2.0)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = lapeify(make("deit_tiny_patch16_224")).eval()
    b.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(a(x), b(x))


def test_unsupported_models_raise() -> None:
    with pytest.raises(ValueError, match="no absolute position embedding"):
        lapeify(timm.create_model("vit_small_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=1, pos_embed="none"))
    with pytest.raises(ValueError, match="not ResNet"):
        lapeify(timm.create_model("resnet18", pretrained=False))
    with pytest.raises(ValueError, match="dynamic_img_size"):
        lapeify(timm.create_model("vit_small_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=1, dynamic_img_size=True))


def test_per_layer_pe_of_timm_models() -> None:
    from lape_lib import per_layer_pe

    vit = make("deit_tiny_patch16_224")  # 4x4 patches + class token, depth 3
    plain = per_layer_pe(vit)
    assert plain.shape == (3, 16, 192)
    norm = vit.blocks[1].norm1
    torch.testing.assert_close(plain[1], norm(vit.pos_embed[0])[1:])
    model = lapeify(vit)
    lape = per_layer_pe(model, include_class_token=True)
    assert lape.shape == (3, 17, 192)
    torch.testing.assert_close(lape[2], model.layer_pes()[2][0])
    assert per_layer_pe(make("vit_base_patch16_224-noembedcls")).shape == (2, 16, 96)


def test_timm_model_in_the_trainer() -> None:
    from lape_lib.augment import AugmentConfig
    from lape_lib.config import TrainConfig
    from lape_lib.train import train

    res = train(TrainConfig(
        model="timm/deit_tiny_patch16_224", model_overrides={"patch_size": 8, "depth": 1}, joins=("add", "lape"),
        dataset="toy", n_train=32, n_test=16, epochs=1, warmup_epochs=0, cooldown_epochs=0, batch_size=16,
        augment=AugmentConfig.off(), device="cpu", progress=False,
    ))
    assert set(res["arms"]) == {"learnable-add-s0", "learnable-lape-s0"}
    dim, depth = 192, 1
    assert res["arms"]["learnable-lape-s0"]["params"] - res["arms"]["learnable-add-s0"]["params"] == 2 * dim * depth
    with pytest.raises(ValueError, match="pe 'learnable' only"):
        TrainConfig(model="timm/deit_tiny_patch16_224", pes=("sin2d",))
    with pytest.raises(ValueError, match="unknown timm model"):
        TrainConfig(model="timm/deit_gigantic")


@pytest.mark.parametrize("case", CASES)
def test_weight_decay_skips_what_timm_names(case: str) -> None:
    """The tokens and PE timm's ``no_weight_decay`` names, and every 1-D weight, are not decayed."""
    from lape_lib.stack import split_weight_decay

    vit = make(case)
    model = lapeify(vit)
    decay, no_decay = (set(map(id, g["params"])) for g in split_weight_decay(model.named_parameters(), 0.05))
    named = dict(model.named_parameters())
    for name in vit.no_weight_decay():
        if "vit." + name in named:
            assert id(named["vit." + name]) in no_decay, name
    assert all(id(p) in no_decay for p in named.values() if p.ndim <= 1)
    assert all(id(p) in decay for n, p in named.items() if p.ndim > 1 and n.removeprefix("vit.") not in vit.no_weight_decay())
