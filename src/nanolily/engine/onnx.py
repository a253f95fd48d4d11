"""ONNX export of NanoLILY and an ONNX Runtime predictor for LILY Bloom.

The exported NanoLILY graph takes ``(batch, 3, 224, 224)`` tiles (dynamic batch) and returns the enhanced
tiles, unclamped, exactly like :class:`nanolily.models.v1.NanoLILY`; nanolily-v2's takes whole images of any
size (``(batch, 3, height, width)``, all dynamic), its natural mode; for the ``onnxruntime`` backend it is
also exported as five graphs that run a large photo in bounded memory (:func:`export_onnx_stages`). One
change of form, not of maths: the frequency branch's ``rfft2 -> mask -> irfft2`` is written as products
with fixed DFT matrices (:class:`MatrixDFTFrequency`), because ONNX Runtime's ``DFT`` operator is slow on
CPU, while its matrix products are fast. Parity with PyTorch is checked on export.

Example:
    >>> from nanolily import load_model
    >>> export_onnx(load_model(), "nanolily.onnx")  # doctest: +SKIP
    1.8e-06
    >>> predictor = OnnxPredictor("nanolily.onnx")  # doctest: +SKIP
    >>> predictor(torch.rand(4, 3, 224, 224)).shape  # doctest: +SKIP
    torch.Size([4, 3, 224, 224])
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn as nn

from nanolily.models.v1 import NanoLILY

ONNX_OPSET = 20
PARITY_TOLERANCE = 1e-4
# rows per strip of StagedOnnxPredictor's full-resolution graph: less peak memory than 256 at the same speed
# or faster, and faster than 64 (docs/performance.md)
STAGE_ROWS = 128
# export_onnx_stages' graphs, in the order they run (middle_in_context: the halo guard's second reading)
STAGES = ("encode", "middle", "middle_in_context", "decode", "apply")


def dft_matrices(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos`` and ``sin`` of ``2 pi j k / n`` as (n, n) float64 matrices: the DFT is ``C - i S``.

    Example:
        >>> c, s = dft_matrices(8)
        >>> x = torch.rand(8, dtype=torch.float64)
        >>> bool(torch.allclose(torch.complex(c @ x, -(s @ x)), torch.fft.fft(x)))
        True
    """
    k = torch.arange(n, dtype=torch.float64)
    angle = 2 * math.pi * torch.outer(k, k).remainder(n) / n  # remainder keeps the angles small and exact
    return torch.cos(angle), torch.sin(angle)


class MatrixDFTFrequency(nn.Module):
    """:class:`nanolily.models.v1.FrequencyBranch` at its own S x S size, as real matrix products.

    For each channel image ``x`` (S x S): the rfft along rows (``x @ Cw``, ``x @ Sw``, K = S//2+1
    columns), the full DFT along columns, the real mask, the inverse column DFT, and the inverse real
    DFT along rows (bins 1..S/2-1 counted twice, as their conjugates are left out).

    Example:
        >>> from nanolily.models.v1 import FrequencyBranch
        >>> branch = FrequencyBranch(3, 16, 1.0)
        >>> with torch.no_grad():
        ...     _ = branch.mask.uniform_(0.5, 2.0)
        >>> x = torch.rand(2, 3, 16, 16)
        >>> bool(torch.allclose(MatrixDFTFrequency(branch.mask)(x), branch(x), atol=1e-5))
        True
    """

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        size = mask.shape[-2]
        k = size // 2 + 1
        cos, sin = dft_matrices(size)
        twice = torch.full((k,), 2.0, dtype=torch.float64)
        twice[0] = 1.0
        if size % 2 == 0:
            twice[-1] = 1.0
        buffers = {
            "cos_rows": cos[:, :k], "sin_rows": sin[:, :k],  # (S, K): forward rfft along the last axis
            "cos_cols": cos, "sin_cols": sin,  # (S, S): forward / inverse DFT along the height axis
            "icos_rows": (twice[:, None] * cos[:k, :]) / size ** 2,  # (K, S): inverse, with both 1/S factors
            "isin_rows": (twice[:, None] * sin[:k, :]) / size ** 2,
        }
        for name, value in buffers.items():
            self.register_buffer(name, value.float(), persistent=False)
        self.register_buffer("mask", mask.detach().float().clone(), persistent=False)  # (1, C, S, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, S, S) -> (B, C, S, S)
        a, b = x @ self.cos_rows, x @ self.sin_rows  # rfft along rows: a - ib, (B, C, S, K)
        re = self.cos_cols @ a - self.sin_cols @ b  # full DFT along columns: (C - iS)(a - ib)
        im = -(self.cos_cols @ b + self.sin_cols @ a)
        re, im = re * self.mask, im * self.mask
        re, im = self.cos_cols @ re - self.sin_cols @ im, self.cos_cols @ im + self.sin_cols @ re  # inverse
        return re @ self.icos_rows - im @ self.isin_rows  # inverse real DFT along rows (1/S^2 folded in)


class ExportableNanoLILY(nn.Module):
    """A :class:`NanoLILY` for S x S tiles with the frequency branch as :class:`MatrixDFTFrequency` and
    the spatial branch's decoder in its composed form (fixed weights from
    :meth:`nanolily.models.v1.SpatialBranch.composed_weights`): the same maths, ~30 % less time per tile in
    ONNX Runtime."""

    def __init__(self, model: NanoLILY):
        super().__init__()
        self.model = model
        self.frequency = MatrixDFTFrequency(model.frequency.mask)
        with torch.no_grad():
            weight, bias, skip = model.spatial.composed_weights(pad_to=1)
        self.register_buffer("decoder_weight", weight.clone())
        self.register_buffer("decoder_bias", bias.clone())
        self.register_buffer("skip_weight", skip.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, S, S)
        composed = (self.decoder_weight, self.decoder_bias, self.skip_weight)
        spatial = self.model.spatial(x, composed=composed)
        return x + self.model._residual(spatial, self.frequency(x))


def require_onnx_extra() -> None:
    """Raise ``ImportError`` naming the ``[onnx]`` extra when a package the export needs is missing."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"exporting to ONNX needs {', '.join(missing)}: pip install 'nanolily[onnx]'")


def export_onnx(model: NanoLILY, path: str | os.PathLike, check: bool = True,
                size: tuple[int, int] | None = None) -> float | None:
    """Write ``model`` as ONNX, atomically: NanoLILY for ``(batch, 3, S, S)`` tiles (dynamic batch); a
    resolution-free model (nanolily-v2) for whole images, ``(batch, 3, height, width)``, all dynamic, read
    at the network's own scale. ``size`` (height, width; resolution-free models only) fixes the image
    size and reads it at the scale the engine reads a photo of that size
    (:func:`nanolily.models.v2.analysis_factor`), as ``nanolily enhance`` does without the halo guard and
    the corrections: for a camera or video stream of one size, and engines that want static shapes.

    With ``check``, runs the file in ONNX Runtime on random and structured inputs and raises if it
    differs from PyTorch by more than ``PARITY_TOLERANCE``. Returns that largest difference (None
    without ``check``).
    """
    require_onnx_extra()
    model = model.float().cpu().eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    reference, inputs = model, None
    if size is not None:
        if not model.resolution_free:
            raise ValueError("a fixed size is for the resolution-free models (nanolily-v2 and later): "
                             f"nanolily-v1's graph takes {model.patch_size}x{model.patch_size} tiles")
        from nanolily.models.v2 import analysis_factor

        height, width = size
        module = reference = AtScale(model, analysis_factor(height, width)).eval()
        example, name, dims = torch.rand(1, 3, height, width), "images", {0: batch}
        g = torch.Generator().manual_seed(0)
        inputs = [torch.rand(2, 3, height, width, generator=g) * 0.3]
    elif model.resolution_free:
        module, example, name = model, torch.rand(2, 3, 192, 256), "images"
        dims = {0: batch, 2: torch.export.Dim("height", min=16, max=65536), 3: _width()}
    else:
        size = model.patch_size
        module, example, name, dims = ExportableNanoLILY(model).eval(), torch.rand(2, 3, size, size), "tiles", {0: batch}
    with _staged(path) as (tmp,):
        _trace(module, (example,), (dims,), [name], ["enhanced"], tmp)
        return _checked(path, reference, OnnxPredictor(tmp), inputs) if check else None


class AtScale(nn.Module):
    """A resolution-free model whose low-resolution part reads the image at a fixed first downsampling
    ``factor`` (:func:`nanolily.models.v2.analysis_factor` of a photo size)."""

    def __init__(self, model: nn.Module, factor: int):
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> same
        return self.model(x, factor=self.factor)


def export_onnx_stages(model, paths: Sequence[str | os.PathLike], check: bool = True) -> float | None:
    """nanolily-v2 as five ONNX graphs, one file each in ``paths`` in the order of :data:`STAGES`, so that
    ONNX Runtime runs a large photo in bounded memory as the PyTorch model does
    (:class:`StagedOnnxPredictor`): the model's :meth:`~nanolily.models.v2.NanoLILYv2.encode_rows`,
    :meth:`~nanolily.models.v2.NanoLILYv2.middle` (twice: in the image's own global context, and in a given
    one for the halo guard) and :meth:`~nanolily.models.v2.NanoLILYv2.decode_rows`
    at 1/4 to 1/16 of the pixels (the first and last on strips of rows, :func:`nanolily.models.v2.maps_in_strips`),
    then :meth:`~nanolily.models.v2.NanoLILYv2.apply_maps` on strips of the image's rows. Written
    atomically and checked as :func:`export_onnx` is."""
    require_onnx_extra()
    model = model.float().cpu().eval()
    batch, rows = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("rows", min=2, max=65536)
    quarter = 4 * torch.export.Dim("w", min=1, max=16384)  # pool() pads to multiples of 4 * factor
    strip = {0: batch, 2: rows, 3: quarter}
    w1, w2, w3 = model.config.widths
    e1, quarters = torch.rand(2, w1, 48, 64), {0: batch, 2: 4 * torch.export.Dim("h", min=1, max=16384), 3: quarter}
    full_rows = {0: batch, 2: rows, 3: _width()}
    graphs = [  # (method, example inputs, their dynamic dimensions, input names, output names)
        ("encode_rows", (torch.rand(2, 3, 40, 64),), (strip,), ["rows"], ["e1"]),
        ("middle", (e1,), (quarters,), ["e1"], ["d2", "matrix", "context"]),
        ("middle", (e1, torch.rand(2, w3)), (quarters, {0: batch}), ["e1", "given_context"],
         ["d2", "matrix", "context"]),
        ("decode_rows", (torch.rand(2, w2, 40, 64), torch.rand(2, w1, 40, 64)), (strip, strip), ["up", "e1"],
         ["maps"]),
        ("apply_maps", (torch.rand(2, 3, 40, 256), torch.rand(2, model.head.out_channels, 40, 256), torch.rand(2, 3, 3)),
         (full_rows, full_rows, {0: batch}), ["rows", "maps", "matrix"], ["enhanced"]),
    ]
    with _staged(*paths) as tmps:
        for (method, examples, dims, inputs, outputs), tmp in zip(graphs, tmps, strict=True):
            _trace(_Method(model, method).eval(), examples, (dims,), inputs, outputs, tmp)  # (dims,): forward(*inputs)
        if not check:
            return None
        return _checked(paths[0], model, StagedOnnxPredictor(tmps, model.config.factor, rows=48))


class _Method(nn.Module):
    """One method of a model as a module's forward, to export it as a graph."""

    def __init__(self, model: nn.Module, method: str):
        super().__init__()
        self.model, self.method = model, method

    def forward(self, *inputs: torch.Tensor):
        return getattr(self.model, self.method)(*inputs)


def _width() -> torch.export.Dim:
    return torch.export.Dim("width", min=16, max=65536)


def _trace(module: nn.Module, examples: tuple, dims: tuple, input_names: list[str], output_names: list[str],
           path: Path) -> None:
    with torch.no_grad(), _quiet_exporter():
        torch.onnx.export(module, examples, path, dynamo=True, dynamic_shapes=dims, input_names=input_names,
                          output_names=output_names, opset_version=ONNX_OPSET, external_data=False, verbose=False)


def _checked(path: str | os.PathLike, model, predictor, inputs: list[torch.Tensor] | None = None) -> float:
    worst = parity(model, predictor, inputs)
    if worst > PARITY_TOLERANCE:
        raise RuntimeError(f"{path}: ONNX output differs from PyTorch by {worst:.2e} (> {PARITY_TOLERANCE:g})")
    return worst


@contextlib.contextmanager
def _staged(*paths: str | os.PathLike):
    """Temporary paths for ``paths`` in one new folder beside the first; each replaces its path once the
    block succeeds, so a failed export leaves nothing behind."""
    paths = [Path(p) for p in paths]
    folder = Path(tempfile.mkdtemp(dir=paths[0].parent if paths[0].parent.exists() else None))
    tmps = [folder / f"{i}-{p.name}" for i, p in enumerate(paths)]
    try:
        yield tmps
        for tmp, path in zip(tmps, paths):
            os.replace(tmp, path)
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
        folder.rmdir()


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's notes that do not concern this model (torchvision ops, deprecations)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message="# The axis name")  # inputs sharing a dynamic dimension
            yield
    finally:
        logger.setLevel(level)


def parity(model: NanoLILY, predictor, inputs: list[torch.Tensor] | None = None) -> float:
    """Largest |difference| between ``predictor`` and ``model`` over ``inputs`` (default: dark random
    and smooth S x S tiles, batch of 3; for a resolution-free model also whole images of odd sizes)."""
    if inputs is None:
        size = model.patch_size
        g = torch.Generator().manual_seed(0)
        ramp = torch.linspace(0, 0.4, size)
        inputs = [torch.stack([torch.rand(3, size, size, generator=g) * 0.3,
                               (ramp[None, :, None] * ramp[None, None, :]).expand(3, size, size),
                               torch.rand(3, size, size, generator=g)])]
        if model.resolution_free:
            inputs += [torch.rand(1, 3, 131, 257, generator=g) * 0.3, torch.rand(2, 3, 400, 600, generator=g) * 0.2]
    model = model.float().cpu().eval()
    with torch.no_grad():
        return max(float((predictor(x) - model(x)).abs().max()) for x in inputs)


class OnnxPredictor:
    """An ONNX Runtime session as a predictor: ``(B, 3, S, S)`` tiles (or, for nanolily-v2, whole
    ``(B, 3, H, W)`` images) in, tensor out (CPU).

    Args:
        path: an ONNX file from :func:`export_onnx`.
        threads: intra-op threads (default: ONNX Runtime's choice, the physical cores).
        arena: ONNX Runtime's memory arena, which keeps the largest run's buffers for the next; off,
            memory goes back after each run.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None, arena: bool = True):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ImportError("the onnxruntime backend needs the [onnx] extra: pip install 'nanolily[onnx]'") from None
        options = ort.SessionOptions()
        options.enable_cpu_mem_arena = arena
        # no spinning after a run: PyTorch's work between runs (bloom's blending, v2's pooling) needs the cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        shape = self.session.get_inputs()[0].shape  # (batch, 3, height, width): names where dynamic
        # (height, width) of a graph that takes images of one size only (export_onnx's size), else None
        self.fixed_size = tuple(shape[2:]) if len(shape) == 4 and all(isinstance(d, int) for d in shape[2:]) else None

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        """The graph's first output for its inputs (the tiles or images)."""
        return self.run(*inputs)[0]

    def run(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        """All outputs of the graph for its inputs, in order."""
        arrays = {name: t.detach().to("cpu", torch.float32).contiguous().numpy()
                  for name, t in zip(self.input_names, inputs)}
        return [torch.from_numpy(a) for a in self.session.run(None, arrays)]


class StagedOnnxPredictor:
    """nanolily-v2 in ONNX Runtime for whole images in bounded memory, run as the PyTorch model runs a
    large photo: the image pooled (in PyTorch, no weights), the low-resolution graphs with their 1/4-size
    stages on strips (:func:`nanolily.models.v2.maps_in_strips`), then the full-resolution graph on strips
    of ``rows`` rows (each with the 2 rows either side that its convolutions read, cropped after); the
    sessions run without ONNX Runtime's memory arena, so no buffer outlives its strip. Equal to one pass
    to float rounding (checked on export, tested). ``paths``: the files of :func:`export_onnx_stages`, in
    the order of :data:`STAGES`; ``factor`` is the model's first downsampling (``config.factor``)."""

    def __init__(self, paths: Sequence[str | os.PathLike], factor: int, rows: int = STAGE_ROWS,
                 threads: int | None = None):
        self.encode_rows, self.middle_graph, self.in_context_graph, self.decode_rows, self.apply_maps = (
            OnnxPredictor(path, threads, arena=False) for path in paths)
        self.factor, self.rows = factor, rows

    def middle(self, e1: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """:meth:`nanolily.models.v2.NanoLILYv2.middle`: (d2, matrix, context)."""
        if context is None:
            return tuple(self.middle_graph.run(e1))
        return tuple(self.in_context_graph.run(e1, context))

    def __call__(self, images: torch.Tensor, factor: int | None = None,
                 guard_halos: bool = False) -> torch.Tensor:  # (B, 3, H, W) -> same
        """``factor`` and ``guard_halos``: as :meth:`nanolily.models.v2.NanoLILYv2.forward`'s."""
        from nanolily.models.v2 import guarded_maps, in_strips

        images = images.detach().to("cpu", torch.float32)
        factor = factor or self.factor
        maps, matrix, lights = guarded_maps(self, images, factor, max(self.rows // factor, 16), guard_halos)
        return in_strips(self.apply_maps, images, maps, matrix, factor, self.rows, lights=lights)


def cache_dir() -> Path:
    """Where exported ONNX files are kept: ``$NANOLILY_CACHE`` or ``~/.cache/nanolily``."""
    return Path(os.environ.get("NANOLILY_CACHE") or Path.home() / ".cache" / "nanolily")


def weights_digest(model: NanoLILY) -> str:
    """A short sha256 of the model's weights and config: the name of its cached ONNX export."""
    digest = hashlib.sha256(json.dumps(model.config_dict(), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def onnx_predictor(model: NanoLILY, path: str | os.PathLike | None = None, threads: int | None = None,
                   note: Callable[[str], None] | None = None) -> OnnxPredictor | StagedOnnxPredictor:
    """An :class:`OnnxPredictor` for ``model``: from ``path`` if given, else from the cache, exporting
    (and checking) once per set of weights; for a resolution-free model (nanolily-v2) from the cache, a
    :class:`StagedOnnxPredictor` (:func:`export_onnx_stages`). ``note`` is told, in a line each, when an
    export starts and how long it took (it takes tens of seconds on a CPU)."""
    note = note or (lambda message: None)

    def exported(export, *args) -> None:
        note(f"exporting the model to ONNX once, checked against PyTorch (cached in {cache_dir()}) ...")
        start = time.perf_counter()
        export(model, *args)
        note(f"exported in {time.perf_counter() - start:.1f} s")

    if path is None and model.resolution_free:  # graphs by stage, so a large photo runs in bounded memory
        paths = [cache_dir() / f"nanolily-{weights_digest(model)}-{stage}.onnx" for stage in STAGES]
        if not all(p.exists() for p in paths):
            cache_dir().mkdir(parents=True, exist_ok=True)
            exported(export_onnx_stages, paths)
        return StagedOnnxPredictor(paths, model.config.factor, threads=threads)
    if path is None:
        path = cache_dir() / f"nanolily-{weights_digest(model)}.onnx"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            exported(export_onnx, path)
    return OnnxPredictor(path, threads)
