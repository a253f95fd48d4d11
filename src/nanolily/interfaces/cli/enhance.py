"""nanolily enhance: brighten files, folders and globs: photos, and videos (MP4, MOV, MKV, ...; the
[video] extra) frame by frame with their frame rate and audio kept and exposure smoothed over time."""

from __future__ import annotations

import argparse
import sys
import time

from nanolily.engine.pipeline import BACKENDS, PRECISIONS, check_precision
from nanolily.io.images import WRITE_FORMATS
from nanolily.interfaces.cli.common import (STDIO, Job, add_engine_options, add_model_options, add_output_options,
                                            check_mode_option, corrections, error, expand_inputs, load_model_or_none,
                                            is_video, make_folder, model_source, note, plan_jobs, positive_int)

TILE_BAR_MIN_TILES = 64  # show a tile bar only for images big enough to take a while

EXAMPLES = """examples:
  nanolily enhance night.jpg                    writes night_lily.jpg beside it
  nanolily enhance night.jpg -o bright.png      one file, format from the extension
  nanolily enhance shots/ -r -o bright/         a folder tree, mirrored into bright/
  nanolily enhance 'trip/*.jpg' --mode core     a glob (quote it), the original 224x224 pass
  curl -s URL | nanolily enhance - > bright.png   standard input to standard output (PNG; --format jpg ...)
  nanolily enhance night.jpg --backend onnxruntime     the default model through ONNX Runtime
  nanolily enhance big.tif --model nanolily-v1 --mode bloom --backend onnxruntime   v1's tiles through it
  nanolily enhance noisy.jpg --denoise 0.5      smooth sensor grain and colour static
  nanolily enhance night.jpg --model nanolily-v1   the original NanoLILY architecture
  nanolily enhance shots/ -o bright/ --device cuda --precision bf16   on a GPU, in half precision
  nanolily enhance s3://bucket/night/ -o s3://bucket/bright/ --ray --ray-address auto   on a Ray cluster

exit status: 0 all done, 1 some inputs failed, 2 usage error"""


def add_parser(sub) -> None:
    p = sub.add_parser("enhance", help="brighten photos (files, folders, globs)", description=__doc__,
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image or video files, folders or glob patterns; - reads one image from standard input. "
                        "A folder yields its photos and videos by extension, leaving out *_lily.* outputs and "
                        "hidden files (a name starting with '.')")
    p.add_argument("-o", "--output", metavar="OUT",
                   help="output file (one input), folder, or - for standard output; default: <stem>_lily.<ext> "
                        "beside each input (standard output for standard input)")
    p.add_argument("-r", "--recursive", action="store_true", help="include subfolders of folder inputs")
    add_output_options(p, None, "output format for folder/beside outputs (default: the input's; a 16-bit TIFF "
                                "for camera RAW files, PNG for other formats nanolily does not write)")
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace existing files, inputs included")
    existing.add_argument("--skip-existing", action="store_true",
                          help="leave outputs that already exist as they are and go on (re-running a folder)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or summary; errors still print")
    add_engine_options(p)
    g = p.add_argument_group("backend")
    g.add_argument("--backend", choices=BACKENDS, default="torch",
                   help="what runs the model: torch, or onnxruntime (the [onnx] extra: nanolily-v2 as whole "
                        "images, its full-resolution stage in strips; nanolily-v1 as tiles, bloom/core modes "
                        "only); the model is exported to ONNX once and cached (default: %(default)s)")
    g.add_argument("--precision", choices=list(PRECISIONS), default="auto",
                   help="the network's arithmetic with the torch backend: fp32; auto = fp32, but nanolily-v1's "
                        "three inner convolutions in bf16 on a CPU with AMX units (faster bloom, outputs "
                        "within ~0.01); "
                        "bf16 or fp16 run all its convolutions in half precision, for GPUs (fp16 needs one; "
                        "outputs within ~0.01 of fp32) (default: %(default)s)")
    g.add_argument("--onnx", metavar="FILE", help="with --backend onnxruntime: an exported model to use "
                                                  "(from `nanolily export`; nanolily-v2's runs the whole image "
                                                  "in one graph, which needs more memory and reads every "
                                                  "photo at the network's own scale, or photos of one size "
                                                  "at the engine's with export --size) instead of the cache")
    g = p.add_argument_group("scale-out (the [ray] extra)")
    g.add_argument("--ray", action="store_true",
                   help="enhance one folder or URI (s3://, gs://, ...; searched recursively) into -o OUT (a folder "
                        "or URI) with Ray Data: a model per worker, failures reported per file")
    g.add_argument("--ray-address", metavar="ADDR",
                   help="the Ray cluster: auto (the one `ray start` joined this machine to) or HOST:PORT "
                        "(default: a local Ray instance on this machine's CPUs)")
    g.add_argument("--workers", type=positive_int, metavar="N",
                   help="model actors, one CPU each (default: one per CPU of the cluster)")
    add_model_options(p)
    p.set_defaults(run=run, parser=p)


def run(args) -> int:
    if not args.strength >= 0:
        args.parser.error(f"--strength must be >= 0, got {args.strength}")
    if args.stride > 224:
        args.parser.error(f"--stride must be at most the tile size 224, got {args.stride}")
    if args.ray:
        return run_ray(args)
    files, failures, notes = expand_inputs(args.inputs, args.recursive)
    for line in failures:
        error(line)
    for line in notes if not args.quiet else ():
        note(line)
    try:
        jobs = plan_jobs(files, args.output, args.format)
    except ValueError as e:
        args.parser.error(str(e))
    if not jobs:
        return 1
    if any(job.target == STDIO for job in jobs) and sys.stdout.isatty():
        args.parser.error("refusing to write image data to a terminal: redirect it (> out.png) or use -o FILE")
    if args.onnx and args.backend != "onnxruntime":
        args.parser.error("--onnx needs --backend onnxruntime")
    model = load_model_or_none(args)
    if model is None:
        return 1
    check_mode_option(args, model)
    try:
        check_precision(args.precision, next(model.parameters()).device, args.backend == "torch")
    except ValueError as e:
        args.parser.error(f"--{e}")  # "--precision ..."
    if args.backend == "onnxruntime" and args.mode == "global" and not model.resolution_free:
        args.parser.error("nanolily-v1 runs in ONNX Runtime as 224x224 tiles: use --mode bloom or core with it")
    start = time.perf_counter()  # the whole run, an ONNX export included
    predictor = None
    if args.backend == "onnxruntime":
        from nanolily.engine.onnx import onnx_predictor

        try:
            predictor = onnx_predictor(model, args.onnx, note=None if args.quiet else note)
        except Exception as e:  # a missing extra, an unreadable or invalid ONNX file
            error(f"{args.onnx or 'onnx export'}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            return 1
    done, failed, skipped = process(jobs, model, args, predictor)
    failed += len(failures)
    return summarize(args, done, failed, skipped, time.perf_counter() - start)


def run_ray(args) -> int:
    """``--ray``: one source folder or URI into ``-o``, with Ray Data (nanolily.interfaces.ray_data)."""
    if len(args.inputs) != 1 or args.output in (None, "-"):
        args.parser.error("--ray takes one folder or URI and -o OUT (a folder or URI)")
    if args.backend != "torch" or args.device not in ("auto", "cpu"):
        args.parser.error("--ray runs the torch backend on each worker's CPUs")
    import importlib.util

    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("pyarrow") is None:
        error("--ray needs Ray Data: pip install 'nanolily[ray]'")
        return 1
    from nanolily.interfaces.ray_data import enhance_collection

    try:
        report = enhance_collection(
            args.inputs[0], args.output, model_source(args), workers=args.workers, fmt=args.format,
            quality=args.quality, overwrite=args.overwrite, skip_existing=args.skip_existing,
            address=args.ray_address, progress=not args.quiet, on_failure=lambda path, reason: error(f"{path}: {reason}"),
            mode=args.mode, stride=args.stride, batch_size=args.batch_size, precision=args.precision,
            match_scale=args.match_scale, **corrections(args))
    except ValueError as e:
        error(str(e))
        return 1
    return summarize(args, report.done, report.failed, report.skipped, report.seconds)


def summarize(args, done: int, failed: int, skipped: int, seconds: float) -> int:
    """The run's one summary line on stderr (unless ``--quiet``) and its exit status."""
    if not args.quiet:
        where = f" -> {args.output}" if args.output else ""
        extra = (f", {failed} failed" if failed else "") + (f", {skipped} skipped (outputs exist)" if skipped else "")
        print(f"enhanced {done} of {done + failed + skipped} images in {seconds:.1f} s{extra}{where}", file=sys.stderr)
    return 0 if failed == 0 else 1


def process(jobs: list[Job], model, args, predictor=None) -> tuple[int, int, int]:
    """Enhance each job; a failure is reported and the batch goes on. Returns (done, failed, skipped)."""
    from tqdm.auto import tqdm

    from nanolily.engine.bloom import plan_tiles
    from nanolily.engine.pipeline import enhance_photo
    from nanolily.io.images import ImageError, encode_image, read_image, write_image
    from nanolily.io.video import enhance_video

    done = failed = skipped = 0
    bar = tqdm(jobs, unit="img", disable=args.quiet or len(jobs) < 2, desc="images")
    for job in bar:
        try:
            if job.target != STDIO and job.target.exists() and not args.overwrite:
                if args.skip_existing:
                    skipped += 1
                    continue
                raise ImageError(job.target, "already exists (--overwrite replaces it, --skip-existing leaves it)")
            if job.target != STDIO:
                make_folder(job.target)
            if is_video(job.source):
                if job.target == STDIO:
                    raise ImageError(job.source, "a video is written to a file: give -o FILE or a folder")
                enhance_video(job.source, job.target, model, progress=not args.quiet, overwrite=args.overwrite,
                              mode=args.mode, stride=args.stride, batch_size=args.batch_size, predictor=predictor,
                              precision=args.precision, match_scale=args.match_scale, **corrections(args))
                done += 1
                continue
            source = sys.stdin.buffer if job.source == STDIO else job.source
            photo = read_image(source, max_pixels=args.max_pixels)
            width, height = photo.size
            fixed = getattr(predictor, "fixed_size", None) if model.resolution_free else None
            if fixed and fixed != (height, width):  # a graph exported with --size
                raise ImageError(job.source, f"{width}x{height}, but {args.onnx} takes {fixed[1]}x{fixed[0]} "
                                             "images only (exported with --size)")
            tiles = len(plan_tiles(max(height, 224), max(width, 224), 224, args.stride))
            out = enhance_photo(photo, model, reuse_pixels=True, mode=args.mode, stride=args.stride,
                                batch_size=args.batch_size,
                                progress=not args.quiet and args.mode == "bloom" and tiles >= TILE_BAR_MIN_TILES,
                                predictor=predictor, precision=args.precision, match_scale=args.match_scale,
                                **corrections(args))
            del photo  # the output may share its pixels (reuse_pixels); the rest is not needed to write it
            if job.target == STDIO:
                sys.stdout.buffer.write(encode_image(out, WRITE_FORMATS["." + (args.format or "png")], args.quality))
                sys.stdout.buffer.flush()
            else:
                write_image(job.target, out, quality=args.quality, overwrite=args.overwrite)
            done += 1
        except ImageError as e:
            error(str(e))
            failed += 1
        except OSError as e:  # e.g. the output folder cannot be made
            error(f"{job.target}: {e.strerror or e}")
            failed += 1
    return done, failed, skipped
