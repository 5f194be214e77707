"""The models: shapes, parameter counts, the LaPE equations, and bad input."""

from __future__ import annotations

import io
import itertools

import pytest
import torch

from lape_lib import JOINS, PE_TYPES, create_model, list_models
from lape_lib.models import valid_combination

# Exact counts from Compact Transformers (10 classes, learnable PE, join="add"); the 3-digit
# ones are the README's rounded figures (cct_6_3x1's 3.168 M is its sine-PE variant).
PUBLISHED_EXACT = {"vit_lite_7_4": 3_716_874, "cvt_7_4": 3_716_619, "cct_7_3x1": 3_760_139}
PUBLISHED_MILLIONS = {
    ("vit_lite_6_4", "learnable"): 3.191, ("cvt_6_4", "learnable"): 3.190, ("cct_7_3x2", "learnable"): 3.853,
    ("cct_2_3x2", "learnable"): 0.284, ("cct_4_3x2", "learnable"): 0.482, ("cct_6_3x1", "sin1d"): 3.168,
}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


SMALL = dict(depth=2)  # two layers keep the grid test fast; counts use the full models


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("pe,join", [c for c in itertools.product(PE_TYPES, JOINS) if valid_combination(*c)])
def test_forward_every_model_pe_join(name: str, pe: str, join: str) -> None:
    model = create_model(name, pe=pe, join=join, num_classes=7, **SMALL)
    out = model(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, 7)
    assert torch.isfinite(out).all()
    out.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name,count", sorted(PUBLISHED_EXACT.items()))
def test_parameter_counts_exact(name: str, count: int) -> None:
    assert n_params(create_model(name, join="add", pe="learnable")) == count


@pytest.mark.parametrize("key,millions", sorted(PUBLISHED_MILLIONS.items()))
def test_parameter_counts_rounded(key: tuple[str, str], millions: float) -> None:
    name, pe = key
    assert round(n_params(create_model(name, join="add", pe=pe)) / 1e6, 3) == millions


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("join", ["lape", "lape_parallel"])
def test_lape_adds_exactly_2DL(name: str, join: str) -> None:
    base = create_model(name, join="add")
    lape = create_model(name, join=join)
    assert n_params(lape) - n_params(base) == 2 * base.cfg.dim * base.cfg.depth


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("join", ["add_norm", "lape_shared"])
def test_single_pe_norm_controls_add_exactly_2D(name: str, join: str) -> None:
    base = create_model(name, join="add")
    assert n_params(create_model(name, join=join)) - n_params(base) == 2 * base.cfg.dim


@pytest.mark.parametrize("join", ["add_norm", "lape_shared", "lape", "lape_parallel"])
def test_normed_pe_joins_ignore_a_per_token_affine_change_of_P(join: str) -> None:
    """A LayerNorm in front of P: scaling and shifting each token's PE row changes nothing.

    This is why these joins are immune to the PE's init scale (the confound ``add`` has)."""
    torch.manual_seed(0)
    model = create_model("vit_lite_7_4", join=join, depth=2).eval()
    randomize_norms(model)
    model.double()  # float64, and no eps in the PE norms: the invariance is exact algebra
    for norm in model.pe_norms:
        norm.eps = 0.0
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    before = model(x)
    n = model.num_tokens
    with torch.no_grad():
        P = model.pos_embed.weight
        P.copy_(torch.linspace(0.5, 4.0, n, dtype=P.dtype)[None, :, None] * P + torch.linspace(-2, 2, n, dtype=P.dtype)[None, :, None])
    torch.testing.assert_close(model(x), before, atol=1e-10, rtol=1e-9)


def test_add_is_not_invariant_to_the_scale_of_P() -> None:
    torch.manual_seed(0)
    model = create_model("vit_lite_7_4", join="add", depth=2).eval()
    x = torch.randn(2, 3, 32, 32)
    before = model(x)
    with torch.no_grad():
        model.pos_embed.weight.mul_(5.0)
    assert not torch.allclose(model(x), before, atol=1e-4)


def test_controls_forward_matches_the_equations() -> None:
    """add_norm: X_1 = X_0 + LNpe(P), then plain layers. lape_shared: LN1_l(X_l) + LNpe(P) in every layer."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    for join in ("add_norm", "lape_shared"):
        model = create_model("vit_lite_7_4", join=join, depth=2, layer_style="prenorm").eval()
        randomize_norms(model)
        tokens = torch.cat([model.cls_token.expand(2, -1, -1), model.tokenizer(x)], dim=1)
        p = model.pe_norms[0](model.pos_embed.weight)
        if join == "add_norm":
            tokens = tokens + p
        for block in model.blocks:
            h = block.norm1(tokens) + (p if join == "lape_shared" else 0)
            tokens = tokens + block.attn(h)
            tokens = tokens + block.mlp(block.norm2(tokens))
        torch.testing.assert_close(model(x), model.head(model.norm(tokens)[:, 0]))


@pytest.mark.parametrize("name", ["vit_lite_7_4", "cct_7_3x1"])
def test_joins_of_one_seed_start_from_the_same_weights(name: str) -> None:
    """Paired arms: every module two joins share is initialized identically from the same seed.

    (per_layer_pe draws L position embeddings, so the draws after them differ: it is the one
    join that is not paired this way.)"""
    states = {}
    for join in [j for j in JOINS if valid_combination("learnable", j) and j != "per_layer_pe"]:
        torch.manual_seed(3)
        states[join] = create_model(name, join=join).state_dict()
    ref = states["add"]
    for join, state in states.items():
        shared = [k for k in state if k in ref]
        assert len(shared) == len(ref), join
        for k in shared:
            assert torch.equal(state[k], ref[k]), (join, k)


def test_lape_cost_vit_lite_7_4() -> None:
    assert n_params(create_model("vit_lite_7_4", join="lape")) - PUBLISHED_EXACT["vit_lite_7_4"] == 3584


def randomize_norms(model: torch.nn.Module) -> None:
    # At init γ=1, β=0 makes many equations trivially true; perturb every LayerNorm.
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.LayerNorm):
            m.weight.data = 1 + 0.3 * torch.randn(m.weight.shape, generator=g)
            m.bias.data = 0.3 * torch.randn(m.bias.shape, generator=g)


def test_lape_forward_matches_the_equations() -> None:
    """Recompute a 2-layer LaPE model's forward by hand from its parameters."""
    torch.manual_seed(0)
    model = create_model("vit_lite_7_4", join="lape", depth=2, layer_style="prenorm").eval()
    randomize_norms(model)
    x = torch.randn(2, 3, 32, 32)
    tokens = torch.cat([model.cls_token.expand(2, -1, -1), model.tokenizer(x)], dim=1)
    p = model.pos_embed.weight
    for block, pe_norm in zip(model.blocks, model.pe_norms):
        p = pe_norm(p)
        tokens = tokens + block.attn(block.norm1(tokens) + p)  # P never enters the residual
        tokens = tokens + block.mlp(block.norm2(tokens))
    expected = model.head(model.norm(tokens)[:, 0])
    torch.testing.assert_close(model(x), expected)


def test_patch_permutation_invariance_without_pe() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    # Permute the 4x4 patches of the image: a ViT-Lite without PE cannot tell.
    patches = x.unfold(2, 4, 4).unfold(3, 4, 4)  # B, C, 8, 8, 4, 4
    perm = torch.randperm(64)
    shuffled = patches.reshape(2, 3, 64, 4, 4)[:, :, perm].reshape(2, 3, 8, 8, 4, 4)
    x_perm = shuffled.permute(0, 1, 2, 4, 3, 5).reshape(2, 3, 32, 32)
    no_pe = create_model("vit_lite_7_4", pe="none", join="add", depth=2).eval()
    torch.testing.assert_close(no_pe(x_perm), no_pe(x), atol=1e-5, rtol=1e-4)
    with_pe = create_model("vit_lite_7_4", pe="learnable", join="add", depth=2).eval()
    assert not torch.allclose(with_pe(x_perm), with_pe(x), atol=1e-4)


@pytest.mark.parametrize("join", JOINS)
def test_state_dict_round_trip(join: str) -> None:
    torch.manual_seed(0)
    a = create_model("cct_2_3x2", join=join).eval()
    randomize_norms(a)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = create_model("cct_2_3x2", join=join).eval()
    b.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(a(x), b(x))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast(dtype: torch.dtype) -> None:
    """Under autocast the model computes in ``dtype`` (its logits come out in it) and agrees with fp32
    to that precision; an autocast that was ignored, or one that broke the LayerNorms, fails."""
    torch.manual_seed(0)
    model = create_model("vit_lite_7_4", join="lape", depth=2).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        exact = model(x)
        with torch.autocast("cpu", dtype=dtype):
            low = model(x)
    assert low.dtype == dtype and exact.dtype == torch.float32
    assert not torch.equal(low.float(), exact)  # computed in low precision, not fp32 relabelled
    torch.testing.assert_close(low.float(), exact, rtol=0, atol=0.05 * exact.abs().max().item())
    assert (low.float().argmax(-1) == exact.argmax(-1)).float().mean() >= 0.75


@pytest.mark.slow
def test_torch_compile_matches_eager() -> None:
    pytest.importorskip("torch._dynamo")
    torch.manual_seed(0)
    model = create_model("cct_2_3x2", join="lape").eval()
    x = torch.randn(2, 3, 32, 32)
    compiled = torch.compile(model, backend="aot_eager")
    torch.testing.assert_close(compiled(x), model(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        (dict(name="vit_lite_9_4"), "unknown model 'vit_lite_9_4'"),
        (dict(name="vit_lite_7_4", pe="rope"), "unknown pe 'rope'"),
        (dict(name="vit_lite_7_4", join="concat"), "unknown join 'concat'"),
        (dict(name="vit_lite_7_4", pe="none", join="lape"), "needs a position embedding"),
        (dict(name="vit_lite_7_4", pe="none", join="add_every_layer"), "needs a position embedding"),
        (dict(name="vit_lite_7_4", pe="sin2d", join="per_layer_pe"), "needs pe='learnable'"),
        (dict(name="vit_lite_7_4", pe="sin2d", img_size=(32, 16)), "square patch grid"),
        (dict(name="vit_lite_7_4", img_size=30), "not divisible by patch_size 4"),
        (dict(name="vit_lite_7_4", heads=3), "unknown model override(s) ['heads']"),
        (dict(name="vit_lite_7_4", layer_style="postnorm"), "unknown layer_style 'postnorm'"),
        (dict(name="cct_7_3x2", img_size=0), "too small"),
    ],
)
def test_bad_input_raises(kwargs: dict, needle: str) -> None:
    name = kwargs.pop("name")
    with pytest.raises(ValueError) as err:
        create_model(name, **kwargs)
    assert needle in str(err.value)


def test_error_lists_valid_choices() -> None:
    with pytest.raises(ValueError, match="vit_lite_7_4"):
        create_model("vit-lite-7/4")
    with pytest.raises(ValueError, match="lape_parallel"):
        create_model("vit_lite_7_4", join="LaPE")


@pytest.mark.parametrize(("join", "dropped"), [("add", "tokens + P"), ("add_every_layer", "tokens"), ("per_layer_pe", "tokens")])
def test_input_dropout_order_follows_the_reference_codes(join: str, dropped: str) -> None:
    """With drop > 0: a ViT drops tokens + P; the official share/unshare ablations drop the tokens, then add P."""
    torch.manual_seed(0)
    model = create_model("vit_lite_7_4", join=join, depth=1, drop=0.5)
    seen = []
    model.blocks[0].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    model.pos_drop.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    model.train()(torch.randn(1, 3, 32, 32))
    into_drop, into_block = seen
    p = model.layer_pes()[0]
    # What the dropout acted on: the block's input less P (tokens alone), or all of it (tokens + P).
    dropped_part = into_block - p if dropped == "tokens" else into_block
    zeroed = dropped_part == 0
    assert zeroed.any() and torch.allclose(dropped_part[~zeroed], 2 * into_drop[~zeroed], atol=1e-5)  # kept: scaled by 1/(1-0.5)


def test_initial_like_is_the_trainers_init() -> None:
    from lape_lib.zoo import initial_like

    torch.manual_seed(4)
    model = create_model("vit_lite_7_4", join="lape", depth=2, num_classes=4)
    with torch.no_grad():
        model.pos_embed.weight.add_(1.0)  # "trained"
    again = initial_like(model, seed=4)
    torch.testing.assert_close(again.pos_embed.weight, model.pos_embed.weight - 1.0)
    torch.testing.assert_close(again.head.weight, model.head.weight)
