"""nanolily demo: enhance the bundled dark samples and write a comparison figure; needs no argument."""

from __future__ import annotations

from pathlib import Path

from nanolily.interfaces.cli.common import add_model_options, error, load_model_or_none


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="enhance the bundled samples (start here)", description=__doc__)
    p.add_argument("-o", "--output", metavar="DIR", default="nanolily-demo",
                   help="folder for the results (default: %(default)s)")
    add_model_options(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from nanolily.engine.pipeline import DEFAULT_BATCH_SIZE, DEFAULT_STRIDE, enhance_photo
    from nanolily.io.figures import stacked
    from nanolily.io.images import pil_to_photo, read_image, write_image
    from nanolily.io.samples import sample_paths
    from nanolily.interfaces.cli.compare import comparison_figure

    model = load_model_or_none(args)
    if model is None:
        return 1
    out = Path(args.output)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        error(f"{out}: cannot create folder ({e.strerror or e})")
        return 1
    rows = []
    for path in sample_paths():
        photo = read_image(path)
        enhanced = enhance_photo(photo, model)
        write_image(out / f"{path.stem}_lily.png", enhanced, overwrite=True)
        rows.append(comparison_figure(photo, model, DEFAULT_STRIDE, DEFAULT_BATCH_SIZE, height=300))
        print(f"{path.name}: {photo.size[0]}x{photo.size[1]}, mean brightness "
              f"{photo.pixels.mean():.3f} -> {enhanced.pixels.mean():.3f}")
    target = write_image(out / "demo_compare.png", pil_to_photo(stacked(rows)), overwrite=True)
    print(f"comparison figure: {target}")
    return 0
