"""Image quality metrics as pure functions on ``(N, C, H, W)`` tensors in [0, 1]; each returns ``(N,)``.

SSIM follows Wang et al. (2004): a Gaussian window of 11x11 and sigma 1.5, constants
``C1 = (0.01 L)^2`` and ``C2 = (0.03 L)^2`` with data range ``L = 1``, computed per RGB channel over
the "valid" region (no padding) and averaged over channels and pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"expected two (N, C, H, W) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, eps: float = 1e-10) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, in dB.

    Example:
        >>> x = torch.zeros(1, 3, 8, 8)
        >>> psnr(x, x + 0.1)
        tensor([20.0000])
    """
    _check_pair(x, y)
    mse = (x - y).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range ** 2 / (mse + eps))


def gaussian_kernel(size: int = 11, sigma: float = 1.5, dtype=torch.float32, device=None) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size`` taps."""
    i = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    k = torch.exp(-(i ** 2) / (2 * sigma ** 2))
    return (k / k.sum()).to(dtype)


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, window: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity per image (differentiable).

    Example:
        >>> x = torch.rand(2, 3, 32, 32)
        >>> ssim(x, x)
        tensor([1.0000, 1.0000])
    """
    _check_pair(x, y)
    if min(x.shape[-2:]) < window:
        raise ValueError(f"SSIM needs images of at least {window}x{window}, got {tuple(x.shape[-2:])}")
    c = x.shape[1]
    k = gaussian_kernel(window, sigma, x.dtype, x.device)
    kh = k.view(1, 1, 1, window).expand(c, 1, 1, window)
    kv = k.view(1, 1, window, 1).expand(c, 1, window, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable, depthwise, valid region
        return F.conv2d(F.conv2d(t, kh, groups=c), kv, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)
