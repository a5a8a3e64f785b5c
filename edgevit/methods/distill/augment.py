"""Replayable training augmentation: every random draw comes from ONE numpy PCG64 generator per sample and epoch.

TinyViT stores only a 32-bit seed per (sample, epoch) next to the teacher's top-K, so the student must be able
to rebuild exactly the image the teacher saw. Here a sample's augmentation is a pure function of
``(uint8 image, seed, AugmentConfig)`` (plus the dataset, for the mixup/cutmix partner): the generator
``np.random.Generator(np.random.PCG64(seed))`` draws, in a fixed order,

1. one block of uniforms: crop offsets, flip, per RandAugment slot (op, apply, sign), erasing (apply, area,
   aspect, top, left), mix (apply, kind); 2. the RandAugment magnitude noise; 3. the erasing noise pixels;
4. with mixing: the partner index, the partner's seed, lambda and the cutmix box.

The draws happen per sample; the pixel work is then vectorised over the batch, with only element-wise,
per-sample arithmetic (integer reductions, float64 element-wise maths), so a sample's output does not depend on
which batch it was in: ``augment_batch(images[[i]], seeds[[i]])`` replays ``augment_batch(images, seeds)[k]``
bit for bit.

The op set follows timm's RandAugment ``rand-m9-mstd0.5-inc1`` (increasing-severity ops, each applied with
probability 0.5, magnitude ~ N(m, mstd) clipped to [0, 10]) minus ``Color`` (a no-op on grey images), on uint8
images, plus random crop with zero padding, horizontal flip and random erasing (uniform-noise pixels).
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import ConfigError
from .config import AUGMENT_VERSION, RANDAUG_OPS, AugmentConfig

__all__ = ["AUGMENT_VERSION", "RANDAUG_OPS", "AugmentConfig", "augment_batch", "epoch_seeds", "replay"]

_SIGNED = {"rotate", "contrast", "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y"}


def epoch_seeds(seed: int, epoch: int, n: int) -> np.ndarray:
    """The int32 seeds of every sample in one epoch (a pure function of the base seed and the epoch)."""
    return np.random.default_rng([int(seed), int(epoch), 0x7E5]).integers(0, 2**31 - 1, size=n, dtype=np.int64
                                                                          ).astype(np.int32)


# ------------------------------------------------------------------------------------------------ parameter draws
class _Params:
    """Per-sample draws of one batch (arrays of length B; erasing noise and mix draws as lists)."""

    def __init__(self, b: int, n_ops: int):
        self.dx = np.zeros(b, np.int64)
        self.dy = np.zeros(b, np.int64)
        self.flip = np.zeros(b, bool)
        self.op = np.zeros((b, n_ops), np.int64)
        self.apply = np.zeros((b, n_ops), bool)
        self.sign = np.ones((b, n_ops), np.float64)
        self.level = np.zeros((b, n_ops), np.float64)
        self.erase: list[tuple[int, int, int, int, np.ndarray] | None] = [None] * b
        self.mix: list[tuple[str, int, int, float, tuple[int, int, int, int]] | None] = [None] * b


def _draw(seeds: np.ndarray, hw: tuple[int, int], cfg: AugmentConfig, n_dataset: int) -> _Params:
    h, w = hw
    n = cfg.randaug_n
    nu = 3 + 3 * n + 5 + 2
    span = 2 * cfg.crop_padding + 1
    n_ops = len(cfg.randaug_ops)
    p = _Params(len(seeds), n)
    log_lo, log_hi = math.log(cfg.erase_aspect[0]), math.log(cfg.erase_aspect[1])
    for b, s in enumerate(seeds):
        g = np.random.Generator(np.random.PCG64(int(s)))
        u = g.random(nu)
        z = g.standard_normal(n) if n else ()
        p.dx[b] = min(int(u[0] * span), span - 1)
        p.dy[b] = min(int(u[1] * span), span - 1)
        p.flip[b] = u[2] < cfg.hflip_prob
        for j in range(n):
            a = 3 + 3 * j
            p.op[b, j] = min(int(u[a] * n_ops), n_ops - 1)
            p.apply[b, j] = u[a + 1] < cfg.randaug_prob
            p.sign[b, j] = -1.0 if u[a + 2] > 0.5 else 1.0
            p.level[b, j] = min(max(cfg.randaug_m + cfg.randaug_mstd * z[j], 0.0), 10.0)
        e = 3 + 3 * n
        if u[e] < cfg.erase_prob:
            area = h * w * (cfg.erase_area[0] + u[e + 1] * (cfg.erase_area[1] - cfg.erase_area[0]))
            aspect = math.exp(log_lo + u[e + 2] * (log_hi - log_lo))
            eh = min(max(round(math.sqrt(area * aspect)), 1), h)
            ew = min(max(round(math.sqrt(area / aspect)), 1), w)
            top = min(int(u[e + 3] * (h - eh + 1)), h - eh)
            left = min(int(u[e + 4] * (w - ew + 1)), w - ew)
            p.erase[b] = (top, left, eh, ew, g.random((eh, ew)).astype(np.float32))
        m = e + 5
        if cfg.mixing and u[m] < cfg.mix_prob:
            use_cut = cfg.cutmix_alpha > 0 and (cfg.mixup_alpha <= 0 or u[m + 1] < cfg.switch_prob)
            partner = int(g.integers(0, n_dataset))
            partner_seed = int(g.integers(0, 2**31 - 1))
            alpha = cfg.cutmix_alpha if use_cut else cfg.mixup_alpha
            lam = float(g.beta(alpha, alpha))
            box = (0, 0, 0, 0)
            if use_cut:
                cut = math.sqrt(1.0 - lam)
                ch, cw = int(h * cut), int(w * cut)
                cy, cx = int(g.integers(0, h)), int(g.integers(0, w))
                y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
                x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
                box = (y0, y1, x0, x1)
                lam = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)  # the area actually pasted
            p.mix[b] = ("cutmix" if use_cut else "mixup", partner, partner_seed, lam, box)
    return p


# ------------------------------------------------------------------------------------------------ uint8 ops
def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _affine(x: np.ndarray, inv: np.ndarray) -> np.ndarray:
    """Bilinear warp of [b,H,W] uint8 with per-sample inverse matrices [b,2,3] about the centre; zero fill."""
    b, h, w = x.shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float64) - cy, np.arange(w, dtype=np.float64) - cx, indexing="ij")
    sx = inv[:, 0, 0, None, None] * xx + inv[:, 0, 1, None, None] * yy + inv[:, 0, 2, None, None] + cx
    sy = inv[:, 1, 0, None, None] * xx + inv[:, 1, 1, None, None] * yy + inv[:, 1, 2, None, None] + cy
    x0, y0 = np.floor(sx), np.floor(sy)
    fx, fy = sx - x0, sy - y0
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    src = x.astype(np.float64)
    bi = np.arange(b)[:, None, None]
    out = np.zeros((b, h, w), np.float64)
    for oy, ox, wgt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yi, xi = y0 + oy, x0 + ox
        ok = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
        out += np.where(ok, src[bi, np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)], 0.0) * wgt
    return _to_u8(out)


def _mat(a, bb, c, d, tx, ty) -> np.ndarray:
    m = np.zeros((len(a), 2, 3))
    m[:, 0, 0], m[:, 0, 1], m[:, 0, 2], m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = a, bb, tx, c, d, ty
    return m


def _blend(degenerate: np.ndarray, x: np.ndarray, f: np.ndarray) -> np.ndarray:
    d = degenerate.astype(np.float64)
    return _to_u8(d + f[:, None, None] * (x.astype(np.float64) - d))


def _op(name: str, x: np.ndarray, level: np.ndarray, sign: np.ndarray) -> np.ndarray:
    b, h, w = x.shape
    frac = level / 10.0
    zeros, ones = np.zeros(b), np.ones(b)
    if name == "auto_contrast":
        lo = x.reshape(b, -1).min(1).astype(np.float64)[:, None, None]
        hi = x.reshape(b, -1).max(1).astype(np.float64)[:, None, None]
        scale = np.where(hi > lo, 255.0 / np.maximum(hi - lo, 1), 1.0)
        out = np.clip(np.floor((x - lo) * scale), 0, 255).astype(np.uint8)
        return np.where(hi > lo, out, x)
    if name == "equalize":
        flat = x.reshape(b, -1).astype(np.int64)
        hist = np.bincount((flat + 256 * np.arange(b)[:, None]).ravel(), minlength=256 * b).reshape(b, 256)
        last = 255 - np.argmax(hist[:, ::-1] > 0, axis=1)
        step = (flat.shape[1] - hist[np.arange(b), last]) // 255
        cum = np.concatenate([np.zeros((b, 1), np.int64), np.cumsum(hist, 1)[:, :-1]], 1)
        lut = np.clip((cum + (step // 2)[:, None]) // np.maximum(step, 1)[:, None], 0, 255)
        out = np.take_along_axis(lut, flat, 1).reshape(b, h, w).astype(np.uint8)
        return np.where((step > 0)[:, None, None], out, x)
    if name == "invert":
        return 255 - x
    if name == "posterize":
        bits = 4 - (frac * 4).astype(np.int64)  # bits kept: 4 (mild) … 0 (black) as the magnitude increases
        mask = (~((1 << (8 - bits)) - 1) & 0xFF).astype(np.uint8)
        return x & mask[:, None, None]
    if name == "solarize":
        thresh = (256 - (frac * 256).astype(np.int64))[:, None, None]
        return np.where(x >= thresh, 255 - x, x).astype(np.uint8)
    if name == "solarize_add":
        add = (frac * 110).astype(np.int64)[:, None, None]
        return np.where(x < 128, np.minimum(x.astype(np.int64) + add, 255), x).astype(np.uint8)
    factor = 1.0 + sign * frac * 0.9
    if name == "contrast":
        mean = np.floor(x.reshape(b, -1).astype(np.int64).sum(1) / (h * w) + 0.5)
        return _blend(np.broadcast_to(mean[:, None, None], x.shape), x, factor)
    if name == "brightness":
        return _blend(np.zeros_like(x), x, factor)
    if name == "sharpness":
        xi = x.astype(np.int64)
        p = np.pad(xi, ((0, 0), (1, 1), (1, 1)))
        s = sum(p[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1)) + 4 * xi
        smooth = np.floor(s / 13.0 + 0.5)
        smooth[:, 0, :], smooth[:, -1, :], smooth[:, :, 0], smooth[:, :, -1] = (
            xi[:, 0, :], xi[:, -1, :], xi[:, :, 0], xi[:, :, -1])
        return _blend(smooth, x, factor)
    if name == "rotate":
        t = np.deg2rad(sign * frac * 30.0)
        return _affine(x, _mat(np.cos(t), np.sin(t), -np.sin(t), np.cos(t), zeros, zeros))
    if name == "shear_x":
        return _affine(x, _mat(ones, sign * frac * 0.3, zeros, ones, zeros, zeros))
    if name == "shear_y":
        return _affine(x, _mat(ones, zeros, sign * frac * 0.3, ones, zeros, zeros))
    if name == "translate_x":
        return _affine(x, _mat(ones, zeros, zeros, ones, -sign * frac * 0.45 * w, zeros))
    if name == "translate_y":
        return _affine(x, _mat(ones, zeros, zeros, ones, zeros, -sign * frac * 0.45 * h))
    raise ConfigError(f"unknown RandAugment op {name!r}; allowed: {', '.join(RANDAUG_OPS)}")


# ------------------------------------------------------------------------------------------------ the pipeline
def _base(images: np.ndarray, p: _Params, cfg: AugmentConfig) -> np.ndarray:
    """Crop, flip, RandAugment, to float [0, 1], random erasing: [b,H,W] uint8 → [b,H,W] float32."""
    b, h, w = images.shape
    x = images
    if cfg.crop_padding:
        pad = cfg.crop_padding
        xp = np.pad(images, ((0, 0), (pad, pad), (pad, pad)))
        rows = p.dy[:, None] + np.arange(h)[None]
        cols = p.dx[:, None] + np.arange(w)[None]
        x = xp[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]
    x = np.where(p.flip[:, None, None], x[:, :, ::-1], x)
    x = np.ascontiguousarray(x, dtype=np.uint8)
    for j in range(cfg.randaug_n):
        for k, name in enumerate(cfg.randaug_ops):
            sel = np.flatnonzero((p.op[:, j] == k) & p.apply[:, j])
            if len(sel):
                x[sel] = _op(name, x[sel], p.level[sel, j], p.sign[sel, j])
    out = x.astype(np.float32) / np.float32(255.0)
    for i, e in enumerate(p.erase):
        if e is not None:
            top, left, eh, ew, noise = e
            out[i, top : top + eh, left : left + ew] = noise
    return out


def augment_batch(images: np.ndarray, seeds: np.ndarray, config: AugmentConfig | None = None, *,
                  dataset_images: np.ndarray | None = None) -> tuple[np.ndarray, list]:
    """Augment uint8 grey images ``[B,H,W]`` with per-sample ``seeds`` → ``(float32 [B,1,H,W] in [0,1], mix)``.

    ``mix[i]`` is None or ``(kind, partner_index, lam)``: the output is ``lam · own + (1 − lam) · partner`` (mixup)
    or the partner's box pasted in (cutmix). Mixing needs ``dataset_images`` (the partner is drawn from it).
    The result for one sample is bit-identical whatever batch it is computed in.
    """
    cfg = config or AugmentConfig()
    imgs = np.asarray(images)
    if imgs.ndim != 3 or imgs.dtype != np.uint8:
        raise ConfigError(f"augment_batch: expected uint8 grey images [B,H,W], got {imgs.dtype} {imgs.shape}")
    seeds = np.asarray(seeds).astype(np.int64)
    if len(seeds) != len(imgs):
        raise ConfigError(f"augment_batch: {len(imgs)} images but {len(seeds)} seeds")
    if cfg.mixing and dataset_images is None:
        raise ConfigError("augment_batch: mixup/cutmix is on, so pass dataset_images (partners come from it)")
    n_data = len(dataset_images) if dataset_images is not None else 1
    p = _draw(seeds, imgs.shape[1:], cfg, n_data)
    out = _base(imgs, p, cfg)
    mixes: list = [None] * len(imgs)
    todo = [i for i, m in enumerate(p.mix) if m is not None]
    if todo:
        partner_idx = np.array([p.mix[i][1] for i in todo])
        partner_seeds = np.array([p.mix[i][2] for i in todo])
        pp = _draw(partner_seeds, imgs.shape[1:], cfg, 1)
        pp.mix = [None] * len(todo)  # partners are not mixed again
        partners = _base(dataset_images[partner_idx], pp, cfg)
        for k, i in enumerate(todo):
            kind, partner, _, lam, (y0, y1, x0, x1) = p.mix[i]
            if kind == "mixup":
                out[i] = np.float32(lam) * out[i] + np.float32(1.0 - lam) * partners[k]
            else:
                out[i, y0:y1, x0:x1] = partners[k, y0:y1, x0:x1]
            mixes[i] = (kind, partner, lam)
    return out[:, None], mixes


def replay(image: np.ndarray, seed: int, config: AugmentConfig | None = None, *,
           dataset_images: np.ndarray | None = None) -> np.ndarray:
    """One sample's augmented float32 ``[1,H,W]`` from its seed (identical to what the cache writer produced)."""
    out, _ = augment_batch(np.asarray(image)[None], np.array([seed]), config, dataset_images=dataset_images)
    return out[0]
