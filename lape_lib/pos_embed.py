"""Position embeddings: the tensor P that a ViT joins to its tokens.

Every type produces a tensor of shape (1, N, D): one row per token, the class token (when the
model has one) first. How P is *joined* to the tokens is the model's business (see
``models.py``); this module only makes P.
"""

from __future__ import annotations

import torch
from torch import nn

PE_TYPES = ("learnable", "sin1d", "sin2d", "none")


def sinusoid_1d(num_positions: int, dim: int) -> torch.Tensor:
    """The Transformer's 1-D sinusoid table, shape (num_positions, dim).

    Channel 2i holds sin(p / 10000^(2i/dim)) and channel 2i+1 the matching cosine, as in
    Compact Transformers' ``sine`` option.
    """
    if dim % 2:
        raise ValueError(f"sin1d needs an even embedding dim, got {dim}")
    position = torch.arange(num_positions, dtype=torch.float64)[:, None]
    inv_freq = torch.pow(10000.0, -torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    table = torch.zeros(num_positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq)
    return table.float()


def sinusoid_2d(grid: tuple[int, int], dim: int) -> torch.Tensor:
    """A 2-D sinusoid table for a square patch grid, shape (h*w, dim).

    Half of the channels encode the column, half the row (MAE/MoCo-v3 style), so the
    similarity of two patches depends on their offset along each axis.
    """
    h, w = grid
    if h != w:
        raise ValueError(f"sin2d needs a square patch grid, got {h}x{w}; use pe='sin1d' or 'learnable'")
    if dim % 4:
        raise ValueError(f"sin2d needs an embedding dim divisible by 4, got {dim}")
    half = dim // 2
    rows = sinusoid_1d(h, half)  # (h, half)
    cols = sinusoid_1d(w, half)  # (w, half)
    table = torch.cat(
        [cols[None, :, :].expand(h, w, half), rows[:, None, :].expand(h, w, half)], dim=-1
    )
    return table.reshape(h * w, dim)


class PositionEmbedding(nn.Module):
    """A position embedding P of shape (1, N, D), learnable or a fixed sinusoid.

    Args:
        kind: one of ``PE_TYPES`` except ``"none"`` (a model without PE has no such module).
        grid: the patch grid (rows, cols).
        dim: the embedding width D.
        class_token: whether P has a leading row for the class token. For the fixed types that
            row is zero (``sin2d``) or position 0 of the 1-D table (``sin1d``, as in
            Compact Transformers).
        init_std: the trunc-normal std of a learnable P (Compact Transformers uses 0.2, DeiT 0.02).
    """

    def __init__(
        self, kind: str, grid: tuple[int, int], dim: int, class_token: bool, init_std: float = 0.2
    ) -> None:
        super().__init__()
        if kind not in PE_TYPES or kind == "none":
            raise ValueError(f"unknown position embedding {kind!r}; choose one of {PE_TYPES[:-1]}")
        self.kind = kind
        self.grid = grid
        num_patches = grid[0] * grid[1]
        num_tokens = num_patches + int(class_token)
        if kind == "learnable":
            self.weight = nn.Parameter(torch.empty(1, num_tokens, dim))
            nn.init.trunc_normal_(self.weight, std=init_std)
            return
        if kind == "sin1d":
            table = sinusoid_1d(num_tokens, dim)
        else:
            table = sinusoid_2d(grid, dim)
            if class_token:
                table = torch.cat([torch.zeros(1, dim), table], dim=0)
        # A fixed table is rebuilt from the config, so it stays out of the state dict.
        self.register_buffer("weight", table[None], persistent=False)

    def forward(self) -> torch.Tensor:
        return self.weight

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, shape={tuple(self.weight.shape)}"

