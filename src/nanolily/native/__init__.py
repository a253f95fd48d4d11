"""Compiled kernels, built where a C compiler is at hand; PyTorch runs otherwise.

``corrections.c`` runs the corrections (highlight protection and the denoiser) as one pass per tile
(:func:`correct_tile`, used by :func:`nanolily.engine.pipeline.apply_corrections`), where eager PyTorch
makes about 25 passes over each tile; ``png.c`` undoes PNG's row filters for the 16-bit PNG reader
(:func:`png_unfilter`, used by :func:`nanolily.io.png.decode_png16`). ``tiles.c`` runs NanoLILY's tile
forward (:func:`first_stage`, :func:`norm_lrelu_`, :func:`conv3x3`, :func:`border_terms`,
:func:`tile_output`, used by :meth:`nanolily.models.v1.NanoLILY.forward` on S x S tiles, LILY Bloom's
calls) with OpenMP threads from PyTorch's own OpenMP runtime (:func:`tile_library`).

:func:`library` compiles the package's C files once with the system's C compiler (``$CC``, else ``cc``,
``gcc`` or ``clang``) into the user cache (``$NANOLILY_CACHE``, else ``$XDG_CACHE_HOME/nanolily`` or
``~/.cache/nanolily``), keyed by the sources, the flags and the CPU, and loads the result with ctypes,
which releases the GIL during a call, so tiles run in threads. Without a compiler, or with
``NANOLILY_NATIVE=0``, it returns None and the PyTorch paths run: the same results to float rounding
(tests/native/test_native.py). Why and how fast: docs/pipeline.md.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from importlib.resources import files
from pathlib import Path

import torch

FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-shared", "-fPIC", "-std=gnu99")
SOURCES = ("corrections.c", "png.c")
TILE_SOURCES = ("tiles.c",)
HEADERS = ("exp_neg.h",)  # included by the sources: written beside them and part of the cache key
_state: dict[str, object] = {}
_P, _L, _I, _F = ctypes.c_void_p, ctypes.c_long, ctypes.c_int, ctypes.c_float
_SIGNATURES = {
    "nl_correct_tile": ([_P, _L, _L, _L] * 2 + [_I, _I, _F, _I, _F, _F, _F, _I, _I, _P, _L, _L, _L, _I, _I, _I, _I,
                         _P, _L], ctypes.c_int),
    "nl_correct_tile_scratch": ([_I, _I, _F, _I, _I], _L),
    "nl_png_unfilter": ([_P, _L, _L, _I, _P], _L),
}
_TILE_SIGNATURES = {
    "nl_first_stage": ([_P, _L, _L, _L, _L, _I, _I, _I, _P, _P, _F, _F, _P, _I], None),
    "nl_norm_lrelu": ([_P, _I, _L, _I, _F, _F, _I], None),
    "nl_border_terms": ([_P, _I, _I, _I, _I, _P, _P, _P, _P, _L, _I], None),
    "nl_tile_output": ([_P, _L, _L, _L, _L, _P, _I, _P, _P, _P, _L, _P, _P, _I, _I, _I, _P, _I], None),
    "nl_conv3x3": ([_P, _I, _I, _I, _I, _I, _P, _P, _I, _P, _P, _I], None),
    "nl_conv3x3_scratch": ([_I, _I, _I, _I], _L),
    "nl_winograd_weights": ([_P, _I, _I, _I, _P, _I], None),
}
_OPENMP_RUNTIMES = ("libgomp", "libiomp", "libomp")
TILE_KERNELS = "native tile kernels"


def enabled() -> bool:
    """False when ``NANOLILY_NATIVE`` is ``0`` (or ``false``, ``no``, ``off``)."""
    return os.environ.get("NANOLILY_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def library() -> ctypes.CDLL | None:
    """The compiled kernels, built on first use; None where they cannot be (no compiler, a failed build,
    ``NANOLILY_NATIVE=0``). A failure is remembered for the process."""
    if not enabled():
        return None
    if "lib" not in _state:
        _state["lib"] = _build(SOURCES, FLAGS, _SIGNATURES)
    return _state["lib"]


def tile_library() -> ctypes.CDLL | None:
    """The tile kernels (``tiles.c``), built on first use; None where :func:`library` is, and also where
    PyTorch's threads are not OpenMP's, or where the kernels brought an OpenMP runtime of their own instead
    of binding to PyTorch's (two thread pools would fight over the cores; checked on Linux, None
    elsewhere). Other libraries' runtimes (rawpy bundles one) do not matter: the kernels never use them."""
    if not enabled():
        return None
    if "tiles" not in _state:
        lib, before = None, _openmp_runtimes()
        if "parallel backend: OpenMP" in torch.__config__.parallel_info() and before:
            lib = _build(TILE_SOURCES, FLAGS + ("-fopenmp",), _TILE_SIGNATURES)
            lib = lib if lib is not None and _openmp_runtimes() == before else None
        _state["tiles"] = lib
    return _state["tiles"]


def _openmp_runtimes() -> set[str]:
    """The OpenMP runtime files mapped into this process (Linux; elsewhere an empty set)."""
    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return set()
    paths = {line.split()[-1] for line in maps if len(line.split()) >= 6}
    return {os.path.realpath(p) for p in paths if os.path.basename(p).startswith(_OPENMP_RUNTIMES)}


def reset() -> None:
    """Forget the loaded library (or the failure), so that the next :func:`library` looks again."""
    _state.clear()


def _pool() -> ThreadPoolExecutor:
    """Threads for the kernels' calls, one per PyTorch intra-op thread (idle while a kernel runs)."""
    workers = torch.get_num_threads()
    if _state.get("workers") != workers:
        if "pool" in _state:
            _state["pool"].shutdown(wait=False)
        _state["pool"] = ThreadPoolExecutor(workers, thread_name_prefix="nanolily-native")
        _state["workers"] = workers
    return _state["pool"]


def _forget_pool() -> None:
    _state.pop("pool", None)
    _state.pop("workers", None)


if hasattr(os, "register_at_fork"):  # a forked child has none of the parent's threads: start a new pool there
    os.register_at_fork(after_in_child=_forget_pool)


def run_parallel(calls) -> None:
    """Run ``(function, *args)`` calls on the kernels' threads and wait for all of them."""
    for job in [_pool().submit(*call) for call in calls]:
        job.result()


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def _cache_dir() -> Path:
    root = os.environ.get("NANOLILY_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "nanolily")
    return Path(root)


def _cpu_key() -> str:
    """What -march=native depends on: the CPU's model and feature flags (Linux), else the platform."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [line for line in text.splitlines() if line.startswith(("model name", "flags"))][:2]
        return "\n".join(lines)
    except OSError:
        return platform.processor() or platform.machine()


def _build(names: tuple[str, ...], flags: tuple[str, ...], signatures: dict) -> ctypes.CDLL | None:
    """The library built from ``names`` with ``flags``, or, where the compiler refuses ``-march=native``
    (some Clang versions on ARM), without it: portable vector code, still several times faster than eager
    PyTorch. None where neither builds."""
    compiler = _compiler()
    if compiler is None:
        return None
    sources = {name: files(__name__).joinpath(name).read_bytes() for name in names + HEADERS}
    for attempt in (flags, tuple(f for f in flags if f != "-march=native")):
        key = hashlib.sha256(b"".join(sources.values()) + " ".join((compiler,) + attempt).encode()
                             + _cpu_key().encode()).hexdigest()[:16]
        target = _cache_dir() / f"kernels-{key}{'.dll' if os.name == 'nt' else '.so'}"
        try:
            if not target.exists():
                _compile(compiler, attempt, sources, target)
            lib = ctypes.CDLL(str(target))
        except (OSError, subprocess.SubprocessError):
            continue
        for name, (args, result) in signatures.items():
            getattr(lib, name).argtypes, getattr(lib, name).restype = args, result
        return lib
    return None


def _compile(compiler: str, flags: tuple[str, ...], sources: dict[str, bytes], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        paths = []
        for name, text in sources.items():
            paths.append(Path(tmp) / name)
            paths[-1].write_bytes(text)
        built = Path(tmp) / target.name
        compiled = [str(p) for p in paths if p.suffix == ".c"]
        subprocess.run([compiler, *flags, *compiled, "-o", str(built), "-lm"], check=True,
                       capture_output=True, timeout=120)
        os.replace(built, target)  # atomic: a concurrent process sees the whole file or none


def png_unfilter(lib: ctypes.CDLL, data: bytes, rows: int, row_bytes: int, bpp: int) -> bytearray:
    """PNG's filters undone: ``data`` holds ``rows`` rows of 1 + ``row_bytes`` bytes (filter type first),
    ``bpp`` bytes per pixel; returns the ``rows * row_bytes`` bytes they encode. ValueError for a filter
    type PNG does not have."""
    if len(data) < rows * (row_bytes + 1):
        raise ValueError(f"{len(data)} bytes of image data, {rows * (row_bytes + 1)} expected")
    out = bytearray(rows * row_bytes)
    bad = lib.nl_png_unfilter(data, rows, row_bytes, bpp, (ctypes.c_char * len(out)).from_buffer(out))
    if bad:
        raise ValueError(f"row {bad - 1} has an unknown filter type")
    return out


def _strides(t: torch.Tensor) -> list[int]:
    """A (3, H, W) tensor's strides as (row, column, channel), in elements."""
    return [t.stride(1), t.stride(2), t.stride(0)]


def scratch_floats(lib: ctypes.CDLL, height: int, width: int, denoise: float, luma_radius: int,
                   chroma_radius: int) -> int:
    """How many floats of scratch :func:`correct_tile` needs for a ``height`` x ``width`` tile."""
    return lib.nl_correct_tile_scratch(height, width, denoise, luma_radius, chroma_radius)


def _check_float32_cpu(kernels: str, *tensors: torch.Tensor) -> None:
    for t in tensors:
        if t.dtype != torch.float32 or t.device.type != "cpu":
            raise ValueError(f"{kernels} take float32 CPU tensors, got {t.dtype} on {t.device}")


def correct_tile(lib: ctypes.CDLL, x: torch.Tensor, y: torch.Tensor, out: torch.Tensor, crop: tuple[int, int],
                 strength: float, protect_highlights: bool, knee: float, denoise: float, luma_eps: float,
                 luma_radius: int, chroma_radius: int, scratch: torch.Tensor) -> None:
    """Write the corrected tile for ``x``, ``y`` (3, H, W) cropped at ``crop`` (top, left) into ``out``
    (3, h, w), clamped to [0, 1]; float32 CPU tensors with any strides. The radii are the denoiser's at
    half resolution; ``scratch``: a float32 buffer of at least :func:`scratch_floats`, which the caller
    allocates once (allocated per tile, from worker threads, the C library's allocator held tens of MB
    more at a large photo's peak)."""
    _check_float32_cpu("native corrections", x, y, out, scratch)
    if x.ndim != 3 or y.shape != x.shape or out.ndim != 3:
        raise ValueError(f"native corrections take (3, H, W) tiles, got {tuple(x.shape)} and {tuple(out.shape)}")
    (_, height, width), (_, oh, ow) = x.shape, out.shape
    if scratch.numel() < scratch_floats(lib, height, width, denoise, luma_radius, chroma_radius):
        raise ValueError(f"scratch of {scratch.numel()} floats is too small for a {height}x{width} tile")
    lib.nl_correct_tile(x.data_ptr(), *_strides(x), y.data_ptr(), *_strides(y), height, width, strength,
                        int(protect_highlights), knee, denoise, luma_eps, luma_radius, chroma_radius,
                        out.data_ptr(), *_strides(out), crop[0], crop[1], oh, ow, scratch.data_ptr(), scratch.numel())


def first_stage(lib: ctypes.CDLL, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, slope: float,
                eps: float = 1e-5) -> torch.Tensor:
    """``leaky_relu(instance_norm(conv2d(x, weight, bias, padding=1)), slope)``: (B, 3, H, W), any strides ->
    (B, 32, H, W) channels-last; ``weight``: (32, 3, 3, 3)."""
    _check_float32_cpu(TILE_KERNELS, x, weight, bias)
    b, c, h, w = x.shape
    if c != 3 or tuple(weight.shape) != (32, 3, 3, 3):
        raise ValueError(f"first_stage takes 3 -> 32 channels, got {tuple(x.shape)} and {tuple(weight.shape)}")
    out = torch.empty(b, 32, h, w, memory_format=torch.channels_last)
    taps = weight.detach().permute(2, 3, 1, 0).contiguous()  # [ky][kx][ci][co]
    lib.nl_first_stage(x.data_ptr(), *x.stride(), b, h, w, taps.data_ptr(), bias.detach().contiguous().data_ptr(),
                       slope, eps, out.data_ptr(), torch.get_num_threads())
    return out


def norm_lrelu_(lib: ctypes.CDLL, t: torch.Tensor, slope: float, eps: float = 1e-5) -> torch.Tensor:
    """``leaky_relu(instance_norm(t), slope)`` in place on a channels-last (B, C, H, W) map (a copy otherwise)."""
    _check_float32_cpu(TILE_KERNELS, t)
    t = t.contiguous(memory_format=torch.channels_last)
    b, c, h, w = t.shape
    lib.nl_norm_lrelu(t.data_ptr(), b, h * w, c, slope, eps, torch.get_num_threads())
    return t


def winograd_weights(lib: ctypes.CDLL, weight: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """:func:`conv3x3`'s transformed form of ``weight`` (Co, Ci, 3, 3) for ``stride``: (36, Ci, Co'), ``Co'``
    being ``Co`` rounded up to a multiple of 16 (the extra channels zero). Computing it once saves each
    call the transform."""
    _check_float32_cpu(TILE_KERNELS, weight)
    co, ci = weight.shape[:2]
    if ci % 8 or tuple(weight.shape) != (co, ci, 3, 3) or stride not in (1, 2):
        raise ValueError(f"conv3x3 takes a (Co, Ci, 3, 3) weight with Ci a multiple of 8 and stride 1 or 2, "
                         f"got {tuple(weight.shape)} and stride {stride}")
    pad = -co % 16
    weight = torch.nn.functional.pad(weight.detach(), (0, 0, 0, 0, 0, 0, 0, pad)).contiguous()
    u = torch.empty(36, ci, co + pad)
    lib.nl_winograd_weights(weight.data_ptr(), ci, co + pad, stride, u.data_ptr(), torch.get_num_threads())
    return u


def conv3x3(lib: ctypes.CDLL, d: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int = 1,
            transformed: torch.Tensor | None = None) -> torch.Tensor:
    """``conv2d(d, weight, bias, stride, padding=1)`` in Winograd's form (``tiles.c``): (B, Ci, H, W) ->
    (B, Co', ceil(H / stride), ceil(W / stride)) channels-last, ``Co'`` being ``Co`` rounded up to a multiple
    of 16 (the extra channels are zero); ``weight``: (Co, Ci, 3, 3), ``Ci`` a multiple of 8; stride 1 or 2;
    ``transformed``: :func:`winograd_weights` of ``weight`` and ``stride``, where the caller keeps it.
    Equal to the direct form within a few 1e-6 of the outputs' scale."""
    u = transformed if transformed is not None else winograd_weights(lib, weight, stride)
    _check_float32_cpu(TILE_KERNELS, d, u, bias)
    b, ci, h, w = d.shape
    co = u.shape[2]
    if tuple(u.shape) != (36, ci, co) or tuple(bias.shape) != tuple(weight.shape[:1]) or weight.shape[1] != ci:
        raise ValueError(f"conv3x3 got an input {tuple(d.shape)}, a weight {tuple(weight.shape)}, a bias "
                         f"{tuple(bias.shape)} and transformed weights {tuple(u.shape)} that do not match")
    bias = torch.nn.functional.pad(bias.detach(), (0, co - bias.shape[0])).contiguous()
    d = d.contiguous(memory_format=torch.channels_last)
    threads = torch.get_num_threads()
    scratch = torch.empty(lib.nl_conv3x3_scratch(w, ci, stride, threads))
    out = torch.empty(b, co, -(-h // stride), -(-w // stride), memory_format=torch.channels_last)
    lib.nl_conv3x3(d.data_ptr(), b, h, w, ci, stride, u.data_ptr(), bias.data_ptr(), co, out.data_ptr(),
                   scratch.data_ptr(), threads)
    return out


def border_terms(lib: ctypes.CDLL, d: torch.Tensor, up_weight: torch.Tensor, up_bias: torch.Tensor,
                 conv_weight: torch.Tensor) -> torch.Tensor:
    """:meth:`nanolily.models.v1.SpatialBranch.border_terms`: (B, Cd, h, w) -> (B, 12, 2 max(h, w)), from the
    transposed convolution's ``up_weight`` (Cd, 32, 4, 4) and ``up_bias``, and ``conv_weight`` (3, 32, 3, 3)."""
    _check_float32_cpu(TILE_KERNELS, d, up_weight, up_bias, conv_weight)
    b, cd, h, w = d.shape
    if tuple(up_weight.shape) != (cd, 32, 4, 4) or tuple(conv_weight.shape) != (3, 32, 3, 3):
        raise ValueError(f"border_terms takes {cd} -> 32 -> 3 channels, got {tuple(up_weight.shape)} and "
                         f"{tuple(conv_weight.shape)}")
    d = d.contiguous(memory_format=torch.channels_last)
    up_weight, up_bias, conv_weight = (t.detach().contiguous() for t in (up_weight, up_bias, conv_weight))
    out = torch.empty(b, 12, 2 * max(h, w))
    lib.nl_border_terms(d.data_ptr(), b, h, w, cd, up_weight.data_ptr(), up_bias.data_ptr(), conv_weight.data_ptr(),
                        out.data_ptr(), out.shape[-1], torch.get_num_threads())
    return out


def tile_output(lib: ctypes.CDLL, x: torch.Tensor, phases: torch.Tensor, s1: torch.Tensor, skip: torch.Tensor,
                border: torch.Tensor, frequency: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """``x + tanh(pixel_shuffle(phases) + conv2d(s1, skip, padding=1) - border + mix @ frequency)``, (B, 3, H, W).

    ``x``: (B, 3, H, W), any strides; ``phases``: (B, >= 12, H/2, W/2), channel ``4c + 2p + q`` holding pixel
    ``(2i + p, 2j + q)``; ``s1``: (B, 32, H, W); ``skip``: (3, 32, 3, 3); ``border``: (B, 12, >= max(H, W)),
    subtracted from the top row, bottom row, left column and right column (3 channels each);
    ``frequency``: (B, 3, H, W); ``mix``: (3, 3)."""
    _check_float32_cpu(TILE_KERNELS, x, phases, s1, skip, border, frequency, mix)
    b, c, h, w = x.shape
    if c != 3 or h % 2 or w % 2 or tuple(skip.shape) != (3, 32, 3, 3) or phases.shape[1] < 12:
        raise ValueError(f"tile_output takes 3 channels at even sizes, got {tuple(x.shape)}")
    if border.shape[1] != 12 or border.shape[-1] < max(h, w):
        raise ValueError(f"tile_output's border must be (B, 12, >= {max(h, w)}), got {tuple(border.shape)}")
    phases, s1 = (t.contiguous(memory_format=torch.channels_last) for t in (phases, s1))
    frequency, mix = frequency.contiguous(), mix.detach().contiguous()
    taps = skip.detach().permute(2, 3, 0, 1).contiguous()  # [ky][kx][co][ci]
    border = border.contiguous()
    out = torch.empty(b, 3, h, w)
    lib.nl_tile_output(x.data_ptr(), *x.stride(), phases.data_ptr(), phases.shape[1], s1.data_ptr(), taps.data_ptr(),
                       border.data_ptr(), border.shape[-1],
                       frequency.data_ptr(), mix.data_ptr(), b, h, w, out.data_ptr(), torch.get_num_threads())
    return out
