"""LaPE for timm's VisionTransformer (DeiT, ViT): ``lapeify(model)``.

    import timm, lape_lib
    model = lape_lib.lapeify(timm.create_model("deit_tiny_patch16_224", pretrained=False))

DeiT's distilled models (a distillation token beside the class token), register tokens and
``no_embed_class`` are supported.

The returned module wraps the timm model (its weights untouched, under ``vit.``), gives every
block a PE LayerNorm (``vit.blocks.<i>.pe_norm``, γ=1, β=0, the block's own eps), and runs the
chained form of the official LaPE code: no PE at the input, P_l = LNpe_l(P_{l-1}) added to each
block's attention input. ``lape=False`` runs the same loop with timm's own input PE instead,
which reproduces the timm model's output exactly (the tests check this against timm).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

_BLOCK_PARTS = ("norm1", "attn", "ls1", "drop_path1", "norm2", "mlp", "ls2", "drop_path2")


def _check_supported(vit: Any) -> None:
    try:
        from timm.models.vision_transformer import VisionTransformer
    except ImportError as err:  # pragma: no cover - timm is a dependency
        raise ImportError("lapeify needs timm") from err
    if not isinstance(vit, VisionTransformer):
        raise ValueError(f"lapeify supports timm VisionTransformer models (DeiT, ViT), not {type(vit).__name__}")
    if getattr(vit, "pos_embed", None) is None:
        raise ValueError("this model has no absolute position embedding (pos_embed is None); LaPE re-normalizes one per layer")
    if getattr(vit, "dynamic_img_size", False):
        raise ValueError("dynamic_img_size=True resamples the PE per input; create the model with a fixed img_size")
    for i, block in enumerate(vit.blocks):
        missing = [p for p in _BLOCK_PARTS if not hasattr(block, p)]
        if missing:
            raise ValueError(f"block {i} ({type(block).__name__}) lacks {missing}: only timm's pre-norm Block is supported")


class LaPEVisionTransformer(nn.Module):
    """A timm VisionTransformer run with LaPE (or, with ``lape=False``, exactly as timm runs it)."""

    vit: Any  # a timm VisionTransformer; Any, as its attributes are timm's to type

    def __init__(self, vit: Any, lape: bool = True) -> None:
        super().__init__()
        _check_supported(vit)
        self.vit = vit
        self.lape = lape
        for block in vit.blocks if lape else ():  # lape=False is timm's model as it is: no unused norms
            norm1 = block.norm1
            dim = norm1.normalized_shape[0]
            block.pe_norm = nn.LayerNorm(dim, eps=norm1.eps).to(norm1.weight.device, norm1.weight.dtype)

    @property
    def num_prefix_tokens(self) -> int:
        return self.vit.num_prefix_tokens

    def position_embedding(self) -> torch.Tensor:
        """P_0 with one row per token: zero rows for the prefix tokens where timm embeds none."""
        pe = self.vit.pos_embed
        if self.vit.no_embed_class and self.num_prefix_tokens:
            pe = torch.cat([pe.new_zeros(1, self.num_prefix_tokens, pe.shape[-1]), pe], dim=1)
        return pe

    def layer_pes(self) -> list[torch.Tensor]:
        """P_l for every block, computed once per forward (it does not depend on the batch)."""
        p, out = self.position_embedding(), []
        for block in self.vit.blocks:
            p = block.pe_norm(p)
            out.append(p)
        return out

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        vit = self.vit
        if not self.lape:
            return vit._pos_embed(x)
        # timm's prefix order: class token, then DeiT's distillation token, then register tokens
        tokens = (getattr(vit, name, None) for name in ("cls_token", "dist_token", "reg_token"))
        prefix = [t.expand(x.shape[0], -1, -1) for t in tokens if t is not None]
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        return vit.pos_drop(torch.cat(prefix + [x], dim=1) if prefix else x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        vit = self.vit
        x = vit.norm_pre(vit.patch_drop(self._tokens(vit.patch_embed(x))))
        pes = self.layer_pes() if self.lape else [None] * len(vit.blocks)
        for block, pe in zip(vit.blocks, pes):
            h = block.norm1(x)
            if pe is not None:
                h = h + pe
            x = x + block.drop_path1(block.ls1(block.attn(h)))
            x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
        return vit.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit.forward_head(self.forward_features(x))


def lapeify(model: nn.Module, lape: bool = True) -> LaPEVisionTransformer:
    """Turn a timm VisionTransformer into its LaPE form, keeping its weights.

    Adds exactly 2·D·L parameters with ``lape=True``, none with ``lape=False``. Raises ValueError for a model it does not support (not a
    timm VisionTransformer, no absolute PE, dynamic image size, a non-standard block).
    """
    return LaPEVisionTransformer(model, lape=lape)
