"""ONNX export of NanoLILY and an ONNX Runtime predictor for LILY Bloom.

The exported NanoLILY graph takes ``(batch, 3, 224, 224)`` tiles (dynamic batch) and returns the enhanced
tiles, unclamped, exactly like :class:`nanolily.model.NanoLILY`; nanolily-v2's takes whole images of any
size (``(batch, 3, height, width)``, all dynamic), its natural mode. One change of form, not of maths: the frequency
branch's ``rfft2 -> mask -> irfft2`` is written as products with fixed DFT matrices
(:class:`MatrixDFTFrequency`), because ONNX Runtime's ``DFT`` operator is slow on CPU (measured: ~65 ms
of a ~100 ms tile), while its matrix products are fast. Parity with PyTorch is checked on export.

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
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from .model import NanoLILY

ONNX_OPSET = 20
PARITY_TOLERANCE = 1e-4


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
    """:class:`nanolily.model.FrequencyBranch` at its own S x S size, as real matrix products.

    For each channel image ``x`` (S x S): the rfft along rows (``x @ Cw``, ``x @ Sw``, K = S//2+1
    columns), the full DFT along columns, the real mask, the inverse column DFT, and the inverse real
    DFT along rows (bins 1..S/2-1 counted twice, as their conjugates are left out).

    Example:
        >>> from nanolily.model import FrequencyBranch
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
    the spatial branch's decoder in its composed form (:meth:`nanolily.model.SpatialBranch.composed_weights`, fixed
    weights): the same maths, ~30 % less time per tile in ONNX Runtime."""

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


def export_onnx(model: NanoLILY, path: str | os.PathLike, check: bool = True) -> float | None:
    """Write ``model`` as ONNX, atomically: NanoLILY for ``(batch, 3, S, S)`` tiles (dynamic batch); a
    resolution-free model (nanolily-v2) for whole images, ``(batch, 3, height, width)``, all dynamic.

    With ``check``, runs the file in ONNX Runtime on random and structured inputs and raises if it
    differs from PyTorch by more than ``PARITY_TOLERANCE``. Returns that largest difference (None
    without ``check``).
    """
    path = Path(path)
    size = model.patch_size
    model = model.float().cpu().eval()
    module = ExportableNanoLILY(model).eval() if isinstance(model, NanoLILY) else model  # NanoLILYv2 as it is
    dims = {0: torch.export.Dim("batch", min=1, max=4096)}
    if model.resolution_free:
        dims.update({2: torch.export.Dim("height", min=16, max=65536), 3: torch.export.Dim("width", min=16, max=65536)})
        example = torch.rand(2, 3, 192, 256)
    else:
        example = torch.rand(2, 3, size, size)
    tmp = Path(tempfile.mkdtemp(dir=path.parent if path.parent.exists() else None)) / path.name
    try:
        with torch.no_grad(), _quiet_exporter():
            torch.onnx.export(module, (example,), tmp, dynamo=True, dynamic_shapes=(dims,),
                              input_names=["images" if model.resolution_free else "tiles"],
                              output_names=["enhanced"], opset_version=ONNX_OPSET, external_data=False,
                              verbose=False)
        worst = None
        if check:
            worst = parity(model, OnnxPredictor(tmp))
            if worst > PARITY_TOLERANCE:
                raise RuntimeError(f"{path}: ONNX output differs from PyTorch by {worst:.2e} "
                                   f"(> {PARITY_TOLERANCE:g})")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        tmp.parent.rmdir()
    return worst


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's notes that do not concern this model (torchvision ops, deprecations)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        logger.setLevel(level)


def parity(model: NanoLILY, predictor, inputs: list[torch.Tensor] | None = None) -> float:
    """Largest |difference| between ``predictor`` and ``model`` over ``inputs`` (default: dark random
    and smooth S x S tiles, batch of 3; for a resolution-free model also whole images of odd sizes)."""
    size = model.patch_size
    if inputs is None:
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
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ImportError("the onnxruntime backend needs the [onnx] extra: pip install 'nanolily[onnx]'") from None
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, tiles: torch.Tensor) -> torch.Tensor:
        array = tiles.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0])


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


def onnx_predictor(model: NanoLILY, path: str | os.PathLike | None = None,
                   threads: int | None = None) -> OnnxPredictor:
    """An :class:`OnnxPredictor` for ``model``: from ``path`` if given, else from the cache, exporting
    (and checking) once per set of weights."""
    if path is None:
        path = cache_dir() / f"nanolily-{weights_digest(model)}.onnx"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            export_onnx(model, path)
    return OnnxPredictor(path, threads)
