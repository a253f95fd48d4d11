"""nanolily compare: Input | Core | Bloom | Global side by side (the original demo's figure, plus global
mode), or, with --models, Input | one panel per model: which model suits these photos."""

from __future__ import annotations

import argparse
from pathlib import Path

from nanolily.interfaces.cli.common import (add_engine_options, add_model_options, corrections, error,
                                            load_model_or_none, run_figure_verb)

EPILOG = """examples:
  nanolily compare night.jpg -o night_compare.png            the engines, with the default model
  nanolily compare night.jpg --models nanolily-v1 nanolily-v2 nanolily-v5 runs/mine/best.safetensors"""


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="the engines, or several models, side by side for one photo",
                       description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", metavar="INPUT", help="an image file")
    p.add_argument("-o", "--output", metavar="FIGURE", help="figure path (default: <stem>_compare.png beside INPUT)")
    p.add_argument("--models", nargs="+", metavar="MODEL",
                   help="compare these models (shipped names or .safetensors files), each as `nanolily enhance` "
                        "runs it, instead of the engines")
    p.add_argument("--height", type=int, default=None, help="panel height in pixels (default: the image's, max 512)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing figure")
    add_engine_options(p, with_mode=False)
    add_model_options(p)
    p.set_defaults(run=run, parser=p)


def comparison_figure(photo, model, stride: int, batch_size: int, height: int | None = None, **corrections):
    """The Input | Core | Bloom | Global figure (a PIL image) for a decoded photo; ``corrections`` as
    :func:`nanolily.engine.pipeline.enhance_tensor` takes them. Bloom, nanolily-v1's engine, is left out
    for a resolution-free model."""
    from nanolily.engine.pipeline import enhance_photo
    from nanolily.io.figures import side_by_side
    from nanolily.io.images import photo_to_pil

    width, h = photo.size
    core = enhance_photo(photo, model, mode="core", **corrections)
    panels = [(f"Input {width}x{h}", photo_to_pil(photo)), (f"Core: one 224x224 pass -> {width}x{h}", photo_to_pil(core))]
    if not model.resolution_free:
        bloom = enhance_photo(photo, model, mode="bloom", stride=stride, batch_size=batch_size, **corrections)
        panels.append((f"Bloom: 224 tiles, stride {stride}, {width}x{h}", photo_to_pil(bloom)))
    whole = enhance_photo(photo, model, mode="global", **corrections)
    panels.append((f"Global: one pass, {width}x{h}", photo_to_pil(whole)))
    return side_by_side(panels, height=height)


def models_figure(photo, models: list[tuple[str, object]], height: int | None = None, **corrections):
    """Input | each (label, model)'s enhancement in global mode, the default, with ``corrections``."""
    from nanolily.engine.pipeline import enhance_photo
    from nanolily.io.figures import side_by_side
    from nanolily.io.images import photo_to_pil

    width, h = photo.size
    panels = [(f"Input {width}x{h}", photo_to_pil(photo))]
    panels += [(label, photo_to_pil(enhance_photo(photo, model, mode="global", **corrections)))
               for label, model in models]
    return side_by_side(panels, height=height)


def model_label(name: str) -> str:
    """A shipped name as it is; a weights file as its folder and stem, e.g. ``v2/best``."""
    path = Path(name)
    return name if path.suffix != ".safetensors" else f"{path.parent.name}/{path.stem}".lstrip("/")


def run(args) -> int:
    settings = dict(match_scale=args.match_scale, **corrections(args))
    if not args.models:
        return run_figure_verb(args, "compare", lambda photo, model: comparison_figure(
            photo, model, args.stride, args.batch_size, args.height, **settings))
    if args.model or args.weights:
        args.parser.error("--models names every model to compare: leave out --model and --weights")

    def load(args):
        models = []
        for name in args.models:  # load_model takes a shipped name or a weights file alike
            model = load_model_or_none(argparse.Namespace(**{**vars(args), "model": name}))
            if model is None:
                return None
            models.append((model_label(name), model))
        return models

    if len(set(args.models)) != len(args.models):
        error(f"{args.input}: a model is named twice in --models")
        return 1
    return run_figure_verb(args, "compare", lambda photo, models: models_figure(photo, models, args.height, **settings),
                           load=load)
