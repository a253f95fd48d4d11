"""Training losses: pure functions on ``(N, C, H, W)`` tensors returning a scalar, plus the VGG19
perceptual loss (a module, since it holds weights) and :class:`CompositeLoss`, their weighted sum.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanolily.training.metrics import mean_grey, ssim


def l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean absolute error."""
    return (x - y).abs().mean()


def charbonnier(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Smooth L1: ``mean(sqrt((x - y)^2 + eps^2)) - eps``, so it is 0 for ``x == y``."""
    return torch.sqrt((x - y) ** 2 + eps ** 2).mean() - eps


def ssim_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``1 - SSIM`` (see :func:`nanolily.training.metrics.ssim`)."""
    return 1 - ssim(x, y).mean()


def fft_amplitude(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L1 between the amplitude spectra, ``|rfft2(x)| - |rfft2(y)|``, with orthonormal scaling."""
    return (torch.fft.rfft2(x, norm="ortho").abs() - torch.fft.rfft2(y, norm="ortho").abs()).abs().mean()


def color(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``1 - cos`` of the angle between RGB vectors at each pixel, averaged: hue/saturation error.

    ``F.cosine_similarity(x, y, dim=1, eps=eps)`` written out: the same values and gradients, much faster
    on the CPU for a training batch (it reduces over the 3 channels of NCHW maps slowly)."""
    norms = x.pow(2).sum(1).clamp_min(eps * eps).sqrt() * y.pow(2).sum(1).clamp_min(eps * eps).sqrt()
    return (1 - (x * y).sum(1) / norms).mean()


def level(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """``|log|`` of the ratio of the images' mean BT.601 grey levels, averaged over the batch: the overall
    brightness error alone, whatever the detail."""
    return (torch.log(mean_grey(x) + eps) - torch.log(mean_grey(y) + eps)).abs().mean()


def tv(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Total variation of ``x`` (mean absolute difference of neighbours); ``y`` is ignored."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


# VGG19 features[:18] = conv1_1 .. conv3_4 and their ReLUs, with torchvision's state-dict keys.
_VGG19_TO_RELU3_4 = [(3, 64), (64, 64), "M", (64, 128), (128, 128), "M", (128, 256), (256, 256), (256, 256), (256, 256)]
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def vgg19_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    for spec in _VGG19_TO_RELU3_4:
        if spec == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(spec[0], spec[1], 3, padding=1), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class VGGPerceptual(nn.Module):
    """MSE between VGG19 relu3_4 features of prediction and target (the original perceptual loss).

    Args:
        weights: a safetensors file with torchvision ``vgg19().features`` keys (``0.weight`` .. ``16.bias``).
        convention: ``"caffe"`` (BGR, 0..255, mean-subtracted: the Oxford weights in ../shared/weights) or
            ``"torchvision"`` (RGB, ImageNet mean/std); ``None`` reads the file's metadata, else caffe.
    """

    def __init__(self, weights: str | Path, convention: str | None = None):
        super().__init__()
        from safetensors import safe_open

        self.features = vgg19_features()
        with safe_open(str(weights), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys() if int(k.split(".")[0]) < len(self.features)}
        self.features.load_state_dict(state)
        self.features.requires_grad_(False).eval()
        convention = convention or _convention_from_metadata(metadata)
        if convention == "caffe":
            mean = torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1) / 255.0
            self.register_buffer("mean", mean)
            self.register_buffer("scale", torch.full((1, 3, 1, 1), 255.0))
            self.bgr = True
        elif convention == "torchvision":
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
            self.register_buffer("scale", 1 / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
            self.bgr = False
        else:
            raise ValueError(f"convention must be 'caffe' or 'torchvision', got {convention!r}")
        self.convention = convention

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        if self.bgr:
            x = x.flip(1)  # RGB -> BGR
        return (x - self.mean) * self.scale

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx = self.features(self.preprocess(x))
        with torch.no_grad():
            fy = self.features(self.preprocess(y))
        return F.mse_loss(fx, fy)


def _convention_from_metadata(metadata: dict) -> str:
    """``caffe`` when the file says its input is BGR / 0..255 (as ../shared/weights does), ``torchvision``
    when it says ImageNet mean/std normalisation; caffe when it says neither."""
    text = (metadata.get("input", "") + " " + metadata.get("convention", "")).lower()
    if "bgr" in text or "caffe" in text:
        return "caffe"
    if "imagenet" in text or "torchvision" in text or "std" in text:
        return "torchvision"
    return "caffe"


LOSSES = {"l1": l1, "charbonnier": charbonnier, "ssim": ssim_loss, "fft": fft_amplitude, "color": color,
          "level": level, "tv": tv}


class CompositeLoss(nn.Module):
    """Weighted sum of named losses; ``vgg`` needs ``vgg_weights``. Returns (total, parts dict)."""

    def __init__(self, weights: dict[str, float], vgg_weights: str | Path | None = None,
                 vgg_convention: str | None = None):
        super().__init__()
        unknown = set(weights) - set(LOSSES) - {"vgg"}
        if unknown:
            raise ValueError(f"unknown loss terms {sorted(unknown)}; choose from {sorted(LOSSES) + ['vgg']}")
        self.weights = dict(weights)
        self.vgg = None
        if self.weights.get("vgg", 0) > 0:
            if vgg_weights is None:
                raise ValueError("the vgg loss term needs vgg_weights (e.g. ../shared/weights/"
                                 "vgg19-features-relu3_4-caffe.safetensors)")
            self.vgg = VGGPerceptual(vgg_weights, vgg_convention)

    def forward(self, x: torch.Tensor, y: torch.Tensor, weights: dict[str, float] | None = None,
                skip: tuple[str, ...] = ()) -> tuple[torch.Tensor, dict[str, float]]:
        weights = {**self.weights, **(weights or {})}
        total = x.new_zeros(())
        parts = {}
        for name, w in weights.items():
            if w == 0 or name in skip:
                continue
            value = self.vgg(x, y) if name == "vgg" else LOSSES[name](x, y)
            parts[name] = float(value.detach())
            total = total + w * value
        return total, parts
