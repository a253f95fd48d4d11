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
    :func:`nanolily.engine.pipeline.enhance_tensor` takes them."""
    from nanolily.engine.pipeline import enhance_photo
    from nanolily.io.figures import side_by_side
    from nanolily.io.images import photo_to_pil

    width, h = photo.size
    core = enhance_photo(photo, model, mode="core", **corrections)
    bloom = enhance_photo(photo, model, mode="bloom", stride=stride, batch_size=batch_size, **corrections)
    whole = enhance_photo(photo, model, mode="global", **corrections)
    return side_by_side([
        (f"Input {width}x{h}", photo_to_pil(photo)),
        (f"Core: one 224x224 pass -> {width}x{h}", photo_to_pil(core)),
        (f"Bloom: 224 tiles, stride {stride}, {width}x{h}", photo_to_pil(bloom)),
        (f"Global: one pass, {width}x{h}", photo_to_pil(whole)),
    ], height=height)


def run(args) -> int:
    return run_figure_verb(args, "compare", lambda photo, model: comparison_figure(
        photo, model, args.stride, args.batch_size, args.height, match_scale=args.match_scale, **corrections(args)))
