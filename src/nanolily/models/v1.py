"""NanoLILY: a tiny low-light enhancement network (129,016 parameters).

Read bottom-up: the two branches, then the config, then the model.

    input (B,3,224,224) -> spatial branch (local detail)      -> (B,3,224,224) --+
                        -> frequency branch (global lighting) -> (B,3,224,224) --+-> concat -> 1x1 conv -> tanh
    output = input + residual

The frequency branch multiplies the 2-D real FFT of the input by a learnable real mask of shape
(1, 3, S, S//2+1): a per-frequency gain, so one number can lift the brightness of the whole tile (the
DC term) and others reshape its contrast. The mask ties the network to an S x S grid (S = 224); LILY
Bloom (`nanolily.engine.bloom`) takes it to any image size in S x S tiles, and :func:`resample_mask` lets the
whole image run in one pass.
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanolily import native

BLOCK_CACHE_BYTES = 768 << 20  # SpatialBranch.blocks keeps its half-resolution map when it fits in this
# the spatial branch's receptive field: its decoder reads d one half-resolution pixel beyond a block, that d
# pixel (down: 3x3, stride 2) reads s1 3 pixels out, and s1 reads the input 1 more (checked: a halo of 2 is not exact)
BLOCK_HALO = 4


class SpatialBranch(nn.Module):
    """A two-scale conv encoder/decoder with one skip connection: local texture and contrast."""

    # the arithmetic of the convolutions that read normalised maps: down and the composed decoder's two
    # (inference only; see followed_by); None: the parameters' dtype. conv_in always runs in that one
    inner_dtype: torch.dtype | None = None

    def __init__(self, channels: int, width: int, negative_slope: float):
        super().__init__()
        self.conv_in = nn.Conv2d(channels, width, 3, padding=1)
        self.down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1)
        self.conv_out = nn.Conv2d(width, channels, 3, padding=1)
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor, composed: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``composed``: see :meth:`decode`."""
        h, w = x.shape[-2:]
        # channels_last: oneDNN's convolutions (the transposed one above all) run faster so on CPU
        x = _pad_to_even(x).contiguous(memory_format=torch.channels_last)  # stride-2 down/up need even sizes
        slope = self.negative_slope
        s1 = F.leaky_relu(_instance_norm_(self.conv_in(x)), slope, inplace=True)  # (B, w, H, W)
        s1 = self._inner(s1)  # read by down and the skip connection alike
        d = F.leaky_relu(_instance_norm_(self._down(s1)), slope, inplace=True)  # (B, 2w, H/2, W/2)
        return self.decode(d, s1, composed=composed)[..., :h, :w]  # (B, C, H, W)

    def _down(self, s1: torch.Tensor, down: nn.Conv2d | None = None, shift: torch.Tensor | float = 0.0) -> torch.Tensor:
        """``down`` (default: :attr:`down`, its bias less ``shift``) of ``s1``, with the products in
        :attr:`inner_dtype`, returned in the parameters' dtype."""
        down = down if down is not None else self.down
        return _conv(s1, self._inner(down.weight), down.bias - shift, stride=2, padding=1)

    def _inner(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.inner_dtype is None else t.to(self.inner_dtype)

    def decode(self, d: torch.Tensor, s1: torch.Tensor, border: tuple[bool, bool, bool, bool] = (True,) * 4,
               composed: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        """``conv_out(up(d) + s1)``: (B, 2w, H/2, W/2) and (B, w, H, W) -> (B, C, H, W).

        Without gradients it runs the same linear maps rearranged at half resolution, as 4C sub-pixel
        phases put in place by one pixel shuffle: ``conv_out . up`` is one 3x3 convolution on ``d``
        (:func:`compose_up_conv`), which skips the 64->32 transposed convolution, the largest layer, and
        its full-resolution map; the skip connection ``conv_out(s1)`` is one 4x4 stride-2 convolution
        on ``s1`` (:func:`phase_kernel`), which oneDNN runs faster than the 32->3 convolution.
        ``conv_out`` zero-pads ``up(d)`` at the border, which the composed kernel does not see, so the
        outermost row or column on each side flagged in ``border`` (top, bottom, left, right) is
        corrected (:meth:`_decode_composed`); a side whose pixels are cropped away later (a block's
        halo) needs no fix. Equal to the direct form to float rounding (tested). Training (gradients
        on) and traced graphs use the direct form, unless given the ``composed`` weights
        (:meth:`composed_weights`) to use, as the ONNX export is (ONNX Runtime runs a tile ~30 % faster
        so).
        """
        if composed is None and not _composing():
            return self.conv_out(self.up(d) + s1)
        composed = composed if composed is not None else self.composed_weights()
        return self._decode_composed(d, self.skip_phases(s1, composed[2]), border, composed)

    def composed_weights(self, pad_to: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The decoder's half-resolution form: ``(weight, bias)`` of :func:`compose_up_conv` and the skip
        connection's :func:`phase_kernel`, each with its outputs padded to a multiple of ``pad_to``
        (oneDNN's kernels run a quarter faster on 16 outputs than on 12). The two kernels come in
        :attr:`inner_dtype`, the bias in the parameters' dtype."""
        weight, bias = compose_up_conv(self.up, self.conv_out, pad_to)
        return self._inner(weight), bias, self._inner(phase_kernel(self.conv_out, pad_to))

    def skip_phases(self, s1: torch.Tensor, kernel: torch.Tensor | None = None) -> torch.Tensor:
        """``conv_out(s1)`` without its bias, as sub-pixel phases: (B, w, H, W) -> (B, >= 4C, H/2, W/2), in
        the parameters' dtype."""
        kernel = kernel if kernel is not None else self._inner(phase_kernel(self.conv_out, 8))
        return _conv(s1, kernel, dtype=self.conv_out.weight.dtype, stride=2, padding=1)

    def _decode_composed(self, d: torch.Tensor, skip: torch.Tensor, border: tuple[bool, bool, bool, bool],
                         composed: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        """:meth:`decode` from ``d`` and ``skip`` = :meth:`skip_phases` of ``s1``: the direct form is
        ``conv_out(up(d)) + conv_out(s1)``, both terms zero-padded, so the border fix needs no ``s1``.

        The composed kernel computes ``conv_out`` of ``up(d)`` extended by one ring of pixels outside
        the image (what the transposed convolution would put there), where the direct form sees zeros.
        So the fix subtracts ``conv_out``'s outer taps applied to that ring, each side's ring row or
        column coming from ``d``'s outermost row or column through one row of the transposed kernel
        (the corners belong to the top and bottom rows).
        """
        weight, bias = (composed if composed is not None else self.composed_weights())[:2]
        phases = _conv(d, weight, bias, padding=1).add_(skip)  # (B, >= 4C, H/2, W/2)
        return self.fix_border(_pixel_shuffle(phases, self.conv_out.out_channels), d, border)

    def fix_border(self, out: torch.Tensor, d: torch.Tensor, border: tuple[bool, bool, bool, bool]) -> torch.Tensor:
        """The composed decoder's output ``out`` (B, C, H, W) made equal to the direct form's on the sides
        flagged in ``border`` (see :meth:`_decode_composed`), in place; ``d``: (B, 2w, H/2, W/2)."""
        (h, w), c = out.shape[-2:], out.shape[1]
        terms = self.border_terms(d)  # (B, 4C, >= max(H, W))
        for side, (flag, index) in enumerate(zip(border, ((..., 0, slice(None)), (..., -1, slice(None)),
                                                          (..., slice(None), 0), (..., slice(None), -1)))):
            if flag:
                out[index] -= terms[:, side * c:(side + 1) * c, :w if side < 2 else h]
        return out

    def border_terms(self, d: torch.Tensor) -> torch.Tensor:
        """What :meth:`fix_border` subtracts from the top row, the bottom row, the left column and the right
        column: (B, 2w, h, w) -> (B, 4C, 2 max(h, w)), sides in that order, the shorter ones zero-padded.

        Each side's ring of ``up(d)`` outside the image (row -1, row H, column -1, column W) comes from
        ``d``'s outermost row or column through one row of the transposed kernel, and ``conv_out``'s outer
        taps read it. The four sides run as one grouped transposed convolution and one grouped
        convolution, the columns laid out as rows; the corners belong to the top and bottom rows, so the
        column rings' ends are zeroed."""
        h, n = d.shape[-2], max(d.shape[-2:])
        up, conv = self.up.weight, self.conv_out.weight  # (2w, w, 4, 4), (C, w, 3, 3)
        width = up.shape[1]
        lines = [d[..., 0, :], d[..., -1, :], d[..., 0], d[..., -1]]  # 4 x (B, 2w, h or w)
        lines = torch.cat([F.pad(line, (0, n - line.shape[-1])) for line in lines], 1)[:, :, None]  # (B, 8w, 1, n)
        taps = torch.cat([up[:, :, 0], up[:, :, 3], up[..., 0], up[..., 3]])[:, :, None]  # (8w, w, 1, 4)
        ring = F.conv_transpose2d(lines, taps, self.up.bias.repeat(4), stride=(1, 2), groups=4)  # (B, 4w, 1, 2n + 2)
        ring[:, 2 * width:, :, 0] = ring[:, 2 * width:, :, 2 * h + 1] = 0  # the column rings' rows -1 and H
        taps = torch.cat([conv[:, :, 0], conv[:, :, 2], conv[..., 0], conv[..., 2]])[:, :, None]  # (4C, w, 1, 3)
        return F.conv2d(ring, taps, groups=4)[:, :, 0]  # (B, 4C, 2n)

    def blocks(self, x: torch.Tensor, size: int = 256, halo: int = BLOCK_HALO, cache_bytes: int = BLOCK_CACHE_BYTES):
        """Yield ``(y0, y1, x0, x1, out[..., y0:y1, x0:x1])`` of :meth:`forward` for one image
        (``x``: (1, C, H, W)), one ``size x size`` block at a time: equal to :meth:`forward` to float
        rounding, with memory for one block, and faster than one pass over a big image because a block's
        feature maps stay in the CPU cache.

        Convolutions see a ``halo`` of real neighbouring pixels, cropped afterwards (the branch's
        receptive field reaches :data:`BLOCK_HALO` = 4 pixels). InstanceNorm needs whole-image
        statistics, so they are gathered first (pass 1 for the first norm, from each block's own pixels
        without a halo; pass 2 for the second) and then folded into the convolution before each norm (a
        norm with fixed statistics is a per-channel affine map); pass 3 computes the output. When pass
        2's half-resolution maps fit in ``cache_bytes`` (:meth:`kept_bytes`),
        pass 2 keeps each block's (with its halo, which is exact where pass 3 reads it) and pass 3 reads
        it instead of repeating the stride-2 convolution; in inference it also keeps the skip
        connection's :meth:`skip_phases`, so pass 3 then runs only the composed decoder (:meth:`decode`).
        """
        if size % 2 or halo % 2 or halo < BLOCK_HALO:  # even sizes keep the stride-2 grid aligned
            raise ValueError(f"size and halo must be even and halo >= {BLOCK_HALO}, got {size} and {halo}")
        if x.shape[0] != 1:
            raise ValueError(f"blocks() takes one image, (1, C, H, W); got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        x = _pad_to_even(x)
        height, width = x.shape[-2:]
        spans = [(y, min(y + size, height), x0, min(x0 + size, width))
                 for y in range(0, height, size) for x0 in range(0, width, size)]

        def blocks():  # (input block with halo, crop of the block's own pixels, crop at half resolution)
            for y0, y1, x0, x1 in spans:
                a, b = max(0, y0 - halo), max(0, x0 - halo)  # even, so the stride-2 grid lines up
                xs = x[..., a:min(height, y1 + halo), b:min(width, x1 + halo)]
                crop = (..., slice(y0 - a, y1 - a), slice(x0 - b, x1 - b))
                half = (..., slice((y0 - a) // 2, (y1 - a) // 2), slice((x0 - b) // 2, (x1 - b) // 2))
                yield (y0, y1, x0, x1), xs, crop, half

        def nhwc(t: torch.Tensor) -> torch.Tensor:
            return t.contiguous(memory_format=torch.channels_last)

        slope = self.negative_slope
        stats = _Moments()
        for y0, y1, x0, x1 in spans:  # pass 1: statistics of conv_in, on each block's own pixels
            a, b, c, e = max(y0 - 1, 0), min(y1 + 1, height), max(x0 - 1, 0), min(x1 + 1, width)
            ring = F.pad(x[..., a:b, c:e], (c - x0 + 1, x1 + 1 - e, a - y0 + 1, y1 + 1 - b))  # zeros off the image
            stats.add(F.conv2d(nhwc(ring), self.conv_in.weight, self.conv_in.bias - stats.shift))  # (1, w, h', w')
        conv_in = _fold_norm(self.conv_in, *stats.result())
        composing = _composing()
        keep = self.kept_bytes(height, width, size, halo, composing) * x.element_size() <= cache_bytes
        kept = {}  # block -> (its down map, with halo; its skip_phases, with halo, or None)
        stats = _Moments()
        for span, xs, crop, half in blocks():  # pass 2: statistics of down
            s1 = self._inner(F.leaky_relu(conv_in(nhwc(xs)), slope, inplace=True))
            d = self._down(s1, shift=stats.shift)
            stats.add(d, half)
            if keep:
                kept[span] = d, self.skip_phases(s1) if composing else None
        kept_shift = stats.shift  # what the kept maps have had subtracted
        mean, var = stats.result()
        down = _fold_norm(self.down, mean, var)
        scale = torch.rsqrt(var + 1e-5).to(x.dtype)[None, :, None, None]  # the same norm, for kept maps
        shift = -(mean - kept_shift).to(x.dtype)[None, :, None, None] * scale
        for span, xs, crop, _ in blocks():  # pass 3: the output
            y0, y1, x0, x1 = span
            d, skip = kept.pop(span, (None, None))
            y1, x1 = min(y1, h), min(x1, w)  # without the rows / columns _pad_to_even added
            if y0 >= y1 or x0 >= x1:
                continue
            top, left = y0 - crop[1].start, x0 - crop[2].start  # where the block with its halo starts
            rows, cols = xs.shape[-2:]
            sides = (top == 0, top + rows == height, left == 0, left + cols == width)  # the image's own border
            if d is not None:
                d = F.leaky_relu(torch.addcmul(shift, d, scale), slope, inplace=True)
            if skip is not None:
                out = self._decode_composed(d, skip, sides)
            else:
                s1 = self._inner(F.leaky_relu(conv_in(nhwc(xs)), slope, inplace=True))
                if d is None:
                    d = F.leaky_relu(self._down(s1, down), slope, inplace=True)
                out = self.decode(d, s1, sides)  # only the image's own border needs decode's fix
            yield y0, y1, x0, x1, out[crop][..., :y1 - y0, :x1 - x0]

    def followed_by(self, fuse: nn.Conv2d, inner_dtype: torch.dtype | None = None) -> SpatialBranch:
        """This branch followed by ``fuse``'s part on it: a 1x1 convolution whose first C inputs are this
        branch's output (its other inputs left out, its bias kept). The same modules with ``conv_out``
        replaced by the composition of the two, for inference, and :attr:`inner_dtype` set to
        ``inner_dtype``; cached until the weights change, like :func:`compose_up_conv`."""
        key = _cache_key(f"followed_by {inner_dtype}", 0, self.conv_out.weight, self.conv_out.bias, fuse.weight, fuse.bias)
        if key not in _composed:
            c = self.conv_out.out_channels
            with torch.inference_mode(False), torch.no_grad():  # normal tensors: the caches key on versions
                mix = fuse.weight[:, :c, 0, 0]  # (C', C)
                conv = nn.Conv2d(self.conv_out.in_channels, len(mix), 3, padding=1).to(self.conv_out.weight)
                conv.weight.copy_(torch.einsum("oc,cikl->oikl", mix, self.conv_out.weight))
                conv.bias.copy_(mix @ self.conv_out.bias + fuse.bias)
            branch = copy.copy(self)
            branch._modules = {**self._modules, "conv_out": conv}
            branch.inner_dtype = inner_dtype
            _store(key, branch)
        return _composed[key]

    def kept_bytes(self, height: int, width: int, size: int = 256, halo: int = BLOCK_HALO, skips: bool = True) -> int:
        """Elements (x4 for bytes in float32) of the maps :meth:`blocks` keeps from pass 2 for an H x W
        image: each block's half-resolution map with its halo, and with ``skips`` its :meth:`skip_phases`."""
        height, width = height + height % 2, width + width % 2
        rows = sum(min(y + size + halo, height) - max(0, y - halo) for y in range(0, height, size))
        cols = sum(min(x + size + halo, width) - max(0, x - halo) for x in range(0, width, size))
        per_pixel = (self.down.out_channels + (len(self.composed_weights()[0]) if skips else 0)) / 4
        return int(rows * cols * per_pixel)

    def forward_blocks(self, x: torch.Tensor, size: int = 256, halo: int = BLOCK_HALO,
                       cache_bytes: int = BLOCK_CACHE_BYTES) -> torch.Tensor:
        """:meth:`forward` computed block by block (see :meth:`blocks`), image by image."""
        out = torch.empty(x.shape[0], self.conv_out.out_channels, *x.shape[-2:], dtype=x.dtype, device=x.device)
        for i in range(x.shape[0]):
            for y0, y1, x0, x1, block in self.blocks(x[i:i + 1], size, halo, cache_bytes):
                out[i, :, y0:y1, x0:x1] = block[0]
        return out


_composed: dict[tuple, object] = {}  # compose_up_conv's, phase_kernel's and followed_by's results, by weight version


def _composing() -> bool:
    """Whether :meth:`SpatialBranch.decode` takes its composed form: eager inference only (training
    needs the direct form's gradients; traced graphs should not capture the composition's float64
    impulse responses)."""
    return not (torch.is_grad_enabled() or torch.compiler.is_compiling())


def compose_up_conv(up: nn.ConvTranspose2d, conv: nn.Conv2d, pad_to: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``conv(up(d))`` away from the border, as ``pixel_shuffle(conv2d(d, weight, bias, padding=1), 2)``.

    ``up``: a 4x4, stride-2, padding-1 transposed convolution (Cin -> M); ``conv``: 3x3, padding 1
    (M -> C). Each output pixel ``(2i + p, 2j + q)`` depends on ``d`` at rows i-1..i+1 and columns
    j-1..j+1 only, so the pair is one 3x3 convolution on ``d`` with 4C outputs (channel ``4c + 2p + q``).
    The kernel comes from running both layers on unit impulses, in float64. Cached until either layer's
    parameters change. Returns ``(weight (4C, Cin, 3, 3), bias (4C,))``, with zero output channels
    appended up to a multiple of ``pad_to``.
    """
    key = _cache_key("compose", pad_to, up.weight, up.bias, conv.weight, conv.bias)
    if key not in _composed:
        if up.kernel_size != (4, 4) or up.stride != (2, 2) or up.padding != (1, 1) or conv.kernel_size != (3, 3):
            raise ValueError("compose_up_conv expects a 4x4/2 transposed conv (padding 1) and a 3x3 conv")
        cin, c = up.in_channels, conv.out_channels
        impulses = torch.zeros(cin, cin, 5, 5, dtype=torch.float64, device=up.weight.device)
        impulses[range(cin), range(cin), 2, 2] = 1  # one per input channel, at half-resolution (2, 2)
        response = F.conv2d(F.conv_transpose2d(impulses, up.weight.double(), stride=2, padding=1),
                            conv.weight.double(), padding=1)  # (Cin, C, 10, 10)
        # output (2i + p, 2j + q) sees the impulse at offset (2 - i, 2 - j) = kernel tap (3 - i, 3 - j)
        taps = response[:, :, 2:8, 2:8].reshape(cin, c, 3, 2, 3, 2).flip(2, 4)  # (Cin, C, a, p, b, q)
        weight = taps.permute(1, 3, 5, 0, 2, 4).reshape(4 * c, cin, 3, 3)
        bias = (conv.bias.double() + conv.weight.double().sum((2, 3)) @ up.bias.double()).repeat_interleave(4)
        extra = -len(bias) % pad_to
        weight, bias = F.pad(weight, (0, 0, 0, 0, 0, 0, 0, extra)), F.pad(bias, (0, extra))
        _store(key, (weight.to(up.weight.dtype), bias.to(up.weight.dtype)))
    return _composed[key]


def phase_kernel(conv: nn.Conv2d, pad_to: int = 1) -> torch.Tensor:
    """A 3x3, padding-1 convolution (Cin -> C, without its bias) as a 4x4, stride-2, padding-1 one with 4C
    outputs, channel ``4c + 2p + q`` holding output pixel ``(2i + p, 2j + q)``: ``pixel_shuffle`` of
    the result is the convolution, exactly (the same products and zero padding). That pixel's 3x3
    window starts at input row ``2i + p - 1``, which is kernel row ``p``. Returns ``(4C, Cin, 4, 4)``
    with zero output channels appended up to a multiple of ``pad_to``; cached like
    :func:`compose_up_conv`.

    Example:
        >>> conv = nn.Conv2d(8, 3, 3, padding=1, bias=False)
        >>> s = torch.randn(1, 8, 6, 10)
        >>> phases = F.conv2d(s, phase_kernel(conv), stride=2, padding=1)  # (1, 12, 3, 5)
        >>> bool(torch.allclose(F.pixel_shuffle(phases, 2), conv(s), atol=1e-6))
        True
    """
    key = _cache_key("phase", pad_to, conv.weight)
    if key not in _composed:
        if conv.kernel_size != (3, 3) or conv.stride != (1, 1) or conv.padding != (1, 1):
            raise ValueError("phase_kernel expects a 3x3 convolution with stride 1 and padding 1")
        c, cin = conv.out_channels, conv.in_channels
        kernel = conv.weight.new_zeros(c, 2, 2, cin, 4, 4)  # (C, p, q, Cin, 4, 4)
        for p in range(2):
            for q in range(2):
                kernel[:, p, q, :, p:p + 3, q:q + 3] = conv.weight.detach()
        _store(key, F.pad(kernel.reshape(4 * c, cin, 4, 4), (0, 0, 0, 0, 0, 0, 0, -4 * c % pad_to)))
    return _composed[key]


def _conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
          dtype: torch.dtype | None = None, **kwargs) -> torch.Tensor:
    """``F.conv2d(x, weight, bias)`` with the products in ``weight``'s dtype (bf16: oneDNN's AMX kernels,
    sums in fp32), returned in ``dtype`` (default: the bias's), the bias added in it."""
    dtype = dtype or bias.dtype
    if weight.dtype == x.dtype == dtype:
        return F.conv2d(x, weight, bias, **kwargs)
    out = F.conv2d(x.to(weight.dtype), weight, **kwargs).to(dtype)
    return out if bias is None else out.add_(bias.to(dtype)[:, None, None])


def _pixel_shuffle(phases: torch.Tensor, channels: int) -> torch.Tensor:
    """``F.pixel_shuffle(phases[:, :4 * channels], 2)``: (B, >= 4C, h, w) -> (B, C, 2h, 2w), contiguous. As one
    permuted copy it runs faster than ``F.pixel_shuffle`` on channels-last maps; an exported graph keeps
    the operator (ONNX's DepthToSpace), which ONNX Runtime runs faster than the six-dimensional transpose
    (docs/performance.md)."""
    if torch.onnx.is_in_onnx_export():
        return F.pixel_shuffle(phases[:, :4 * channels], 2)
    b, _, h, w = phases.shape
    sub_pixels = phases[:, :4 * channels].unflatten(1, (channels, 2, 2))  # (B, C, 2, 2, h, w)
    return sub_pixels.permute(0, 1, 4, 2, 5, 3).reshape(b, channels, 2 * h, 2 * w)


def _winograd(lib, weight: torch.Tensor, stride: int, *params: torch.Tensor) -> torch.Tensor:
    """:func:`nanolily.native.winograd_weights` of ``weight``, cached until the parameters it comes from,
    ``params``, change."""
    key = _cache_key(f"winograd {stride}", 0, *params)
    if key not in _composed:
        _store(key, native.winograd_weights(lib, weight.detach(), stride))
    return _composed[key]


def _cache_key(kind: str, pad_to: int, *params: torch.Tensor) -> tuple:
    # the version counter misses writes through ``.data``; a checksum of the values catches them
    return (kind, pad_to, *((id(t), t._version, float(t.detach().sum())) for t in params))


def _store(key: tuple, value) -> None:
    if len(_composed) > 16:
        _composed.clear()
    _composed[key] = value


def _instance_norm_(t: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """InstanceNorm2d without affine, as group norm with one channel per group: the same maths, and on CPU
    several times faster than ``F.instance_norm`` on channels-last maps. Group norm's channels-last kernel computes E[x^2] - E[x]^2, which cancels badly
    where |mean| >> std, so each channel is first shifted by a rough mean (the norm ignores shifts), in
    place: ``t`` is overwritten (a fresh convolution output, which autograd does not keep)."""
    return F.group_norm(t.sub_(_rough_mean(t)), t.shape[1], eps=eps)


def _rough_mean(t: torch.Tensor) -> torch.Tensor:
    """Per-channel mean of every 8th row and column: (B, C, 1, 1), within a few % of the std of the mean."""
    return t[..., ::8, ::8].mean(dim=(-2, -1), keepdim=True)


def _pad_to_even(x: torch.Tensor, least: int = 4) -> torch.Tensor:
    """Edge-replicate to even sizes of at least ``least`` (InstanceNorm needs > 1 value at half size)."""
    h, w = x.shape[-2:]
    pad_h, pad_w = max(least - h, h % 2), max(least - w, w % 2)
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x


class _Moments:
    """Per-channel mean and biased variance of one image's feature map, accumulated block by block.

    Each block's moments come from the group-norm kernel (several times faster on CPU than reductions
    such as ``var_mean``), which computes E[x^2] - E[x]^2 and so cancels badly where |mean| >> std. So
    blocks are taken shifted by :attr:`shift`, a rough mean of the first block (which :meth:`add`
    subtracts in place, then fixes): the caller subtracts it from the bias of the convolution that
    makes later blocks, for free. Blocks are merged in float64 with Chan et al.'s pairwise update.
    """

    def __init__(self):
        self.n, self.mean, self.m2 = 0, 0.0, 0.0
        self.shift: torch.Tensor | float = 0.0  # (C,) once the first block is in

    def add(self, t: torch.Tensor, crop: tuple = (...,)) -> None:
        """Add ``t[crop]``; ``t``: (1, C, h, w), a fresh map less :attr:`shift` (the first one is shifted
        in place, all of it, so a kept map's halo matches its crop)."""
        if not self.n:
            self.shift = _rough_mean(t[crop]).flatten()
            t.sub_(self.shift[:, None, None])
        t = t[crop]
        if not (t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last)):
            t = t.contiguous(memory_format=torch.channels_last)
        c, n = t.shape[1], t.shape[-2] * t.shape[-1]
        _, mean, rstd = torch.native_group_norm(t, None, None, 1, c, n, c, 1e-20)
        mean, var = mean[0].double() + self.shift.double(), rstd[0].double().pow(-2)  # (C,)
        total = self.n + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + var * n + delta ** 2 * (self.n * n / total)
        self.n = total

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean, self.m2 / self.n


def _fold_norm(conv: nn.Conv2d, mean: torch.Tensor, var: torch.Tensor, eps: float = 1e-5) -> nn.Conv2d:
    """``conv`` followed by InstanceNorm with fixed statistics, as one convolution."""
    scale = torch.rsqrt(var + eps)  # (C_out,) float64
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding)
    folded.weight.data = (conv.weight.double() * scale[:, None, None, None]).to(conv.weight.dtype)
    folded.bias.data = ((conv.bias.double() - mean) * scale).to(conv.bias.dtype)
    return folded.to(conv.weight.device)


def resample_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The learned ``(1, C, S, S//2+1)`` rfft2 gain, resampled to the rfft2 grid of an H x W image.

    Each target bin takes the (bilinearly interpolated) gain the mask learned for the same spatial
    frequency in cycles per pixel, so a texture of a given scale is treated as it was in 224x224
    training tiles, and the DC gain (overall brightness) is unchanged. rfft2/irfft2 use the "backward"
    normalisation, so gains do not depend on the image size. At H = W = S the mask comes back unchanged.

    Example:
        >>> m = torch.rand(1, 3, 224, 113)
        >>> bool(torch.allclose(resample_mask(m, 224, 224), m, atol=1e-6))
        True
        >>> resample_mask(m, 400, 600).shape
        torch.Size([1, 3, 400, 301])
    """
    size = mask.shape[-2]
    shifted = torch.fft.fftshift(mask, dim=-2)  # rows now run from frequency -1/2 upwards
    rows = torch.fft.fftfreq(height, dtype=torch.float64, device=mask.device) * size + size // 2
    cols = torch.fft.rfftfreq(width, dtype=torch.float64, device=mask.device) * size  # 0 .. S/2
    # bilinear, as two 1-D passes (the grid is separable): no full-size sampling grid in memory
    return _interpolate(_interpolate(shifted, rows, dim=-2), cols, dim=-1)  # (1, C, H, W//2+1)


def _interpolate(t: torch.Tensor, positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Linear interpolation of ``t`` along ``dim`` (-1 or -2) at fractional ``positions``, clamped to the
    ends: a product with a (len(positions), n) matrix of two taps per row, which runs far faster than
    gathering both neighbours of every output bin."""
    n = t.shape[dim]
    positions = positions.clamp(0, n - 1)
    left = positions.floor().long().clamp(max=n - 2)
    weight = (positions - left).to(t.dtype)
    rows = torch.arange(len(positions), device=t.device)
    matrix = torch.zeros(len(positions), n, dtype=t.dtype, device=t.device)
    matrix[rows, left] = 1 - weight
    matrix[rows, left + 1] = weight
    return matrix @ t if dim == -2 else t @ matrix.T


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
        # one image and channel at a time: only one spectrum plane and one resampled mask are alive
        out = torch.empty_like(x, memory_format=torch.contiguous_format)  # (B, C, H, W)
        for c in range(x.shape[1]):
            mask = resample_mask(self.mask[:, c:c + 1], h, w)[0, 0]  # (H, W//2+1)
            for b in range(x.shape[0]):
                spectrum = torch.fft.rfft2(x[b, c])
                torch.view_as_real(spectrum).mul_(mask[..., None])  # a complex * real product would copy the mask to complex
                torch.fft.irfft2(spectrum, s=(h, w), out=out[b, c])
        return out


@dataclass
class NanoLILYConfig:
    size: int = 224  # the grid the frequency mask is tied to
    channels: int = 3
    width: int = 32  # spatial branch width; the down path has 2 * width
    negative_slope: float = 0.2
    mask_init: float = 0.01


def _fused_output(x: torch.Tensor, spatial: torch.Tensor, frequency: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """``x + tanh(spatial + mix @ frequency)`` per pixel, in place on a fresh tensor; ``spatial`` already
    carries fuse's spatial half and bias."""
    return torch.einsum("oc,bchw->bohw", mix, frequency).add_(spatial).tanh_().add_(x)


def _onednn_avx512() -> bool:
    """Whether oneDNN runs 16-float vectors here: the CPU has AVX-512 and ``ONEDNN_MAX_CPU_ISA`` leaves it."""
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    return torch.backends.cpu.get_cpu_capability() == "AVX512" and (isa == "ALL" or "AVX512" in isa or "AMX" in isa)


def _autocast_cpu() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


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

    resolution_free = False  # the frequency mask is tied to an S x S grid (global mode resamples it)

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
        return sum(p.numel() for p in self.parameters())  # frozen ones too (an averaged copy is frozen)

    def branches(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """All intermediate maps (for `nanolily explain`): spatial, frequency, residual, output."""
        self._check_input(x)
        spatial, frequency = self.spatial(x), self.frequency(x)
        residual = self._residual(spatial, frequency)
        return {"spatial": spatial, "frequency": frequency, "residual": residual, "output": x + residual}

    def forward(self, x: torch.Tensor, block: int | None = None,
                inner_dtype: torch.dtype | None = None) -> torch.Tensor:
        """``block``: run the spatial branch one ``block x block`` tile at a time (with exact whole-image
        InstanceNorm statistics, see :meth:`SpatialBranch.blocks`) and fuse each as it comes, so no
        full-size feature map exists: the same result to float rounding, faster and lighter on big images.

        In inference ``fuse``, a linear map, is folded away: its spatial half (and bias) into the spatial
        branch's last layer (:meth:`SpatialBranch.followed_by`), its frequency half a 3x3 channel mix,
        which saves the concatenation and the 6->3 convolution. On S x S float32 CPU tiles (LILY
        Bloom's calls) the layers run as compiled kernels where they are built (:meth:`_forward_compiled`).
        With gradients (or when traced) the layers run as published, on the whole image.

        ``inner_dtype``: the arithmetic of the convolutions that read normalised maps, the stride-2 one
        and the composed decoder's two (inference only; default: the parameters' dtype).
        ``torch.bfloat16`` runs them several times faster on a CPU with AMX units and moves outputs by
        ~0.01 at most; everything else stays in the parameters' dtype. ``conv_in`` never changes:
        it reads the raw input, and the first norm divides by its output's spread, so on a flat tile
        bf16 rounding of the input, so amplified, moved outputs by up to 0.08.
        """
        self._check_input(x)
        if not _composing():
            return self.branches(x)["output"]
        c = self.config.channels
        spatial_branch = self.spatial.followed_by(self.fuse, inner_dtype)
        mix = self.fuse.weight[:, c:, 0, 0]  # (C, C): fuse's frequency half
        if block is None and (lib := self._tile_kernels(x)) is not None:
            return self._forward_compiled(lib, x, spatial_branch, mix)
        out = self.frequency(x)  # (B, C, H, W); overwritten by the output, block by block
        if block is None:
            return _fused_output(x, spatial_branch(x), out, mix)
        for i in range(x.shape[0]):
            for y0, y1, x0, x1, spatial in spatial_branch.blocks(x[i:i + 1], block):
                frequency = out[i:i + 1, :, y0:y1, x0:x1]
                frequency.copy_(_fused_output(x[i:i + 1, :, y0:y1, x0:x1], spatial, frequency, mix))
        return out

    def _tile_kernels(self, x: torch.Tensor):
        """The compiled tile kernels (:func:`nanolily.native.tile_library`) where they apply: eager float32
        inference on CPU, on S x S tiles, at the published widths; else None."""
        cfg = self.config
        if (x.device.type != "cpu" or x.dtype != torch.float32 or self.fuse.weight.dtype != torch.float32
                or tuple(x.shape[-2:]) != (cfg.size, cfg.size) or cfg.size % 2 or (cfg.channels, cfg.width) != (3, 32)
                or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or _autocast_cpu()):
            return None
        return native.tile_library()

    def _forward_compiled(self, lib, x: torch.Tensor, branch: SpatialBranch, mix: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` on S x S tiles with the compiled kernels (in bf16, oneDNN runs the two inner
        convolutions): the same maps as the composed path (equal to float rounding; tests/native;
        docs/pipeline.md). ``branch``: the spatial branch followed by fuse's spatial half."""
        slope = branch.negative_slope
        s1 = native.first_stage(lib, x, branch.conv_in.weight, branch.conv_in.bias, slope)  # (B, w, H, W)
        weight, bias, _ = branch.composed_weights()
        down, up, conv = branch.down, branch.up, branch.conv_out
        winograd = weight.dtype == torch.float32  # in bf16, oneDNN's (AMX) kernels run both inner convolutions
        if winograd and not _onednn_avx512():  # oneDNN's 16-float stride-2 kernel beats the 8-float form
            d = native.conv3x3(lib, s1, down.weight, down.bias, 2, _winograd(lib, down.weight, 2, down.weight))
        else:
            d = branch._down(s1)
        d = native.norm_lrelu_(lib, d, slope)  # (B, 2w, H/2, W/2)
        if winograd:  # (B, >= 4C, H/2, W/2); the kernel is composed from up and conv_out
            phases = native.conv3x3(lib, d, weight, bias, 1, _winograd(lib, weight, 1, up.weight, conv.weight))
        else:
            phases = _conv(d, weight, bias, padding=1)
        border = native.border_terms(lib, d, up.weight, up.bias, conv.weight)
        return native.tile_output(lib, x, phases, s1, conv.weight, border, self.frequency(x), mix)

    def _residual(self, spatial: torch.Tensor, frequency: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fuse(torch.cat([spatial, frequency], dim=1)))  # (B, C, H, W)

    def _check_input(self, x: torch.Tensor) -> None:
        c = self.config.channels
        if x.ndim != 4 or x.shape[1] != c:
            raise ValueError(f"NanoLILY expects a (B, {c}, H, W) tensor, got {tuple(x.shape)}")

    def config_dict(self) -> dict:
        return asdict(self.config)
