"""Image quality metrics as pure functions on ``(N, C, H, W)`` tensors in [0, 1]; each returns ``(N,)``.

SSIM follows Wang et al. (2004): a Gaussian window of 11x11 and sigma 1.5, constants
``C1 = (0.01 L)^2`` and ``C2 = (0.03 L)^2`` with data range ``L = 1``, computed per RGB channel over
the "valid" region (no padding) and averaged over channels and pixels.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanolily.engine.corrections import LUMA


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"expected two (N, C, H, W) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, eps: float = 1e-10) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, in dB.

    Example:
        >>> x = torch.zeros(1, 3, 8, 8)
        >>> psnr(x, x + 0.1).round(decimals=4).tolist()
        [20.0]
    """
    _check_pair(x, y)
    mse = (x - y).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range ** 2 / (mse + eps))


def batch_pooled_psnr(squared_errors: list[float] | torch.Tensor, batch: int | None = None,
                      data_range: float = 1.0) -> float:
    """PSNR from per-image mean squared errors of equal-sized images, pooled within consecutive batches
    of ``batch`` images, then averaged over the batches (``None``: one batch of all the images).

    This is how a training loop's "PSNR of the batch" averages over a test set: the original NanoLILY's
    resize224 figure. ``batch=1`` is the per-image mean; a pooled error is dominated by the worst images
    of its batch, so larger batches usually read lower, and the figure depends on the batch size and on
    the images' order.

    Example:
        >>> round(batch_pooled_psnr([1e-2, 1e-4], batch=1), 4), round(batch_pooled_psnr([1e-2, 1e-4]), 4)
        (30.0, 22.9671)
    """
    errors = torch.as_tensor(squared_errors, dtype=torch.float64).flatten()
    if errors.numel() == 0:
        raise ValueError("no squared errors to pool")
    batch = errors.numel() if batch is None else batch
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    pooled = torch.stack([chunk.mean() for chunk in errors.split(batch)])
    return float((10 * torch.log10(data_range ** 2 / pooled)).mean())


def gt_mean_match(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``x`` scaled so its mean grey level equals ``y``'s, clamped to [0, 1]: the "GT-mean" protocol
    of KinD, LLFlow, Retinexformer and HVI-CIDNet (grey = BT.601 luma, as OpenCV's RGB2GRAY).

    It removes the one thing a low-light model cannot know from the input alone, the reference's
    exposure, so PSNR/SSIM after it measure structure and colour. It uses the reference: report it
    beside the plain figures, labelled, never instead of them.

    Example:
        >>> y = torch.rand(1, 3, 8, 8) * 0.5
        >>> float(psnr(gt_mean_match(2 * y, y), y)) > 90
        True
    """
    _check_pair(x, y)
    gain = mean_grey(y) / (mean_grey(x) + eps)  # (N,)
    return (x * gain.view(-1, 1, 1, 1)).clamp(0, 1)


def to_grey(x: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` -> its BT.601 luma in all three channels, same shape: a grayscale photo as the
    engine shows it to the network."""
    luma = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * luma).sum(1, keepdim=True).expand_as(x)


def mean_grey(x: torch.Tensor) -> torch.Tensor:
    """Mean BT.601 luma per image, ``(N,)``: the image's overall brightness."""
    return to_grey(x)[:, 0].flatten(1).mean(1)


# the do-no-harm bar (issue #24): a well-lit photo's mean level within 10 % and at most 0.5 % of its
# pixels newly clipped (1 % for real photos)
LEVEL_TOLERANCE, REFERENCE_CLIP, PHOTO_CLIP = 0.10, 0.005, 0.01


def newly_clipped(before: torch.Tensor, after: torch.Tensor, clip: float = 0.98, below: float = 0.9) -> torch.Tensor:
    """Share of pixels per image, ``(N,)``, that the enhancement clipped: the brightest channel ``>= clip``
    in ``after`` where it was ``< below`` in ``before`` (both ``(N, C, H, W)`` in [0, 1]).

    Example:
        >>> x = torch.full((1, 3, 2, 2), 0.5)
        >>> y = x.clone(); y[..., 0, 0] = 1.0
        >>> newly_clipped(x, y).tolist()
        [0.25]
    """
    _check_pair(before, after)
    made = (after.amax(1) >= clip) & (before.amax(1) < below)  # (N, H, W)
    return made.flatten(1).float().mean(1)


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
        >>> ssim(x, x).round(decimals=4).tolist()
        [1.0, 1.0]
    """
    _check_pair(x, y)
    if min(x.shape[-2:]) < window:
        raise ValueError(f"SSIM needs images of at least {window}x{window}, got {tuple(x.shape[-2:])}")
    n, c = x.shape[:2]
    # the images' channels side by side in one image: the same depthwise blur, but on the CPU ~10x
    # faster (forward and backward) for a training batch than with n images of c channels
    x, y = x.reshape(1, n * c, *x.shape[-2:]), y.reshape(1, n * c, *y.shape[-2:])
    k = gaussian_kernel(window, sigma, x.dtype, x.device)
    kh = k.view(1, 1, 1, window).expand(n * c, 1, 1, window)
    kv = k.view(1, 1, window, 1).expand(n * c, 1, window, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable, depthwise, valid region
        return F.conv2d(F.conv2d(t, kh, groups=n * c), kv, groups=n * c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.reshape(n, -1).mean(1)


ALEXNET_FILE = "alexnet-features-imagenet.safetensors"
LPIPS_HEADS_FILE = "lpips-v0.1-alex-heads.safetensors"


class LPIPS(nn.Module):
    """LPIPS v0.1 with AlexNet (Zhang et al. 2018): learned perceptual distance, lower is closer.

    Inputs are scaled to [-1, 1] and shifted/scaled as in the ``lpips`` package; features at relu1..relu5
    are unit-normalised per pixel, their squared differences weighted by the learned 1x1 heads, averaged
    over space and summed over layers.

    Args:
        alexnet: torchvision ``alexnet().features`` weights (safetensors).
        heads: LPIPS v0.1 ``lin0..lin4`` weights (safetensors).
    """

    def __init__(self, alexnet: str | Path, heads: str | Path):
        super().__init__()
        from safetensors.torch import load_file

        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
        )
        self.features.load_state_dict(load_file(str(alexnet)))
        head_state = load_file(str(heads))
        for i in range(5):
            self.register_buffer(f"head{i}", head_state[f"lin{i}.model.1.weight"])  # (1, C, 1, 1)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.taps = (1, 4, 7, 9, 11)  # relu1 .. relu5
        self.requires_grad_(False).eval()

    @classmethod
    def from_dir(cls, weights_dir: str | Path | None = None, data: str | Path | None = None) -> "LPIPS":
        from nanolily.models.weights import feature_weights_path

        return cls(feature_weights_path(ALEXNET_FILE, weights_dir, data),
                   feature_weights_path(LPIPS_HEADS_FILE, weights_dir, data))

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = ((2 * x - 1) - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10))
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distance per image, ``(N,)``, for ``(N, 3, H, W)`` images in [0, 1]."""
        _check_pair(x, y)
        total = x.new_zeros(x.shape[0])
        for i, (fx, fy) in enumerate(zip(self._taps(x), self._taps(y))):
            head = getattr(self, f"head{i}")
            total = total + F.conv2d((fx - fy) ** 2, head).mean(dim=(1, 2, 3))
        return total
