"""Corrections applied after the network, each a pure function of ``(B, 3, H, W)`` tensors in [0, 1].

They answer three of the original NanoLILY's documented failures on real photos (issue #5;
measured in ``docs/quality.md`` by ``benchmarks/quality.py``):

- :func:`protect_highlights`: a lamp or a lit window that is already bright gets lifted with the
  shadows and clips to white. The lift is limited to the headroom ``1 - x`` a pixel has left.
- :func:`denoise`: sensor grain and colour static get enhanced as if they were texture. An
  edge-preserving guided filter (He et al., 2010) smooths the chroma strongly and the luminance lightly,
  guided by the luminance so that edges stay put.
- :func:`keep_white_balance`: the output's overall colour drifts warm or cool. Per-channel gains restore
  the input's channel balance.

Example:
    >>> x = torch.full((1, 3, 8, 8), 0.9)
    >>> y = protect_highlights(x, x + 0.1)  # the model would push it to 1.0
    >>> round(float(y.max()), 3)
    0.993
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# BT.601 luma weights; the chroma pair is (B - Y, R - Y)
LUMA = (0.299, 0.587, 0.114)
DENOISE_HALO = 8  # rows either side that :func:`denoise` reads: twice its largest filter radius


def protect_highlights(x: torch.Tensor, y: torch.Tensor, knee: float = 0.7) -> torch.Tensor:
    """Limit the lift ``y - x`` to the headroom ``h = 1 - x`` each channel has left, softly.

    A lift up to ``knee * h`` passes unchanged (shadows and mid-tones keep the model's brightening);
    beyond it, ``knee * h + (1 - knee) * h * tanh((z - knee) / (1 - knee))`` with ``z = lift / h``,
    which continues it smoothly (same slope at the knee) and never reaches ``h``: a pixel below white
    does not clip, however far the model pushes it (in float32, a push of over ~5 times the headroom
    rounds to white). Darkening changes pass through.

    Args:
        x: the input, ``(B, 3, H, W)`` in [0, 1].
        y: the model's output, same shape.
        knee: the share of the headroom that passes unchanged.

    Returns:
        ``(B, 3, H, W)``.
    """
    change = y - x
    headroom = (1.0 - x).clamp_min_(1e-6)
    z = change / headroom
    soft = ((z - knee) / (1 - knee)).tanh_().mul_(1 - knee).add_(knee).mul_(headroom)
    return torch.where(z > knee, soft, change).add_(x)


def rgb_to_ycc(image: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` RGB -> luma and two colour differences ``(Y, B - Y, R - Y)``, BT.601 weights."""
    r, g, b = image.unbind(1)
    luma = LUMA[0] * r + LUMA[1] * g + LUMA[2] * b
    return torch.stack([luma, b - luma, r - luma], 1)


def ycc_to_rgb(ycc: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycc`."""
    luma, cb, cr = ycc.unbind(1)
    r, b = cr + luma, cb + luma
    g = (luma - LUMA[0] * r - LUMA[2] * b) / LUMA[1]
    return torch.stack([r, g, b], 1)


def box_filter(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a ``(2r+1) x (2r+1)`` window, edge-padded, separable; ``(B, C, H, W)`` -> same.

    Each pass adds ``2r+1`` shifted views of the padded image: for the small radii used here, several
    times faster on CPU than ``avg_pool2d`` with a ``(1, k)`` kernel (measured: 9 ms against 36 ms for
    two 272x3840 planes at radius 4), and, unlike a running cumulative sum, without float32 cancellation.
    """
    if radius == 0:
        return x
    k = 2 * radius + 1
    height, width = x.shape[-2:]
    padded = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    rows = padded[..., :width].clone()  # (B, C, H + 2r, W)
    for i in range(1, k):
        rows += padded[..., i:i + width]
    out = rows[..., :height, :].clone()  # (B, C, H, W)
    for i in range(1, k):
        out += rows[..., i:i + height, :]
    return out.div_(k * k)


def guided_filter(guide: torch.Tensor, source: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """He et al.'s guided filter with a one-channel guide: ``source`` smoothed where ``guide`` is flat
    (variance below ``eps``) and kept where ``guide`` has an edge.

    Args:
        guide: ``(B, 1, H, W)``.
        source: ``(B, C, H, W)``.
    """
    mean_i = box_filter(guide, radius)
    mean_p = box_filter(source, radius)
    cov = box_filter(guide * source, radius) - mean_i * mean_p
    var = box_filter(guide * guide, radius) - mean_i * mean_i
    a = cov / (var + eps)
    b = mean_p - a * mean_i
    return box_filter(a, radius) * guide + box_filter(b, radius)


def denoise(image: torch.Tensor, strength: float = 1.0, luma_sigma: float = 0.02, chroma_radius: int = 4,
            luma_radius: int = 2) -> torch.Tensor:
    """Reduce grain and colour static, keeping edges; ``strength`` 0 = unchanged, 1 = fully filtered.

    Colour differences are guided-filtered over a ``2 * chroma_radius + 1`` window with the luminance as
    guide (colour noise is where real photos look worst, and colour edges follow luminance edges);
    the luminance is self-guided over a smaller window, smoothing only ripples below ``luma_sigma``.

    Args:
        image: ``(B, 3, H, W)`` in [0, 1].

    Returns:
        ``(B, 3, H, W)``, the blend ``image + strength * (filtered - image)``.
    """
    if strength == 0:
        return image
    ycc = rgb_to_ycc(image)
    luma = ycc[:, :1]
    smooth_luma = guided_filter(luma, luma, luma_radius, luma_sigma ** 2)
    smooth_chroma = guided_filter(luma, ycc[:, 1:], chroma_radius, luma_sigma ** 2)
    filtered = ycc_to_rgb(torch.cat([smooth_luma, smooth_chroma], 1))
    return image + strength * (filtered - image)


def white_balance_gains(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Per-channel gains ``(B, 3)`` that give ``y``'s channel means the ratios of ``x``'s, at ``y``'s
    mean luminance."""
    weights = torch.tensor(LUMA, dtype=y.dtype, device=y.device)
    mean_x = x.mean(dim=(-2, -1)) + eps  # (B, 3)
    mean_y = y.mean(dim=(-2, -1)) + eps
    target = mean_x * (mean_y @ weights / (mean_x @ weights))[:, None]  # x's balance at y's luminance
    return target / mean_y


def keep_white_balance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``y`` with the channel balance of ``x`` (:func:`white_balance_gains`): the network should
    brighten the scene's light, not recolour it.

    Args:
        x: the input, ``(B, 3, H, W)``.
        y: the output, same shape.
    """
    return y * white_balance_gains(x, y)[..., None, None]
