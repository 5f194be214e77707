"""ViT-Lite, CVT and CCT (Compact Transformers) with every PE type and every PE join.

One model class, ``VisionTransformer``, covers the three families; they differ only in the
tokenizer (patch conv vs. small conv stack) and the pooling (class token vs. sequence pooling).
``create_model(name, ...)`` builds one by its registered name.

The PE joins (notebook 01 derives them; X_l is the residual stream entering layer l):

=================  ==========================================================================
``add``            X_1 = X_0 + P once, before layer 1 (ViT, DeiT, ViT-Lite).
``add_every_layer`` the same P added to the residual stream before every layer (so it
                   accumulates), as the official LaPE code's ablation does it.
``per_layer_pe``   a separate learnable P^(l) added to the residual stream before layer l.
``lape``           P stays out of the residual stream; layer l's attention receives
                   LN1_l(X_l) + P_l with P_l = LNpe_l(P_{l-1}), P_0 = P (chained, official form).
``lape_parallel``  as ``lape`` but P_l = LNpe_l(P) from the raw P in every layer.
``add_norm``       control: X_1 = X_0 + LNpe(P) once, before layer 1. One PE LayerNorm (2·D
                   parameters): P's scale is set by the norm, as under LaPE, but P still enters
                   the residual stream and no layer has a PE normalization of its own.
``lape_shared``    control: P stays out of the residual stream and every layer's attention
                   receives the same LNpe(P) (one LayerNorm, 2·D parameters): normalized and
                   out of the stream, but not adapted per layer.
=================  ==========================================================================

The controls split ``lape`` − ``add`` into three steps that add up to it:
(``add_norm`` − ``add``) a normalized, learnably scaled PE; (``lape_shared`` − ``add_norm``) P
out of the residual stream; (``lape`` − ``lape_shared``) a PE normalization per layer. A
learnable P's init scale is a fourth, separate knob (``pe_init_std``; the trainer's ``add@1.0``).

With ``pe="rpe"`` there is no P: every layer adds its own relative position bias to the
attention logits. ``add`` adds it as learned; ``lape`` first passes it through the layer's own
LayerNorm over the key axis (the LaPE authors' ablation for this PE type).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from torch import nn

from .pos_embed import PE_TYPES, PositionEmbedding, RelativePositionBias

JOINS = ("add", "add_every_layer", "per_layer_pe", "add_norm", "lape_shared", "lape", "lape_parallel")
LAPE_JOINS = ("lape", "lape_parallel")  # one PE LayerNorm per layer
OUT_OF_STREAM_JOINS = ("lape_shared", *LAPE_JOINS)  # P joins the attention input, never the residual stream
NORMED_PE_JOINS = ("add_norm", *OUT_OF_STREAM_JOINS)  # P passes through a PE LayerNorm of its own
LAYER_STYLES = ("cct", "prenorm")
RPE_JOINS = ("add", "lape")


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines an architecture, as plain values (``create_model`` overrides)."""

    depth: int
    num_heads: int
    dim: int
    mlp_ratio: float
    tokenizer: str  # "patch" (one conv, kernel = stride = patch_size) or "conv" (CCT stack)
    pooling: str  # "cls" (class token) or "seq" (sequence pooling)
    patch_size: int = 4  # tokenizer="patch"
    conv_layers: int = 1  # tokenizer="conv": number of conv + ReLU + maxpool stages
    conv_kernel: int = 3
    conv_hidden: int = 64  # width of the intermediate conv stages
    attn_drop: float = 0.1
    drop: float = 0.0  # dropout on the input tokens, the attention output and the MLP
    drop_path: float = 0.1  # stochastic depth, rising linearly 0 -> drop_path over the layers
    pe_init_std: float = 0.2  # Compact Transformers' choice; DeiT uses 0.02
    layer_style: str = "cct"  # "cct": Compact Transformers' layer, "prenorm": textbook pre-norm


_MODELS: dict[str, ModelConfig] = {}


def register_model(name: str, config: ModelConfig) -> None:
    """Make ``create_model(name)`` build ``config``."""
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = config


def list_models() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_MODELS)


def model_config(name: str) -> ModelConfig:
    """The registered config of ``name`` (raises ValueError naming the valid names)."""
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {list_models()}") from None


for _depth in (6, 7):
    register_model(f"vit_lite_{_depth}_4", ModelConfig(_depth, 4, 256, 2.0, "patch", "cls"))
    register_model(f"cvt_{_depth}_4", ModelConfig(_depth, 4, 256, 2.0, "patch", "seq"))
    register_model(f"cct_{_depth}_3x1", ModelConfig(_depth, 4, 256, 2.0, "conv", "seq", conv_layers=1))
register_model("cct_7_3x2", ModelConfig(7, 4, 256, 2.0, "conv", "seq", conv_layers=2))
register_model("cct_2_3x2", ModelConfig(2, 2, 128, 1.0, "conv", "seq", conv_layers=2))
register_model("cct_4_3x2", ModelConfig(4, 2, 128, 1.0, "conv", "seq", conv_layers=2))


class PatchEmbed(nn.Module):
    """ViT-Lite/CVT tokenizer: one conv with kernel = stride = patch size, with bias."""

    def __init__(self, img_size: tuple[int, int], patch_size: int, in_chans: int, dim: int) -> None:
        super().__init__()
        h, w = img_size
        if h % patch_size or w % patch_size:
            raise ValueError(
                f"img_size {h}x{w} is not divisible by patch_size {patch_size}; "
                f"use a multiple of {patch_size}"
            )
        self.grid = (h // patch_size, w // patch_size)
        if min(self.grid) < 1:
            raise ValueError(f"img_size {h}x{w} is smaller than one patch ({patch_size} px); use at least {patch_size}")
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class ConvTokenizer(nn.Module):
    """CCT tokenizer: ``n`` stages of conv (no bias) + ReLU + 3x3/2 max pool."""

    def __init__(
        self, img_size: tuple[int, int], n_layers: int, kernel: int, in_chans: int, hidden: int, dim: int
    ) -> None:
        super().__init__()
        widths = [in_chans] + [hidden] * (n_layers - 1) + [dim]
        stride, padding = max(1, kernel // 2 - 1), max(1, kernel // 2)
        stages: list[nn.Module] = []
        h, w = img_size
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            stages += [
                nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, padding=1),
            ]
            h = ((h + 2 * padding - kernel) // stride + 1 - 1) // 2 + 1
            w = ((w + 2 * padding - kernel) // stride + 1 - 1) // 2 + 1
        if h < 1 or w < 1:
            raise ValueError(f"img_size {img_size} is too small for {n_layers} conv stages")
        self.grid = (h, w)
        self.stages = nn.Sequential(*stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention without qkv bias, on PyTorch's fused kernel.

    ``bias`` (heads, N, N), when given, is added to the logits (a relative position bias).
    ``fused_attn = False`` (as in timm) computes softmax(q kᵀ / √d) v with plain ops instead:
    on the CPU ``vmap`` has no batching rule for the fused kernel and falls back to a slow
    per-sample loop with a warning, while plain ops stay batched (``lape_lib.stack``).
    """

    def __init__(self, dim: int, num_heads: int, attn_drop: float, proj_drop: float) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.attn_drop = attn_drop
        self.fused_attn = True
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        drop = self.attn_drop if self.training else 0.0
        if bias is not None:
            bias = bias.to(q.dtype)  # under autocast q is bf16/fp16 and the kernels want one dtype
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=drop)
        else:
            attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
            if bias is not None:
                attn = attn + bias
            x = F.dropout(attn.softmax(dim=-1), drop) @ v
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, d)))


class Block(nn.Module):
    """One encoder layer; ``pe`` (the out-of-stream joins) is added to the attention input after ``norm1``.

    ``attn_bias`` (heads, N, N), a relative position bias, is added to the attention logits.

    ``layer_style="prenorm"``: x = x + Attn(norm1(x) [+ pe]); x = x + MLP(norm2(x)).
    ``layer_style="cct"`` (Compact Transformers, the layer the published CIFAR numbers come
    from): the second norm rewrites the residual stream itself: x = norm2(x + Attn(...));
    x = x + MLP(x).
    """

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, attn_drop: float, drop: float,
        drop_path: float, layer_style: str,
    ) -> None:
        super().__init__()
        self.layer_style = layer_style
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, attn_drop, drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(
        self, x: torch.Tensor, pe: torch.Tensor | None = None, attn_bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        h = self.norm1(x)
        if pe is not None:
            h = h + pe
        x = x + self.drop_path(self.attn(h, attn_bias))
        if self.layer_style == "cct":
            x = self.norm2(x)
            return x + self.drop_path(self.mlp(x))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SeqPool(nn.Module):
    """Sequence pooling (CCT): softmax-weighted average of the tokens, weights from a linear score."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.score(x).softmax(dim=1)  # (B, N, 1)
        return (weights.transpose(1, 2) @ x).squeeze(1)


class VisionTransformer(nn.Module):
    """A compact ViT classifier with a configurable PE type and PE join.

    Build it with ``create_model``; the constructor takes a ``ModelConfig`` plus the choices
    that do not change the architecture's identity (classes, image size, PE type, join).
    """

    def __init__(
        self, cfg: ModelConfig, *, num_classes: int = 10, img_size: int | tuple[int, int] = 32,
        in_chans: int = 3, pe: str = "learnable", join: str = "lape",
    ) -> None:
        super().__init__()
        _check_choices(cfg, pe, join)
        size = (img_size, img_size) if isinstance(img_size, int) else (int(img_size[0]), int(img_size[1]))
        self.cfg, self.pe_type, self.join, self.num_classes = cfg, pe, join, num_classes
        self.img_size = size
        self.registered_as: str | None = None  # set by create_model
        if cfg.tokenizer == "patch":
            self.tokenizer: nn.Module = PatchEmbed(size, cfg.patch_size, in_chans, cfg.dim)
        else:
            self.tokenizer = ConvTokenizer(size, cfg.conv_layers, cfg.conv_kernel, in_chans, cfg.conv_hidden, cfg.dim)
        self.grid: tuple[int, int] = self.tokenizer.grid
        has_cls = cfg.pooling == "cls"
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim)) if has_cls else None

        def make_pe() -> PositionEmbedding:
            return PositionEmbedding(pe, self.grid, cfg.dim, has_cls, cfg.pe_init_std)

        self.pos_embed: PositionEmbedding | None = None
        self.layer_pos_embeds: nn.ModuleList | None = None
        if join == "per_layer_pe":
            self.layer_pos_embeds = nn.ModuleList(make_pe() for _ in range(cfg.depth))
        elif pe not in ("none", "rpe"):
            self.pos_embed = make_pe()
        self.pos_drop = nn.Dropout(cfg.drop)
        rates = torch.linspace(0, cfg.drop_path, cfg.depth).tolist()
        self.blocks = nn.ModuleList(
            Block(cfg.dim, cfg.num_heads, cfg.mlp_ratio, cfg.attn_drop, cfg.drop, r, cfg.layer_style) for r in rates
        )
        self.norm = nn.LayerNorm(cfg.dim)
        self.pool: nn.Module | None = SeqPool(cfg.dim) if cfg.pooling == "seq" else None
        self.head = nn.Linear(cfg.dim, num_classes)
        self.apply(_init_weights)
        # Created after the random init so that every join draws the same initial weights for
        # the modules they share (paired comparisons start from the same point); the exception is
        # ``per_layer_pe``, whose extra PEs are built before the init and draw from the generator first.
        lape = join in LAPE_JOINS
        self.pe_norms: nn.ModuleList | None = None
        if join in NORMED_PE_JOINS and pe != "rpe":
            self.pe_norms = nn.ModuleList(nn.LayerNorm(cfg.dim) for _ in range(cfg.depth if lape else 1))
        self.rel_pos: nn.ModuleList | None = None
        if pe == "rpe":
            self.rel_pos = nn.ModuleList(
                RelativePositionBias(self.grid, cfg.num_heads, int(has_cls), normalize=lape) for _ in range(cfg.depth)
            )

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1] + int(self.cls_token is not None)

    def layer_pes(self) -> list[torch.Tensor | None]:
        """What each layer receives as PE, shape (1, N, D) each (None where a layer gets none).

        For the in-stream joins (``add``, ``add_every_layer``, ``per_layer_pe``, ``add_norm``) this
        is what is added to the residual stream before the layer; for the out-of-stream ones
        (``lape_shared`` and the LaPE joins), what is added to the attention input after
        ``norm1``. Computed once per forward: the PE does not depend on the batch.
        """
        depth = self.cfg.depth
        if self.layer_pos_embeds is not None:
            return [p() for p in self.layer_pos_embeds]
        if self.pos_embed is None:  # pe "none" or "rpe"
            return [None] * depth
        p = self.pos_embed()
        if self.join == "add":
            return [p] + [None] * (depth - 1)
        if self.join == "add_every_layer":
            return [p] * depth
        assert self.pe_norms is not None
        if self.join == "add_norm":
            return [self.pe_norms[0](p)] + [None] * (depth - 1)
        if self.join == "lape_shared":
            return [self.pe_norms[0](p)] * depth
        if self.join == "lape_parallel":
            return [norm(p) for norm in self.pe_norms]
        chained = []
        for norm in self.pe_norms:
            p = norm(p)
            chained.append(p)
        return chained

    def layer_attn_biases(self) -> list[torch.Tensor | None]:
        """The relative position bias each layer adds to its attention logits, (heads, N, N) each.

        None for every layer unless ``pe="rpe"``; under ``join="lape"`` after the layer's LayerNorm.
        """
        if self.rel_pos is None:
            return [None] * self.cfg.depth
        return [bias() for bias in self.rel_pos]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch (B, C, H, W) to the final-normed tokens (B, N, D).

        Each layer's PE (``layer_pes``) enters in one place: the residual stream before the layer
        for the in-stream joins, the attention input after ``norm1`` for the out-of-stream ones.
        """
        x = self.tokenizer(x)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        out_of_stream = self.join in OUT_OF_STREAM_JOINS
        # Input dropout: a ViT (add, add_norm) drops tokens + P; the official code's share/unshare
        # ablations and the out-of-stream joins drop the tokens alone. Differs only when drop > 0.
        drop_with_pe = self.join in ("add", "add_norm")
        if not drop_with_pe:
            x = self.pos_drop(x)
        for i, (block, pe, bias) in enumerate(zip(self.blocks, self.layer_pes(), self.layer_attn_biases())):
            if pe is not None and not out_of_stream:
                x = x + pe
            if i == 0 and drop_with_pe:
                x = self.pos_drop(x)
            x = block(x, pe if out_of_stream else None, bias)
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        x = x[:, 0] if self.pool is None else self.pool(x)
        return self.head(x)

    def extra_repr(self) -> str:
        return f"pe={self.pe_type!r}, join={self.join!r}, grid={self.grid}"


def _init_weights(m: nn.Module) -> None:
    # Compact Transformers' init: trunc-normal linears, unit LayerNorms, Kaiming convs; one
    # deliberate difference: the patch conv's bias starts at zero (theirs keeps PyTorch's
    # uniform init), see README's design decisions.
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def combination_problem(pe: str, join: str) -> str | None:
    """Why a PE type and a join cannot go together, or None if they can: the pe/join rules, stated
    once (``valid_combination``, model building and the trainer's messages all read them here).

    A join that places or transforms a PE needs one; a per-layer PE needs a learnable one; a
    relative bias acts on the attention logits and takes ``add`` or ``lape`` only.
    """
    if pe not in PE_TYPES:
        return f"unknown pe {pe!r}; choose one of {PE_TYPES}"
    if join not in JOINS:
        return f"unknown join {join!r}; choose one of {JOINS}"
    if pe == "none" and join != "add":
        return f"join={join!r} needs a position embedding, but pe='none'; use join='add' with pe='none'"
    if pe == "rpe" and join not in RPE_JOINS:
        return (f"pe='rpe' (a relative bias on the attention logits) takes join {' or '.join(map(repr, RPE_JOINS))}, "
                f"got join={join!r}; the other joins act on an absolute PE")
    if join == "per_layer_pe" and pe != "learnable":
        return (f"join='per_layer_pe' learns a separate PE per layer and needs pe='learnable', got pe={pe!r} "
                "(a fixed PE repeated per layer is join='add_every_layer')")
    return None


def valid_combination(pe: str, join: str) -> bool:
    """Whether a PE type and a join can go together (see ``combination_problem``)."""
    return combination_problem(pe, join) is None


def _check_choices(cfg: ModelConfig, pe: str, join: str) -> None:
    problem = combination_problem(pe, join)
    if problem is not None:
        raise ValueError(problem)
    for name in ("depth", "num_heads", "dim", "patch_size", "conv_layers", "conv_kernel", "conv_hidden"):
        value = getattr(cfg, name)
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise ValueError(f"model setting {name} must be an integer >= 1, got {value!r}")
    if cfg.dim % cfg.num_heads:
        raise ValueError(f"dim {cfg.dim} is not divisible by num_heads {cfg.num_heads}")
    for name in ("mlp_ratio", "pe_init_std"):
        value = getattr(cfg, name)
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < float("inf")):
            raise ValueError(f"model setting {name} must be a positive number, got {value!r}")
    for name in ("attn_drop", "drop", "drop_path"):
        value = getattr(cfg, name)
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1):
            raise ValueError(f"model setting {name} is a probability in [0, 1), got {value!r}")
    if cfg.layer_style not in LAYER_STYLES:
        raise ValueError(f"unknown layer_style {cfg.layer_style!r}; choose one of {LAYER_STYLES}")
    if cfg.tokenizer not in ("patch", "conv"):
        raise ValueError(f"unknown tokenizer {cfg.tokenizer!r}; choose 'patch' or 'conv'")
    if cfg.pooling not in ("cls", "seq"):
        raise ValueError(f"unknown pooling {cfg.pooling!r}; choose 'cls' or 'seq'")


def resolve_config(name: str, overrides: dict[str, Any], pe: str | None = None, join: str | None = None) -> ModelConfig:
    """The registered config of ``name`` under ``overrides``, checked (with ``pe`` and ``join`` if
    given) without building the model; raises ValueError naming the bad value."""
    cfg = model_config(name)
    valid = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(f"unknown model override(s) {unknown}; valid ones are {sorted(valid)}")
    cfg = replace(cfg, **overrides)
    if pe is not None and join is not None:
        _check_choices(cfg, pe, join)
    return cfg


def create_model(
    name: str, *, num_classes: int = 10, img_size: int | tuple[int, int] = 32, pe: str = "learnable",
    join: str = "lape", **overrides: Any,
) -> VisionTransformer:
    """Build a registered model.

    Args:
        name: one of ``list_models()``, e.g. ``"vit_lite_7_4"``, ``"cct_7_3x1"``.
        num_classes: classifier width.
        img_size: input size (int or (H, W)).
        pe: position embedding type, one of ``PE_TYPES``.
        join: how the PE reaches the layers, one of ``JOINS``.
        **overrides: ``ModelConfig`` fields to change (``depth=2``, ``layer_style="prenorm"``, ...).

    Raises:
        ValueError: on an unknown name, pe, join or override, or a combination that cannot work.
    """
    model = VisionTransformer(resolve_config(name, overrides), num_classes=num_classes, img_size=img_size, pe=pe, join=join)
    model.registered_as = name
    return model


def from_description(description: dict[str, Any]) -> VisionTransformer:
    """A fresh model (random init) from ``describe``'s output: the inverse of ``describe``."""
    meta = dict(description)
    name = meta.pop("registered_as")
    meta["img_size"] = tuple(meta["img_size"])
    return create_model(name, **meta)  # the remaining keys are the full ModelConfig


def describe(model: VisionTransformer) -> dict[str, Any]:
    """The plain-value description of a model (config + choices), used in checkpoints."""
    return {
        "registered_as": model.registered_as, **asdict(model.cfg),
        "num_classes": model.num_classes, "img_size": list(model.img_size),
        "pe": model.pe_type, "join": model.join,
    }

