"""What each layer sees of the position embedding, and the LayerNorm algebra behind LaPE."""

from __future__ import annotations

from typing import Any, NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import nn

from .augment import normalize_images
from .models import OUT_OF_STREAM_JOINS, Block, VisionTransformer
from .pos_embed import RelativePositionBias


@torch.no_grad()
def per_layer_pe(model: nn.Module, include_class_token: bool = False) -> torch.Tensor:
    """Each layer's effective PE, shape (L, N, D), as the paper plots it.

    * ``lape`` / ``lape_parallel`` / ``lape_shared``: P_l, exactly what layer l's attention
      receives (added to LN1_l(X_l)).
    * ``add`` / ``add_every_layer``: a counterfactual, γ1_l ⊙ norm(P) + β1_l with layer l's
      ``norm1``: P as if it reached layer l alone (the paper's reparameterization of LN1_l(X + P),
      the PE part under the *token* LayerNorm's affine map). What attention really gets is
      mixed with the tokens, at a share λ2 that depends on them (``lambda_coefficients``).
    * ``per_layer_pe``: the same with layer l's own P^(l); ``add_norm``: with LNpe(P).

    The class-token row is dropped unless ``include_class_token`` (the paper drops it), so by
    default N is the number of patches and each row reshapes to ``model.grid``. timm ViTs, plain
    or lapeified, work too (prefix tokens dropped the same way).
    """
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    from .timm_lape import LaPEVisionTransformer

    if isinstance(model, (LaPEVisionTransformer, TimmViT)):
        return _timm_per_layer_pe(model, include_class_token).cpu()
    if not isinstance(model, VisionTransformer):
        raise TypeError(f"per_layer_pe takes a lape_lib VisionTransformer (create_model), a timm VisionTransformer "
                        f"or a lapeified one; got {type(model).__name__}")
    if model.pe_type in ("none", "rpe"):
        hint = "; for a relative bias use per_layer_attn_bias" if model.pe_type == "rpe" else ""
        raise ValueError(f"per_layer_pe needs a model with an absolute position embedding, but pe={model.pe_type!r}{hint}")
    if model.join in OUT_OF_STREAM_JOINS:
        pes = [p[0] for p in model.layer_pes() if p is not None]  # every layer has one out of the stream
    else:
        raws = [p() for p in model.layer_pos_embeds] if model.layer_pos_embeds is not None else None
        raw = model.layer_pes()[0] if model.pos_embed is not None else None  # add_norm: LNpe(P)
        blocks = cast(list[Block], list(model.blocks))
        pes = [
            block.norm1(raws[i] if raws is not None else raw)[0]
            for i, block in enumerate(blocks)
        ]
    out = torch.stack([p.float() for p in pes])
    if model.cls_token is not None and not include_class_token:
        out = out[:, 1:]
    return out.cpu()  # for plotting and analysis, wherever the model lives


@torch.no_grad()
def per_layer_attn_bias(model: VisionTransformer) -> torch.Tensor:
    """The relative position bias each layer adds to its attention logits, (L, heads, P, P).

    P is the number of patches (class-token rows, which get no bias, are dropped). Under
    ``join="lape"`` this is the bias after the layer's LayerNorm, the one attention sees.
    """
    if model.rel_pos is None:
        raise ValueError(f"per_layer_attn_bias needs a model with pe='rpe', got pe={model.pe_type!r}")
    return torch.stack([bias.patch_bias().float() for bias in cast(list[RelativePositionBias], list(model.rel_pos))]).cpu()


def _timm_per_layer_pe(model: nn.Module, include_class_token: bool) -> torch.Tensor:
    """per_layer_pe for timm ViTs: lapeified (P_l) or plain (γ1_l ⊙ norm(P) + β1_l)."""
    from .timm_lape import LaPEVisionTransformer

    if isinstance(model, LaPEVisionTransformer) and model.lape:
        pes, prefix = [p[0] for p in model.layer_pes()], model.num_prefix_tokens
    else:
        vit: Any = model.vit if isinstance(model, LaPEVisionTransformer) else model
        if vit.pos_embed is None:
            raise ValueError("per_layer_pe needs a model with a position embedding, but pos_embed is None")
        raw = vit.pos_embed[0]
        prefix = 0 if vit.no_embed_class else vit.num_prefix_tokens
        pes = [block.norm1(raw) for block in vit.blocks]
    out = torch.stack([p.float() for p in pes])
    return out if include_class_token else out[:, prefix:]


def pe_similarity(pe: torch.Tensor) -> torch.Tensor:
    """Cosine similarity between every pair of PE rows: (L, N, D) -> (L, N, N) (also (N, D) -> (N, N))."""
    unit = F.normalize(pe.float(), dim=-1)
    return unit @ unit.transpose(-1, -2)


class AffineSplit(NamedTuple):
    """LN(x + p) written as a token part plus a PE part (``token + pe == LN(x + p)``)."""

    token: torch.Tensor  # γ/σ(z) ⊙ (x − μ(x)) + β
    pe: torch.Tensor  # γ/σ(z) ⊙ (p − μ(p))
    scale: torch.Tensor  # γ/σ(z): the one per-channel, per-token scale both parts share


def affine_split(norm: nn.LayerNorm, x: torch.Tensor, p: torch.Tensor) -> AffineSplit:
    """Split ``norm(x + p)`` into its token and PE parts (the argument notebook 01 teaches).

    With z = x + p and μ(z) = μ(x) + μ(p), LN(z) = γ ⊙ (z − μ(z))/σ(z) + β separates into
    [γ/σ(z) ⊙ (x − μ(x)) + β] + [γ/σ(z) ⊙ (p − μ(p))]: both parts go through the same scale.
    """
    z = x + p
    sigma = torch.sqrt(z.var(dim=-1, unbiased=False, keepdim=True) + norm.eps)
    weight = norm.weight if norm.weight is not None else torch.ones_like(z[..., 0, None])
    bias = norm.bias if norm.bias is not None else 0.0
    scale = weight / sigma
    token = scale * (x - x.mean(dim=-1, keepdim=True)) + bias
    pe = scale * (p - p.mean(dim=-1, keepdim=True))
    return AffineSplit(token, pe, scale)


def lambda_coefficients(x: torch.Tensor, p: torch.Tensor, eps: float = 0.0) -> dict[str, torch.Tensor]:
    """The paper's Eq. 6-7 coefficients: LN(x+ω) = λ1·LN(x) + λ2·LN(ω) + λ3·β (per token).

    λ2 = σ_ω / σ_{x+ω} is the share the PE keeps; it falls as the tokens get louder next to the PE.
    """

    def std(t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(t.var(dim=-1, unbiased=False) + eps)

    s_x, s_p, s_z = std(x), std(p), std(x + p)
    return {"lambda1": s_x / s_z, "lambda2": s_p / s_z, "lambda3": (s_z - s_x - s_p) / s_z}


def model_device(model: nn.Module) -> torch.device:
    """Where ``model``'s weights are: images are moved there, so a model trained on a GPU can be
    analysed with images made on the CPU (a notebook's)."""
    return next(model.parameters()).device


@torch.no_grad()
def block_inputs(model: VisionTransformer, images: torch.Tensor) -> list[torch.Tensor]:
    """The residual stream X_l entering each layer (B, N, D) for a batch, via forward hooks.

    ``images`` may be on another device than the model: they are moved to the model's."""
    images = images.to(model_device(model))
    seen: list[torch.Tensor] = []
    hooks = [b.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach())) for b in model.blocks]
    try:
        was_training = model.training
        model.eval()
        model(images)
        model.train(was_training)
    finally:
        for h in hooks:
            h.remove()
    return seen


@torch.no_grad()
def pe_share(model: VisionTransformer, images: torch.Tensor) -> dict[str, float]:
    """How much of layer 1's attention input is position, for a batch of (normalized) images.

    Layer 1's attention gets LN1_1(X_0 + P) under the in-stream joins and LN1_1(X_0) + P_1 under
    the out-of-stream ones; its position part is γ/σ(X_0 + P) ⊙ (P − μ(P)) (``affine_split``)
    or P_1. Returns the per-token standard deviations, averaged over tokens and images:
    ``sigma_tokens`` (X_0, the tokens before any PE), ``sigma_pe`` (P as it is joined: LNpe(P)
    for ``add_norm``) and ``share`` = σ(position part) / σ(attention input). Under ``add`` with
    γ = 1 and β = 0 (as at init) the share is the paper's λ2; a unit-scale PE next to unit-scale tokens gives ≈ 0.7.
    """
    if model.pos_embed is None:
        why = (" and join='per_layer_pe' (one P per layer; pe_share reads the single P of layer 1's input)"
               if model.join == "per_layer_pe" else "")
        raise ValueError(f"pe_share needs a model with one absolute position embedding, got pe={model.pe_type!r}{why}")
    images = images.to(model_device(model))
    was_training = model.training
    model.eval()
    try:
        x0 = model.tokenizer(images)
        if model.cls_token is not None:
            x0 = torch.cat([model.cls_token.expand(x0.shape[0], -1, -1), x0], dim=1)
        p = model.layer_pes()[0]
        assert p is not None
        norm1 = cast(Block, model.blocks[0]).norm1
        if model.join in OUT_OF_STREAM_JOINS:
            position, attn_input = p.expand_as(x0), norm1(x0) + p
        else:
            position, attn_input = affine_split(norm1, x0, p.expand_as(x0)).pe, norm1(x0 + p)
    finally:
        model.train(was_training)
    return {"sigma_tokens": float(_token_std(x0).mean()), "sigma_pe": float(_token_std(p).mean()),
            "share": float((_token_std(position) / _token_std(attn_input)).mean())}


def _token_std(t: torch.Tensor) -> torch.Tensor:
    """Per-token standard deviation over the channels (the σ a LayerNorm divides by, without eps)."""
    return t.float().std(dim=-1, unbiased=False)


def pe_shares(results: dict[str, Any], n_images: int = 256) -> list[dict[str, Any]]:
    """``pe_share`` of every absolute-PE arm but ``per_layer_pe`` (one P per layer) of a ``train``
    results dict (its lowest seed), at init
    (rebuilt from the same seed) and trained, on the run's first ``n_images`` test images."""
    from .config import TrainConfig, arm_label, arm_name, initial_model, load_data
    from .images import ImageData

    cfg = TrainConfig(**{**results["config"], "progress": False})
    data = load_data(cfg)
    if not isinstance(data, ImageData):
        raise ValueError("pe_shares needs a dataset held in memory, not a streamed one")
    images = normalize_images(data.test_x[:n_images], data.mean, data.std)
    seed, rows = min(cfg.seeds), []
    for arm in results["arms"].values():
        if arm["seed"] != seed or arm["pe"] in ("none", "rpe") or arm["join"] == "per_layer_pe":
            continue
        label = arm_label(arm)
        initial = cast(VisionTransformer, initial_model(cfg, seed, arm["pe"], label, data.num_classes))
        trained = results.get("models", {}).get(arm_name(seed, arm["pe"], label))
        at_init = pe_share(initial, images)
        rows.append({"arm": label, "pe": arm["pe"], "join": arm["join"], "sigma_tokens": at_init["sigma_tokens"],
                     "sigma_pe_init": at_init["sigma_pe"], "share_init": at_init["share"],
                     "share_trained": None if trained is None else pe_share(trained, images)["share"]})
    return rows


@torch.no_grad()
def layer_differences(model: nn.Module) -> torch.Tensor:
    """How much each layer's PE picture differs from layer 1's: mean |S_l − S_1| over patch pairs,
    S_l the cosine-similarity matrix of ``per_layer_pe`` (L values, the first 0). Near 0 for
    every layer: all layers see the same positional pattern (as every join but ``per_layer_pe``
    does at init; that one draws a separate P per layer)."""
    return _differences(pe_similarity(per_layer_pe(model)))


def _differences(sims: torch.Tensor) -> torch.Tensor:
    """Mean |S_l − S_1| over patch pairs, per layer, of stacked similarity matrices (L, N, N)."""
    return (sims - sims[:1]).abs().mean(dim=(1, 2))


def _layer_norms(model: nn.Module) -> tuple[str, list[nn.LayerNorm]] | None:
    """The per-layer LayerNorms whose affine maps (γ, β) make a layer's PE picture differ from
    layer 1's: LaPE's LN'_l (one PE LayerNorm per layer; a lapeified timm model's ``pe_norm``s),
    else, where P is in the stream, the token LayerNorms ``norm1`` (under ``per_layer_pe`` each
    acting on its layer's own P^(l), which differ from the start); None where every layer is handed
    the same P (``lape_shared``) or the model has neither."""
    blocks = list(getattr(model, "blocks", None) or getattr(getattr(model, "vit", None), "blocks", None) or [])
    pe_norms = list(getattr(model, "pe_norms", None) or [getattr(b, "pe_norm", None) for b in blocks])
    if len(pe_norms) == len(blocks) > 1 and all(isinstance(n, nn.LayerNorm) for n in pe_norms):
        return "the PE LayerNorms' γ', β'", cast(list[nn.LayerNorm], pe_norms)
    if getattr(model, "join", None) in OUT_OF_STREAM_JOINS:
        return None
    norms = [getattr(b, "norm1", None) for b in blocks]
    if norms and all(isinstance(n, nn.LayerNorm) for n in norms):
        own = ", each on its layer's own P^(l)" if getattr(model, "join", None) == "per_layer_pe" else ""
        return f"the token LayerNorms' γ, β (norm1{own})", cast(list[nn.LayerNorm], norms)
    return None


# The mean |S_l − S_1| above which notebooks 01 and 03 call a layer's PE map moved away from layer 1's.
LAYER_CUTOFF = 0.05


@torch.no_grad()
def layer_difference_report(models: dict[str, nn.Module]) -> list[str]:
    """Sentences on how far each model's per-layer PE maps moved from layer 1's: the mean
    |S_l − S_1| per layer (``layer_differences``), the largest set against layer 1's own contrast
    (its mean |S_1| off the diagonal) and against ``LAYER_CUTOFF``, and how the models compare."""
    largest, lines = {}, []
    for name, m in models.items():
        sims = pe_similarity(per_layer_pe(m))
        d, s1 = _differences(sims), sims[0]
        contrast = float(s1[~torch.eye(len(s1), dtype=torch.bool)].abs().mean())
        largest[name] = float(d.max())
        lines.append(f"{name}: mean |S_l - S_1| per layer " + " ".join(f"{v:.3f}" for v in d.tolist())
                     + f"; the largest is {largest[name] / contrast:.0%} of layer 1's mean |S_1| off the diagonal ({contrast:.3f})")
        norms = _layer_norms(m)
        if norms is not None:  # what moves the maps apart: γ's spread over channels and β, both 0 at init
            what, layers = norms
            lines.append(f"{name}: {what} per layer: std of γ over channels "
                         + " ".join(f"{float(n.weight.std()):.3f}" for n in layers)
                         + "; mean |β| " + " ".join(f"{float(n.bias.abs().mean()):.3f}" for n in layers))
    for name, v in largest.items():
        lines.append(f"{name}: " + (f"its layers' maps differ from layer 1's (largest mean difference {v:.3f} > {LAYER_CUTOFF})"
                                    if v > LAYER_CUTOFF else
                                    f"no layer's map differs from layer 1's by more than {LAYER_CUTOFF} on average over "
                                    f"patch pairs (largest {v:.3f})"))
    if len(largest) == 2 and min(largest.values()) > 0:
        (a, va), (b, vb) = sorted(largest.items(), key=lambda kv: -kv[1])
        lines.append(f"{a}'s layers moved {va / vb:.1f}x as far from layer 1 as {b}'s")
    if largest and all(v <= LAYER_CUTOFF for v in largest.values()):
        lines.append(f"By this cut-off ({LAYER_CUTOFF}) the run does not show the paper's layer-adaptive pattern. "
                     "Whether longer training or a harder task would show it is not tested here.")
    return lines


@torch.no_grad()
def stream_scale(model: VisionTransformer, images: torch.Tensor) -> list[dict[str, float]]:
    """Per layer: σ(X_l), the residual stream's per-token std entering layer l, and σ_P/σ(X_l)
    (``sigma_pe_ratio``): how loud the input PE is next to the stream, as a ratio of token-averaged
    stds. Under ``add`` the stream entering layer 1 is X_0 + P, so the layer-1 ratio is close to the
    paper's λ2 but not equal to it: λ2 is a per-token ratio, which ``pe_share`` averages over the
    tokens. For an out-of-stream join it is the ratio only (larger than
    the share P would get if joined to X_l)."""
    sigma_p = float(_token_std(model.pos_embed()).mean()) if model.pos_embed is not None else float("nan")
    rows = []
    for x in block_inputs(model, images):
        sigma = float(_token_std(x).mean())
        rows.append({"sigma_stream": sigma, "sigma_pe_ratio": sigma_p / sigma})
    return rows
