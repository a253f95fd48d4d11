"""``nanolily compare``: Input | Core | Bloom side by side, the original demo's figure."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_engine_options, add_model_options, error, load_model_or_none


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="Input | Core | Bloom figure for one photo", description=__doc__,
                       epilog="example:\n  nanolily compare night.jpg -o night_compare.png",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", metavar="INPUT", help="an image file")
    p.add_argument("-o", "--output", metavar="FIGURE", help="figure path (default: <stem>_compare.png beside INPUT)")
    p.add_argument("--height", type=int, default=None, help="panel height in pixels (default: the image's, max 512)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing figure")
    add_engine_options(p, with_mode=False)
    add_model_options(p)
    p.set_defaults(run=run)


def comparison_figure(photo, model, stride: int, batch_size: int, height: int | None = None):
    """The Input | Core | Bloom figure (a PIL image) for a decoded photo."""
    from ..enhance import enhance_photo
    from ..figures import side_by_side
    from ..io import photo_to_pil

    width, h = photo.size
    core = enhance_photo(photo, model, mode="core")
    bloom = enhance_photo(photo, model, mode="bloom", stride=stride, batch_size=batch_size)
    return side_by_side([
        (f"Input {width}x{h}", photo_to_pil(photo)),
        (f"Core: one 224x224 pass -> {width}x{h}", photo_to_pil(core)),
        (f"Bloom: 224 tiles, stride {stride}, {width}x{h}", photo_to_pil(bloom)),
    ], height=height)


def run(args) -> int:
    from ..io import ImageError, Photo, pil_to_photo, read_image, write_image

    source = Path(args.input)
    target = Path(args.output) if args.output else source.with_name(source.stem + "_compare.png")
    try:
        if target.exists() and not args.overwrite:
            raise ImageError(target, "already exists (use --overwrite to replace it)")
        photo = read_image(source, max_pixels=args.max_pixels)
    except ImageError as e:
        error(str(e))
        return 1
    model = load_model_or_none(args)
    if model is None:
        return 1
    figure = comparison_figure(photo, model, args.stride, args.batch_size, args.height)
    try:
        write_image(target, pil_to_photo(figure), overwrite=args.overwrite)
    except ImageError as e:
        error(str(e))
        return 1
    print(target)
    return 0
