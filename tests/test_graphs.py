"""lape_lib.graphs on the CPU: undoing the capture's warm-up, the optimizer-state plumbing, refusals.

The capture itself needs a GPU; the GPU agenda (``bash scripts/gpu_session.sh agenda``) checks it there against eager.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lape_lib.graphs import GraphedStep, load_optimizer_state, portable_optimizer_state, set_lr, steps_undone
from lape_lib.stack import adamw, split_weight_decay

from test_train import tiny


def setup(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Linear(8, 3))
    return model, adamw(split_weight_decay(model.named_parameters(), 0.05), 1e-2)


def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, n: int, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        loss = model(torch.randn(4, 6, generator=g)).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("steps_before", [0, 2])
def test_steps_undone_restore_weights_and_optimizer_state_in_place(steps_before: int) -> None:
    model, optimizer = setup()
    train_steps(model, optimizer, steps_before)
    reference = copy.deepcopy(model)
    ref_opt = adamw(split_weight_decay(reference.named_parameters(), 0.05), 1e-2)
    ref_opt.load_state_dict(copy.deepcopy(optimizer.state_dict()))  # its own tensors, not shared ones
    storage = [p.data_ptr() for p in model.parameters()]
    with steps_undone([*model.parameters(), *model.buffers()], optimizer):
        train_steps(model, optimizer, 3, seed=9)  # the "warm-up"
    assert [p.data_ptr() for p in model.parameters()] == storage  # same storage: a graph may hold it
    assert_same(model.state_dict(), reference.state_dict())
    # The next real step is the one the reference takes, also from a fresh optimizer (zeroed state).
    train_steps(model, optimizer, 1, seed=5)
    train_steps(reference, ref_opt, 1, seed=5)
    assert_same(model.state_dict(), reference.state_dict())


def test_optimizer_state_moves_between_eager_and_capturable_optimizers() -> None:
    model, eager = setup()
    train_steps(model, eager, 2)
    capturable = adamw(split_weight_decay(model.named_parameters(), 0.05), 1e-2, capturable=True)
    lr = capturable.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and capturable.param_groups[0]["capturable"]
    load_optimizer_state(capturable, eager.state_dict())
    group = capturable.param_groups[0]
    assert group["lr"] is lr and group["capturable"] and group["foreach"]  # its own stepping settings stay
    for state in capturable.state.values():
        assert state["step"].dtype == torch.float32 and float(state["step"]) == 2
    set_lr(capturable, 3e-3)
    assert capturable.param_groups[1]["lr"] is lr and float(lr) == pytest.approx(3e-3)  # filled in place
    portable = portable_optimizer_state(capturable)
    assert all(isinstance(g["lr"], float) for g in portable["param_groups"])
    _, back = setup()
    load_optimizer_state(back, portable)
    assert not back.param_groups[0].get("capturable") and back.param_groups[0]["lr"] == 1e-2
    set_lr(back, 2e-3)
    assert back.param_groups[0]["lr"] == 2e-3


def test_refusals() -> None:
    _, optimizer = setup()
    with pytest.raises(ValueError, match="needs a capturable optimizer"):
        GraphedStep(lambda x, t: x.sum(), lambda: [], optimizer)
    with pytest.raises(ValueError, match="cuda_graph and compile are alternatives"):
        tiny(cuda_graph=True, compile=True)
    from lape_lib.train import train

    with pytest.raises(ValueError, match="cuda_graph needs a CUDA device; this run is on cpu"):
        train(tiny(cuda_graph=True))
    from lape_lib.train import check_cuda_graph

    cuda = torch.device("cuda")  # only checked, never used: no GPU is needed
    with pytest.raises(ValueError, match=r"cannot capture fp16's gradient scaler .* use precision 'fp32'"):
        check_cuda_graph(tiny(cuda_graph=True), cuda, torch.float16)
    with pytest.raises(ValueError, match="cuda_graph is for one process"):
        check_cuda_graph(tiny(cuda_graph=True), cuda, torch.bfloat16, world=2)
    check_cuda_graph(tiny(cuda_graph=True), cuda, torch.bfloat16)  # accepted
