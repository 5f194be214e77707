"""Position embeddings: the tensor P that a ViT joins to its tokens, or a bias on its attention.

The absolute types (``ABSOLUTE_PE_TYPES``) produce a tensor of shape (1, N, D): one row per
token, the class token (when the model has one) first. How P is *joined* to the tokens is the
model's business (see ``models.py``); this module only makes P.

``rpe`` is the relative kind: no P at all, but a learned bias per layer and head on the
attention logits between two patches, indexed by their offset (``RelativePositionBias``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ABSOLUTE_PE_TYPES = ("learnable", "sin1d", "sin2d")
PE_TYPES = (*ABSOLUTE_PE_TYPES, "rpe", "none")
REFERENCE_INIT_STD = 0.2  # a learnable P is drawn at this std, then rescaled to the one asked for


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
        kind: one of ``ABSOLUTE_PE_TYPES``.
        grid: the patch grid (rows, cols).
        dim: the embedding width D.
        class_token: whether P has a leading row for the class token. For the fixed types that
            row is zero (``sin2d``) or position 0 of the 1-D table (``sin1d``, as in
            Compact Transformers).
        init_std: the std of a learnable P at init (Compact Transformers uses 0.2, DeiT 0.02).
            P is always drawn as Compact Transformers draws it (trunc-normal, std 0.2, cut at
            ±2) and then rescaled, so models that differ only in ``init_std`` start from the same
            P up to its scale and draw the same values for every other weight (torch's
            trunc-normal rejection sampler would otherwise use a std-dependent number of random
            draws). Under this rescaling the cut sits at ±10 std: P is, in effect, untruncated.
    """

    def __init__(
        self, kind: str, grid: tuple[int, int], dim: int, class_token: bool, init_std: float = 0.2
    ) -> None:
        super().__init__()
        if kind not in ABSOLUTE_PE_TYPES:
            raise ValueError(f"unknown absolute position embedding {kind!r}; choose one of {ABSOLUTE_PE_TYPES}")
        self.kind = kind
        self.grid = grid
        num_patches = grid[0] * grid[1]
        num_tokens = num_patches + int(class_token)
        if kind == "learnable":
            self.weight = nn.Parameter(torch.empty(1, num_tokens, dim))
            nn.init.trunc_normal_(self.weight, std=REFERENCE_INIT_STD)
            if init_std != REFERENCE_INIT_STD:
                with torch.no_grad():
                    self.weight.mul_(init_std / REFERENCE_INIT_STD)
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



def relative_position_index(grid: tuple[int, int]) -> torch.Tensor:
    """For every pair of patches (i, j) the row of their offset in a relative-bias table.

    Shape (h*w, h*w), values in [0, (2h-1)(2w-1)): offsets (dy, dx) with dy in [-(h-1), h-1]
    and dx in [-(w-1), w-1], numbered row-major (the layout Swin and BEiT use).
    """
    h, w = grid
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    dy = rows[:, None] - rows[None, :] + h - 1
    dx = cols[:, None] - cols[None, :] + w - 1
    return dy * (2 * w - 1) + dx


class RelativePositionBias(nn.Module):
    """One layer's relative position bias B (heads, N, N), added to its attention logits.

    Each head learns one value per patch offset: B[h, i, j] = table[offset(i, j), h]. The class
    token (``num_prefix`` leading tokens) gets no bias, as in the LaPE authors' DeiT code; so
    in a class-token model the last layer's bias never reaches the output (only the class
    token is read after it) and gets no gradient.

    With ``normalize`` (the LaPE join for this PE type) B goes through the layer's own
    LayerNorm over the key axis before it is added: each query's row of biases is centred and
    rescaled per layer, the relative analogue of LaPE's PE LayerNorm (2 * patches parameters).

    Args:
        grid: the patch grid (rows, cols).
        num_heads: attention heads; each has its own table column.
        num_prefix: leading tokens without a position (1 with a class token, else 0).
        normalize: LayerNorm the bias rows (join ``lape``).
    """

    index: torch.Tensor  # (P, P) offset id of every patch pair, a buffer

    def __init__(self, grid: tuple[int, int], num_heads: int, num_prefix: int, normalize: bool) -> None:
        super().__init__()
        h, w = grid
        self.grid, self.num_prefix = grid, num_prefix
        # Zeros, as the authors' code: the bias starts neutral under either join (the LayerNorm
        # of a constant row is its shift β = 0).
        self.table = nn.Parameter(torch.zeros((2 * h - 1) * (2 * w - 1), num_heads))
        self.register_buffer("index", relative_position_index(grid), persistent=False)
        self.norm = nn.LayerNorm(h * w) if normalize else None

    def patch_bias(self) -> torch.Tensor:
        """The bias between patches only, (heads, h*w, h*w), after the LayerNorm if any."""
        n = self.index.shape[0]
        bias = self.table[self.index.flatten()].view(n, n, -1).permute(2, 0, 1)
        return self.norm(bias) if self.norm is not None else bias

    def forward(self) -> torch.Tensor:
        """The bias for every token pair, (heads, N, N); class-token rows and columns are zero."""
        p = self.num_prefix
        return F.pad(self.patch_bias(), (p, 0, p, 0))

    def extra_repr(self) -> str:
        return f"grid={self.grid}, heads={self.table.shape[1]}, normalize={self.norm is not None}"
