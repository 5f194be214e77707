"""pe="rpe": a relative position bias per layer and head, added (join "add") or LayerNormed ("lape")."""

from __future__ import annotations

import io

import matplotlib
import pytest
import torch

from lape_lib import create_model, per_layer_attn_bias, per_layer_pe
from lape_lib.models import valid_combination
from lape_lib.plotting import plot_layer_attn_bias
from lape_lib.pos_embed import RelativePositionBias, relative_position_index
from lape_lib.stack import SeedStack, split_weight_decay
from lape_lib.train import param_groups, soft_cross_entropy
from test_models import n_params

matplotlib.use("Agg")

SMALL = dict(depth=2, dim=32, num_heads=2, attn_drop=0.0, drop_path=0.0)


def randomize_tables(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for bias in model.rel_pos:
            bias.table.normal_()


def test_index_numbers_offsets() -> None:
    h, w = 3, 4
    index = relative_position_index((h, w))
    size = (2 * h - 1) * (2 * w - 1)
    assert index.shape == (h * w, h * w) and index.min() == 0 and index.max() == size - 1
    assert torch.all(index.diagonal() == size // 2)  # offset (0, 0) is the table's middle row
    assert torch.all(index + index.T == size - 1)  # (i, j) and (j, i) have opposite offsets
    for i in range(h * w):
        for j in range(h * w):
            (yi, xi), (yj, xj) = divmod(i, w), divmod(j, w)
            assert index[i, j] == (yi - yj + h - 1) * (2 * w - 1) + (xi - xj + w - 1)


def test_bias_depends_on_the_offset_only_and_spares_the_class_token() -> None:
    torch.manual_seed(0)
    module = RelativePositionBias((4, 4), num_heads=3, num_prefix=1, normalize=False)
    torch.nn.init.normal_(module.table)
    bias = module()
    assert bias.shape == (3, 17, 17)
    assert torch.all(bias[:, 0] == 0) and torch.all(bias[:, :, 0] == 0)
    patches = bias[:, 1:, 1:]
    # patch (0,0)->(1,1) and patch (2,2)->(3,3) share the offset (-1, -1), so one table entry
    torch.testing.assert_close(patches[:, 0, 5], patches[:, 10, 15])
    assert not torch.allclose(patches[:, 0, 5], patches[:, 0, 6])


def test_lape_layernorms_each_query_row() -> None:
    torch.manual_seed(0)
    module = RelativePositionBias((4, 4), num_heads=2, num_prefix=0, normalize=True)
    torch.nn.init.normal_(module.table, std=3.0)
    rows = module()
    torch.testing.assert_close(rows.mean(-1), torch.zeros(2, 16), atol=1e-5, rtol=0)
    torch.testing.assert_close(rows.var(-1, unbiased=False), torch.ones(2, 16), atol=1e-3, rtol=0)
    with torch.no_grad():
        module.norm.weight.fill_(2.0)
        module.norm.bias.fill_(0.5)
    torch.testing.assert_close(module(), 2.0 * rows + 0.5)


@pytest.mark.parametrize("join", ["add", "lape"])
def test_starts_as_the_model_without_pe(join: str) -> None:
    # A zero table adds nothing (and LN of a constant row is its zero shift), so at init the
    # rpe model is the no-PE model with the same seed: paired arms start from one point.
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(0)
    none = create_model("vit_lite_7_4", pe="none", join="add", depth=2).eval()
    torch.manual_seed(0)
    rpe = create_model("vit_lite_7_4", pe="rpe", join=join, depth=2).eval()
    torch.testing.assert_close(rpe(x), none(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["vit_lite_7_4", "cct_7_3x1"])
def test_parameter_cost(name: str) -> None:
    none = create_model(name, pe="none", join="add")
    add, lape = (create_model(name, pe="rpe", join=j) for j in ("add", "lape"))
    (h, w), depth, heads = none.grid, none.cfg.depth, none.cfg.num_heads
    assert n_params(add) - n_params(none) == depth * heads * (2 * h - 1) * (2 * w - 1)
    assert n_params(lape) - n_params(add) == depth * 2 * h * w  # one LayerNorm over the keys per layer


def test_bias_reaches_the_logits() -> None:
    torch.manual_seed(0)
    model = create_model("vit_lite_7_4", pe="rpe", join="lape", **SMALL).eval()
    randomize_tables(model)
    attn, bias = model.blocks[0].attn, model.layer_attn_biases()[0]
    x = torch.randn(2, model.num_tokens, 32)
    b, n, d = x.shape
    q, k, v = attn.qkv(x).reshape(b, n, 3, 2, d // 2).permute(2, 0, 3, 1, 4)
    weights = ((q @ k.transpose(-2, -1)) * (d // 2) ** -0.5 + bias).softmax(-1)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(b, n, d))
    torch.testing.assert_close(attn(x, bias), expected, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(attn(x), expected, atol=1e-3)  # and it matters


def test_tables_learn_without_weight_decay_and_survive_a_round_trip() -> None:
    torch.manual_seed(0)
    model = create_model("vit_lite_7_4", pe="rpe", join="lape", **SMALL)
    no_decay = {id(p) for p in param_groups(model, 0.05)[1]["params"]}
    assert all(id(b.table) in no_decay for b in model.rel_pos)
    randomize_tables(model)
    model.eval()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    assert not any(k.endswith(".index") for k in model.state_dict())  # rebuilt from the grid
    buf.seek(0)
    clone = create_model("vit_lite_7_4", pe="rpe", join="lape", **SMALL).eval()
    clone.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(clone(x), model(x))


def test_which_layers_the_bias_can_teach() -> None:
    # The class token gets no bias, and a class-token model reads only the class token after
    # the last layer: that layer's patch-to-patch bias cannot reach the output (as in the
    # authors' code). With sequence pooling every layer's bias matters.
    for name, last_learns in (("vit_lite_7_4", False), ("cvt_7_4", True)):
        torch.manual_seed(0)
        model = create_model(name, pe="rpe", join="lape", **SMALL)
        model(torch.randn(2, 3, 32, 32)).logsumexp(-1).sum().backward()
        grads = [float(b.table.grad.abs().sum()) for b in model.rel_pos]
        assert grads[0] > 0 and (grads[-1] > 0) == last_learns, (name, grads)


def test_seed_stack_trains_rpe_models() -> None:
    models = [create_model("vit_lite_7_4", pe="rpe", join="lape", **SMALL) for _ in range(2)]
    stack = SeedStack(models, soft_cross_entropy, lr=1e-2, weight_decay=0.05, dtype=torch.float32)
    xs, targets = torch.randn(2, 4, 3, 32, 32), torch.softmax(torch.randn(2, 4, 10), -1)
    with torch.no_grad():
        before = torch.stack([soft_cross_entropy(m(xs[i]), targets[i]) for i, m in enumerate(models)])
    torch.testing.assert_close(stack.step(xs, targets), before, rtol=1e-5, atol=1e-6)
    assert not torch.equal(models[0].rel_pos[0].table, torch.zeros_like(models[0].rel_pos[0].table))
    groups = split_weight_decay(stack.params.items(), 0.05, stacked_axes=1)
    assert [len(g["params"]) for g in groups] == [len(g["params"]) for g in param_groups(models[0], 0.05)]


def test_analysis_and_figure() -> None:
    model = create_model("vit_lite_7_4", pe="rpe", join="lape", **SMALL)
    randomize_tables(model)
    biases = per_layer_attn_bias(model)
    assert biases.shape == (2, 2, 64, 64)
    torch.testing.assert_close(biases[1], model.layer_attn_biases()[1][:, 1:, 1:])  # class token dropped
    fig = plot_layer_attn_bias({"rpe-lape": model})
    assert len([ax for ax in fig.axes if ax.images]) == 2  # one panel per layer
    with pytest.raises(ValueError, match="per_layer_attn_bias"):
        per_layer_pe(model)
    with pytest.raises(ValueError, match="needs a model with pe='rpe'"):
        per_layer_attn_bias(create_model("vit_lite_7_4", **SMALL))


@pytest.mark.parametrize("join", ["add_every_layer", "per_layer_pe", "lape_parallel"])
def test_absolute_only_joins_are_refused(join: str) -> None:
    assert not valid_combination("rpe", join)
    with pytest.raises(ValueError, match=f"pe='rpe' .* takes join 'add' or 'lape', got join='{join}'"):
        create_model("vit_lite_7_4", pe="rpe", join=join)
