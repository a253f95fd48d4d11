"""nanolily compare: Input | Core | Bloom | Global side by side (the original demo's figure, plus global mode)."""

from __future__ import annotations

import argparse

from nanolily.interfaces.cli.common import add_engine_options, add_model_options, corrections, run_figure_verb


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="Input | Core | Bloom | Global figure for one photo", description=__doc__,
                       epilog="example:\n  nanolily compare night.jpg -o night_compare.png",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", metavar="INPUT", help="an image file")
    p.add_argument("-o", "--output", metavar="FIGURE", help="figure path (default: <stem>_compare.png beside INPUT)")
    p.add_argument("--height", type=int, default=None, help="panel height in pixels (default: the image's, max 512)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing figure")
    add_engine_options(p, with_mode=False)
    add_model_options(p)
    p.set_defaults(run=run)


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


def run(args) -> int:
    return run_figure_verb(args, "compare", lambda photo, model: comparison_figure(
        photo, model, args.stride, args.batch_size, args.height, match_scale=args.match_scale, **corrections(args)))
