"""nanolily info: architecture, parameter count, weights file with its metadata and sha256, device."""

from __future__ import annotations

from nanolily.interfaces.cli.common import add_model_options, error, model_source


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="model, weights and device", description=__doc__)
    add_model_options(p)
    p.set_defaults(run=run)


def formats() -> str:
    """What this installation reads and writes, and what the missing optional formats need."""
    from nanolily.io.images import HAS_RAW, MISSING_SUPPORT, WRITE_FORMATS

    names = sorted({f.lower().replace("jpeg", "jpg").replace("heif", "heic") for f in WRITE_FORMATS.values()})
    text = f"read and write {', '.join(names)}" + ("; read camera RAW (dng, cr2, nef, arw, ...)" if HAS_RAW else "")
    supported = {".heic": ".heic" in WRITE_FORMATS, ".dng": HAS_RAW, ".avif": ".avif" in WRITE_FORMATS}
    return text + "".join(f"; {MISSING_SUPPORT[s]}" for s, ok in supported.items() if not ok)


def compiled_paths() -> dict[str, str]:
    """Which path the corrections and nanolily-v1's tiles take here: compiled (nanolily.native) or PyTorch,
    and why."""
    from nanolily import native

    if not native.enabled():
        return dict.fromkeys(("corrections", "tiles"), "PyTorch (NANOLILY_NATIVE=0)")
    lib, tiles = native.library(), native.tile_library()
    return {"corrections": f"compiled, {lib._name}" if lib else "PyTorch (no C compiler found, or the build failed)",
            "tiles": f"compiled, {tiles._name}" if tiles else
            "PyTorch (no C compiler with OpenMP, or PyTorch's threads are not OpenMP's)"}


def run(args) -> int:
    import json

    import torch

    from nanolily import __version__
    from nanolily.models.weights import (DEFAULT_MODEL, WeightsError, available_models, build_model, file_sha256,
                                         read_metadata, resolve_device, resolve_weights)

    print(f"nanolily {__version__}, torch {torch.__version__}")
    print(f"models:       {', '.join(available_models())} (default: {DEFAULT_MODEL})")
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        error(str(e))
        return 2
    print(f"device:       {device} (threads: {torch.get_num_threads()})")
    print(f"formats:      {formats()}")
    paths = compiled_paths()
    print(f"corrections:  {paths['corrections']}")
    print(f"v1 tiles:     {paths['tiles']}")
    source = model_source(args)
    try:
        path, expected = resolve_weights(source)
    except WeightsError as e:
        print(f"weights:      none: {e}")
        return 0 if source is None else 1
    print(f"weights:      {path}")
    print(f"sha256:       {file_sha256(path)}" + (" (verified)" if expected and file_sha256(path) == expected else ""))
    if path.suffix == ".safetensors":
        metadata = read_metadata(path)
        architecture = metadata.get("architecture", "NanoLILY")
        model = build_model(architecture, json.loads(metadata.get("config", "{}")))
        print(f"architecture: {architecture} {model.config_dict()}")
        print(f"parameters:   {model.num_parameters():,}")
        for key, value in metadata.items():
            print(f"  {key}: {value}")
    return 0
