"""NanoLILY: a tiny low-light enhancement network (129,016 parameters).

Read bottom-up: the two branches, then the config, then the model.

    input (B,3,224,224) -> spatial branch (local detail)      -> (B,3,224,224) --+
                        -> frequency branch (global lighting) -> (B,3,224,224) --+-> concat -> 1x1 conv -> tanh
    output = input + residual

The frequency branch multiplies the 2-D real FFT of the input by a learnable real mask of shape
(1, 3, S, S//2+1): a per-frequency gain, so one number can lift the brightness of the whole tile (the
DC term) and others reshape its contrast. The mask ties the network to an S x S grid (S = 224); LILY
Bloom (`nanolily.bloom`) takes it to any image size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


class SpatialBranch(nn.Module):
    """A two-scale conv encoder/decoder with one skip connection: local texture and contrast."""

    def __init__(self, channels: int, width: int, negative_slope: float):
        super().__init__()
        self.conv_in = nn.Conv2d(channels, width, 3, padding=1)
        self.down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1)
        self.conv_out = nn.Conv2d(width, channels, 3, padding=1)
        self.norm_in = nn.InstanceNorm2d(width)
        self.norm_down = nn.InstanceNorm2d(2 * width)
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = F.leaky_relu(self.norm_in(self.conv_in(x)), self.negative_slope)  # (B, w, H, W)
        d = F.leaky_relu(self.norm_down(self.down(s1)), self.negative_slope)  # (B, 2w, H/2, W/2)
        u = self.up(d) + s1  # (B, w, H, W)
        return self.conv_out(u)  # (B, C, H, W)


class FrequencyBranch(nn.Module):
    """Learnable real gain on the rfft2 amplitude grid of an S x S input: global illumination."""

    def __init__(self, channels: int, size: int, mask_init: float):
        super().__init__()
        self.size = size
        self.mask = nn.Parameter(torch.full((1, channels, size, size // 2 + 1), mask_init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spectrum = torch.fft.rfft2(x)  # (B, C, S, S//2+1) complex
        return torch.fft.irfft2(spectrum * self.mask, s=(self.size, self.size))  # (B, C, S, S)


@dataclass
class NanoLILYConfig:
    size: int = 224  # the grid the frequency mask is tied to
    channels: int = 3
    width: int = 32  # spatial branch width; the down path has 2 * width
    negative_slope: float = 0.2
    mask_init: float = 0.01


class NanoLILY(nn.Module):
    """NanoLILY network: ``output = input + tanh(fuse([spatial(x), frequency(x)]))``.

    Args:
        config: sizes; the default is the original published architecture.

    Shape:
        - Input: :math:`(B, 3, S, S)` in [0, 1], with S = ``config.size`` (224).
        - Output: :math:`(B, 3, S, S)`, not clamped.

    Example:
        >>> model = NanoLILY()
        >>> model.num_parameters()
        129016
        >>> model(torch.rand(2, 3, 224, 224)).shape
        torch.Size([2, 3, 224, 224])
    """

    def __init__(self, config: NanoLILYConfig | None = None):
        super().__init__()
        self.config = config = config or NanoLILYConfig()
        self.spatial = SpatialBranch(config.channels, config.width, config.negative_slope)
        self.frequency = FrequencyBranch(config.channels, config.size, config.mask_init)
        self.fuse = nn.Conv2d(2 * config.channels, config.channels, 1)

    @property
    def patch_size(self) -> int:
        return self.config.size

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def branches(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """All intermediate maps (for `nanolily explain`): spatial, frequency, residual, output."""
        self._check_input(x)
        spatial = self.spatial(x)
        frequency = self.frequency(x)
        residual = torch.tanh(self.fuse(torch.cat([spatial, frequency], dim=1)))  # (B, C, S, S)
        return {"spatial": spatial, "frequency": frequency, "residual": residual, "output": x + residual}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branches(x)["output"]

    def _check_input(self, x: torch.Tensor) -> None:
        c, s = self.config.channels, self.config.size
        if x.ndim != 4 or x.shape[1] != c or x.shape[-2:] != (s, s):
            raise ValueError(f"NanoLILY expects a (B, {c}, {s}, {s}) tensor, got {tuple(x.shape)}; "
                             "use nanolily.bloom or nanolily.enhance for other sizes")

    def config_dict(self) -> dict:
        return asdict(self.config)
