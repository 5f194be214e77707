"""Seeds trained as one vmapped model: same training as separate models, views, resume, refusals."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from test_rpe import randomize_tables
from test_train import tiny, weights

from lape_lib.models import create_model
from lape_lib.stack import SeedStack, split_weight_decay
from lape_lib.train import build_arms, param_groups, soft_cross_entropy, train

NO_DROPOUT = {"depth": 1, "dim": 32, "num_heads": 2, "attn_drop": 0.0, "drop_path": 0.0}


def test_stacked_seeds_train_like_separate_models() -> None:
    kw = dict(seeds=(0, 1), pes=("learnable", "sin2d"), model_overrides=NO_DROPOUT)
    separate, stacked = train(tiny(**kw)), train(tiny(**kw, stack_seeds=True))
    assert set(stacked["models"]) == {f"{p}-{j}-s{s}" for p in ("learnable", "sin2d") for j in ("add", "lape") for s in (0, 1)}
    for name, state in weights(separate).items():
        for key, value in state.items():
            torch.testing.assert_close(weights(stacked)[name][key], value, atol=2e-5, rtol=1e-4, msg=f"{name} {key}")
        losses = [[h["train_loss"] for h in r["arms"][name]["history"]] for r in (separate, stacked)]
        assert losses[0] == pytest.approx(losses[1], rel=1e-4)


def test_each_seed_module_views_the_stack() -> None:
    models = [create_model("vit_lite_7_4", join="lape", **NO_DROPOUT) for _ in range(3)]
    stack = SeedStack(models, soft_cross_entropy, lr=1e-2, weight_decay=0.05, dtype=torch.float32)
    xs, targets = torch.randn(3, 4, 3, 32, 32), torch.softmax(torch.randn(3, 4, 10), -1)
    with torch.no_grad():
        before = torch.stack([soft_cross_entropy(m(xs[i]), targets[i]) for i, m in enumerate(models)])
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*batching rule")  # no per-model fallback loop inside vmap
        losses = stack.step(xs, targets)
    torch.testing.assert_close(losses, before, rtol=1e-5, atol=1e-6)  # each model's loss on its own batch
    for i, model in enumerate(models):
        for name, p in model.named_parameters():
            assert torch.equal(p, stack.params[name][i])  # the module sees the updated stacked weights
    assert not torch.equal(models[0].pe_norms[0].weight, models[1].pe_norms[0].weight)  # seeds moved apart
    sizes = [len(g["params"]) for g in split_weight_decay(stack.params.items(), 0.05, stacked_axes=1)]
    assert sizes == [len(g["params"]) for g in param_groups(models[0], 0.05)]


def test_stacked_run_resumes_exactly_with_dropout(tmp_path: Path) -> None:
    torch.use_deterministic_algorithms(True)
    try:
        kw = dict(seeds=(0, 1), joins=("lape",), stack_seeds=True)  # tiny() keeps attention dropout and drop path on
        straight = train(tiny(**kw, out_dir=str(tmp_path / "a")))
        train(tiny(**kw, out_dir=str(tmp_path / "b")), stop_after_epochs=2)
        resumed = train(tiny(**kw, out_dir=str(tmp_path / "b")))
    finally:
        torch.use_deterministic_algorithms(False)
    for name, state in weights(straight).items():
        for key, value in state.items():
            assert torch.equal(weights(resumed)[name][key], value), f"{name} {key}"


@pytest.mark.parametrize("name,pe,join", [("vit_lite_7_4", "learnable", "lape"), ("cvt_7_4", "rpe", "add")])
def test_unfused_attention_matches_the_fused_kernel(name: str, pe: str, join: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, pe=pe, join=join, depth=2).eval()
    if pe == "rpe":
        randomize_tables(model)  # a non-zero relative bias, passed to the fused kernel as its mask
    x = torch.randn(3, 3, 32, 32)
    fused = model(x)
    for block in model.blocks:
        block.attn.fused_attn = False
    torch.testing.assert_close(model(x), fused, atol=1e-5, rtol=1e-4)


def test_stacking_refuses_fp16_and_several_processes() -> None:
    with pytest.raises(ValueError, match=r"use precision 'fp32' \('bf16' on a GPU that has it natively: not a T4\)"):
        SeedStack([create_model("vit_lite_7_4", **NO_DROPOUT)], soft_cross_entropy, lr=1e-3, weight_decay=0.0,
                  dtype=torch.float16)
    with pytest.raises(ValueError, match="under torchrun train the seeds unstacked"):
        build_arms(tiny(stack_seeds=True), 4, torch.device("cpu"), torch.float32, world=2)
