"""Options and helpers shared by the verbs, defined once."""

from __future__ import annotations

import argparse
import glob
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from nanolily.io.images import (DEFAULT_MAX_PIXELS, RAW_OUTPUT_SUFFIX, RAW_SUFFIXES, READ_SUFFIXES, WRITE_FORMATS,
                                missing_support)
from nanolily.io.video import VIDEO_SUFFIXES

OUTPUT_SUFFIX = "_lily"
STDIO = Path("-")  # INPUT "-" reads standard input, "-o -" writes standard output


def add_model_options(p: argparse.ArgumentParser) -> None:
    from nanolily.models.weights import DEFAULT_MODEL, SHIPPED

    g = p.add_argument_group("model")
    which = g.add_mutually_exclusive_group()
    which.add_argument("--model", choices=list(SHIPPED), default=None,
                       help="a shipped model: " + "; ".join(f"{name}: {m.description}" for name, m in SHIPPED.items())
                            + f" (default: {DEFAULT_MODEL})")
    which.add_argument("--weights", metavar="FILE", default=None,
                       help="your own .safetensors weights (e.g. from `nanolily train`) instead of --model")
    g.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps")
    g.add_argument("--allow-pickle", action="store_true",
                   help="allow a .ckpt/.pt pickle checkpoint as --weights (only for files you trust)")


def add_engine_options(p: argparse.ArgumentParser, with_mode: bool = True) -> None:
    from nanolily.engine.pipeline import DEFAULT_BATCH_SIZE, DEFAULT_MODE, DEFAULT_STRIDE, MODES

    g = p.add_argument_group("engine")
    if with_mode:
        g.add_argument("--mode", choices=MODES, default=DEFAULT_MODE,
                       help="global: the whole photo in one pass (best measured quality and speed; "
                            "nanolily-v1's frequency mask is resampled to the photo); bloom: blended 224x224 "
                            "tiles, the original's engine, nanolily-v1 only; core: one 224x224 pass, resized "
                            "back (default: %(default)s)")
    g.add_argument("--stride", type=positive_int, default=DEFAULT_STRIDE,
                   help="bloom tile step in pixels, 1..224; 112 = 50%% overlap, the original's (default: %(default)s)")
    g.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE,
                   help="tiles per network call (default: %(default)s)")
    add_match_scale_option(g)
    g.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS,
                   help="refuse larger images, a guard against decompression bombs (default: %(default)s)")
    add_correction_options(p)


def add_match_scale_option(g) -> None:
    g.add_argument("--match-scale", action=argparse.BooleanOptionalAction, default=True,
                   help="nanolily-v2, global mode: read a photo larger than about 0.7 MP at a coarser "
                        "scale and one smaller than 0.24 MP at a finer one, so a 24 MP photo or a "
                        "thumbnail is lit as the same scene at the size the model learned from; "
                        "--no-match-scale runs the network at its own scale at any size (default: %(default)s)")


def add_correction_options(p: argparse.ArgumentParser) -> None:
    from nanolily.engine.pipeline import (DEFAULT_DENOISE, DEFAULT_GUARD_HALOS, DEFAULT_LIFT_EXPOSURE,
                                          DEFAULT_PROTECT_HIGHLIGHTS)

    g = p.add_argument_group("corrections (in this order: the exposure lift and the halo guard as the network "
                             "reads the photo, the rest on its output)")
    g.add_argument("--lift-exposure", action=argparse.BooleanOptionalAction, default=DEFAULT_LIFT_EXPOSURE,
                   help="nanolily-v2 and later, global mode: read a photo far darker than the models' training "
                        "captures as a longer exposure of it, never clipping its highlights (default: %(default)s)")
    g.add_argument("--guard-halos", action=argparse.BooleanOptionalAction, default=DEFAULT_GUARD_HALOS,
                   help="nanolily-v2 and later, global mode: lift the dark beside lamps and lit windows as the "
                        "dark elsewhere, without the dark halo the network alone leaves around them "
                        "(default: %(default)s)")
    g.add_argument("--strength", type=non_negative_float, default=1.0,
                   help="how far to go: 0 = the input, 1 = the model, 1.5 = half as much again (default: %(default)s)")
    g.add_argument("--protect-highlights", action=argparse.BooleanOptionalAction, default=DEFAULT_PROTECT_HIGHLIGHTS,
                   help="limit the lift to each pixel's headroom, so lamps and lit windows do not clip to white "
                        "(default: %(default)s)")
    g.add_argument("--denoise", type=unit_float, default=DEFAULT_DENOISE, metavar="0..1",
                   help="smooth sensor grain and colour static, keeping edges; 0 = off, 1 = full "
                        "(default: %(default)s)")
    g.add_argument("--white-balance", action="store_true",
                   help="restore the input's colour balance after enhancing (against colour casts)")


def corrections(args) -> dict:
    """The correction options as keyword arguments of :func:`nanolily.engine.pipeline.enhance_tensor`."""
    return dict(strength=args.strength, protect_highlights=args.protect_highlights, denoise=args.denoise,
                white_balance=args.white_balance, guard_halos=args.guard_halos, lift_exposure=args.lift_exposure)


def non_negative_float(text: str, top: float = float("inf")) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value <= top:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to {top}, got {value}")
    return value


def unit_float(text: str) -> float:
    return non_negative_float(text, top=1.0)


def add_output_options(p: argparse.ArgumentParser, default_format: str | None, format_help: str) -> None:
    """``--format`` (a suffix nanolily writes, without aliases such as jpeg) and ``--quality``."""
    p.add_argument("--format", choices=sorted({s[1:] for s in WRITE_FORMATS} - {"jpeg", "tiff", "heif"}),
                   default=default_format, help=format_help)
    p.add_argument("--quality", type=quality, default=95,
                   help="JPEG/WebP/AVIF/HEIC quality 1-100 (default: %(default)s)")


def quality(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to 100, got {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def load_model_or_none(args):
    """The model the options ask for, or None after printing why it cannot be loaded."""
    from nanolily.models.weights import DeviceError, WeightsError, load_model

    try:
        return load_model(model_source(args), device=args.device, allow_pickle=args.allow_pickle)
    except DeviceError as e:  # a usage error: exit status 2, as argparse gives
        error(str(e))
        raise SystemExit(2) from None
    except (WeightsError, ValueError) as e:
        error(str(e))
        return None


def model_source(args) -> str | None:
    """What the model options name: a weights file, a shipped model, or None for the default."""
    return args.weights if args.weights is not None else args.model


def make_folder(target: Path) -> None:
    """Make the folder ``target`` goes in, and its parents; an :class:`ImageError` naming the file that
    stands in the way."""
    from nanolily.io.images import ImageError

    blocking = next((p for p in target.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise ImageError(target, f"cannot write here: {blocking} is a file, not a folder")
    target.parent.mkdir(parents=True, exist_ok=True)


def note(message: str) -> None:
    """One line of information on stderr, as ``note: ...``."""
    print(f"note: {message}", file=sys.stderr)


def error(message: str) -> None:
    """One line on stderr, written so it does not break a progress bar."""
    try:
        from tqdm import tqdm

        tqdm.write(f"error: {message}", file=sys.stderr)
    except ImportError:  # pragma: no cover
        print(f"error: {message}", file=sys.stderr)


@dataclass
class Job:
    source: Path
    target: Path


def has_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def expand_inputs(inputs: list[str], recursive: bool) -> tuple[list[tuple[Path, Path | None]], list[str], list[str]]:
    """Files named by INPUT arguments: (file, the folder it was found under or None), error lines, and
    notes on photos a folder holds in formats this installation cannot read (e.g. HEIC without the
    plugin), which are left out.

    Folders and globs yield image files (by extension), skipping our own ``*_lily.*`` outputs, and
    folders also hidden files and folders (a name starting with ``.``: macOS's ``._IMG_1.JPG`` metadata
    beside each photo on a memory card, ``.thumbnails/``); a file named explicitly is always taken, so a
    bad one is reported rather than silently skipped.
    """
    found: list[tuple[Path, Path | None]] = []
    errors: list[str] = []
    notes: list[str] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path == STDIO:
            found.append((STDIO, None))
        elif path.is_dir():
            pattern = "**/*" if recursive else "*"
            listed = [f for f in path.glob(pattern) if f.is_file()]
            everything = sorted(f for f in listed if not hidden(f.relative_to(path).as_posix()))
            files = [f for f in everything if _wanted(f)]
            if skipped := sum(1 for f in listed if _wanted(f)) - len(files):
                notes.append(f"{path}: skipped {skipped} hidden file{'s' * (skipped > 1)} (a name starting "
                             "with '.'; name such a file to enhance it)")
            unreadable = Counter(f.suffix.lower() for f in everything if missing_support(f.suffix))
            for suffix, count in sorted(unreadable.items()):
                notes.append(f"{path}: skipped {count} {suffix} file{'s' * (count > 1)}: {missing_support(suffix)}")
            other = Counter(f.suffix.lower() for f in everything
                            if f.suffix.lower() in _pillow_suffixes() and not _wanted(f) and not missing_support(f.suffix)
                            and not f.stem.endswith(OUTPUT_SUFFIX))
            for suffix, count in sorted(other.items()):
                notes.append(f"{path}: skipped {count} {suffix} file{'s' * (count > 1)} (not a photo format; "
                             "name such a file to enhance it)")
            if not recursive and (subfolders := sum(1 for d in path.iterdir() if d.is_dir())):
                notes.append(f"{path}: {subfolders} subfolder{'s' * (subfolders > 1)} not searched (use -r)")
            if not files:
                errors.append(f"{path}: no images in this folder" + ("" if recursive else " (use -r for subfolders)"))
            found += [(f, path) for f in files]
        elif path.is_file():
            found.append((path, None))
        elif has_glob(item):
            files = sorted(Path(f) for f in glob.glob(os.path.expanduser(item), recursive=True))
            files = [f for f in files if f.is_file() and _wanted(f)]
            if not files:
                errors.append(f"{item}: no images match this pattern")
            found += [(f, None) for f in files]
        else:
            errors.append(f"{path}: no such file or folder")
    unique = list(dict.fromkeys(found))
    return unique, errors, notes


def _pillow_suffixes() -> set[str]:
    from PIL import Image

    return set(Image.registered_extensions())


def _wanted(path: Path, videos: bool = True) -> bool:
    """Whether a folder's file is one to enhance: a photo (or, with ``videos``, a video) by extension,
    not one of our own ``*_lily.*`` outputs."""
    return ((path.suffix.lower() in READ_SUFFIXES or videos and is_video(path))
            and not path.stem.endswith(OUTPUT_SUFFIX))


def wanted_photo(relative: str) -> bool:
    """Whether a ``/``-separated path under a folder is a photo that folder yields (``--ray``'s listing):
    a photo by extension, neither hidden nor one of our outputs, as :func:`expand_inputs` lists them."""
    return _wanted(PurePosixPath(relative), videos=False) and not hidden(relative)


def hidden(relative: str) -> bool:
    """Whether a ``/``-separated path under a folder is hidden: a file or folder on it starts with ``.``."""
    return any(part.startswith(".") for part in relative.split("/"))


def kept_apart(pairs: list[tuple[str, str]]) -> list[bool]:
    """For ``(input, output)`` paths: which outputs to rename apart. An output that several inputs share
    (compared ignoring case, as macOS and Windows do) is renamed for each input whose extension differs
    from the output's (see :func:`plan_jobs`).

    >>> kept_apart([("a/b.gif", "o/b.png"), ("a/b.png", "o/b.png"), ("a/c.jpg", "o/c.jpg")])
    [True, False, False]
    """
    shared = Counter(target.casefold() for _, target in pairs)
    suffix = lambda path: os.path.splitext(path)[1].lower()  # noqa: E731
    return [shared[target.casefold()] > 1 and suffix(source) != suffix(target) for source, target in pairs]


def is_video(path: Path) -> bool:
    return path != STDIO and path.suffix.lower() in VIDEO_SUFFIXES


def plan_jobs(files: list[tuple[Path, Path | None]], output: str | None, fmt: str | None) -> list[Job]:
    """Where each input goes. ``output`` with an image extension and one input: that file; ``-`` (or
    no ``output`` for standard input): standard output, one input only; otherwise a folder (made if
    needed), mirroring subfolders of a folder input; no ``output``: ``<stem>_lily.<ext>`` beside each
    input. ``fmt`` (an extension) replaces the input's extension, as does a 16-bit TIFF for a camera RAW
    file and PNG for other formats nanolily reads but does not write (e.g. GIF, standard input).

    Inputs that would share an output (``night.gif`` and ``night.png`` into PNG, or any two stems with
    ``--format``) keep apart: each whose own extension differs from the output's gets it in its name,
    ``night_gif.png`` (``night_gif_lily.png`` beside it); names are compared ignoring case, as macOS and
    Windows do."""
    suffix = (lambda src: output_suffix(src) if is_video(src) else "." + fmt) if fmt else output_suffix
    to_stdout = output == str(STDIO) or (output is None and any(source == STDIO for source, _ in files))
    single_file = (output is not None and not Path(output).is_dir()
                   and (Path(output).suffix.lower() in WRITE_FORMATS or is_video(Path(output))))
    if to_stdout or single_file:
        if len(files) != 1:
            where = "standard output takes" if to_stdout else f"-o {output} names"
            raise ValueError(f"{where} one image, but there are {len(files)} inputs; give a folder with -o")
        return [Job(files[0][0], STDIO if to_stdout else Path(output))]

    def target(source: Path, base: Path | None, tag: str = "") -> Path:
        if source == STDIO:
            return Path(output) / ("stdin" + suffix(source))
        if output is None:
            return source.with_name(source.stem + tag + OUTPUT_SUFFIX + suffix(source))
        relative = source.relative_to(base) if base is not None else Path(source.name)
        return Path(output) / relative.with_name(relative.stem + tag + suffix(source))

    jobs = [Job(source, target(source, base)) for source, base in files]
    apart = kept_apart([(str(job.source), str(job.target)) for job in jobs])
    return [Job(source, target(source, base, "_" + source.suffix[1:].lower())) if renamed else job
            for (source, base), job, renamed in zip(files, jobs, apart)]


def output_suffix(source: Path) -> str:
    """The extension of the output for ``source`` when none is asked for: the input's where nanolily
    writes that format."""
    if source.suffix.lower() in WRITE_FORMATS:
        return source.suffix
    if is_video(source):  # H.264 goes in MP4, MOV and MKV; other containers become MP4
        return source.suffix if source.suffix.lower() in (".mp4", ".mov", ".m4v", ".mkv") else ".mp4"
    return RAW_OUTPUT_SUFFIX if source.suffix.lower() in RAW_SUFFIXES else ".png"


def check_mode_option(args, model) -> None:
    """Exit with a usage error (status 2) when ``--mode`` cannot run ``model`` (bloom with nanolily-v2)."""
    from nanolily.engine.pipeline import check_mode

    try:
        check_mode(model, args.mode)
    except ValueError as e:
        args.parser.error(f"--{e}")


def run_figure_verb(args, suffix: str, make_figure, load=None) -> int:
    """The flow shared by the figure verbs: read INPUT, load the model (``load(args)``, by default the one
    the model options name; None: it printed why not), write ``make_figure(photo, model)`` to -o (default
    ``<stem>_<suffix>.png`` beside INPUT) and print its path."""
    from nanolily.io.images import ImageError, pil_to_photo, read_image, write_image

    source = Path(args.input)
    target = Path(args.output) if args.output else source.with_name(f"{source.stem}_{suffix}.png")
    try:
        if target.exists() and not args.overwrite:
            raise ImageError(target, "already exists (use --overwrite to replace it)")
        photo = read_image(source, max_pixels=getattr(args, "max_pixels", DEFAULT_MAX_PIXELS))
    except ImageError as e:
        error(str(e))
        return 1
    model = (load or load_model_or_none)(args)
    if model is None:
        return 1
    try:
        write_image(target, pil_to_photo(make_figure(photo, model)), overwrite=args.overwrite)
    except ImageError as e:
        error(str(e))
        return 1
    print(target)
    return 0
