"""NanoLILY-v2 (experimental): a resolution-free enhancement network under NanoLILY's 129K parameters.

Read bottom-up: the blocks, the config, the model.

    x (B,3,H,W) --avg-pool /4--> s --encoder 1/4, 1/8, 1/16--> e3 --mean over H, W--> g (global context)
                                   |                                 g --> MLP --> 3x3 colour matrix
                                   +--decoder (e3 modulated by g) --> gain, offset maps at 1/4
    gain, offset --bilinear x4--> full size
    y = colour_matrix @ (x * exp(gain) + offset);  output = y + refine([x, y])   (two small full-size convs)

Why this shape: the heavy work runs at 1/16 of the pixels, so a whole photo goes through in
one pass (no tiles, no 224 grid, no InstanceNorm); the global statistics are a mean over the whole image,
so "global illumination" means the whole photo at any size; brightening is multiplicative
(``x * exp(gain)``), so it scales with the scene like a camera's exposure and keeps colour ratios; the
colour matrix corrects casts globally (as in IAT); the full-resolution refinement restores detail the
low-resolution maps cannot carry. About 4.8 kFLOP of convolutions per pixel, against NanoLILY's 29.1k.

Scale: the first pooling is 4 for photos of LoL's size; the engine picks it per photo (analysis_factor:
coarser for large photos, finer for small ones), so the low-resolution part reads every scene at about
the scale it learned (docs/scales.md).

Memory: the low-resolution part is computed once; the full-resolution part can run in strips of rows
(``forward(x, block=rows)``, exact), so a large photo needs little memory beyond its input and output.

Halo guard (inference, ``forward(x, guard_halos=True)``; the engine's default): the low-resolution maps
read a bright light's neighbourhood as bright and lift it less, a dark ring around lamps; with lights in
the photo, the maps are read a second time with the lights filled in from the dark around them, in the
photo's own global context, and every pixel but the lights takes that reading (:func:`guarded_maps`,
docs/halo-guard.md).

Variants (``NanoLILYv2Config``): ``head="curve"`` brightens with iterated light-enhancement curves, which
cannot push a pixel past white (design 2); ``priors=True`` feeds the encoder analytic illumination and
colour priors (design 3). docs/training.md compares them.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Callable, NamedTuple

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
        return self.conv2(F.leaky_relu(self.conv1(x), self.slope, inplace=True)).add_(x)


HEADS = ("gain", "curve")
# oneDNN convolves channels-last maps without reordering copies: faster at every stage, and less peak memory
CHANNELS_LAST = torch.channels_last
ENCODE_HALO = 3  # rows each way the 1/4-size encoder stage reads (three 3x3 convolutions; priors are per pixel)
DECODE_HALO = 2  # rows each way the last decoder stage and the head read (two 3x3 convolutions)
REFINE_HALO = 2  # rows each way the full-resolution refinement reads (two 3x3 convolutions)
# Images from LEARNED_PIXELS up to about this many pixels are read at the network's own first
# downsampling; larger ones are pooled further, smaller ones less (analysis_factor). Smaller: adopted by
# a rule fixed before measuring (raise both mean PSNR and SSIM on lol-v1-val at 300x200 and 224x224).
# Larger: this size chosen on lol-v1-val upscaled 2x and 4x by a rule fixed before the sweep
# (docs/scales.md): of 240,000 (LoL's 600x400), 540,000 and 960,000, the highest mean PSNR over 2x and 4x,
# unless one within 0.05 dB of it has a higher mean SSIM over 2x and 4x.
ANALYSIS_PIXELS = 540_000
LEARNED_PIXELS = 240_000  # LoL's 600x400: smaller images are read at a finer scale (analysis_factor)
# The halo guard's lights (light_mask): pixels whose brightest channel passes the larger of LIGHT_FLOOR and
# LIGHT_OVER_MEDIAN times the photo's median, fully lights LIGHT_RAMP above that (a light stands out of a
# night scene's dark median; a well-lit photo's median puts the bar past white). The floor was 0.45 at
# first; docs/halo-guard.md says why it is 0.25.
LIGHT_FLOOR, LIGHT_OVER_MEDIAN, LIGHT_RAMP = 0.25, 6.0, 0.2


@dataclass
class NanoLILYv2Config:
    widths: tuple[int, int, int] = (16, 32, 48)  # channels at 1/4, 1/8 and 1/16 of the input size
    refine: int = 8  # channels of the full-resolution refinement
    factor: int = 4  # the first downsampling
    slope: float = 0.2
    head: str = "gain"  # "gain": x * exp(gain) + offset (design 1); "curve": iterated light-enhancement curves
    iterations: int = 8  # curve applications for head="curve"
    priors: bool = False  # also feed the encoder analytic priors of the pooled image (see _priors)


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
    resolution_free = True  # no grid: a whole photo in one pass is its natural mode (ONNX export included)

    def __init__(self, config: NanoLILYv2Config | None = None):
        super().__init__()
        self.config = config = config or NanoLILYv2Config()
        w1, w2, w3 = config.widths
        self.stem = nn.Conv2d(3 + 5 * config.priors, w1, 3, padding=1)
        self.enc1 = ConvBlock(w1, config.slope)
        self.down2 = nn.Conv2d(w1, w2, 3, stride=2, padding=1)
        self.enc2 = ConvBlock(w2, config.slope)
        self.down3 = nn.Conv2d(w2, w3, 3, stride=2, padding=1)
        self.enc3 = ConvBlock(w3, config.slope)
        self.film = nn.Linear(w3, 2 * w3)  # global context -> per-channel scale and shift of e3
        self.colour = nn.Sequential(nn.Linear(w3, 32), nn.LeakyReLU(config.slope), nn.Linear(32, 9))
        self.dec2 = nn.Conv2d(w3 + w2, w2, 3, padding=1)
        self.dec1 = nn.Conv2d(w2 + w1, w1, 3, padding=1)
        if config.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {config.head!r}")
        self.head = nn.Conv2d(w1, 6 if config.head == "gain" else 3, 3, padding=1)  # see _brighten
        self.refine1 = nn.Conv2d(6, config.refine, 3, padding=1)
        self.refine2 = nn.Conv2d(config.refine, 3, 3, padding=1)
        for layer in (self.film, self.colour[-1], self.head, self.refine2):  # start as a plain identity map
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # frozen ones too (an averaged copy is frozen)

    def config_dict(self) -> dict:
        return asdict(self.config)

    def forward(self, x: torch.Tensor, block: int | None = None, factor: int | None = None,
                guard_halos: bool = False) -> torch.Tensor:
        """The whole image in one pass. ``block`` (rows) bounds memory: the full-resolution stage then
        runs in horizontal strips of ``block`` rows with a 2-row halo, which is exact (its two 3x3
        convolutions see 2 rows each way), and the largest low-resolution maps (1/4 size) in strips of
        as many image rows (``block / factor`` of theirs, see :meth:`low_resolution`). ``factor``: the
        first downsampling, ``config.factor`` (4) unless given; :func:`analysis_factor` gives one for
        any photo's size (the engine's global mode uses it). ``guard_halos``: lift the dark beside
        bright lights as the dark elsewhere (:func:`guarded_maps`; the engine's default)."""
        return self.output_rows(x, block, factor, guard_halos)()

    def output_rows(self, x: torch.Tensor, block: int | None = None, factor: int | None = None,
                    guard_halos: bool = False) -> Callable[..., torch.Tensor]:
        """:meth:`forward` for a caller that takes the output strip by strip: runs the low-resolution
        part now and returns ``rows(span=None, out=None)``, the output's rows ``[first, last)`` (all
        without ``span``) computed as :meth:`forward` does, written into ``out`` if given
        (:func:`in_strips`)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"NanoLILYv2 expects a (B, 3, H, W) tensor, got {tuple(x.shape)}")
        factor = factor or self.config.factor
        maps, matrix, lights = guarded_maps(self, x, factor, block and max(block // factor, 16), guard_halos)
        # planar maps upsample to planar strips, which apply_maps wants
        return functools.partial(in_strips, self.apply_maps, x, maps.contiguous(), matrix, factor, block,
                                 lights=lights)

    def low_resolution(self, x: torch.Tensor, block: int | None = None,
                       factor: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder-decoder at 1/4 to 1/16 of the pixels (with ``factor`` f: 1/f to 1/4f): the head's
        maps ``(B, 6 or 3, h/4, w/4)`` (padded to a multiple of 4 * factor) and the global colour matrix
        ``(B, 3, 3)``. ``block`` (rows at this 1/4 resolution) runs the first encoder and last decoder
        stages, the largest maps, in strips."""
        return self.maps_from_pooled(pool(x, factor or self.config.factor), block)

    def maps_from_pooled(self, small: torch.Tensor, block: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`low_resolution` from the image already pooled (:func:`pool`): ``(B, 3, h/4, w/4)``."""
        return maps_in_strips(self, small, block)[:2]

    def encode_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """The encoder's full (1/4-size) stage, ``enc1(leaky(stem(priors(rows))))``: (B, 3, r, w/4) ->
        (B, w1, r, w/4). Its three 3x3 convolutions read :data:`ENCODE_HALO` rows each way."""
        rows = rows.contiguous(memory_format=CHANNELS_LAST)
        if self.config.priors:
            rows = _priors(rows)  # (B, 8, r, w/4)
        return self.enc1(F.leaky_relu(self.stem(rows), self.config.slope, inplace=True))

    def middle(self, e1: torch.Tensor,
               context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """From the 1/4-size features to the 1/8-size decoder map, the colour matrix and the global context:
        (B, w1, h/4, w/4) -> (B, w2, h/8, w/8), (B, 3, 3), (B, w3). The global context is taken here, over
        the whole image, unless given as ``context`` (B, w3) (the halo guard reads its filled photo in the
        photo's own context, :func:`guarded_maps`)."""
        slope = self.config.slope
        e2 = self.enc2(F.leaky_relu(self.down2(e1), slope, inplace=True))  # (B, w2, h/8, w/8)
        e3 = self.enc3(F.leaky_relu(self.down3(e2), slope, inplace=True))  # (B, w3, h/16, w/16)
        g = e3.mean(dim=(-2, -1)) if context is None else context  # (B, w3): the whole image's, at any size
        scale, shift = self.film(g)[..., None, None].chunk(2, dim=1)
        e3 = e3 * (1 + scale) + shift
        d2 = F.leaky_relu(_conv_of_concat(self.dec2, _up(e3, e2), e2), slope, inplace=True)  # (B, w2, h/8, w/8)
        matrix = torch.eye(3, device=g.device, dtype=g.dtype) + self.colour(g).view(-1, 3, 3)  # (B, 3, 3)
        return d2, matrix, g

    def decode_rows(self, up: torch.Tensor, e1: torch.Tensor) -> torch.Tensor:
        """The decoder's last stage and the head, ``head(leaky(dec1([up, e1])))``, on rows of ``e1``
        (B, w1, r, w/4) with the 1/8-size decoder map upsampled to them ``up`` (B, w2, r, w/4) -> the
        head's maps (B, 6|3, r, w/4). Its two 3x3 convolutions read :data:`DECODE_HALO` rows each way."""
        return self.head(F.leaky_relu(_conv_of_concat(self.dec1, up, e1), self.config.slope, inplace=True))

    def apply_maps(self, x: torch.Tensor, up: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        """The full-resolution stage on rows of the image: ``x`` (B, 3, R, W), the head's maps upsampled
        to them ``up`` (B, 6|3, R, W), the colour matrix (B, 3, 3) -> (B, 3, R, W): brighten, apply the
        matrix, refine. The refinement's 3x3 convolutions zero-pad, so only rows 2 or more from a cut
        edge are exact (:func:`strip_inputs` adds them; :func:`in_strips` runs it so)."""
        # element-wise maths on planar (NCHW) maps, whose channel slices are contiguous planes: on
        # channels-last ones they are strided and several times slower; channels-last only for the
        # refinement's convolutions, which oneDNN runs faster so
        y = torch.einsum("bij,bjhw->bihw", matrix, self._brighten(x.contiguous(), up.contiguous()))
        features = torch.cat([x, y], 1).contiguous(memory_format=CHANNELS_LAST)
        refined = self.refine2(F.leaky_relu(self.refine1(features), self.config.slope, inplace=True))
        return y.add_(refined)  # (B, 3, R, W), planar

    def _brighten(self, x: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        """Per-pixel exposure. "gain": ``x * exp(gain) + offset``, unbounded. "curve": Zero-DCE's
        light-enhancement curve ``x + a * x * (1 - x)`` with ``a`` in [-1, 1], applied ``iterations``
        times; each step is monotone and maps [0, 1] onto [0, 1], so shadows can be lifted as far as
        needed while a pixel that is already bright can only approach white, never clip past it."""
        if self.config.head == "gain":
            gain, offset = maps.split(3, dim=1)
            return torch.addcmul(offset, x, gain.exp())
        alpha = torch.tanh(maps)
        x = x.clamp(0, 1)
        for _ in range(self.config.iterations):
            x = x + alpha * x * (1 - x)
        return x


def analysis_factor(height: int, width: int, factor: int = 4, pixels: int = ANALYSIS_PIXELS,
                    learned: int = LEARNED_PIXELS) -> int:
    """The first downsampling for an image of ``height`` x ``width``, so that the low-resolution part
    reads a scene at about the scale it learned to read it, whatever the photo's size: ``factor`` (the
    network's own) for images of ``learned`` pixels (LoL's 600x400) up to ``pixels`` (0.54 MP, about
    0.7 MP with rounding); beyond, larger in proportion to the side (a 4K frame pooled 16x); below,
    smaller (a 300x200 image 2x), down to 1. The full-resolution stage is unchanged.

    Example:
        >>> analysis_factor(400, 600), analysis_factor(2160, 3840), analysis_factor(4000, 6000)
        (4, 16, 27)
        >>> analysis_factor(200, 300), analysis_factor(224, 224), analysis_factor(8, 8)
        (2, 2, 1)
    """
    area = height * width
    if area < learned:
        return max(1, round(factor * math.sqrt(area / learned)))
    return max(factor, round(factor * math.sqrt(area / pixels)))


def in_strips(apply_maps, x: torch.Tensor, maps: torch.Tensor, matrix: torch.Tensor, factor: int,
              rows: int | None = None, span: tuple[int, int] | None = None,
              out: torch.Tensor | None = None, lights: Lights | None = None) -> torch.Tensor:
    """The full-resolution stage of ``x`` (B, 3, H, W), ``apply_maps`` (:meth:`NanoLILYv2.apply_maps`
    or a runtime's copy of it) run on strips of ``rows`` rows (the whole image at once without
    ``rows``), each given its :func:`strip_inputs` and cropped to its own rows: exact. ``span``: only
    output rows ``[first, last)``; ``out``: where to write them (B, 3, last - first, W), else a new
    tensor in ``x``'s memory format. ``lights``: :func:`guarded_maps`' lights, with its maps."""
    h = x.shape[-2]
    first, last = span or (0, h)
    if span is None and out is None and (rows is None or rows >= h):
        return apply_maps(*strip_inputs(x, maps, 0, h, factor, lights)[:2], matrix)
    if out is None:
        out = torch.empty_like(x[:, :, first:last])
    step = rows or max(last - first, 1)
    for top in range(first, last, step):
        bottom = min(top + step, last)
        x_rows, up, offset = strip_inputs(x, maps, top, bottom, factor, lights)
        out[:, :, top - first:bottom - first] = apply_maps(x_rows, up, matrix)[:, :, offset:offset + bottom - top]
    return out


def maps_in_strips(stages, small: torch.Tensor, rows: int | None = None,
                   context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The head's maps (B, 6|3, h/4, w/4), the colour matrix (B, 3, 3) and the global context (B, w3)
    from the pooled image ``small`` (B, 3, h/4, w/4), by ``stages``' ``encode_rows``, ``middle`` and
    ``decode_rows`` (a :class:`NanoLILYv2`, or a runtime's copies of them); ``context``: given, not taken
    from ``small`` (:meth:`NanoLILYv2.middle`). With ``rows``, the two 1/4-size stages, whose
    maps are the largest here, run in strips of ``rows`` rows, each with
    the rows either side its convolutions read, cropped after: exact, and of those maps only ``e1``
    and the result are ever whole."""
    height = small.shape[-2]
    whole = rows is None or rows >= height or torch.compiler.is_compiling()
    e1 = stages.encode_rows(small) if whole else _rows_in_strips(
        lambda first, last: stages.encode_rows(small[:, :, first:last]), height, rows, ENCODE_HALO)
    d2, matrix, context = stages.middle(e1, context)  # (B, w2, h/8, w/8)
    if whole:
        return stages.decode_rows(_up(d2, e1), e1), matrix, context

    def decode(first: int, last: int) -> torch.Tensor:
        return stages.decode_rows(_upsampled_rows(d2, first, last, 2), e1[:, :, first:last])

    return _rows_in_strips(decode, height, rows, DECODE_HALO), matrix, context


def _rows_in_strips(stage, height: int, rows: int, halo: int) -> torch.Tensor:
    """``stage(first, last)`` (the result for input rows ``[first, last)``) assembled from strips of
    ``rows`` rows, each computed with ``halo`` more rows either side and cropped to its own."""
    out = None
    for top in range(0, height, rows):
        bottom = min(top + rows, height)
        first, last = max(top - halo, 0), min(bottom + halo, height)
        part = stage(first, last)[:, :, top - first:bottom - first]
        if out is None:  # in the parts' memory format (a runtime's come contiguous)
            nhwc = part.is_contiguous(memory_format=CHANNELS_LAST) and not part.is_contiguous()
            out = torch.empty(*part.shape[:2], height, part.shape[-1], dtype=part.dtype, device=part.device,
                              memory_format=CHANNELS_LAST if nhwc else torch.contiguous_format)
        out[:, :, top:bottom] = part
    return out


def strip_inputs(x: torch.Tensor, maps: torch.Tensor, top: int, bottom: int, factor: int,
                 lights: Lights | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """What :meth:`NanoLILYv2.apply_maps` needs for output rows ``[top, bottom)`` of ``x`` (B, 3, H, W):
    rows ``[top - 2, bottom + 2)`` of ``x`` (those of the image; the refinement's two 3x3 convolutions
    read 2 rows each way), the head's ``maps`` upsampled (bilinear, by ``factor``) to the same rows from
    only the low-resolution rows that needs (one beyond each end), and where the strip's own rows start
    in them. With :func:`guarded_maps`' ``lights``, ``maps`` are those of the photo with its lights filled
    in, and the lights take the photo's own maps instead, by how much each pixel is a light
    (:func:`light_mask`). Weight-free, so the ONNX Runtime backend runs it between its graphs."""
    h, w = x.shape[-2], x.shape[-1]
    if top == 0 and bottom == h:  # the whole image (no size comparisons: exportable with dynamic sizes)
        x_rows, offset = x, 0
        up = F.interpolate(maps, scale_factor=factor, mode="bilinear", align_corners=False)[:, :, :h, :w]
    else:
        first, last = max(top - REFINE_HALO, 0), min(bottom + REFINE_HALO, h)
        x_rows, offset = x[:, :, first:last], top - first
        up = _upsampled_rows(maps, first, last, factor)[..., :w]
    if lights is not None:
        _restore_lights(up, x_rows, lights, top - offset, factor)
    return x_rows, up, offset


class Lights(NamedTuple):
    """What :func:`guarded_maps` found: the level above which a pixel starts to count as a light,
    ``thresholds`` (B,) (:func:`light_mask`), and the head's maps of the photo as it is, ``maps``."""
    thresholds: torch.Tensor
    maps: torch.Tensor


def _restore_lights(up: torch.Tensor, x_rows: torch.Tensor, lights: Lights, first: int, factor: int) -> None:
    """Blend into ``up`` (B, M, R, W), upsampled maps of image rows ``[first, first + R)``, the photo's own
    maps at its lights, by :func:`light_mask` of ``x_rows`` (B, 3, R, W): bilinear samples (as
    ``F.interpolate``'s, align_corners=False) taken at the light pixels only where they are few, the
    whole strip upsampled where they are many."""
    mask = light_mask(x_rows, lights.thresholds)[:, 0].to(up.dtype)  # (B, R, W)
    b, y, x = mask.nonzero(as_tuple=True)
    if not len(b):
        return
    maps = lights.maps
    if len(b) * 10 > mask.numel():  # a light pixel's gather costs about ten pixels' dense blend (docs/halo-guard.md)
        rows = _upsampled_rows(maps, first, first + up.shape[-2], factor)[..., :up.shape[-1]]
        up.lerp_(rows.to(up.dtype), mask[:, None])
        return
    h, w = maps.shape[-2:]

    def taps(i: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        source = ((i + 0.5) / factor - 0.5).clamp_min(0)
        low = source.floor().long().clamp_max(size - 1)
        return low, (low + 1).clamp_max(size - 1), (source - low).clamp_max(1)[:, None]

    y0, y1, wy = taps(y + first, h)
    x0, x1, wx = taps(x, w)
    wx, wy = wx.to(maps.dtype), wy.to(maps.dtype)
    own = torch.lerp(torch.lerp(maps[b, :, y0, x0], maps[b, :, y0, x1], wx),
                     torch.lerp(maps[b, :, y1, x0], maps[b, :, y1, x1], wx), wy)  # (K, M)
    up[b, :, y, x] = torch.lerp(up[b, :, y, x], own.to(up.dtype), mask[b, y, x][:, None])


def guarded_maps(stages, x: torch.Tensor, factor: int, rows: int | None = None,
                 guard_halos: bool = True) -> tuple[torch.Tensor, torch.Tensor, Lights | None]:
    """The head's maps and the colour matrix of ``x`` (B, 3, H, W) pooled by ``factor``
    (:func:`maps_in_strips` with ``stages`` and ``rows``), and the :class:`Lights` that :func:`in_strips`
    takes with them: None when ``guard_halos`` is off or no pixel is a light.

    The halo guard: the maps read the scene at low resolution, so a bright light darkens its
    neighbourhood's reading and the dark beside it is lifted less than the dark elsewhere (a dark halo
    around lamps and lit windows). With lights in the photo, the maps are also made from the photo with
    its lights filled in from the dark around them (:func:`fill_lights`), read in the photo's own global
    context (so the photo as a whole is lit as before: a sky full of stars is not read as a darker
    scene); the lights keep the photo's own maps, every other pixel takes the filled photo's.
    Returns ``(maps (B, M, h, w), matrix (B, 3, 3), lights)``: with lights, the filled photo's maps.
    """
    small = pool(x, factor)
    maps, matrix, context = maps_in_strips(stages, small, rows)
    if not guard_halos:
        return maps, matrix, None
    thresholds = light_thresholds(small)
    if not bool((x.amax((1, 2, 3)) > thresholds).any()):  # a light fades in from nothing: no jump at this test
        return maps, matrix, None
    filled = maps_in_strips(stages, fill_lights(x, thresholds, factor, small=small), rows, context)[0]
    return filled, matrix, Lights(thresholds, maps.contiguous())


def light_thresholds(small: torch.Tensor) -> torch.Tensor:
    """The level (B,) above which a pixel starts to count as a light, from the pooled photo
    (B, 3, h, w): :data:`LIGHT_OVER_MEDIAN` times the median of its brightest channel, at least
    :data:`LIGHT_FLOOR`."""
    median = small.amax(1).flatten(1).median(1).values
    return (LIGHT_OVER_MEDIAN * median).clamp_min(LIGHT_FLOOR)


def light_mask(x: torch.Tensor, lights: torch.Tensor) -> torch.Tensor:
    """How much each pixel of ``x`` (B, 3, H, W) is a light, 0..1 (B, 1, H, W): its brightest channel
    from ``lights`` (B,) up to :data:`LIGHT_RAMP` above it.

    Example:
        >>> x = torch.tensor([0.1, 0.5, 0.625, 0.9]).view(1, 1, 1, 4).expand(1, 3, 1, 4)
        >>> light_mask(x, torch.tensor([0.5])).flatten().tolist()  # LIGHT_RAMP = 0.2
        [0.0, 0.0, 0.625, 1.0]
    """
    return ((x.amax(1, keepdim=True) - lights.view(-1, 1, 1, 1)) / LIGHT_RAMP).clamp_(0, 1)


def fill_lights(x: torch.Tensor, lights: torch.Tensor, factor: int, rows: int = 256,
                small: torch.Tensor | None = None) -> torch.Tensor:
    """``pool(x, factor)`` with the lights (:func:`light_mask` with thresholds ``lights``) left out: each
    pooled pixel the mean of the pixels in it that are not lights, and where those are few or none,
    the mean of the dark around it (:func:`fill_holes`). Reads ``x`` in strips of about ``rows`` rows,
    so nothing full-size is made; ``small``, ``pool(x, factor)`` if at hand, stands for the strips without
    a light. Returns (B, 3, h, w) as :func:`pool`."""
    step = 4 * factor * max(1, rows // (4 * factor))  # whole pooling blocks: equal to pooling the whole image
    sums, weights = [], []
    for top in range(0, x.shape[-2], step):
        part = x[:, :, top:top + step]
        if small is not None and not bool((part.amax((1, 2, 3)) > lights).any()):
            sums.append(small[:, :, top // factor:(top + step) // factor])
            weights.append(torch.ones_like(sums[-1][:, :1]))
            continue
        keep = 1 - light_mask(part, lights)  # (B, 1, r, W)
        sums.append(pool(part * keep, factor))
        weights.append(pool(keep, factor))
    return fill_holes(torch.cat(sums, -2), torch.cat(weights, -2))


def fill_holes(sums: torch.Tensor, weights: torch.Tensor, enough: float = 0.5) -> torch.Tensor:
    """Normalised averages ``sums / weights`` (B, C, h, w) / (B, 1, h, w), where ``weights`` (0..1) is
    the share of each pixel that counts: pixels with at least ``enough`` keep their own, those with less
    blend in (none: take) the same from a pyramid of coarser averages (push-pull), so holes fill from
    their surroundings.

    Example:
        >>> sums, weights = torch.tensor([[[[1.0, 0.0, 3.0]]]]), torch.tensor([[[[1.0, 0.0, 1.0]]]])
        >>> fill_holes(sums, weights).flatten().tolist()
        [1.0, 2.0, 3.0]
    """
    own = sums / weights.clamp_min(1e-6)
    if bool((weights >= enough).all()) or max(weights.shape[-2:]) <= 1:
        return own
    coarse = fill_holes(F.avg_pool2d(sums, 2, ceil_mode=True), F.avg_pool2d(weights, 2, ceil_mode=True), enough)
    around = F.interpolate(coarse, size=sums.shape[-2:], mode="bilinear", align_corners=False)
    return torch.lerp(around, own, (weights / enough).clamp(max=1))


def _upsampled_rows(maps: torch.Tensor, first: int, last: int, factor: int) -> torch.Tensor:
    """Rows ``[first, last)`` of ``maps`` upsampled (bilinear) by ``factor``, computed from only the
    low-resolution rows they read (one beyond each end): equal to those rows of the whole upsampling."""
    lo, hi = max(first // factor - 1, 0), min(last // factor + 2, maps.shape[-2])
    up = F.interpolate(maps[:, :, lo:hi], scale_factor=factor, mode="bilinear", align_corners=False)
    return up[:, :, first - lo * factor:last - lo * factor]


def _priors(x: torch.Tensor, eps: float = 1 / 255) -> torch.Tensor:
    """Analytic illumination and colour priors (as in Multinex and Retinex models), ``(B, 3, h, w)`` ->
    ``(B, 8, h, w)``: the image; its brightest channel ``V`` (the Retinex illumination estimate);
    ``log V`` scaled to [0, 1] (exposure in stops, so a dark and a bright scene differ by an offset, not
    a factor); and the chromaticity ``x / V`` (the reflectance's colour, free of exposure)."""
    v = x.amax(dim=1, keepdim=True)
    log_v = torch.log(v.clamp_min(eps)) / -math.log(eps) + 1  # eps -> 0, 1 -> 1
    return torch.cat([x, v, log_v, x / (v + eps)], 1)


def pool(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Average-pool by ``factor`` after edge-padding to a multiple of ``4 * factor`` (three scales).

    Eagerly the padding is never made at full size: columns are pooled first (the partial last blocks
    from a padded slice of the last columns), then the small result's rows are padded and pooled."""
    multiple = 4 * factor
    h, w = x.shape[-2:]
    if torch.compiler.is_compiling():  # a traced graph pads any size
        return F.avg_pool2d(F.pad(x, (0, -w % multiple, 0, -h % multiple), mode="replicate"), factor)
    if not (h % multiple or w % multiple):
        return F.avg_pool2d(x, factor)
    whole = w - w % factor  # columns in whole blocks, pooled as a view (no copy, whatever x's memory format)
    parts = [_pool_columns(x[..., :whole], factor)] if whole else []
    if whole < w:  # the last partial block and the padding's blocks, from the last columns alone
        parts.append(F.avg_pool2d(F.pad(x[..., whole:], (0, -w % multiple, 0, 0), mode="replicate"), (1, factor)))
    elif w % multiple:  # blocks of the padding only: each is the last column
        parts.append(x[..., w - 1:].expand(*x.shape[:-1], (-w % multiple) // factor))
    columns = torch.cat(parts, -1) if len(parts) > 1 else parts[0]  # (B, C, h, w_padded / factor)
    return F.avg_pool2d(F.pad(columns, (0, 0, 0, -h % multiple), mode="replicate"), (factor, 1))


def _pool_columns(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Means of ``factor`` neighbouring columns, (B, C, H, W) -> (B, C, H, W / factor), W a multiple. A
    channels-last map is reduced in its own (B, H, W, C) layout, where the averaged columns are contiguous
    runs of C values: several times faster than reducing over the strided last dimension."""
    if x.shape[1] > 1 and x.stride(1) == 1:  # channels-last, or a slice of such a map
        nhwc = x.permute(0, 2, 3, 1)  # a view
        return nhwc.unflatten(2, (x.shape[-1] // factor, factor)).mean(3).permute(0, 3, 1, 2)
    return x.unflatten(-1, (x.shape[-1] // factor, factor)).mean(-1)


def _conv_of_concat(conv: nn.Conv2d, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``conv(torch.cat([a, b], 1))`` without the concatenated copy (the largest map of a big photo):
    the convolution is linear, so it is the sum of the two halves of its weight applied separately."""
    split = a.shape[1]
    out = F.conv2d(a, conv.weight[:, :split], conv.bias, padding=conv.padding)
    return out.add_(F.conv2d(b, conv.weight[:, split:], None, padding=conv.padding))


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)
