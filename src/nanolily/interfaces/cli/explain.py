"""nanolily explain: what each branch of NanoLILY contributes, on one photo (the original's figure).

The network reads the photo resized to its 224x224 grid; each panel is shown back at the photo's
aspect ratio: input; spatial-branch output and
frequency-branch output (each stretched to its own min..max for display); the residual added to the
input (mid-grey = 0, brighter = lifted); the output. Without --model or --weights it explains
nanolily-v1, the model that has these branches (the default model, nanolily-v5, has none)."""

from __future__ import annotations

import argparse

from nanolily.interfaces.cli.common import add_model_options, run_figure_verb


def add_parser(sub) -> None:
    p = sub.add_parser("explain", help="branch visualisation for one photo", description=__doc__,
                       epilog="example:\n  nanolily explain night.jpg -o night_explain.png",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", metavar="INPUT", help="an image file")
    p.add_argument("-o", "--output", metavar="FIGURE", help="figure path (default: <stem>_explain.png beside INPUT)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing figure")
    add_model_options(p)
    p.set_defaults(run=run)


def explain_figure(photo, model):
    import torch

    from nanolily.engine.bloom import resize
    from nanolily.io.figures import side_by_side, tensor_to_pil

    x = torch.from_numpy(photo.pixels).permute(2, 0, 1)[None].expand(-1, 3, -1, -1)  # (1, 3, H, W)
    size = model.patch_size
    x = resize(x.contiguous(), (size, size)).to(next(model.parameters()).device)
    with torch.inference_mode():
        parts = model.branches(x)

    def stretch(t):
        return (t - t.min()) / (t.max() - t.min() + 1e-8)

    height, width = photo.pixels.shape[:2]
    shown = (size, max(1, round(size * width / height)))  # the photo's aspect ratio, not the grid's square

    def panel(t):
        return tensor_to_pil(resize(t.float().cpu().contiguous(), shown).clamp(0, 1))

    return side_by_side([
        (f"Input ({width}x{height}, read at {size}x{size})", panel(x)),
        ("Spatial branch", panel(stretch(parts["spatial"]))),
        ("Frequency branch", panel(stretch(parts["frequency"]))),
        ("Residual (grey = 0)", panel(parts["residual"] * 0.5 + 0.5)),
        ("Output", panel(parts["output"])),
    ], height=size)


EXPLAINED_MODEL = "nanolily-v1"


def run(args) -> int:
    from nanolily.io.images import ImageError

    if args.model is None and args.weights is None:
        args.model = EXPLAINED_MODEL

    def figure(photo, model):
        if not hasattr(model, "branches"):
            raise ImageError(model.weights_path, f"{type(model).__name__} has no spatial / frequency branches "
                                                 "to show; explain draws the original NanoLILY's")
        return explain_figure(photo, model)

    return run_figure_verb(args, "explain", figure)
