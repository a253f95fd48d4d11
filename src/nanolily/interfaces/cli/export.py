"""nanolily export: the model as an ONNX file for ONNX Runtime and other inference engines.

The resolution-free models (nanolily-v2..v5; v5 is the default) export for whole images: (batch, 3,
height, width) float in [0, 1], all dynamic, the enhanced image out, unclamped. nanolily-v1's graph
takes (batch, 3, 224, 224) tiles (dynamic batch); run bigger images through it with LILY Bloom
(`nanolily enhance --model nanolily-v1 --mode bloom --backend onnxruntime --onnx FILE`) or your own
tiling. The export is checked against PyTorch in ONNX Runtime (max |difference| <= 1e-4) before the
file is written.

--size WxH fixes a resolution-free model's input to one size and reads it at the scale `nanolily
enhance` reads a photo of that size (a 3840x2160 frame pooled 16x for the low-resolution part instead of
the network's own 4x; docs/scales.md): for a camera or video stream of one size, and for engines that
want static shapes. The halo guard and the corrections after the network are not in any graph.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nanolily.interfaces.cli.common import add_model_options, error, load_model_or_none, model_source

EXAMPLES = """examples:
  nanolily export -o nanolily.onnx                        the default model, nanolily-v5
  nanolily export --model nanolily-v1 -o nanolily-v1.onnx  224x224 tiles
  nanolily export --weights runs/cpu/best.safetensors -o mine.onnx
  nanolily export --size 1920x1080 -o nanolily-1080p.onnx   one frame size, read as nanolily enhance reads it
  nanolily enhance night.jpg --backend onnxruntime --onnx nanolily.onnx"""


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write the model as ONNX", description=__doc__, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--format", choices=["onnx"], default="onnx", help="output format (default: %(default)s)")
    p.add_argument("-o", "--output", metavar="FILE", required=True, help="the file to write")
    p.add_argument("--size", type=frame_size, metavar="WxH",
                   help="resolution-free models: images of this size only, read at the scale nanolily enhance "
                        "reads them (default: any size, read at the network's own scale)")
    p.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime parity check")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    add_model_options(p)
    p.set_defaults(run=run, parser=p)


def run(args) -> int:
    output = Path(args.output)
    if output.exists() and not args.overwrite:
        error(f"{output}: already exists (use --overwrite to replace it)")
        return 1
    if not output.parent.is_dir():
        error(f"{output}: folder {output.parent} does not exist")
        return 1
    args.device = "cpu"
    model = load_model_or_none(args)
    if model is None:
        return 1
    from nanolily.engine.onnx import PARITY_TOLERANCE, export_onnx

    if args.size and not model.resolution_free:
        args.parser.error(f"--size is for the resolution-free models: {model_source(args) or 'this model'} "
                          f"takes {model.patch_size}x{model.patch_size} tiles")
    try:
        worst = export_onnx(model, output, check=not args.no_check, size=args.size)
    except ImportError as e:
        error(f"{output}: {e}")
        return 1
    except RuntimeError as e:
        error(str(e))
        return 1
    size_kb = output.stat().st_size / 1024
    checked = "" if worst is None else f", max |diff| vs PyTorch {worst:.1e} (<= {PARITY_TOLERANCE:g})"
    if args.size:
        from nanolily.models.v2 import analysis_factor

        shape = f"{args.size[0]}, {args.size[1]}) read at 1/{analysis_factor(*args.size)} for its maps"
    else:
        shape = ("height, width" if model.resolution_free else f"{model.patch_size}, {model.patch_size}") + ")"
    print(f"wrote {output} ({size_kb:.0f} KiB, input (batch, 3, {shape}{checked})")
    return 0


def frame_size(text: str) -> tuple[int, int]:
    """'1920x1080' -> (height, width) = (1080, 1920)."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or min(int(p) for p in parts) < 16:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, each at least 16, e.g. 1920x1080; got {text!r}")
    return int(parts[1]), int(parts[0])
