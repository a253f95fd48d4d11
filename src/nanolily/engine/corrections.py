"""Corrections applied around the network, each a pure function of ``(B, 3, H, W)`` tensors in [0, 1].

Before it, :func:`exposure_gains` and :func:`lift_exposure`: a photo far darker than the darkest
captures the models learned from is lifted in linear light to a level they know (``docs/exposure.md``).
After it, three answer the original NanoLILY's documented failures on real photos (issue #5;
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

import math

import numpy as np
import torch
import torch.nn.functional as F

# BT.601 luma weights; the chroma pair is (B - Y, R - Y)
LUMA = (0.299, 0.587, 0.114)
# rows either side that :func:`denoise` reads (even, so strips keep its 2x2 grid): two box filters of the
# chroma radius at half resolution (2 + 2 rows), one more for the upsampling: 5 half-resolution rows
DENOISE_HALO = 10
KNEE = 0.7  # protect_highlights: the share of the headroom that passes unchanged
LUMA_SIGMA, LUMA_RADIUS, CHROMA_RADIUS = 0.02, 2, 4  # denoise's defaults
# exposure_gains: the mean linear level a darker photo is lifted to (chosen on lol-v1-val by a rule fixed
# before the candidates were compared, docs/exposure.md; LoL-v1's captures have a median of 0.005), the
# share of pixels whose brightest channel the lift must not push past white, and the largest lift
LIFT_FLOOR, LIFT_KEEP, MAX_LIFT = 0.00175, 0.999, 16.0
LIFT_ROWS = 256  # lift_exposure works on strips of rows: no full-size temporaries


def srgb_to_linear(x):
    """IEC 61966-2-1 sRGB decoding, [0, 1] -> [0, 1], of a numpy array or a torch tensor."""
    lib = torch if isinstance(x, torch.Tensor) else np
    x = lib.clip(x, 0.0, 1.0)
    return lib.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x):
    """IEC 61966-2-1 sRGB encoding, [0, 1] -> [0, 1], of a numpy array or a torch tensor."""
    lib = torch if isinstance(x, torch.Tensor) else np
    x = lib.clip(x, 0.0, 1.0)
    return lib.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)


def exposure_gains(images: torch.Tensor, floor: float | None = None, keep: float = LIFT_KEEP,
                   most: float = MAX_LIFT, samples: int = 1 << 20) -> torch.Tensor:
    """Per-image gains ``(B,)`` in linear light: a photo whose mean linear level is below ``floor``
    (default :data:`LIFT_FLOOR`) is brought up to it, as long as no more than ``1 - keep`` of its
    pixels would clip (so a night scene with lamps in it is not lifted) and by at most ``most``; every
    other photo gets 1. Read from about ``samples`` pixels of each, a regular grid.

    Example:
        >>> dark = torch.full((1, 3, 8, 8), 0.01)  # sRGB 0.01: linear 0.00077
        >>> round(float(exposure_gains(dark)[0]), 2)
        2.26
        >>> float(exposure_gains(torch.full((1, 3, 8, 8), 0.2))[0])
        1.0
    """
    floor = LIFT_FLOOR if floor is None else floor
    step = max(1, math.ceil(math.sqrt(images.shape[-2] * images.shape[-1] / samples)))
    gains = []
    for image in images:  # one at a time: torch.quantile takes at most 2^24 values
        sample = image[:, ::step, ::step].float()  # (3, h, w)
        if srgb_to_linear(sample.mean()) >= floor:  # the decoding is convex: the linear mean is at least this
            gains.append(sample.new_ones(()))
            continue
        linear = srgb_to_linear(sample)
        top = torch.quantile(linear.amax(0).flatten(), keep)  # the brightest channel's
        gains.append(torch.minimum(floor / linear.mean().clamp_min(1e-6), 1 / top.clamp_min(1e-6)))
    return torch.stack(gains).clamp(1.0, most)


def lift_exposure(images: torch.Tensor, gains: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``images`` ``(B, 3, H, W)`` in sRGB, each scaled by its gain in linear light (a longer exposure
    of the same scene), clipped to [0, 1]: written into ``out`` (``images`` itself lifts in place;
    default: a new tensor of the same layout), ``LIFT_ROWS`` rows at a time."""
    out = torch.empty_like(images) if out is None else out
    g = gains.to(images.dtype).view(-1, 1, 1, 1)
    for top in range(0, images.shape[-2], LIFT_ROWS):
        rows = images[..., top:top + LIFT_ROWS, :]
        out[..., top:top + LIFT_ROWS, :] = linear_to_srgb(srgb_to_linear(rows) * g)
    return out


def eight_bit_codes(images: torch.Tensor) -> torch.Tensor | None:
    """``images`` as the uint8 codes they were decoded from (same layout, a quarter of the memory), when
    every value is exactly ``code * float32(1 / 255)`` (``nanolily.io.images.to_float`` of an 8-bit
    photo), so that :func:`from_eight_bit` gives them back bit for bit; None otherwise. ``LIFT_ROWS``
    rows at a time: no full-size float temporaries.

    Example:
        >>> x = torch.tensor([0, 7, 255], dtype=torch.uint8).float() * torch.tensor(1 / 255)
        >>> eight_bit_codes(x.view(1, 1, 1, 3)).flatten().tolist(), eight_bit_codes(x.view(1, 1, 1, 3) / 2)
        ([0, 7, 255], None)
    """
    codes = torch.empty_like(images, dtype=torch.uint8)
    for top in range(0, images.shape[-2], LIFT_ROWS):
        rows = images[..., top:top + LIFT_ROWS, :]
        q = (rows * 255).round_().clamp_(0, 255).to(torch.uint8)
        if not torch.equal(from_eight_bit(q), rows):
            return None
        codes[..., top:top + LIFT_ROWS, :] = q
    return codes


def from_eight_bit(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes to float32 in [0, 1] as ``nanolily.io.images.to_float`` makes them."""
    return codes.float().mul_(torch.tensor(1 / 255, dtype=torch.float32))


def protect_highlights(x: torch.Tensor, y: torch.Tensor, knee: float = KNEE) -> torch.Tensor:
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
    # with the knee's level t = knee + (1 - knee) x and the headroom past it r = 1 - t, the lift past the
    # knee is u = (y - t) / r and the soft curve c = t + r tanh(u); as tanh(u) < u for u > 0 and
    # tanh(u) >= u otherwise, the result is min(y, c), which only needs c where u > 0: u is clamped to
    # [0, 9] (tanh(9) is 1 in float32), so no far-negative input sends the maths into slow subnormals.
    # With tanh(u) = 2 sigmoid(2u) - 1 (the same values; sigmoid is faster on CPUs without AVX-512),
    # c = 1 + 2 r (sigmoid(2u) - 1), computed in place on two temporaries
    if float(y.max()) <= knee:  # t >= knee everywhere: nothing reaches the knee
        return y.clone()
    room = torch.mul(x, knee - 1).add_(1 - knee).clamp_min_((1 - knee) * 1e-6)  # r
    c = torch.sub(y, 1.0).add_(room).div_(room).clamp_(0.0, 9.0).mul_(2).sigmoid_()  # sigmoid(2u)
    c.sub_(1.0).mul_(room).mul_(2.0).add_(1.0)
    return torch.minimum(y, c, out=c)


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
    times faster on CPU than ``avg_pool2d`` with a ``(1, k)`` kernel, and, unlike a running cumulative sum, without float32 cancellation.
    """
    if radius == 0:
        return x
    k = 2 * radius + 1
    height, width = x.shape[-2:]
    padded = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    rows = padded[..., :width] + padded[..., 1:width + 1]  # (B, C, H + 2r, W)
    for i in range(2, k):
        rows += padded[..., i:i + width]
    out = rows[..., :height, :] + rows[..., 1:height + 1, :]  # (B, C, H, W)
    for i in range(2, k):
        out += rows[..., i:i + height, :]
    return out.div_(k * k)


def guided_coefficients(guide: torch.Tensor, source: torch.Tensor | None, radius: int,
                        eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """He et al.'s guided filter with a one-channel guide (``source`` smoothed where ``guide`` is flat, its
    variance below ``eps``, and kept at ``guide``'s edges), as its smoothed linear coefficients ``(a, b)``,
    each ``(B, C, H, W)``: its output is
    ``a * guide + b``. ``source=None`` filters the guide by itself. The box means of a step share one call."""
    if source is None:  # self-guided: the source's statistics are the guide's
        mean_i, mean_ii = box_filter(torch.cat([guide, guide * guide], 1), radius).split(1, 1)
        mean_p, mean_ip = mean_i, mean_ii
    else:
        c = source.shape[1]
        stats = box_filter(torch.cat([guide, guide * guide, source, guide * source], 1), radius)
        mean_i, mean_ii, mean_p, mean_ip = stats.split([1, 1, c, c], 1)
    a = (mean_ip - mean_i * mean_p).div_(mean_ii - mean_i * mean_i + eps)
    b = mean_p - a * mean_i
    return box_filter(torch.cat([a, b], 1), radius).chunk(2, 1)


def pool2(x: torch.Tensor) -> torch.Tensor:
    """2x2 means, ``(B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2))``; an odd last row or column is repeated."""
    height, width = x.shape[-2:]
    if height % 2 or width % 2:
        x = F.pad(x, (0, width % 2, 0, height % 2), mode="replicate")
    rows = x[..., 0::2, :] + x[..., 1::2, :]  # whole rows first: contiguous, so vectorised
    return (rows[..., 0::2] + rows[..., 1::2]).mul_(0.25)


def upsample2(x: torch.Tensor) -> torch.Tensor:
    """2x bilinear upsampling (``align_corners=False``, edges replicated), ``(B, C, h, w) -> (B, C, 2h, 2w)``:
    the same values as :func:`torch.nn.functional.interpolate`, as four lerps into the output's phases,
    which runs faster on the CPU."""
    b, c, h, w = x.shape
    wide = x.new_empty(b, c, h, w, 2)  # slices of x as the neighbours: no padded copy
    torch.lerp(x[..., 1:], x[..., :-1], 0.25, out=wide[..., 1:, 0])
    torch.lerp(x[..., :-1], x[..., 1:], 0.25, out=wide[..., :-1, 1])
    wide[..., 0, 0], wide[..., -1, 1] = x[..., 0], x[..., -1]
    wide = wide.view(b, c, h, 2 * w)
    out = x.new_empty(b, c, h, 2, 2 * w)
    torch.lerp(wide[..., 1:, :], wide[..., :-1, :], 0.25, out=out[..., 1:, 0, :])
    torch.lerp(wide[..., :-1, :], wide[..., 1:, :], 0.25, out=out[..., :-1, 1, :])
    out[..., 0, 0, :], out[..., -1, 1, :] = wide[..., 0, :], wide[..., -1, :]
    return out.view(b, c, 2 * h, 2 * w)


def denoise(image: torch.Tensor, strength: float = 1.0, luma_sigma: float = LUMA_SIGMA,
            chroma_radius: int = CHROMA_RADIUS, luma_radius: int = LUMA_RADIUS) -> torch.Tensor:
    """Reduce grain and colour static, keeping edges; ``strength`` 0 = unchanged, 1 = fully filtered.

    Colour differences are guided-filtered over a ``2 * chroma_radius + 1`` window with the luminance as
    guide (colour noise is where real photos look worst, and colour edges follow luminance edges);
    the luminance is self-guided over a smaller window, smoothing only ripples below ``luma_sigma``.
    Both are fast guided filters (He & Sun, 2015): the coefficients are computed on 2x2 means and
    upsampled, then applied to the full-resolution luminance, so edges stay sharp at a quarter of the
    cost (docs/performance.md). The filtered colour is linear in the luminance, so it is applied in RGB
    directly.

    Args:
        image: ``(B, 3, H, W)`` in [0, 1].

    Returns:
        ``(B, 3, H, W)``, the blend ``image + strength * (filtered - image)``.
    """
    if strength == 0:
        return image
    height, width = image.shape[-2:]
    low = rgb_to_ycc(pool2(image))  # (B, 3, H/2, W/2): pooling and the colour transform are both linear
    luma = low[:, :1]
    eps = luma_sigma ** 2
    a_luma, b_luma = guided_coefficients(luma, None, half_radius(luma_radius), eps)
    a_chroma, b_chroma = guided_coefficients(luma, low[:, 1:], half_radius(chroma_radius), eps)
    # filtered = ycc_to_rgb(a * Y + b) = a_rgb * Y + b_rgb; the blend with the input folded in
    coeffs = torch.cat([ycc_to_rgb(torch.cat([a_luma, a_chroma], 1)),
                        ycc_to_rgb(torch.cat([b_luma, b_chroma], 1))], 1).mul_(strength)  # (B, 6, H/2, W/2)
    coeffs = upsample2(coeffs)[..., :height, :width]
    full_luma = (image[:, 0:1] * LUMA[0]).add_(image[:, 1:2], alpha=LUMA[1]).add_(image[:, 2:3], alpha=LUMA[2])
    return torch.addcmul(coeffs[:, 3:], coeffs[:, :3], full_luma).add_(image, alpha=1 - strength)


def half_radius(radius: int) -> int:
    """A full-resolution filter radius at the half resolution :func:`denoise` computes its coefficients at."""
    return max(radius // 2, 1)


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
