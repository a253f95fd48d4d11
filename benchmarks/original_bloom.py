"""The original NanoLILY project's published Bloom loop, reimplemented as the speed baseline.

Kept out of the package on purpose: it is the reference nanolily's engine is measured against, not
something to use. Faithful to the original in what matters for speed and output:

- one 224x224 tile per model call (batch of 1), stride 112, tiles row by row;
- a 2-D Hann window ``torch.hann_window(224)`` (periodic, so its first row and column are 0);
- a full-size weight map accumulated tile by tile; output = sum of weighted tiles / max(weight map, eps);
- the network as the original wrote it (:class:`OriginalNanoLILY`: ``nn.InstanceNorm2d``, default
  NCHW memory layout), loaded with the same weights as nanolily's model.

Because the window is 0 on a tile's first row and column, the image's first row and column get no weight
and come out black (0 / eps): the original's known border bug, which nanolily's floored window fixes.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class OriginalNanoLILY(nn.Module):
    """The original network, layer for layer (parameter names follow nanolily's, so its weights load)."""

    def __init__(self, size: int = 224, width: int = 32):
        super().__init__()
        self.spatial = nn.Module()
        self.spatial.conv_in = nn.Conv2d(3, width, 3, padding=1)
        self.spatial.down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.spatial.up = nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1)
        self.spatial.conv_out = nn.Conv2d(width, 3, 3, padding=1)
        self.norm_in, self.norm_down = nn.InstanceNorm2d(width), nn.InstanceNorm2d(2 * width)
        self.frequency = nn.Module()
        self.frequency.mask = nn.Parameter(torch.ones(1, 3, size, size // 2 + 1))
        self.fuse = nn.Conv2d(6, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sp = self.spatial
        s1 = F.leaky_relu(self.norm_in(sp.conv_in(x)), 0.2)
        d = F.leaky_relu(self.norm_down(sp.down(s1)), 0.2)
        spatial = sp.conv_out(sp.up(d) + s1)
        frequency = torch.fft.irfft2(torch.fft.rfft2(x) * self.frequency.mask, s=x.shape[-2:])
        return x + torch.tanh(self.fuse(torch.cat([spatial, frequency], dim=1)))


def original_model(state_dict: dict[str, torch.Tensor]) -> OriginalNanoLILY:
    model = OriginalNanoLILY()
    model.load_state_dict(state_dict)
    return model.eval()


def tile_starts(length: int, patch: int, stride: int) -> list[int]:
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] != length - patch:
        starts.append(length - patch)
    return starts


@torch.no_grad()
def original_bloom(model: torch.nn.Module, image: torch.Tensor, patch: int = 224, stride: int = 112,
                   eps: float = 1e-8) -> torch.Tensor:
    """``image``: (1, 3, H, W) with H, W >= patch. Returns (1, 3, H, W), clamped to [0, 1]."""
    _, c, height, width = image.shape
    window = torch.hann_window(patch)
    window2d = (window[:, None] * window[None, :])[None, None]  # (1, 1, patch, patch)
    output = torch.zeros_like(image)
    weights = torch.zeros(1, 1, height, width)
    for y in tile_starts(height, patch, stride):
        for x in tile_starts(width, patch, stride):
            tile = image[:, :, y:y + patch, x:x + patch]
            enhanced = model(tile)
            output[:, :, y:y + patch, x:x + patch] += enhanced * window2d
            weights[:, :, y:y + patch, x:x + patch] += window2d
    return (output / weights.clamp_min(eps)).clamp(0, 1)
