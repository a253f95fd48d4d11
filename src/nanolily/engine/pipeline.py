"""One call to brighten a photo: :func:`enhance` takes a PIL image, numpy array or torch tensor and
returns the same type, dtype and shape.

Modes:
    global (default) the whole image in one pass, the frequency mask resampled to its size (true global
           illumination); the conv branch runs block by block with exact whole-image statistics,
           which bounds memory and keeps each block's feature maps in the CPU cache. Measured better than
           bloom on the validation split, and faster (docs/model-card.md, docs/performance.md).
    bloom  overlapping 224x224 tiles blended with a Hann window: the original's engine, full resolution.
    core   the original "Core" output: the whole image resized to 224x224, enhanced, resized back.
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
from typing import Callable

import numpy as np
import torch
from PIL import Image

from nanolily import native
from nanolily.engine import corrections
from nanolily.engine.bloom import Predictor, bloom, core
from nanolily.io.images import Photo, photo_to_pil, pil_to_photo, to_float, with_pixels
from nanolily.models.v1 import NanoLILY
from nanolily.models.v2 import REFINE_HALO, analysis_factor
from nanolily.models.weights import load_model, resolve_device

MODES = ("global", "bloom", "core")
DEFAULT_MODE = "global"
BACKENDS = ("torch", "onnxruntime")
# the network's arithmetic under torch.autocast; "auto" is fp32 but for nanolily-v1's inner convolutions
# (auto_inner_dtype)
PRECISIONS = {"auto": None, "fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
GLOBAL_BLOCK = 256  # nanolily-v1's global mode: conv-branch blocks of 256x256 (images larger than one block)
# nanolily-v2's global mode: its full-resolution stage in strips of 128 rows of a 3840-wide photo (as
# many pixels in fewer rows of a wider one), which bounds its temporaries (docs/performance.md)
GLOBAL_STRIP = 128
STRIP_PIXELS = GLOBAL_STRIP * 3840
# bloom's defaults, chosen by rules fixed before measuring (docs/performance.md): the largest stride whose
# lol-v1-val PSNR stays within 0.025 dB of the original's 112, and two tiles per call (faster than one)
DEFAULT_STRIDE = 120
DEFAULT_BATCH_SIZE = 2
DEFAULT_PROTECT_HIGHLIGHTS = True  # both chosen on the validation split (docs/quality.md, part 1)
DEFAULT_DENOISE = 0.5
DEFAULT_GUARD_HALOS = True  # lights found by a fixed rule, not tuned (docs/halo-guard.md)
DEFAULT_LIFT_EXPOSURE = True  # its level chosen on the validation split (docs/exposure.md)
# the network's output alone
NO_CORRECTIONS = {"protect_highlights": False, "denoise": 0.0, "white_balance": False, "guard_halos": False,
                  "lift_exposure": False}
# the corrections' tiles: their temporaries stay in the CPU's caches (docs/pipeline.md); the compiled pass
# runs as fast on tiles half as wide, whose buffers then take half the memory
CORRECTION_ROWS, CORRECTION_COLS, COMPILED_COLS = 256, 1024, 512
_default_models: dict[str, NanoLILY] = {}


def strip_rows(width: int, rows: int = GLOBAL_STRIP) -> int:
    """Rows per strip for a photo ``width`` pixels wide: ``rows`` up to 3840 wide, fewer for wider photos,
    so that a strip's temporaries stay the same size (at least 16 rows)."""
    return max(16, min(rows, STRIP_PIXELS // max(width, 1)))


def default_model(device: str | torch.device | None = "auto") -> NanoLILY:
    """The shipped default model, loaded once per device."""
    key = str(resolve_device(device))
    if key not in _default_models:
        _default_models[key] = load_model(None, device=key)
    return _default_models[key]


def enhance_tensor(images: torch.Tensor, model: NanoLILY, mode: str = DEFAULT_MODE, stride: int = DEFAULT_STRIDE,
                   batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = False,
                   predictor: Predictor | None = None, strength: float = 1.0,
                   protect_highlights: bool = DEFAULT_PROTECT_HIGHLIGHTS, denoise: float = DEFAULT_DENOISE,
                   white_balance: bool = False, precision: str = "auto", match_scale: bool = True,
                   reuse_input: bool = False, guard_halos: bool = DEFAULT_GUARD_HALOS,
                   lift_exposure: bool = DEFAULT_LIFT_EXPOSURE) -> torch.Tensor:
    """Enhance ``(N, 3, H, W)`` float images in [0, 1] with ``model``; returns ``(N, 3, H, W)`` in [0, 1].

    ``strength`` scales the change the model makes: 0 returns the input, 1 the model's output, above 1
    pushes further (``input + strength * (output - input)``, then clamped). Then, in this order:
    ``protect_highlights`` limits the lift to each pixel's headroom so nothing below white clips,
    ``denoise`` (0..1) smooths grain and colour static, ``white_balance`` restores the input's colour
    balance (:mod:`nanolily.engine.corrections`).

    ``precision``: ``"auto"`` is ``"fp32"`` except on a CPU with AMX bf16 units, where nanolily-v1's
    three convolutions that read normalised maps run in bf16 (:func:`auto_inner_dtype`: faster bloom,
    outputs within ~0.01 of fp32's); ``"fp32"`` throughout; ``"bf16"`` / ``"fp16"`` run all the network's
    convolutions in half precision under ``torch.autocast``, meant for GPUs (fp16 needs one; a CPU
    without bf16 units runs bf16 several times slower than fp32). The FFT, the blending and the
    corrections stay in fp32; the output is within about 0.01 of fp32's (tested).

    ``match_scale`` (a resolution-free model, nanolily-v2, in global mode): read a photo larger than about
    0.7 MP at a coarser scale and one smaller than 0.24 MP at a finer one
    (:func:`nanolily.models.v2.analysis_factor`), so that it is lit as the same scene at the size the
    model learned from; False runs the network at its own scale at any size.

    ``guard_halos`` (a resolution-free model in global mode): lift the dark beside bright lights as the
    dark elsewhere, where the network alone leaves a dark halo around lamps and lit windows
    (:func:`nanolily.models.v2.guarded_maps`); a photo without lights is unchanged.

    ``lift_exposure`` (a resolution-free model in global mode): the network reads a photo far darker
    than the darkest captures it learned from as a longer exposure of it
    (:func:`nanolily.engine.corrections.exposure_gains`); the corrections still compare with the photo
    itself. Other photos are unchanged; a lifted one costs one more full-size copy (with ``reuse_input``,
    a quarter of one for an 8-bit photo: its codes).

    ``reuse_input``: the result may be written over ``images``, which must then not be used again. A
    resolution-free model (nanolily-v2) in global mode without white balance then writes it there strip
    by strip, behind the rows still to be read (:func:`enhance_in_place`), so a large photo needs one
    full-size tensor instead of two; other settings return a new tensor as usual.

    The canvas stays on ``images.device``; tiles run on the model's device. ``predictor`` (e.g. an
    :class:`nanolily.engine.onnx.OnnxPredictor`) runs instead of ``model``: the tiles of bloom and core modes,
    or, for a resolution-free model (nanolily-v2), the whole image in global mode.
    """
    if images.shape[-2] == 0 or images.shape[-1] == 0:
        raise ValueError(f"image has no pixels ({images.shape[-1]}x{images.shape[-2]})")
    device = next(model.parameters()).device if predictor is None else torch.device("cpu")
    patch = model.patch_size
    if predictor is not None and mode == "global" and not model.resolution_free:
        raise ValueError(f"this model's other backends take {patch}x{patch} tiles: use --mode bloom or core "
                         "with them (global mode runs nanolily-v1 in PyTorch only)")
    check_mode(model, mode)
    if not strength >= 0:
        raise ValueError(f"strength must be >= 0, got {strength}")
    check_precision(precision, device, torch_backend=predictor is None)
    inner_dtype = auto_inner_dtype(model, device) if precision == "auto" and predictor is None else torch.float32
    autocast = functools.partial(torch.autocast, device.type, dtype=PRECISIONS[precision],
                                 enabled=PRECISIONS[precision] is not None)
    in_place = (mode == "global" and predictor is None and getattr(model, "resolution_free", False)
                and not white_balance and images.device == device)
    with torch.inference_mode():
        source = images  # what the corrections compare with; the network may read a lifted copy
        if lift_exposure and mode == "global" and model.resolution_free:
            gains = corrections.exposure_gains(images)
            if bool((gains > 1).any()):
                # an 8-bit photo we may write over is lifted in place, its codes kept for the corrections
                codes = corrections.eight_bit_codes(images) if reuse_input and in_place else None
                if codes is not None:
                    source = codes
                    corrections.lift_exposure(images, gains, out=images)
                else:
                    images, reuse_input = corrections.lift_exposure(images, gains), True  # the copy is ours
        if reuse_input and in_place:
            return enhance_in_place(images, model, strength, protect_highlights, denoise, match_scale, autocast,
                                    guard_halos, source)
        predictor = predictor if predictor is not None else model
        with autocast():
            out = _run(predictor, model, images, mode, stride, batch_size, device, progress, match_scale,
                       inner_dtype, guard_halos)
        return apply_corrections(source, out, strength, protect_highlights, denoise, white_balance)


def enhance_in_place(images: torch.Tensor, model: NanoLILY, strength: float = 1.0,
                     protect_highlights: bool = DEFAULT_PROTECT_HIGHLIGHTS, denoise: float = DEFAULT_DENOISE,
                     match_scale: bool = True, autocast: Callable = contextlib.nullcontext,
                     guard_halos: bool = DEFAULT_GUARD_HALOS, source: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`enhance_tensor` of a resolution-free model (nanolily-v2) in global mode, its result written
    over ``images``, which is returned: the low-resolution part runs first, then the full-resolution
    stage makes the output in strips that go straight into the corrections (:func:`correct_rows`), and
    each corrected strip is written back once no later strip reads those input rows. Beyond the photo,
    memory holds one strip of the network's output and two of results. ``autocast``: the context the
    network runs in; ``source``: what the corrections compare with, if not ``images`` (which the
    network reads: the photo lifted), as a tensor like ``images`` or the photo's uint8 codes
    (:func:`nanolily.engine.corrections.eight_bit_codes`)."""
    with autocast():
        output_rows = model.output_rows(images, block=strip_rows(images.shape[-1]),
                                        factor=_match_factor(model, images, match_scale), guard_halos=guard_halos)
    halo = corrections.DENOISE_HALO
    window = torch.empty_like(images[:, :, :CORRECTION_ROWS + 2 * halo])  # the rows a strip of corrections reads
    made = [0, 0]  # the rows of the output in window

    def network_rows(first: int, last: int) -> torch.Tensor:
        start, end = made
        keep = max(end - first, 0)  # made for the last strip and read again (<= 2 halo <= CORRECTION_ROWS)
        window[:, :, :keep] = window[:, :, first - start:end - start]
        with autocast():
            output_rows((first + keep, last), window[:, :, keep:last - first])
        made[:] = first, last
        return window[:, :, :last - first]

    photo = images if source is None else source
    if photo.dtype == torch.uint8:  # the photo's 8-bit codes (enhance_tensor)
        codes = photo
        photo = lambda first, last: corrections.from_eight_bit(codes[..., first:last, :])  # noqa: E731
    # the network reads REFINE_HALO input rows beyond the output rows it makes
    correct_rows(photo, network_rows, images, strength, protect_highlights, denoise, CORRECTION_ROWS,
                 reach=REFINE_HALO)
    return images


def _match_factor(model: NanoLILY, images: torch.Tensor, match_scale: bool) -> int | None:
    """The first downsampling a resolution-free model reads ``images`` at: scale-matched to their size
    (:func:`analysis_factor`), or None (the network's own) without ``match_scale``."""
    return analysis_factor(*images.shape[-2:], model.config.factor) if match_scale else None


def check_mode(model: NanoLILY, mode: str) -> None:
    """Raise ``ValueError`` unless ``model`` runs in ``mode``. Bloom is nanolily-v1's engine: its tiles each
    estimate their own illumination, which a resolution-free model (nanolily-v2) reads from the whole
    photo, so tiling it gives each tile its own colour and brightness (casts, bands)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "bloom" and getattr(model, "resolution_free", False):
        raise ValueError("mode bloom (224x224 tiles) is nanolily-v1's engine; this model lights the whole photo "
                         "at once: use mode global (the default), or model nanolily-v1 with bloom")


def check_precision(precision: str, device: torch.device, torch_backend: bool = True) -> None:
    """Raise ``ValueError`` unless ``precision`` can run on ``device`` with that backend."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("precision fp16 needs a GPU (--device cuda); on the CPU use fp32 or bf16")
    if PRECISIONS[precision] is not None and not torch_backend:
        raise ValueError("precision applies to the torch backend (ONNX Runtime runs the exported fp32 model)")


def auto_inner_dtype(model: NanoLILY, device: torch.device) -> torch.dtype:
    """What ``precision="auto"`` gives ``model``'s convolutions that read normalised maps
    (:meth:`NanoLILY.forward`'s ``inner_dtype``: the stride-2 one and the composed decoder's two): bf16
    for nanolily-v1 on a CPU with AMX bf16 units, where oneDNN runs them several times faster, within
    the accuracy rule of docs/performance.md; fp32 elsewhere (without AMX, bf16 convolutions are slower
    than fp32 ones)."""
    if model.resolution_free or device.type != "cpu":
        return torch.float32
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    return torch.bfloat16 if amx() and bf16() else torch.float32


def _run(predictor: Predictor, model: NanoLILY, images: torch.Tensor, mode: str, stride: int, batch_size: int,
         device: torch.device, progress: bool, match_scale: bool = True,
         inner_dtype: torch.dtype = torch.float32, guard_halos: bool = DEFAULT_GUARD_HALOS) -> torch.Tensor:
    """The network's output for ``images`` in ``mode``, on ``images.device``."""
    patch = model.patch_size
    torch_model = predictor is model
    if torch_model and inner_dtype != torch.float32:  # nanolily-v1 only (auto_inner_dtype)
        predictor = functools.partial(model, inner_dtype=inner_dtype)
    if mode == "bloom":
        return bloom(predictor, images, patch=patch, stride=stride, batch_size=batch_size, device=device,
                     progress=progress)
    if mode == "core":
        return core(predictor, images, patch=patch, device=device)
    # mode is "global" here: enhance_tensor checked it (check_mode)
    if model.resolution_free:
        from nanolily.engine.onnx import StagedOnnxPredictor

        factor = _match_factor(model, images, match_scale)
        if predictor is model:
            out = model(images.to(device), block=strip_rows(images.shape[-1]), factor=factor, guard_halos=guard_halos)
        elif isinstance(predictor, StagedOnnxPredictor):  # ONNX Runtime's graphs by stage: the same maths
            out = predictor(images, factor=factor, guard_halos=guard_halos)
        else:  # one exported graph (--onnx FILE): the network at its own scale, as exported
            out = predictor(images.to(device))
        return out.to(images.device, images.dtype)
    if not torch_model:
        return predictor(images.to(device)).to(images.device, images.dtype)
    block = GLOBAL_BLOCK if images.shape[-2] * images.shape[-1] > GLOBAL_BLOCK ** 2 else None
    return predictor(images.to(device), block=block).to(images.device, images.dtype)


def apply_corrections(images: torch.Tensor, out: torch.Tensor, strength: float = 1.0,
                      protect_highlights: bool = DEFAULT_PROTECT_HIGHLIGHTS, denoise: float = DEFAULT_DENOISE,
                      white_balance: bool = False, rows: int = CORRECTION_ROWS, cols: int | None = None,
                      compiled: bool | None = None) -> torch.Tensor:
    """The corrections of :func:`enhance_tensor`, applied to a network output ``out`` for ``images``
    (both ``(N, 3, H, W)``), in place on ``out``, which is returned clamped to [0, 1].

    They run on tiles of ``rows`` x ``cols`` pixels (``cols`` by default :data:`CORRECTION_COLS`, or
    :data:`COMPILED_COLS` for the compiled pass), strip by strip of ``rows`` rows, so a large photo
    needs no full-size temporaries and each tile's fit in the CPU's caches (docs/pipeline.md). The
    denoiser reads ``corrections.DENOISE_HALO`` pixels beyond each tile, so a strip's result is written
    back only once no later strip reads its rows, which keeps the tiles exact; tiles start on even rows
    and columns, as its 2x2 grid does. ``compiled``: run each tile as one compiled pass
    (:mod:`nanolily.native`, the tiles of a strip in threads): None uses it where it is
    available (float32 on the CPU, a C compiler at hand), False never; the results agree to float
    rounding.
    """
    correct_rows(images, lambda first, last: out[..., first:last, :], out, strength, protect_highlights, denoise,
                 rows, cols, compiled)
    if not white_balance:
        return out  # each tile came clamped
    out.mul_(corrections.white_balance_gains(images, out)[..., None, None])
    return out.clamp_(0.0, 1.0)


def correct_rows(images: torch.Tensor | Callable[[int, int], torch.Tensor],
                 network_rows: Callable[[int, int], torch.Tensor], dest: torch.Tensor,
                 strength: float = 1.0, protect_highlights: bool = DEFAULT_PROTECT_HIGHLIGHTS,
                 denoise: float = DEFAULT_DENOISE, rows: int = CORRECTION_ROWS, cols: int | None = None,
                 compiled: bool | None = None, reach: int = 0) -> None:
    """:func:`apply_corrections` (all but white balance) with the network's output given strip by strip:
    ``network_rows(first, last)`` returns its rows ``[first, last)`` (asked for in order, each range
    overlapping the last by the denoiser's halo), and the result is written into ``dest`` (``(N, 3, H, W)``;
    it may be ``images`` itself, or what ``network_rows`` reads), each strip once no later strip reads its
    rows of ``images`` or, ``reach`` rows beyond the ranges it is asked for, of what ``network_rows`` reads.
    ``images``: the photo, or a function that gives its rows ``[first, last)`` as float32 on ``dest``'s device.
    """
    denoise *= min(strength, 1.0)  # the denoiser fades in with the strength: strength 0 is the input itself
    height, width = dest.shape[-2:]
    halo = corrections.DENOISE_HALO if denoise else 0
    photo_rows = images if callable(images) else lambda first, last: images[..., first:last, :]
    lib = (native.library() if compiled is not False and _native_fits(dest, *([] if callable(images) else [images]))
           else None)
    if compiled and lib is None:
        raise RuntimeError("compiled corrections are not available here (float32 CPU tensors and a C compiler "
                           "are needed; see nanolily.native)")
    cols = cols or (COMPILED_COLS if lib is not None else CORRECTION_COLS)
    rows, cols = rows + rows % 2, cols + cols % 2

    def correct(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if strength != 1.0:
            y = x + strength * (y - x)
        y = corrections.protect_highlights(x, y).clamp_(0.0, 1.0) if protect_highlights else y.clamp(0.0, 1.0)
        return corrections.denoise(y, denoise).clamp_(0.0, 1.0) if denoise else y

    radii = corrections.half_radius(corrections.LUMA_RADIUS), corrections.half_radius(corrections.CHROMA_RADIUS)
    scratch: queue.SimpleQueue[torch.Tensor] = queue.SimpleQueue()  # one buffer per thread, made here
    if lib is not None:
        floats = native.scratch_floats(lib, rows + 2 * halo, cols + 2 * halo, denoise, *radii)  # the largest tile
        for _ in range(torch.get_num_threads()):
            scratch.put(torch.empty(floats))

    def correct_compiled(x: torch.Tensor, y: torch.Tensor, result: torch.Tensor, crop: tuple[int, int]) -> None:
        buffer = scratch.get()
        try:
            for i in range(len(x)):
                native.correct_tile(lib, x[i], y[i], result[i], crop, strength, protect_highlights, corrections.KNEE,
                                    denoise, corrections.LUMA_SIGMA ** 2, *radii, buffer)
        finally:
            scratch.put(buffer)

    pending: list[tuple[int, int, torch.Tensor]] = []  # (top, bottom, result) not yet written back
    for top in range(0, height + rows, rows):
        first = max(top - halo, 0)
        while pending and (pending[0][1] <= first - reach or top >= height):
            done_top, done_bottom, result = pending.pop(0)
            dest[..., done_top:done_bottom, :] = result
        if top >= height:
            break
        bottom, last = min(top + rows, height), min(top + rows + halo, height)
        x, y = photo_rows(first, last), network_rows(first, last)
        result = torch.empty_like(dest[..., top:bottom, :])
        calls = []
        for left in range(0, width, cols):
            right = min(left + cols, width)
            start, end = max(left - halo, 0), min(right + halo, width)
            if lib is not None:  # the tile is written into result directly, in the kernels' threads
                calls.append((correct_compiled, x[..., start:end], y[..., start:end], result[..., left:right],
                              (top - first, left - start)))
                continue
            tile = correct(x[..., start:end], y[..., start:end])
            result[..., left:right] = tile[..., top - first:bottom - first, left - start:right - start]
        native.run_parallel(calls)
        pending.append((top, bottom, result))


def _native_fits(*tensors: torch.Tensor) -> bool:
    """Whether the compiled corrections take these tensors: float32, on the CPU, three channels."""
    return all(t.dtype == torch.float32 and t.device.type == "cpu" and t.shape[1] == 3 for t in tensors)


def enhance_photo(photo: Photo, model: NanoLILY, reuse_pixels: bool = False, **kwargs) -> Photo:
    """Enhance a decoded :class:`Photo`; alpha, bit depth and metadata are kept, grayscale stays gray.

    The pixels are read in place (an (H, W, 3) array is a channels-last tensor) and the output is made in
    the same layout, so a photo costs no full-size copies beyond its output. ``reuse_pixels``: the output
    may be written over ``photo``'s pixels (``enhance_tensor``'s ``reuse_input``), which saves that
    copy too; ``photo`` must then not be used again."""
    x = torch.from_numpy(photo.pixels).permute(2, 0, 1)[None]  # (1, C, H, W), channels-last strides
    if photo.is_grayscale:  # a copy of our own
        x, reuse_pixels = x.expand(-1, 3, -1, -1).contiguous(memory_format=torch.channels_last), True
    y = enhance_tensor(x, model, reuse_input=reuse_pixels, **kwargs)[0]  # (3, H, W)
    if photo.is_grayscale:
        y = y.mean(dim=0, keepdim=True)
    return with_pixels(photo, np.ascontiguousarray(y.permute(1, 2, 0).numpy()))  # no copy when made channels-last


def enhance(image, mode: str = DEFAULT_MODE, model: NanoLILY | None = None, stride: int = DEFAULT_STRIDE,
            batch_size: int = DEFAULT_BATCH_SIZE, device: str | torch.device | None = "auto",
            progress: bool = False, backend: str = "torch", strength: float = 1.0,
            protect_highlights: bool = DEFAULT_PROTECT_HIGHLIGHTS, denoise: float = DEFAULT_DENOISE,
            white_balance: bool = False, precision: str = "auto", match_scale: bool = True,
            guard_halos: bool = DEFAULT_GUARD_HALOS, lift_exposure: bool = DEFAULT_LIFT_EXPOSURE):
    """Brighten a dark photo.

    Args:
        image: a PIL image; a numpy array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) of uint8, uint16 or
            float in [0, 1]; a torch float tensor (3, H, W) or (N, 3, H, W) in [0, 1]; or a
            :class:`~nanolily.io.images.Photo` from :func:`~nanolily.io.images.read_image` (bit depth,
            alpha, EXIF and ICC profile kept for :func:`~nanolily.io.images.write_image`).
        mode: ``"global"`` (the whole image in one pass, the default), ``"bloom"`` (224x224 tiles, the
            original's engine) or ``"core"`` (the original single 224x224 pass, resized back).
        model: what :func:`nanolily.load_model` returns; default: the shipped weights.
        stride: bloom tile step in pixels (224 = no overlap, 112 = 50 % overlap).
        batch_size: tiles per network call.
        device: where the default model runs (ignored when ``model`` is given).
        progress: show a bar over tiles.
        strength: how far to go: 0 = the input, 1 = the model's output, 1.5 = half as much again.
        protect_highlights: limit the lift to each pixel's headroom, so lamps and lit windows do not
            clip to white (:func:`nanolily.engine.corrections.protect_highlights`).
        denoise: 0 (off) to 1: smooth sensor grain and colour static, keeping edges.
        white_balance: restore the input's colour balance after enhancing.
        precision: ``"auto"`` (fp32, but nanolily-v1's three convolutions that read normalised maps in
            bf16 on a CPU with AMX units), ``"fp32"``, or ``"bf16"`` / ``"fp16"`` (GPU) for all the network's
            convolutions (:func:`enhance_tensor`).
        match_scale: nanolily-v2 in global mode: read a photo of more than about 0.7 MP at a
            coarser scale and one under 0.24 MP at a finer one, as the same scene at the size the model
            learned from (:func:`enhance_tensor`).
        guard_halos: nanolily-v2 in global mode: lift the dark beside bright lights as the dark
            elsewhere, without a dark halo around lamps and lit windows (:func:`enhance_tensor`).
        lift_exposure: nanolily-v2 in global mode: read a photo far darker than the models' training
            captures as a longer exposure of it (:func:`enhance_tensor`).
        backend: ``"torch"``, or ``"onnxruntime"`` (the ``[onnx]`` extra; nanolily-v1 in bloom and core
            modes only): the model is exported to ONNX once per set of weights and cached
            (:func:`nanolily.engine.onnx.onnx_predictor`).

    Returns:
        The enhanced image, of the type, dtype and shape of ``image`` (alpha passed through untouched).

    Example:
        >>> from PIL import Image
        >>> out = enhance(Image.open("night.jpg"))  # doctest: +SKIP
        >>> write_image("bright.png", enhance(read_image("night.png")))  # a 16-bit PNG stays 16-bit  # doctest: +SKIP
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    model = model if model is not None else default_model(device)
    options = dict(mode=mode, stride=stride, batch_size=batch_size, progress=progress, strength=strength,
                   protect_highlights=protect_highlights, denoise=denoise, white_balance=white_balance,
                   precision=precision, match_scale=match_scale, guard_halos=guard_halos,
                   lift_exposure=lift_exposure)
    if backend == "onnxruntime":
        from nanolily.engine.onnx import onnx_predictor

        options["predictor"] = onnx_predictor(model)
    if isinstance(image, Image.Image):
        return photo_to_pil(enhance_photo(pil_to_photo(image), model, reuse_pixels=True, **options))
    if isinstance(image, np.ndarray):
        return _enhance_array(image, model, options)
    if isinstance(image, torch.Tensor):
        return _enhance_tensor_input(image, model, options)
    if isinstance(image, Photo):
        return enhance_photo(with_pixels(image, image.pixels), model, **options)  # float32 pixels
    hint = (": to enhance a file, pass read_image(path) (a Photo: 16 bits, EXIF and ICC kept; save it with "
            "write_image) or PIL.Image.open(path)") if isinstance(image, (str, os.PathLike)) else ""
    raise TypeError(f"image must be a PIL image, numpy array, torch tensor or Photo, got {type(image).__name__}{hint}")


def _enhance_array(a: np.ndarray, model: NanoLILY, options: dict) -> np.ndarray:
    if a.ndim == 2:
        return _enhance_array(a[..., None], model, options)[..., 0]
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise ValueError(f"numpy image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {a.shape}")
    if not (a.dtype in (np.uint8, np.uint16) or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"numpy image must be uint8, uint16 or float, got {a.dtype}")
    has_alpha = a.shape[-1] == 4
    photo = Photo(to_float(a[..., :3] if has_alpha else a))  # a float32 copy of a's colour: ours to reuse
    out = enhance_photo(photo, model, reuse_pixels=True, **options).pixels  # (H, W, C) float32
    if a.dtype == np.uint8 or a.dtype == np.uint16:
        top = np.iinfo(a.dtype).max
        out = np.round(out * top).astype(a.dtype)
    else:
        out = out.astype(a.dtype)
    return np.concatenate([out, a[..., 3:]], axis=-1) if has_alpha else out


def _enhance_tensor_input(t: torch.Tensor, model: NanoLILY, options: dict) -> torch.Tensor:
    if t.ndim == 3:
        return _enhance_tensor_input(t[None], model, options)[0]
    if t.ndim != 4 or t.shape[1] != 3:
        raise ValueError(f"tensor image must be (3, H, W) or (N, 3, H, W), got {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"tensor image must be floating point in [0, 1], got {t.dtype}")
    out = enhance_tensor(t.detach().float(), model, **options)
    return out.to(t.dtype)
