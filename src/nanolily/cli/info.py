"""nanolily info: architecture, parameter count, weights file with its metadata and sha256, device."""

from __future__ import annotations

from .common import add_model_options


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="model, weights and device", description=__doc__)
    add_model_options(p)
    p.set_defaults(run=run)


def run(args) -> int:
    import torch

    from .. import __version__
    from ..model import NanoLILY
    from ..weights import WeightsError, available_models, file_sha256, read_metadata, resolve_device, resolve_weights

    arch = NanoLILY()
    print(f"nanolily {__version__}, torch {torch.__version__}")
    print(f"architecture: NanoLILY {arch.config_dict()}")
    print(f"parameters:   {arch.num_parameters():,}")
    print(f"models:       {', '.join(available_models())}")
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        print(f"error: {e}")
        return 1
    print(f"device:       {device} (threads: {torch.get_num_threads()})")
    try:
        path, expected = resolve_weights(args.weights)
    except WeightsError as e:
        print(f"weights:      none: {e}")
        return 0 if args.weights is None else 1
    print(f"weights:      {path}")
    print(f"sha256:       {file_sha256(path)}" + (" (verified)" if expected and file_sha256(path) == expected else ""))
    if path.suffix == ".safetensors":
        for key, value in read_metadata(path).items():
            print(f"  {key}: {value}")
    return 0
