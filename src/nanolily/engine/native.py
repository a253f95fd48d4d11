"""The corrections as one compiled pass per tile, where a C compiler is at hand.

``corrections.c`` (beside this file) fuses highlight protection and the denoiser into one loop per tile
(docs/pipeline.md). :func:`library` compiles it once with the system's C compiler (``$CC``, else ``cc``,
``gcc`` or ``clang``) into the user cache (``$NANOLILY_CACHE``, else ``$XDG_CACHE_HOME/nanolily`` or
``~/.cache/nanolily``), keyed by the source, the flags and the CPU, and loads it with ctypes. Without a
compiler, or with ``NANOLILY_NATIVE=0``, it returns None and the PyTorch path runs: the same results to
float rounding (tests/engine/test_native.py).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from importlib.resources import files
from pathlib import Path

import torch

FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-shared", "-fPIC", "-std=gnu99")
_state: dict[str, ctypes.CDLL | None] = {}
_ARGS = ([ctypes.c_void_p] + [ctypes.c_long] * 3) * 2 + [ctypes.c_int] * 2 + [ctypes.c_float, ctypes.c_int,
         ctypes.c_float, ctypes.c_float, ctypes.c_float, ctypes.c_int, ctypes.c_int, ctypes.c_void_p] \
        + [ctypes.c_long] * 3 + [ctypes.c_int] * 4


def enabled() -> bool:
    """False when ``NANOLILY_NATIVE`` is ``0`` (or ``false``, ``no``, ``off``)."""
    return os.environ.get("NANOLILY_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def library() -> ctypes.CDLL | None:
    """The compiled corrections, built on first use; None where they cannot be (no compiler, a failed
    build, ``NANOLILY_NATIVE=0``). A failure is remembered for the process."""
    if not enabled():
        return None
    if "lib" not in _state:
        _state["lib"] = _build()
    return _state["lib"]


def reset() -> None:
    """Forget the loaded library (or the failure), so that the next :func:`library` looks again."""
    _state.clear()


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


def _build() -> ctypes.CDLL | None:
    compiler = _compiler()
    if compiler is None:
        return None
    source = files("nanolily.engine").joinpath("corrections.c").read_bytes()
    key = hashlib.sha256(source + " ".join((compiler,) + FLAGS).encode() + _cpu_key().encode()).hexdigest()[:16]
    target = _cache_dir() / f"corrections-{key}{'.dll' if os.name == 'nt' else '.so'}"
    try:
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                src, lib = Path(tmp) / "corrections.c", Path(tmp) / target.name
                src.write_bytes(source)
                subprocess.run([compiler, *FLAGS, str(src), "-o", str(lib), "-lm"], check=True,
                               capture_output=True, timeout=120)
                os.replace(lib, target)  # atomic: a concurrent process sees the whole file or none
        lib = ctypes.CDLL(str(target))
    except (OSError, subprocess.SubprocessError):
        return None
    lib.nl_correct_tile.argtypes = _ARGS
    lib.nl_correct_tile.restype = ctypes.c_int
    return lib


def correct_tile(lib: ctypes.CDLL, x: torch.Tensor, y: torch.Tensor, out: torch.Tensor, crop: tuple[int, int],
                 strength: float, protect_highlights: bool, knee: float, denoise: float, luma_eps: float,
                 luma_radius: int, chroma_radius: int) -> None:
    """Write the corrected tile for ``x``, ``y`` (3, H, W) cropped at ``crop`` (top, left) into ``out``
    (3, h, w), clamped to [0, 1]; float32 CPU tensors with any strides. ctypes releases the GIL, so tiles
    can run in threads."""
    for t in (x, y, out):
        if t.dtype != torch.float32 or t.device.type != "cpu" or t.ndim != 3:
            raise ValueError(f"native corrections take (3, H, W) float32 CPU tensors, got {t.dtype} {tuple(t.shape)}")
    (_, height, width), (_, oh, ow) = x.shape, out.shape

    def strides(t: torch.Tensor) -> list[int]:
        return [t.stride(1), t.stride(2), t.stride(0)]  # (row, column, channel), in elements

    status = lib.nl_correct_tile(x.data_ptr(), *strides(x), y.data_ptr(), *strides(y), height, width, strength,
                                 int(protect_highlights), knee, denoise, luma_eps, luma_radius, chroma_radius,
                                 out.data_ptr(), *strides(out), crop[0], crop[1], oh, ow)
    if status:
        raise MemoryError("native corrections: out of memory for a tile")
