"""LILY Bloom: run a fixed-size predictor over an image of any size.

Three small pieces, as in MONAI's sliding-window inference:

1. plan   -- :func:`tile_starts` / :func:`plan_tiles`: where the ``patch x patch`` tiles go. Tiles step
             by ``stride`` and the last one sits flush with the image edge, so every pixel is covered.
2. weight -- :func:`blend_window`: a separable 2-D Hann window with a small positive floor. A raw Hann
             window is 0 on its first row and column, which blacks out the image border (the original
             published loop's bug); the floor means every pixel is covered by positive weight.
3. stitch -- :func:`bloom`: sum of weighted tile outputs divided by the sum of weights. Because the
             tiles form a grid and the window is separable, the weight sum is the outer product of two
             1-D sums, so it costs two vectors instead of a full-size map.

With the identity predictor the result equals the input (a partition of unity); tests check this.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

Predictor = Callable[[torch.Tensor], torch.Tensor]
WINDOWS = ("hann", "constant")


def tile_starts(length: int, patch: int, stride: int) -> list[int]:
    """Start offsets of tiles along one axis; the last tile ends exactly at ``length``.

    Args:
        length: axis length, ``>= patch``.
        patch: tile size.
        stride: step between tile starts, ``1 <= stride <= patch``.

    Example:
        >>> tile_starts(600, 224, 112)
        [0, 112, 224, 336, 376]
        >>> tile_starts(224, 224, 112)
        [0]
    """
    if length < patch:
        raise ValueError(f"length must be >= patch, got length={length}, patch={patch}")
    if not 1 <= stride <= patch:
        raise ValueError(f"stride must be in [1, patch={patch}], got {stride}")
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] != length - patch:
        starts.append(length - patch)
    return starts


def plan_tiles(height: int, width: int, patch: int, stride: int) -> list[tuple[int, int]]:
    """All (top, left) tile corners, row by row, for an image of at least ``patch x patch``.

    Example:
        >>> len(plan_tiles(400, 600, 224, 112))
        15
    """
    return [(y, x) for y in tile_starts(height, patch, stride) for x in tile_starts(width, patch, stride)]


def blend_window(patch: int, kind: str = "hann", floor: float = 1e-4) -> torch.Tensor:
    """1-D blending weights of length ``patch``; the 2-D window is their outer product.

    ``hann`` is the periodic Hann window ``sin^2(pi i / patch)`` (``torch.hann_window``, the original
    loop's window) clamped below at ``floor``: at stride ``patch / 2`` two neighbouring windows sum to 1
    (to within the floor), so the blend is a plain cross-fade, and no pixel gets zero weight.
    ``constant`` is all ones (plain tiling when ``stride == patch``).

    Example:
        >>> w = blend_window(224)
        >>> w.shape, bool(w.min() > 0)
        (torch.Size([224]), True)
        >>> float((w[1:112] + w[113:]).min())
        1.0
    """
    if kind == "hann":
        i = torch.arange(patch, dtype=torch.float64)
        window = torch.sin(math.pi * i / patch) ** 2
        return window.clamp_min(floor).float()
    elif kind == "constant":
        return torch.ones(patch)
    else:
        raise ValueError(f"window must be one of {WINDOWS}, got {kind!r}")


def bloom(
    predictor: Predictor,
    images: torch.Tensor,
    patch: int = 224,
    stride: int = 112,
    batch_size: int = 1,
    window: str = "hann",
    device: torch.device | str | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Apply a ``(B, C, patch, patch) -> (B, C, patch, patch)`` predictor to images of any size.

    Tiles are planned with :func:`plan_tiles`, sent to ``predictor`` ``batch_size`` at a time, weighted
    by :func:`blend_window` and averaged where they overlap. Images smaller than ``patch`` are padded
    by edge replication, run and cropped back. Memory is the output canvas plus one batch of tiles.

    Args:
        predictor: any callable on ``(B, C, patch, patch)`` tensors, e.g. a model in eval mode.
        images: :math:`(N, C, H, W)` float tensor, any ``H, W >= 1``.
        patch: tile size the predictor needs.
        stride: step between tiles (``patch // 2`` = 50 % overlap; ``patch`` = no overlap).
        batch_size: tiles per predictor call.
        window: ``"hann"`` (seamless) or ``"constant"``.
        device: where the predictor runs; tiles move there and results come back to ``images.device``.
            Default: ``images.device``.
        progress: show a tqdm bar over tiles.

    Returns:
        :math:`(N, C, H, W)` tensor on ``images.device``, dtype of ``images``.

    Example:
        >>> x = torch.rand(1, 3, 300, 500)
        >>> y = bloom(lambda t: t, x)
        >>> y.shape, bool(torch.allclose(x, y, atol=1e-5))
        (torch.Size([1, 3, 300, 500]), True)
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a (N, C, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point, got {images.dtype}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n, c, height, width = images.shape
    if n == 0 or height == 0 or width == 0:
        raise ValueError(f"images must be non-empty, got shape {tuple(images.shape)}")
    device = torch.device(device) if device is not None else images.device

    pad_h, pad_w = max(0, patch - height), max(0, patch - width)
    padded = F.pad(images, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else images
    ph, pw = padded.shape[-2:]

    ys, xs = tile_starts(ph, patch, stride), tile_starts(pw, patch, stride)
    w1 = blend_window(patch, window).to(images.device, torch.float32)
    weight_y = torch.zeros(ph, device=images.device)
    weight_x = torch.zeros(pw, device=images.device)
    for y in ys:
        weight_y[y:y + patch] += w1
    for x in xs:
        weight_x[x:x + patch] += w1
    tile_weight = (w1[:, None] * w1[None, :]).to(images.dtype)  # (patch, patch)

    canvas = torch.zeros((n, c, ph, pw), dtype=images.dtype, device=images.device)
    jobs = [(i, y, x) for i in range(n) for y in ys for x in xs]
    bar = _progress_bar(len(jobs), progress)
    for start in range(0, len(jobs), batch_size):
        batch_jobs = jobs[start:start + batch_size]
        tiles = torch.stack([padded[i, :, y:y + patch, x:x + patch] for i, y, x in batch_jobs])
        out = predictor(tiles.to(device))  # (B, C, patch, patch)
        if out.shape != tiles.shape:
            raise ValueError(f"predictor must return the shape it was given, {tuple(tiles.shape)}; "
                             f"got {tuple(out.shape)}")
        out = out.to(images.device, images.dtype) * tile_weight
        for k, (i, y, x) in enumerate(batch_jobs):
            canvas[i, :, y:y + patch, x:x + patch] += out[k]
        if bar is not None:
            bar.update(len(batch_jobs))
    if bar is not None:
        bar.close()

    canvas /= (weight_y[:, None] * weight_x[None, :]).to(images.dtype)  # (ph, pw), broadcast over N, C
    return canvas[:, :, :height, :width]


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="tile", leave=False, desc="tiles")


def resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(N, C, H, W)`` images, anti-aliased when shrinking."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)


def core(predictor: Predictor, images: torch.Tensor, patch: int = 224,
         device: torch.device | str | None = None) -> torch.Tensor:
    """The original "Core" output: resize the whole image to ``patch x patch``, predict, resize back.

    Args:
        predictor: callable on ``(N, C, patch, patch)``.
        images: :math:`(N, C, H, W)` float tensor.

    Returns:
        :math:`(N, C, H, W)` tensor on ``images.device``.

    Example:
        >>> core(lambda t: t, torch.rand(1, 3, 100, 80)).shape
        torch.Size([1, 3, 100, 80])
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a (N, C, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    device = torch.device(device) if device is not None else images.device
    small = resize(images, (patch, patch)).to(device)
    return resize(predictor(small).to(images.device, images.dtype), tuple(images.shape[-2:]))
