"""Low-light synthesis: turn a well-exposed photo into a plausible dark one.

The model of a dark capture, in linear light:

    linear   = srgb_to_linear(image)                       # undo the display gamma
    signal   = exposure * linear                           # less light reaches the sensor
    observed = Poisson(signal * photons) / photons         # shot noise: photons per unit of full scale
               + Normal(0, read_noise)                     # read noise of the sensor electronics
    dark     = linear_to_srgb(clip(observed, 0, 1)) ** gamma

``gamma > 1`` darkens the mid-tones further, as a camera's tone curve does in a short exposure.
Used to make the bundled samples (scripts/make_samples.py).
"""

from __future__ import annotations

import numpy as np
import torch

from nanolily.engine.corrections import linear_to_srgb, srgb_to_linear


def darken(image: np.ndarray, exposure: float = 0.08, gamma: float = 1.0, photons: float = 2000.0,
           read_noise: float = 0.002, seed: int = 0) -> np.ndarray:
    """Simulate a low-light capture of ``image``.

    Args:
        image: (H, W, 3) float in [0, 1], sRGB.
        exposure: fraction of the light of the original exposure (0.08 = about 3.6 stops darker).
        gamma: extra tone-curve exponent applied after encoding (1 = none).
        photons: photons collected at full scale; lower = noisier (a high ISO).
        read_noise: standard deviation of the Gaussian read noise, in linear full-scale units.
        seed: random seed, so the same call gives the same image.

    Returns:
        (H, W, 3) float32 in [0, 1].

    Example:
        >>> img = np.full((4, 4, 3), 0.5)
        >>> dark = darken(img, exposure=0.1)
        >>> bool(dark.mean() < 0.25)
        True
    """
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be (H, W, 3), got {image.shape}")
    if not 0 < exposure <= 1:
        raise ValueError(f"exposure must be in (0, 1], got {exposure}")
    rng = np.random.default_rng(seed)
    signal = exposure * srgb_to_linear(image.astype(np.float64))
    observed = rng.poisson(signal * photons) / photons + rng.normal(0.0, read_noise, signal.shape)
    return (linear_to_srgb(observed) ** gamma).astype(np.float32)


# A light source in a dark scene: the made night scene that measures halos, and the training views that
# teach the network to lift the dark around a light as it lifts the dark elsewhere.

HALO_DISTANCES = (2, 4, 8, 16, 32, 64, 128)  # pixels from the light's edge at which halo() reads the lift


def night_scene(height: int, width: int, seed: int = 0,
                light: float = 0.9) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """A made night scene: a dark, slightly noisy sky (level 0.04) with a lit building (level ``light``)
    standing on the bottom edge, a third of the height tall and an eighth of the width wide, in the middle.

    Returns ``(image (1, 3, H, W) in [0, 1], (top, left, right))``, the building's rows ``top:`` and
    columns ``left:right``.

    Example:
        >>> image, (top, left, right) = night_scene(300, 400)
        >>> image.shape, (top, left, right)
        (torch.Size([1, 3, 300, 400]), (200, 175, 225))
    """
    generator = torch.Generator().manual_seed(seed)
    image = 0.04 + 0.01 * torch.randn(1, 3, height, width, generator=generator)
    top, left = height - height // 3, width // 2 - width // 16
    right = left + width // 8
    image[..., top:, left:right] = light
    return image.clamp_(0, 1), (top, left, right)


def halo(before: torch.Tensor, after: torch.Tensor, building: tuple[int, int, int],
         distances: tuple[int, ...] = HALO_DISTANCES) -> list[float]:
    """How the sky beside :func:`night_scene`'s building is lifted against the sky far from it: for each
    distance ``d`` (pixels left of the building, over the middle half of its rows), the sky's lift there
    (output level / input level, BT.601 luminance of (1, 3, H, W) tensors) over the lift of the leftmost
    quarter of the sky left of it. 1 everywhere: no halo; below 1: a dark halo, above: a glow.

    Example:
        >>> image, building = night_scene(200, 400)
        >>> halo(image, 2 * image, building)[:3]
        [1.0, 1.0, 1.0]
    """
    top, left, _ = building
    height = before.shape[-2]
    rows = slice(top + (height - top) // 4, height - (height - top) // 4)
    luma = torch.tensor([0.299, 0.587, 0.114], dtype=before.dtype)[:, None, None]

    def lift(columns: slice) -> float:
        region = (0, slice(None), rows, columns)
        return float((after[region] * luma).sum(0).mean() / (before[region] * luma).sum(0).mean())

    far = lift(slice(0, max(left // 4, 1)))
    return [round(lift(slice(left - d - 1, left - d + 1)) / far, 4) for d in distances if d + 1 <= left]


def paste_light(low: torch.Tensor, high: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One training view with a light source in it: a near-white or warm rectangle, 5-25 % of the view's
    shorter side across, pasted at the same place into the input and the target ((3, H, W) each, new
    tensors), so that the network learns to leave the light as it is and to lift the dark beside it as it
    lifts the dark elsewhere (no dark halo around lamps and lit windows)."""
    h, w = low.shape[-2:]
    rand = lambda: float(torch.rand((), generator=generator))
    side = min(h, w)
    box_h, box_w = (max(2, round(side * (0.05 + 0.2 * rand()))) for _ in range(2))
    y, x = round((h - box_h) * rand()), round((w - box_w) * rand())
    warmth = 0.25 * rand()  # 0: white; up to a tungsten-like orange
    colour = torch.tensor([1.0, 1.0 - 0.5 * warmth, 1.0 - warmth]) * (0.85 + 0.15 * rand())
    low, high = low.clone(), high.clone()
    for view in (low, high):
        view[:, y:y + box_h, x:x + box_w] = colour[:, None, None]
    return low, high
