"""Several seeds of one model trained as a single vmapped model (``torch.func``).

A 3.7 M-parameter ViT at batch 128 is expected to leave a large GPU waiting on kernel launches
(not yet measured: no GPU run is recorded; ``scripts/gpu_agenda.py`` times it). Stacking the
seeds' weights along a new leading axis and ``vmap``-ing one functional model over them runs
every seed's step with the launches of one, on each seed's own batch. Each seed's ``nn.Module``
keeps working for evaluation, checkpoints and saved weights: after stacking, its parameters are
views into the stacked tensors, so it always holds that seed's current weights.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap


def split_weight_decay(named: Iterable[tuple[str, torch.Tensor]], weight_decay: float,
                       stacked_axes: int = 0) -> list[dict[str, Any]]:
    """No weight decay on biases, norms, the PE, the class, register and distillation tokens and
    relative-bias tables (the parameters timm's ``no_weight_decay`` names, and every 1-D one).

    ``stacked_axes``: leading axes that stack several models (not counted as the weight's own).
    """
    decay: list[torch.Tensor] = []
    no_decay: list[torch.Tensor] = []
    for name, p in named:
        if not p.requires_grad:
            continue
        skip = p.ndim - stacked_axes <= 1 or "pos_embed" in name or "rel_pos" in name or name.endswith(("cls_token", "reg_token", "dist_token"))
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def adamw(groups: list[dict[str, Any]], lr: float, capturable: bool = False) -> torch.optim.AdamW:
    """AdamW over ``groups``; on a GPU its fused kernel, a few launches per step instead of a
    dozen per group (the step is expected to be launch-bound there). The CPU keeps PyTorch's default implementation.

    ``capturable``: for a step captured in a CUDA graph (``lape_lib.graphs``): the lr becomes a
    device tensor (set it with ``graphs.set_lr``) and the step counters live on the device.
    """
    device = next(p.device for group in groups for p in group["params"])
    if capturable:
        return torch.optim.AdamW(groups, lr=torch.tensor(lr, device=device), capturable=True, foreach=True)
    return torch.optim.AdamW(groups, lr=lr, fused=True if device.type == "cuda" else None)


class SeedStack:
    """Models of identical structure (one per seed) trained together by one AdamW over stacked weights.

    ``step(xs, targets)`` takes (N, B, ...) inputs, one batch per model, and returns the N losses.
    Dropout and stochastic depth draw different randomness for each model. ``capturable=True``
    builds the optimizer (and autocast) for a step captured as a CUDA graph (``lape_lib.graphs``).
    """

    def __init__(self, models: Sequence[nn.Module], loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *,
                 lr: float, weight_decay: float, dtype: torch.dtype, compile_model: bool = False,
                 compile_mode: str | None = None, capturable: bool = False) -> None:
        if dtype == torch.float16:
            raise ValueError("stacked seeds share one gradient scaler under fp16, so one seed's overflow would skip "
                             "every seed's step; use precision 'fp32' ('bf16' on a GPU that has it natively: "
                             "not a T4), or train the seeds unstacked")
        self.models = list(models)
        self.params, self.buffers = stack_module_state(self.models)
        for name, stacked in self.params.items():
            for i, model in enumerate(self.models):
                model.get_parameter(name).data = stacked.data[i]
        for name, stacked in self.buffers.items():
            for i, model in enumerate(self.models):
                _set_buffer(model, name, stacked[i])
        self.template = copy.deepcopy(self.models[0]).to("meta")  # structure only; weights come from self.params
        for module in self.template.modules():  # on the CPU vmap runs the fused attention kernel one sample at a time
            if hasattr(module, "fused_attn"):
                setattr(module, "fused_attn", False)
        self.optimizer = adamw(split_weight_decay(self.params.items(), weight_decay, stacked_axes=1), lr, capturable)
        device_type = next(iter(self.params.values())).device.type

        def loss(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor,
                 targets: torch.Tensor) -> torch.Tensor:
            with torch.autocast(device_type, dtype=dtype, enabled=dtype != torch.float32, cache_enabled=not capturable):
                logits = functional_call(self.template, (params, buffers), (x,))
            return loss_fn(logits, targets)

        losses = vmap(loss, randomness="different")
        self._losses = torch.compile(losses, mode=compile_mode) if compile_model else losses

    def step(self, xs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        losses = self._losses(self.params, self.buffers, xs, targets)
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()  # the models share no weights, so each gets its own loss's gradient
        self.optimizer.step()
        return losses.detach()


def _set_buffer(model: nn.Module, name: str, value: torch.Tensor) -> None:
    owner, _, leaf = name.rpartition(".")
    module = model.get_submodule(owner) if owner else model
    persistent = leaf not in module._non_persistent_buffers_set
    module.register_buffer(leaf, value, persistent=persistent)
