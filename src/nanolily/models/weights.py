"""Model weights: the shipped models, safetensors files with metadata, and loading.

A weights file is a safetensors file whose metadata holds (all strings, JSON where structured):
``format`` ("nanolily"), ``architecture`` ("NanoLILY"), ``config`` (the :class:`NanoLILYConfig`),
``version`` (e.g. "nanolily-v1"), ``training_data``, ``metrics`` and ``tensors_sha256`` (a digest of the
tensors, so a copy can be checked against its metadata). Shipped files are also checked against the
sha256 of the whole file recorded in :data:`SHIPPED`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from nanolily.models.v1 import NanoLILY, NanoLILYConfig
from nanolily.models.v2 import NanoLILYv2, NanoLILYv2Config

ARCHITECTURES = {"NanoLILY": (NanoLILY, NanoLILYConfig), "NanoLILYv2": (NanoLILYv2, NanoLILYv2Config)}

ASSETS = Path(__file__).parent.parent / "assets"
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


@dataclass(frozen=True)
class ShippedModel:
    file: str
    sha256: str | None  # None: not trained yet, so there is nothing to load
    description: str
    recipe: str  # the training config that made it
    recipe_overrides: str = ""  # and the `nanolily train` options it ran with, e.g. "--set seed=1"
    starts_from: str = ""  # the shipped model its run continued: its training cost adds to this one's
    seen_in_training: str = ""  # test images its training data holds: its figures on them are not test figures


SHIPPED: dict[str, ShippedModel] = {
    "nanolily-v1": ShippedModel(
        file="nanolily-v1.safetensors",
        sha256="c99dee04ff572a2292c3aec0d31eacc070de103b02dfeb069094b1cb4695f356",
        description="original NanoLILY architecture (129,016 parameters), trained on leak-free LoL-v1",
        recipe="configs/cpu.yaml",
    ),
    "nanolily-v2": ShippedModel(
        file="nanolily-v2.safetensors",
        sha256="3bc7a4b4cf9e0e3b1f334c455957d4d3b9d47f5d0dbe565cc2d4d492863fcc85",
        description="resolution-free NanoLILYv2 (122,482 parameters), trained on leak-free LoL-v1",
        recipe="configs/v2-long-cpu.yaml",
    ),
    "nanolily-v3": ShippedModel(
        file="nanolily-v3.safetensors",
        sha256="89ebe4ea7354bdbacf6615d9b2af6284ad97fbfa12e0ef994996a626068f73fc",
        description="resolution-free NanoLILYv2 (122,482 parameters), trained on the full LoL-v1 pool "
                    "for the LoL-v1 benchmark (eval15); well-lit inputs mostly come back as they were",
        recipe="configs/v3-full-cpu.yaml",
        recipe_overrides="--force",
        seen_in_training="86 of the 100 LoL-v2-real test low images (LoL-v1 ids 690..789)",
    ),
    "nanolily-v4": ShippedModel(
        file="nanolily-v4.safetensors",
        sha256="2c0e3533d8270b9d7b6e4c9c37b73467946aa203db468465289b17e56936aa86",
        description="resolution-free NanoLILYv2 (122,482 parameters): nanolily-v3 fine-tuned on the full "
                    "LoL-v1 pool to leave well-exposed, dim and grey photos as they were",
        recipe="configs/v4-full-cpu.yaml",
        recipe_overrides="--force",
        starts_from="nanolily-v3",
        seen_in_training="86 of the 100 LoL-v2-real test low images (LoL-v1 ids 690..789)",
    ),
    "nanolily-v5": ShippedModel(
        file="nanolily-v5.safetensors",
        sha256="be5da1a679a44f497ba6d7ce8fa529948553a947c9e91f9b1e3dfa6492be85b9",
        description="resolution-free NanoLILYv2 (122,482 parameters): nanolily-v4 fine-tuned on the full "
                    "LoL-v1 pool to light a grayscale photo as its colour version",
        recipe="configs/v5-full-cpu.yaml",
        recipe_overrides="--force",
        starts_from="nanolily-v4",
        seen_in_training="86 of the 100 LoL-v2-real test low images (LoL-v1 ids 690..789)",
    ),
}
DEFAULT_MODEL = "nanolily-v5"  # passed the rule fixed before its run (docs/training.md, "nanolily-v5")


class WeightsError(RuntimeError):
    """Weights that cannot be found, verified or loaded; the message says what to do."""


def available_models() -> list[str]:
    """Names accepted by :func:`load_model`, e.g. ``["nanolily-v1", "nanolily-v2"]``."""
    return list(SHIPPED)


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tensors_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """Digest of the tensors (names, dtypes, shapes, bytes), independent of file layout and metadata."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def save_weights(model: NanoLILY, path: str | os.PathLike, version: str, training_data: str = "",
                 metrics: dict | None = None, extra: dict | None = None) -> Path:
    """Write ``model`` to a safetensors file with metadata; returns the path."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": "nanolily",
        "architecture": type(model).__name__,
        "config": json.dumps(model.config_dict()),
        "version": version,
        "training_data": training_data,
        "metrics": json.dumps(metrics or {}),
        "parameters": str(model.num_parameters()),
        "tensors_sha256": tensors_sha256(state),
    }
    metadata.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in (extra or {}).items()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(state, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def resolve_weights(weights: str | os.PathLike | None) -> tuple[Path, str | None]:
    """Map a model name or path to (file, expected file sha256 or None)."""
    name = DEFAULT_MODEL if weights is None else str(weights)
    if name in SHIPPED:
        shipped = SHIPPED[name]
        path = ASSETS / shipped.file
        if shipped.sha256 is None or not path.exists():
            raise WeightsError(
                f"no trained weights ship for {name!r} in this version of nanolily. Train them with "
                f"`nanolily train --config {shipped.recipe} {shipped.recipe_overrides} --data ../shared/datasets` "
                "(see docs/training.md), "
                "then pass the result with --weights FILE (API: load_model('FILE.safetensors'))")
        return path, shipped.sha256
    path = Path(name).expanduser()
    if not path.exists():
        raise WeightsError(f"{name}: no such weights file, and not a model name; "
                           f"available models = {available_models()}")
    return path, None


def load_model(weights: str | os.PathLike | None = None, device: str | torch.device = "auto",
               allow_pickle: bool = False) -> NanoLILY:
    """Load NanoLILY weights and return the model in eval mode.

    Args:
        weights: ``None`` (the default shipped model), a name from :func:`available_models`, or a path to
            a ``.safetensors`` file. A pickle checkpoint (``.ckpt``/``.pt``/``.pth``) is refused unless
            ``allow_pickle=True``; it is then read with ``torch.load(weights_only=True)``.
        device: ``"auto"`` (CUDA, then MPS, then CPU), or any torch device.

    Example (with your own file):
        >>> model = load_model("runs/cpu/best.safetensors")  # doctest: +SKIP
    """
    path, expected_sha = resolve_weights(weights)
    if expected_sha is not None:
        actual = file_sha256(path)
        if actual != expected_sha:
            raise WeightsError(f"{path}: sha256 {actual} does not match the shipped {expected_sha}; "
                               "the file is damaged or was replaced (reinstall nanolily)")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise WeightsError(f"{path}: refusing to load a pickle checkpoint (it can run code); convert it "
                               "to safetensors or pass --allow-pickle (API: allow_pickle=True) if you trust it")
        (architecture, config), state = _read_pickle_checkpoint(path)
    else:
        (architecture, config), state = _read_safetensors(path)
    try:
        model = build_model(architecture, config)
    except ValueError as e:
        raise WeightsError(f"{path}: {e}") from None
    missing, unexpected = set(model.state_dict()) - set(state), set(state) - set(model.state_dict())
    if missing or unexpected:
        raise WeightsError(f"{path}: does not match the {architecture} architecture; "
                           f"missing keys {sorted(missing)}, unexpected keys {sorted(unexpected)}")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise WeightsError(f"{path}: {str(e).splitlines()[-1].strip()}") from None
    model.weights_path = str(path)
    return model.to(resolve_device(device)).eval()


def build_model(architecture: str = "NanoLILY", config: dict | None = None):
    """A new model of a registered architecture (:data:`ARCHITECTURES`); ``config`` overrides defaults.

    Example:
        >>> build_model("NanoLILY", {"width": 8}).config.width
        8
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}")
    model_class, config_class = ARCHITECTURES[architecture]
    types = {f.name: f.type for f in fields(config_class)}
    unknown = set(config or {}) - set(types)
    if unknown:
        raise ValueError(f"unknown {architecture} config keys {sorted(unknown)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in (config or {}).items()}  # JSON gives lists
    return model_class(config_class(**values))


def _config_from(raw: dict | str | None) -> dict:
    return {} if raw is None else json.loads(raw) if isinstance(raw, str) else dict(raw)


def _read_safetensors(path: Path) -> tuple[tuple[str, dict], dict[str, torch.Tensor]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises several types for a damaged header
        raise WeightsError(f"{path}: not a readable safetensors file ({e})") from None
    if "tensors_sha256" in metadata and tensors_sha256(state) != metadata["tensors_sha256"]:
        raise WeightsError(f"{path}: tensors do not match the digest in the file's metadata")
    return (metadata.get("architecture", "NanoLILY"), _config_from(metadata.get("config"))), state


def _read_pickle_checkpoint(path: Path) -> tuple[tuple[str, dict], dict[str, torch.Tensor]]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{path}: cannot read checkpoint ({str(e).splitlines()[0]})") from None
    architecture = ckpt.get("architecture", "NanoLILY") if isinstance(ckpt, dict) else "NanoLILY"
    if isinstance(ckpt, dict) and "model" in ckpt and isinstance(ckpt["model"], dict):
        return (architecture, _config_from(ckpt.get("model_config"))), ckpt["model"]
    if isinstance(ckpt, dict) and "state_dict" in ckpt:
        return (architecture, _config_from(ckpt.get("model_config"))), ckpt["state_dict"]
    if isinstance(ckpt, dict) and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return ("NanoLILY", {}), ckpt
    raise WeightsError(f"{path}: no state dict found in the checkpoint")


FEATURE_WEIGHTS_ENV = "NANOLILY_WEIGHTS_DIR"


def feature_weights_path(filename: str, weights_dir: str | os.PathLike | None = None,
                         data: str | os.PathLike | None = None) -> Path:
    """Find a pretrained feature network file (VGG19 for the perceptual loss, AlexNet/LPIPS for the metric).

    Looks in ``weights_dir``, then ``$NANOLILY_WEIGHTS_DIR``, then ``weights/`` beside the data root
    (the layout of ../shared). These files are not downloaded: the error says where to put them.
    """
    name = Path(filename).expanduser()
    if name.is_absolute():
        candidates = [name]
    else:
        folders = [weights_dir, os.environ.get(FEATURE_WEIGHTS_ENV)]
        if data is not None:
            folders += [Path(data).parent / "weights", Path(data).parent.parent / "weights"]
        candidates = [Path(d) / name for d in folders if d]
    for c in candidates:
        if c.exists():
            return c
    raise FileNotFoundError(f"{filename} not found (looked in {[str(c.parent) for c in candidates] or 'nowhere'}); "
                            f"pass --weights-dir DIR or set {FEATURE_WEIGHTS_ENV} to the folder holding it")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then CPU; anything else is passed to ``torch.device``."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(device)
    except RuntimeError as e:
        raise DeviceError(f"unknown device {str(device)!r} (expected auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {device}: this PyTorch sees no CUDA GPU (a CPU build, or no GPU or driver); "
                          "use --device cpu, or auto to take what is there")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) is not None
                                     and torch.backends.mps.is_available()):
        raise DeviceError(f"device {device}: Apple's MPS is not available here; use --device cpu, or auto")
    return device


class DeviceError(ValueError):
    """A device that does not exist or is not available; the message says which and what to use instead."""
