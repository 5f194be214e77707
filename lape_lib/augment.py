"""The CIFAR recipe's augmentation as batched tensor ops (GPU or CPU), per sample.

One ``grid_sample`` does the random resized crop, the flip and RandAugment's geometric ops
(rotate, shear, translate) for the whole batch; the colour ops work on each image without
resampling and are selected per sample with masks; random erasing, mixup and cutmix follow timm's definitions. All randomness
comes from a ``torch.Generator`` that the caller seeds from (seed, epoch, step), so a batch's
augmentation is a pure function of those numbers: paired runs see identical batches and a
resumed run needs no RNG state. The per-sample numbers are drawn up front (:func:`draw`), so
the rest is a pure tensor function: compilable, and run once for several seeds' batches.

Deviations from timm's PIL pipeline, chosen for speed and kept small: RandAugment's geometric
ops are composed with the crop into one bilinear warp (timm resamples per op and picks a random
interpolation); ``equalize`` is the textbook CDF equalization; ``posterize`` keeps at least one
bit (timm's ``PosterizeIncreasing`` asks current Pillow for 0 bits at magnitude 10 and raises);
the geometric ops always come before the colour ops, where timm applies them in the order drawn.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F


def normalize_images(x_uint8: torch.Tensor, mean: Sequence[float] | torch.Tensor,
                     std: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) images as a model sees them at test time: on [0, 1], then (x - mean) / std per channel."""
    mean_t, std_t = (torch.as_tensor(v, dtype=torch.float32, device=x_uint8.device).view(1, -1, 1, 1) for v in (mean, std))
    return (x_uint8.float().div_(255) - mean_t) / std_t


def derive_seed(*parts: object) -> int:
    """A 63-bit seed that is a pure function of ``parts`` (e.g. seed, epoch, step), the same on every machine."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclass(frozen=True)
class AugmentConfig:
    """Switches and strengths; the defaults are Compact Transformers' CIFAR recipe."""

    crop_scale: tuple[float, float] | None = (0.8, 1.0)  # random resized crop; None: off
    flip: bool = True
    randaug_ops: int = 2  # ops per image; 0 turns RandAugment off
    randaug_magnitude: float = 9.0
    randaug_std: float = 0.5
    randaug_prob: float = 0.5  # each chosen op is applied with this probability (timm's default)
    erasing: float = 0.25  # random erasing probability
    mixup: float = 0.8  # mixup alpha; 0 turns mixup off
    cutmix: float = 1.0  # cutmix alpha; 0 turns cutmix off
    mix_prob: float = 1.0
    switch_prob: float = 0.5  # cutmix instead of mixup, per batch
    label_smoothing: float = 0.1

    @classmethod
    def off(cls) -> AugmentConfig:
        return cls(crop_scale=None, flip=False, randaug_ops=0, erasing=0.0, mixup=0.0, cutmix=0.0, label_smoothing=0.0)


GEOMETRIC_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
COLOR_OPS = (
    "autocontrast", "equalize", "invert", "posterize", "solarize", "solarize_add",
    "color", "contrast", "brightness", "sharpness",
)
RANDAUG_OPS = COLOR_OPS + GEOMETRIC_OPS  # timm's rand "increasing" list, 15 ops


def _signed(u: torch.Tensor, coin: torch.Tensor) -> torch.Tensor:
    return torch.where(coin < 0.5, -u, u)


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (degenerate + factor.view(-1, 1, 1, 1) * (x - degenerate)).clamp(0, 1)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    levels = (x * 255).round().long().clamp(0, 255).view(b * c, h * w)
    hist = torch.zeros(b * c, 256, device=x.device).scatter_add_(1, levels, torch.ones_like(levels, dtype=torch.float))
    cdf = hist.cumsum(1)
    cdf_min = torch.where(hist > 0, cdf, torch.full_like(cdf, float(h * w))).min(1, keepdim=True).values
    lut = ((cdf - cdf_min) / (h * w - cdf_min).clamp(min=1)).clamp(0, 1)
    return lut.gather(1, levels).view(b, c, h, w)


def _sharpen_degenerate(x: torch.Tensor) -> torch.Tensor:
    kernel = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], device=x.device, dtype=x.dtype) / 13
    smooth = F.conv2d(x, kernel.expand(x.shape[1], 1, 3, 3).contiguous(), padding=1, groups=x.shape[1])
    out = x.clone()  # PIL leaves the border pixels untouched
    out[..., 1:-1, 1:-1] = smooth[..., 1:-1, 1:-1]
    return out


def _color_op(name: str, x: torch.Tensor, level: torch.Tensor, coin: torch.Tensor) -> torch.Tensor:
    """One RandAugment colour op on the whole batch; ``level`` is magnitude/10 per sample."""
    lv = level.view(-1, 1, 1, 1)
    if name == "autocontrast":
        lo = x.amin(dim=(2, 3), keepdim=True)
        hi = x.amax(dim=(2, 3), keepdim=True)
        return torch.where(hi > lo, (x - lo) / (hi - lo).clamp(min=1e-6), x)
    if name == "equalize":
        return _equalize(x)
    if name == "invert":
        return 1 - x
    if name == "posterize":
        bits = (4 - (lv * 4).long()).clamp(1, 8)  # >= 1 bit: see the module docstring
        step = 2.0 ** (8 - bits)
        return torch.floor(x * 255 / step) * step / 255
    if name == "solarize":
        threshold = 1 - lv  # timm: 256 - level*256 on the 0..255 scale
        return torch.where(x >= threshold, 1 - x, x)
    if name == "solarize_add":
        return torch.where(x < 0.5, (x + lv * 110 / 255).clamp(max=1), x)
    factor = 1 + _signed(level * 0.9, coin)
    if name == "color":
        return _blend(_grayscale(x), x, factor)
    if name == "contrast":
        return _blend(_grayscale(x).mean(dim=(2, 3), keepdim=True), x, factor)
    if name == "brightness":
        return _blend(torch.zeros_like(x), x, factor)
    if name == "sharpness":
        return _blend(_sharpen_degenerate(x), x, factor)
    raise ValueError(f"unknown colour op {name!r}; valid: {COLOR_OPS}")


def _any(mask: torch.Tensor) -> bool:
    # On a GPU, computing an op for the whole batch is cheaper than a host sync to skip it; a
    # compiled graph computes every op too (a data-dependent branch would split it).
    return mask.device.type != "cpu" or torch.compiler.is_compiling() or bool(mask.any())


class Draws(NamedTuple):
    """Every random number one batch's augmentation uses, drawn up front in three calls.

    With the draws taken out, the augmentation itself is a pure tensor function (compilable,
    and applicable to several seeds' batches concatenated, each with its own draws).
    """

    uniform: torch.Tensor  # (B, 10 + 4 * randaug_ops): see _split
    normal: torch.Tensor  # (B, randaug_ops): each op's magnitude noise
    noise: torch.Tensor | None  # (B, C, H, W): random erasing's pixel values (None when erasing is off)


def draw(cfg: AugmentConfig, shape: tuple[int, ...], g: torch.Generator, device: torch.device | str = "cpu") -> Draws:
    """The draws for a batch of ``shape`` (B, C, H, W), from ``g`` (seeded from seed, epoch and step)."""
    b, n = shape[0], cfg.randaug_ops
    uniform = torch.rand(b, 10 + 4 * n, generator=g, device=device)
    normal = torch.randn(b, n, generator=g, device=device)
    noise = torch.randn(tuple(shape), generator=g, device=device) if cfg.erasing > 0 else None
    return Draws(uniform, normal, noise)


def _split(d: Draws) -> dict[str, torch.Tensor]:
    """The uniform columns by purpose: crop (4), flip (1), RandAugment (op, apply, geometric and
    colour sign coins: one per op each), erasing (5)."""
    n = d.normal.shape[1]
    parts = d.uniform.split([4, 1, n, n, n, n, 5], dim=1)
    return dict(zip(("crop", "flip", "op", "apply", "geo_coin", "colour_coin", "erase"), parts))


def randaugment_choices(cfg: AugmentConfig, d: Draws) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which ops each sample gets (B, n), whether each is applied, and its magnitude/10."""
    u = _split(d)
    ops = (u["op"] * len(RANDAUG_OPS)).long().clamp(max=len(RANDAUG_OPS) - 1)
    magnitude = cfg.randaug_magnitude + cfg.randaug_std * d.normal
    return ops, u["apply"] < cfg.randaug_prob, magnitude.clamp(0, 10) / 10


def geometric_matrix(cfg: AugmentConfig, d: Draws, ops: torch.Tensor, apply: torch.Tensor,
                     level: torch.Tensor) -> torch.Tensor:
    """Per-sample affine maps (B, 2, 3) in ``affine_grid``'s normalized output->input coordinates."""
    u = _split(d)
    b, device = ops.shape[0], ops.device
    eye = torch.eye(3, device=device).expand(b, 3, 3).clone()
    m = eye.clone()
    if cfg.crop_scale is not None:
        lo, hi = cfg.crop_scale
        area = lo + (hi - lo) * u["crop"][:, 0]
        ratio = (math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * u["crop"][:, 1]).exp()
        w = (area * ratio).sqrt().clamp(max=1)
        h = (area / ratio).sqrt().clamp(max=1)
        cx = (1 - w) * (2 * u["crop"][:, 2] - 1)
        cy = (1 - h) * (2 * u["crop"][:, 3] - 1)
        m[:, 0, 0], m[:, 1, 1], m[:, 0, 2], m[:, 1, 2] = w, h, cx, cy
    if cfg.flip:
        flip = torch.where(u["flip"][:, 0] < 0.5, -1.0, 1.0)
        m = m @ torch.diag_embed(torch.stack([flip, torch.ones_like(flip), torch.ones_like(flip)], -1))
    for j in range(ops.shape[1]):
        coin = u["geo_coin"][:, j]
        for k, name in enumerate(GEOMETRIC_OPS, start=len(COLOR_OPS)):
            on = (ops[:, j] == k) & apply[:, j]
            if not _any(on):
                continue
            op = eye.clone()
            lv = level[:, j]
            if name == "rotate":
                t = _signed(lv * math.radians(30), coin)
                op[:, 0, 0], op[:, 0, 1], op[:, 1, 0], op[:, 1, 1] = t.cos(), -t.sin(), t.sin(), t.cos()
            elif name == "shear_x":
                op[:, 0, 1] = _signed(lv * 0.3, coin)
            elif name == "shear_y":
                op[:, 1, 0] = _signed(lv * 0.3, coin)
            elif name == "translate_x":
                op[:, 0, 2] = _signed(lv * 0.45 * 2, coin)  # 0.45 of the width; the grid spans 2
            else:
                op[:, 1, 2] = _signed(lv * 0.45 * 2, coin)
            m = torch.where(on.view(b, 1, 1), m @ op, m)
    return m[:, :2]


def augment_images(x: torch.Tensor, cfg: AugmentConfig, d: Draws, fill: torch.Tensor) -> torch.Tensor:
    """Crop, flip and RandAugment a float batch in [0, 1] (B, C, H, W); ``fill`` pads warped borders."""
    b = x.shape[0]
    ops, apply, level = randaugment_choices(cfg, d)
    if cfg.crop_scale is not None or cfg.flip or ops.numel():
        theta = geometric_matrix(cfg, d, ops, apply, level)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        fill = fill.view(1, -1, 1, 1).to(x)
        x = F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill
    coins = _split(d)["colour_coin"]
    for j in range(ops.shape[1]):
        for k, name in enumerate(COLOR_OPS):
            on = (ops[:, j] == k) & apply[:, j]
            if _any(on):
                x = torch.where(on.view(b, 1, 1, 1), _color_op(name, x, level[:, j], coins[:, j]), x)
    return x


def random_erasing(x: torch.Tensor, prob: float, d: Draws) -> torch.Tensor:
    """timm's RandomErasing (mode 'pixel'): one box of area 2-33 %, per-pixel normal noise."""
    if prob <= 0 or d.noise is None:
        return x
    b, c, h, w = x.shape
    u = _split(d)["erase"]
    area = (0.02 + (1 / 3 - 0.02) * u[:, 0]) * h * w
    ratio = (math.log(0.3) + (math.log(1 / 0.3) - math.log(0.3)) * u[:, 1]).exp()
    bh = (area * ratio).sqrt().round().long().clamp(1, h)
    bw = (area / ratio).sqrt().round().long().clamp(1, w)
    top = (u[:, 2] * (h - bh + 1)).long()
    left = (u[:, 3] * (w - bw + 1)).long()
    on = u[:, 4] < prob
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    in_rows = (rows >= top.view(-1, 1, 1)) & (rows < (top + bh).view(-1, 1, 1))
    in_cols = (cols >= left.view(-1, 1, 1)) & (cols < (left + bw).view(-1, 1, 1))
    box = in_rows & in_cols & on.view(-1, 1, 1)
    return torch.where(box[:, None], d.noise.to(x.dtype), x)


def soft_targets(y: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    off = smoothing / num_classes
    return torch.full((len(y), num_classes), off, device=y.device).scatter_(1, y[:, None], 1 - smoothing + off)


def mix_batch(x: torch.Tensor, targets: torch.Tensor, cfg: AugmentConfig,
              rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, str]:
    """timm's batch-mode Mixup/CutMix: pairs each sample with the batch reversed.

    The per-batch draws (whether to mix, which kind, λ, the box) are scalars, so they come from
    a host generator: on a GPU, drawing them on the device and reading them back would stall
    every step on a sync.
    """
    coin = rng.random(2)
    if (cfg.mixup <= 0 and cfg.cutmix <= 0) or coin[0] >= cfg.mix_prob:
        return x, targets, "none"
    use_cutmix = cfg.cutmix > 0 and (cfg.mixup <= 0 or coin[1] < cfg.switch_prob)
    alpha = cfg.cutmix if use_cutmix else cfg.mixup
    lam = float(rng.beta(alpha, alpha))
    flipped = x.flip(0)
    if use_cutmix:
        h, w = x.shape[-2:]
        cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
        x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
        x = x.clone()
        x[..., y0:y1, x0:x1] = flipped[..., y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        x = x * lam + flipped * (1 - lam)
    return x, targets * lam + targets.flip(0) * (1 - lam), "cutmix" if use_cutmix else "mixup"


def _cat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``torch.cat`` without the copy when there is one tensor (a one-seed run, every step)."""
    return tensors[0] if len(tensors) == 1 else torch.cat(list(tensors))


class BatchAugment:
    """uint8 batch + labels -> normalized float batch + soft targets, per the recipe.

    ``mix`` switches mixup/cutmix for this call (the recipe turns them off after epoch 175 on
    CIFAR-10). ``compile=True`` compiles the per-sample part (everything but mixing) into a few
    fused kernels: on a GPU the eager version is some hundred small launches per batch.
    """

    def __init__(self, cfg: AugmentConfig, mean: tuple[float, ...], std: tuple[float, ...], num_classes: int,
                 compile: bool = False) -> None:
        self.cfg, self.num_classes = cfg, num_classes
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)
        # Default mode, not CUDA graphs: mixing writes into the output, which must outlive the call.
        self._per_sample = torch.compile(self._augment) if compile else self._augment

    def _stats(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mean.device != device:  # move once, not every batch
            self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self.mean, self.std

    def normalize(self, x_uint8: torch.Tensor) -> torch.Tensor:
        return normalize_images(x_uint8, *self._stats(x_uint8.device))

    def _augment(self, x_uint8: torch.Tensor, d: Draws, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        x = augment_images(x_uint8.float() / 255, self.cfg, d, mean.view(-1))
        return random_erasing((x - mean) / std, self.cfg.erasing, d)

    def many(self, batches: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Generator]],
             mix: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Several batches (one per seed, each with its own generator) in one pass: (N, B, C, H, W)
        images and (N, B, classes) targets, the same as N calls of this object, in a Nth of the launches."""
        cfg, n = self.cfg, len(batches)
        mean, std = self._stats(batches[0][0].device)
        draws = [draw(cfg, tuple(x.shape), g, x.device) for x, _, g in batches]
        joined = Draws._make(None if parts[0] is None else _cat(parts) for parts in zip(*draws))
        x = self._per_sample(_cat([x for x, _, _ in batches]), joined, mean, std)
        x = x.view(n, -1, *x.shape[1:])
        targets = soft_targets(_cat([y for _, y, _ in batches]), self.num_classes, cfg.label_smoothing)
        targets = targets.view(n, -1, self.num_classes)
        if mix:
            for i, (_, _, g) in enumerate(batches):
                # The host generator is derived from g's seed, which lives on the host: no sync.
                mixed, mixed_targets, kind = mix_batch(x[i], targets[i], cfg, np.random.default_rng(derive_seed(g.initial_seed(), "mix")))
                if kind != "none":
                    x[i], targets[i] = mixed, mixed_targets
        return x, targets

    def __call__(self, x_uint8: torch.Tensor, y: torch.Tensor, g: torch.Generator,
                 mix: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        x, targets = self.many([(x_uint8, y, g)], mix)
        return x[0], targets[0]
