"""NanoLILY-v2 (experimental): a resolution-free enhancement network under NanoLILY's 129K parameters.

Read bottom-up: the blocks, the config, the model.

    x (B,3,H,W) --avg-pool /4--> s --encoder 1/4, 1/8, 1/16--> e3 --mean over H, W--> g (global context)
                                   |                                 g --> MLP --> 3x3 colour matrix
                                   +--decoder (e3 modulated by g) --> gain, offset maps at 1/4
    gain, offset --bilinear x4--> full size
    y = colour_matrix @ (x * exp(gain) + offset);  output = y + refine([x, y])   (two small full-size convs)

Why this shape (issue #5): the heavy work runs at 1/16 of the pixels, so a whole photo goes through in
one pass (no tiles, no 224 grid, no InstanceNorm); the global statistics are a mean over the whole image,
so "global illumination" means the whole photo at any size; brightening is multiplicative
(``x * exp(gain)``), so it scales with the scene like a camera's exposure and keeps colour ratios; the
colour matrix corrects casts globally (as in IAT); the full-resolution refinement restores detail the
low-resolution maps cannot carry. About 4.8 kFLOP of convolutions per pixel, against NanoLILY's 29.1k.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvBlock(nn.Module):
    """Two 3x3 convolutions with LeakyReLU and a residual connection."""

    def __init__(self, channels: int, slope: float):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.slope = slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.leaky_relu(self.conv1(x), self.slope))


@dataclass
class NanoLILYv2Config:
    widths: tuple[int, int, int] = (16, 32, 48)  # channels at 1/4, 1/8 and 1/16 of the input size
    refine: int = 8  # channels of the full-resolution refinement
    factor: int = 4  # the first downsampling
    slope: float = 0.2


class NanoLILYv2(nn.Module):
    """See the module docstring. ``output = colour_matrix @ (x * exp(gain) + offset) + refine``.

    Shape:
        - Input: :math:`(B, 3, H, W)` in [0, 1], any ``H, W >= 1``.
        - Output: :math:`(B, 3, H, W)`, not clamped.

    Example:
        >>> model = NanoLILYv2()
        >>> model.num_parameters() <= 129_016
        True
        >>> model(torch.rand(1, 3, 100, 150)).shape
        torch.Size([1, 3, 100, 150])
    """

    patch_size = 224  # the tile size when run through LILY Bloom (the model itself takes any size)

    def __init__(self, config: NanoLILYv2Config | None = None):
        super().__init__()
        self.config = config = config or NanoLILYv2Config()
        w1, w2, w3 = config.widths
        self.stem = nn.Conv2d(3, w1, 3, padding=1)
        self.enc1 = ConvBlock(w1, config.slope)
        self.down2 = nn.Conv2d(w1, w2, 3, stride=2, padding=1)
        self.enc2 = ConvBlock(w2, config.slope)
        self.down3 = nn.Conv2d(w2, w3, 3, stride=2, padding=1)
        self.enc3 = ConvBlock(w3, config.slope)
        self.film = nn.Linear(w3, 2 * w3)  # global context -> per-channel scale and shift of e3
        self.colour = nn.Sequential(nn.Linear(w3, 32), nn.LeakyReLU(config.slope), nn.Linear(32, 9))
        self.dec2 = nn.Conv2d(w3 + w2, w2, 3, padding=1)
        self.dec1 = nn.Conv2d(w2 + w1, w1, 3, padding=1)
        self.head = nn.Conv2d(w1, 6, 3, padding=1)  # log-gain (3) and offset (3)
        self.refine1 = nn.Conv2d(6, config.refine, 3, padding=1)
        self.refine2 = nn.Conv2d(config.refine, 3, 3, padding=1)
        for layer in (self.film, self.colour[-1], self.head, self.refine2):  # start as a plain identity map
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def config_dict(self) -> dict:
        return asdict(self.config)

    def forward(self, x: torch.Tensor, block: int | None = None) -> torch.Tensor:
        """``block`` is accepted for compatibility with :meth:`NanoLILY.forward` and not needed: the
        heavy part runs at 1/16 of the pixels."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"NanoLILYv2 expects a (B, 3, H, W) tensor, got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        slope = self.config.slope
        small = _pool(x, self.config.factor)  # (B, 3, h/4, w/4), padded to a multiple of 4
        e1 = self.enc1(F.leaky_relu(self.stem(small), slope))  # (B, w1, h/4, w/4)
        e2 = self.enc2(F.leaky_relu(self.down2(e1), slope))  # (B, w2, h/8, w/8)
        e3 = self.enc3(F.leaky_relu(self.down3(e2), slope))  # (B, w3, h/16, w/16)
        g = e3.mean(dim=(-2, -1))  # (B, w3): the whole image's context, at any size
        scale, shift = self.film(g)[..., None, None].chunk(2, dim=1)
        e3 = e3 * (1 + scale) + shift
        d2 = F.leaky_relu(self.dec2(torch.cat([_up(e3, e2), e2], 1)), slope)  # (B, w2, h/8, w/8)
        d1 = F.leaky_relu(self.dec1(torch.cat([_up(d2, e1), e1], 1)), slope)  # (B, w1, h/4, w/4)
        maps = F.interpolate(self.head(d1), scale_factor=self.config.factor, mode="bilinear",
                             align_corners=False)[..., :h, :w]  # (B, 6, H, W)
        gain, offset = maps[:, :3], maps[:, 3:]
        matrix = torch.eye(3, device=x.device, dtype=x.dtype) + self.colour(g).view(-1, 3, 3)  # (B, 3, 3)
        y = torch.einsum("bij,bjhw->bihw", matrix, x * torch.exp(gain) + offset)
        return y + self.refine2(F.leaky_relu(self.refine1(torch.cat([x, y], 1)), slope))


def _pool(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Average-pool by ``factor`` after edge-padding to a multiple of ``4 * factor`` (three scales)."""
    multiple = 4 * factor
    h, w = x.shape[-2:]
    x = F.pad(x, (0, -w % multiple, 0, -h % multiple), mode="replicate")
    return F.avg_pool2d(x, factor)


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)
