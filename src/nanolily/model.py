"""NanoLILY: a tiny low-light enhancement network (129,016 parameters).

Read bottom-up: the two branches, then the config, then the model.

    input (B,3,224,224) -> spatial branch (local detail)      -> (B,3,224,224) --+
                        -> frequency branch (global lighting) -> (B,3,224,224) --+-> concat -> 1x1 conv -> tanh
    output = input + residual

The frequency branch multiplies the 2-D real FFT of the input by a learnable real mask of shape
(1, 3, S, S//2+1): a per-frequency gain, so one number can lift the brightness of the whole tile (the
DC term) and others reshape its contrast. The mask ties the network to an S x S grid (S = 224); LILY
Bloom (`nanolily.bloom`) takes it to any image size in S x S tiles, and :func:`resample_mask` lets the
whole image run in one pass.
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
        h, w = x.shape[-2:]
        x = _pad_to_even(x)  # the stride-2 down / up pair needs even sizes
        s1 = F.leaky_relu(self.norm_in(self.conv_in(x)), self.negative_slope)  # (B, w, H, W)
        d = F.leaky_relu(self.norm_down(self.down(s1)), self.negative_slope)  # (B, 2w, H/2, W/2)
        u = self.up(d) + s1  # (B, w, H, W)
        return self.conv_out(u)[..., :h, :w]  # (B, C, H, W)

    def forward_strips(self, x: torch.Tensor, rows: int = 256, halo: int = 16) -> torch.Tensor:
        """The same result as :meth:`forward` (to float rounding) with memory for one strip of ``rows``.

        Convolutions see a ``halo`` of real neighbouring rows, cropped afterwards (the branch's receptive
        field is ~7 rows). InstanceNorm needs whole-image statistics, so they are gathered first: pass 1
        for the first norm, pass 2 for the second, pass 3 computes the output.
        """
        if rows % 2 or halo % 2:
            raise ValueError(f"rows and halo must be even, got {rows} and {halo}")
        h, w = x.shape[-2:]
        x = _pad_to_even(x)
        height = x.shape[-2]
        spans = [(y, min(y + rows, height)) for y in range(0, height, rows)]

        def strip(y0: int, y1: int) -> tuple[torch.Tensor, int]:
            a = max(0, y0 - halo)
            return x[..., a:min(height, y1 + halo), :], a

        def s1_of(xs: torch.Tensor, stats) -> torch.Tensor:
            return F.leaky_relu(_normalise(self.conv_in(xs), stats), self.negative_slope)

        stats_in = _Moments()
        for y0, y1 in spans:  # pass 1: statistics of conv_in
            xs, a = strip(y0, y1)
            stats_in.add(self.conv_in(xs)[..., y0 - a:y1 - a, :])
        stats_in = stats_in.result()
        stats_down = _Moments()
        for y0, y1 in spans:  # pass 2: statistics of down
            xs, a = strip(y0, y1)
            stats_down.add(self.down(s1_of(xs, stats_in))[..., (y0 - a) // 2:(y1 - a) // 2, :])
        stats_down = stats_down.result()
        out = []
        for y0, y1 in spans:  # pass 3: the output rows
            xs, a = strip(y0, y1)
            s1 = s1_of(xs, stats_in)
            d = F.leaky_relu(_normalise(self.down(s1), stats_down), self.negative_slope)
            out.append(self.conv_out(self.up(d) + s1)[..., y0 - a:y1 - a, :])
        return torch.cat(out, dim=-2)[..., :h, :w]


def _pad_to_even(x: torch.Tensor, least: int = 4) -> torch.Tensor:
    """Edge-replicate to even sizes of at least ``least`` (InstanceNorm needs > 1 value at half size)."""
    h, w = x.shape[-2:]
    pad_h, pad_w = max(least - h, h % 2), max(least - w, w % 2)
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x


class _Moments:
    """Per-(batch, channel) mean and biased variance accumulated over strips, in float64."""

    def __init__(self):
        self.n, self.total, self.squares = 0, 0.0, 0.0

    def add(self, t: torch.Tensor) -> None:
        t = t.double()
        self.n += t.shape[-2] * t.shape[-1]
        self.total = self.total + t.sum(dim=(-2, -1))
        self.squares = self.squares + t.pow(2).sum(dim=(-2, -1))

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.total / self.n
        return mean, (self.squares / self.n - mean ** 2).clamp_min(0)


def _normalise(t: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor], eps: float = 1e-5) -> torch.Tensor:
    """InstanceNorm2d (no affine) with given per-(batch, channel) mean and variance."""
    mean, var = stats
    return (t - mean[..., None, None].to(t.dtype)) * torch.rsqrt(var + eps)[..., None, None].to(t.dtype)


def resample_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The learned ``(1, C, S, S//2+1)`` rfft2 gain, resampled to the rfft2 grid of an H x W image.

    Each target bin takes the (bilinearly interpolated) gain the mask learned for the same spatial
    frequency in cycles per pixel, so a texture of a given scale is treated as it was in 224x224
    training tiles, and the DC gain (overall brightness) is unchanged. rfft2/irfft2 use the "backward"
    normalisation, so gains do not depend on the image size. At H = W = S the mask comes back unchanged.

    Example:
        >>> m = torch.rand(1, 3, 224, 113)
        >>> bool(torch.allclose(resample_mask(m, 224, 224), m, atol=1e-4))
        True
        >>> resample_mask(m, 400, 600).shape
        torch.Size([1, 3, 400, 301])
    """
    size = mask.shape[-2]
    shifted = torch.fft.fftshift(mask, dim=-2)  # rows now run from frequency -1/2 upwards
    fy = torch.fft.fftfreq(height, dtype=torch.float64, device=mask.device)
    fx = torch.fft.rfftfreq(width, dtype=torch.float64, device=mask.device)
    rows = fy * size + size // 2  # fractional row in the shifted mask
    cols = fx * size  # fractional column, 0 .. S/2
    gy = 2 * rows / (size - 1) - 1
    gx = 2 * cols / (mask.shape[-1] - 1) - 1
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)[None].to(mask.dtype)  # (1, H, W//2+1, 2)
    return F.grid_sample(shifted, grid, mode="bilinear", padding_mode="border", align_corners=True)


class FrequencyBranch(nn.Module):
    """Learnable real gain on the rfft2 amplitude grid of an S x S input: global illumination."""

    def __init__(self, channels: int, size: int, mask_init: float):
        super().__init__()
        self.size = size
        self.mask = nn.Parameter(torch.full((1, channels, size, size // 2 + 1), mask_init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if (h, w) == (self.size, self.size):
            return torch.fft.irfft2(torch.fft.rfft2(x) * self.mask, s=(h, w))  # (B, C, S, S)
        mask = resample_mask(self.mask, h, w)  # (1, C, H, W//2+1)
        # one channel at a time: only one complex spectrum plane is alive, which matters for large images
        return torch.cat([torch.fft.irfft2(torch.fft.rfft2(x[:, c:c + 1]) * mask[:, c:c + 1], s=(h, w))
                          for c in range(x.shape[1])], dim=1)  # (B, C, H, W)


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
        - Input: :math:`(B, 3, H, W)` in [0, 1]. The model was built for S x S tiles (S = ``config.size``,
          224); at other sizes the frequency mask is resampled (:func:`resample_mask`): the "global" mode.
        - Output: :math:`(B, 3, H, W)`, not clamped.

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

    def branches(self, x: torch.Tensor, strip_rows: int | None = None) -> dict[str, torch.Tensor]:
        """All intermediate maps (for `nanolily explain`): spatial, frequency, residual, output.

        ``strip_rows`` runs the spatial branch in strips of that many rows (same result, less memory).
        """
        self._check_input(x)
        spatial = self.spatial(x) if strip_rows is None else self.spatial.forward_strips(x, strip_rows)
        frequency = self.frequency(x)
        residual = torch.tanh(self.fuse(torch.cat([spatial, frequency], dim=1)))  # (B, C, S, S)
        return {"spatial": spatial, "frequency": frequency, "residual": residual, "output": x + residual}

    def forward(self, x: torch.Tensor, strip_rows: int | None = None) -> torch.Tensor:
        return self.branches(x, strip_rows)["output"]

    def _check_input(self, x: torch.Tensor) -> None:
        c = self.config.channels
        if x.ndim != 4 or x.shape[1] != c:
            raise ValueError(f"NanoLILY expects a (B, {c}, H, W) tensor, got {tuple(x.shape)}")

    def config_dict(self) -> dict:
        return asdict(self.config)
