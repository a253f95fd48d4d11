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
