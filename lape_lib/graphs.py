"""A whole training step (forward, loss, backward, AdamW) captured as one CUDA graph.

A 3.7 M-parameter ViT at batch 128 is expected to be launch-bound on a large GPU: the step is
some hundreds of small kernels, each short enough that launching may take the host longer than
running takes the GPU (not yet measured here: ``scripts/gpu_agenda.py`` times this mode against eager).
Captured once, the step replays as one launch per model (``--cuda-graph``). What capture needs,
and where this project provides it:

- static shapes and addresses: inputs are copied into buffers the graph reads; the weights,
  gradients and optimizer state keep their storage (the optimizer is built capturable, its lr a
  device tensor that :func:`set_lr` fills each epoch);
- no host sync inside the step: mixup/cutmix draw on the host before the copy, and fp16's
  gradient scaler (which syncs) is refused;
- randomness: dropout is reseeded before each replay (``train.seed_noise``); PyTorch refills a
  captured graph's Philox seed and offset from the generator at every replay.

Capture first runs a few warm-up steps (as PyTorch requires) and then undoes them, so a graphed
run trains like an eager one. Unverified on a GPU so far: the CPU tests cover the undo and the
optimizer-state plumbing, not the capture.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's lr: in place where it is a tensor (a captured graph reads its storage)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


_STEPPING_KEYS = ("lr", "capturable", "foreach", "fused")  # how this run steps, not what a checkpoint learned


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """``optimizer.load_state_dict(state)``, keeping this optimizer's own stepping settings, so that
    a checkpoint from an eager run resumes under a CUDA graph and the reverse (the lr is set
    again each epoch)."""
    live = [{k: group[k] for k in _STEPPING_KEYS if k in group} for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, keep in zip(optimizer.param_groups, live):
        group.update(keep)
        if group.get("capturable") or group.get("fused"):  # their step counters live on the weights' device
            for p in group["params"]:
                step = optimizer.state.get(p, {}).get("step")
                if isinstance(step, torch.Tensor):
                    optimizer.state[p]["step"] = step.to(device=p.device, dtype=torch.float32)


def portable_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """``optimizer.state_dict()`` with tensor lrs as floats, loadable by an eager optimizer too."""
    state = optimizer.state_dict()
    for group in state["param_groups"]:
        if isinstance(group.get("lr"), torch.Tensor):
            group["lr"] = float(group["lr"])
    return state


@contextmanager
def steps_undone(tensors: list[torch.Tensor], optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Whatever training steps run inside leave ``tensors`` (weights, buffers) and the optimizer's
    state as they were before, in the same storage: state first created inside is zeroed, which is
    what a fresh AdamW starts from."""
    weights = [t.detach().clone() for t in tensors]
    before = {p: {k: v.clone() for k, v in s.items() if isinstance(v, torch.Tensor)} for p, s in optimizer.state.items()}
    yield
    with torch.no_grad():
        for t, saved in zip(tensors, weights):
            t.copy_(saved)
        for p, s in optimizer.state.items():
            for key, value in s.items():
                if not isinstance(value, torch.Tensor):
                    continue
                if p in before:
                    value.copy_(before[p][key])
                else:
                    value.zero_()


class GraphedStep:
    """``step(x, targets) -> loss`` (one optimizer step) replayed from a CUDA graph captured on the first call.

    ``tensors`` lists what the step updates besides the optimizer's state (weights and buffers);
    the optimizer must be capturable. The returned loss is the graph's own output tensor,
    overwritten by the next replay: read or accumulate it before then.
    """

    def __init__(self, step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], tensors: Callable[[], list[torch.Tensor]],
                 optimizer: torch.optim.Optimizer, warmup: int = 3) -> None:
        if not all(group.get("capturable") for group in optimizer.param_groups):
            raise ValueError("a CUDA-graphed step needs a capturable optimizer (AdamW(..., capturable=True))")
        self.step, self.tensors, self.optimizer, self.warmup = step, tensors, optimizer, warmup
        self.graph: torch.cuda.CUDAGraph | None = None

    def _capture(self, x: torch.Tensor, targets: torch.Tensor) -> None:
        self.static_x, self.static_targets = x.clone(), targets.clone()
        rng = torch.cuda.get_rng_state(x.device)  # the warm-up must not shift this step's dropout draws
        main, side = torch.cuda.current_stream(x.device), torch.cuda.Stream(x.device)
        with steps_undone(self.tensors(), self.optimizer):
            side.wait_stream(main)
            with torch.cuda.stream(side):
                for _ in range(self.warmup):  # lazy initialisation (optimizer state, cuBLAS handles) happens here
                    self.step(self.static_x, self.static_targets)
            main.wait_stream(side)  # before the undo's copies, which run on the main stream
        torch.cuda.set_rng_state(rng, x.device)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_loss = self.step(self.static_x, self.static_targets)

    def __call__(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.graph is None:
            self._capture(x, targets)
        self.static_x.copy_(x)
        self.static_targets.copy_(targets)
        self.graph.replay()  # type: ignore[union-attr]
        return self.static_loss
