"""nanolily evaluate: metrics of a model on a paired test set (per-image CSV, summary JSON, markdown)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nanolily.interfaces.cli.common import (add_correction_options, add_match_scale_option, add_model_options,
                                            check_mode_option, note)

EPILOG = """examples:
  nanolily evaluate --data ../shared/datasets/lol-v2-real
  nanolily evaluate --data ../shared/datasets/lol-v2-real --protocol resize224
  nanolily evaluate --data ../shared/datasets/lol-v1 --split ../shared/datasets/splits/lol-v1-val.txt --exposure 2
  nanolily evaluate --data ../shared/datasets/lol-v1 --split ../shared/datasets/splits/lol-v1-val.txt --jpeg 90
  nanolily evaluate --data ../shared/datasets/lol-v2-real --mode core --gallery gallery/ --gallery-ids 00690 00701
  nanolily evaluate --data ../shared/datasets/lol-v1 --subset eval15 --predictions results/other-method/

protocols: full = each image at full resolution, outputs clamped, per-image metrics averaged (honest);
resize224 = the original's measurement (224x224 resize, unclamped): PSNR per image, pooled within batches
of --pool-batch images, and pooled over all images.

--predictions measures images another method made (one per pair, named by the pair's id or its low
image's name) with the same metrics, so any low-light model can be compared with nanolily's."""


def add_parser(sub) -> None:
    from nanolily.engine.pipeline import DEFAULT_MODE, MODES
    from nanolily.training.evaluate import POOL_BATCH, PROTOCOLS

    p = sub.add_parser("evaluate", help="metrics on a paired test set", description=__doc__, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, metavar="DIR",
                   help="a dataset folder (layout detected: our485/eval15, Train/Test, or low/+high/)")
    p.add_argument("--subset", help="only this subset, e.g. Test or eval15 (default: all present)")
    p.add_argument("--split", metavar="FILE", help="only the ids in this file")
    p.add_argument("--mode", choices=MODES, default=DEFAULT_MODE, help="engine mode (default: %(default)s)")
    p.add_argument("--stride", type=int, default=112, help="bloom stride (default: %(default)s)")
    p.add_argument("--exposure", type=float, default=1.0, metavar="F",
                   help="re-expose each low image by F in linear light first, e.g. 0.5 or 2: robustness to "
                        "darker or brighter captures (default: %(default)s, as captured)")
    p.add_argument("--jpeg", type=int, metavar="Q",
                   help="then re-encode each low image as a JPEG of quality Q (1..100), e.g. 90 or 75: robustness "
                        "to compressed captures, as phones and cameras save them (default: as stored)")
    p.add_argument("--protocol", choices=PROTOCOLS, default="full", help="measurement protocol (default: %(default)s)")
    p.add_argument("--pool-batch", type=int, default=POOL_BATCH, metavar="N",
                   help="resize224: images per batch for batch-pooled PSNR (default: %(default)s, the original's "
                        "training batch; its evaluation batch is not stated)")
    p.add_argument("--predictions", metavar="DIR",
                   help="measure the output images in DIR (another method's) instead of running a model")
    p.add_argument("--out", metavar="DIR", help="report folder (default: eval/<weights>-<protocol>-<mode>, "
                                                "or eval/<DIR's name>-predictions)")
    p.add_argument("--weights-dir", metavar="DIR",
                   help="folder with AlexNet/LPIPS and VGG19 weights (default: $NANOLILY_WEIGHTS_DIR, then "
                        "weights/ beside the data)")
    p.add_argument("--no-lpips", action="store_true", help="skip LPIPS and VGG (no feature weights needed)")
    p.add_argument("--gallery", metavar="DIR", help="write Input | Output | Target triptychs here")
    p.add_argument("--gallery-ids", nargs="+", default=[], metavar="ID", help="ids for the gallery (default: first 4)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_match_scale_option(p)
    add_correction_options(p)
    add_model_options(p)
    p.set_defaults(run=run, parser=p)


def run(args) -> int:
    from nanolily.training.data import DatasetError, all_pairs, find_pairs, detect_layout
    from nanolily.training.evaluate import evaluate, write_gallery
    from nanolily.interfaces.cli.common import corrections, error, load_model_or_none

    try:
        if args.subset:
            pairs = find_pairs(args.data, detect_layout(args.data), args.subset, args.split)
        else:
            pairs = all_pairs(args.data, split=args.split)
    except DatasetError as e:
        args.parser.error(str(e))
    if args.predictions:
        check_predictions_options(args)
    try:
        lpips, vgg = feature_metrics(args)
    except FileNotFoundError as e:
        error(f"{e} (or pass --no-lpips)")
        return 1
    if args.predictions:
        return run_predictions(args, pairs, lpips, vgg)
    model = load_model_or_none(args)
    if model is None:
        return 1
    check_mode_option(args, model)
    if not args.exposure > 0:
        args.parser.error(f"--exposure must be > 0, got {args.exposure}")
    if args.jpeg is not None and not 1 <= args.jpeg <= 100:
        args.parser.error(f"--jpeg must be 1..100, got {args.jpeg}")
    if args.pool_batch < 1:
        args.parser.error(f"--pool-batch must be >= 1, got {args.pool_batch}")
    options = corrections(args) | {"match_scale": args.match_scale}  # enhance_tensor's keywords
    if not args.quiet:
        on = [k for k in ("lift_exposure", "guard_halos", "protect_highlights", "white_balance") if options[k]] + (
            [f"denoise {options['denoise']:g}"] if options["denoise"] else [])
        note(f"corrections: {', '.join(on).replace('_', ' ') or 'none (the network alone)'}"
             + (" (as nanolily enhance; --no-lift-exposure --no-guard-halos --no-protect-highlights --denoise 0 "
                "measures the network alone, as docs/model-card.md does)" if on else ""))
    rows, summary = evaluate(model, pairs, args.mode, args.protocol, args.stride, lpips, vgg, progress=not args.quiet,
                             corrections=options, exposure=args.exposure, pool_batch=args.pool_batch, jpeg=args.jpeg)
    name = Path(getattr(model, "weights_path", "model")).stem
    exposed = (f"-exposure{args.exposure:g}" if args.exposure != 1 else "") + (f"-jpeg{args.jpeg}" if args.jpeg else "")
    report(args, name, rows, summary, f"eval/{name}-{args.protocol}-{args.mode}{exposed}")
    if args.gallery:
        ids = args.gallery_ids or [p.id for p in pairs[:4]]
        try:
            written = write_gallery(model, pairs, ids, args.gallery, args.mode, args.stride, options)
        except ValueError as e:
            error(str(e))
            return 1
        print(f"gallery: {len(written)} figures in {args.gallery}", file=sys.stderr)
    return 0


def feature_metrics(args):
    """(LPIPS, VGG perceptual) from the feature weights, or (None, None) with --no-lpips."""
    from nanolily.models.weights import feature_weights_path
    from nanolily.training.losses import VGGPerceptual
    from nanolily.training.metrics import LPIPS
    from nanolily.training.train import DEFAULT_VGG

    if args.no_lpips:
        return None, None
    return (LPIPS.from_dir(args.weights_dir, args.data),
            VGGPerceptual(feature_weights_path(DEFAULT_VGG, args.weights_dir, args.data)))


def report(args, name: str, rows: list[dict], summary: dict, default_out: str) -> None:
    """Write the report folder and print the table."""
    from nanolily.training.evaluate import markdown_table, write_report

    title = f"{name} on {args.data}" + (f" ({args.subset})" if args.subset else "")
    paths = write_report(Path(args.out or default_out), rows, summary, title)
    print(markdown_table([(name, summary)]), end="")
    print(f"per-image: {paths['csv']}  summary: {paths['json']}", file=sys.stderr)


def check_predictions_options(args) -> None:
    """--predictions takes no option that needs a model to run."""
    model_only = [flag for flag, given in (("--exposure", args.exposure != 1), ("--jpeg", args.jpeg is not None),
                                           ("--protocol resize224", args.protocol != "full"),
                                           ("--gallery", args.gallery), ("--model/--weights", args.model or args.weights))
                  if given]
    if model_only:
        args.parser.error(f"--predictions measures images already made: {', '.join(model_only)} need a model")


def run_predictions(args, pairs, lpips, vgg) -> int:
    """--predictions: another method's output images, measured as the models' are."""
    from nanolily.interfaces.cli.common import error
    from nanolily.io.images import ImageError
    from nanolily.training.data import DatasetError
    from nanolily.training.evaluate import evaluate_predictions

    try:
        rows, summary = evaluate_predictions(pairs, args.predictions, lpips, vgg, progress=not args.quiet)
    except (DatasetError, ImageError) as e:
        error(str(e))
        return 1
    name = Path(args.predictions).resolve().name
    report(args, name, rows, summary, f"eval/{name}-predictions")
    return 0
