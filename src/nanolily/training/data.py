"""Paired low-light datasets: finding pairs in the published layouts, RAM caching, augmentation, and the
leakage guard that compares training and test images by content.

Layouts (``root`` is the folder named in the first column):

=========  ==========================================================================
lol-v1     ``root/{our485|eval15}/{low,high}/<id>.*``          (subset: our485, eval15)
lol-v2     ``root/{Train,Test}/{Low,Normal}/[low|normal]<id>.*`` (subset: Train, Test; root: LoL-v2's
           Real_captured or Synthetic)
pair       ``root/low/<id>.*`` + ``root/high/<id>.*`` (e.g. LSRW's Huawei and Nikon folders)
=========  ==========================================================================

Folder names are compared ignoring case, and the two image folders may also be named as other paired
sets name them (:data:`LOW_NAMES`, :data:`HIGH_NAMES`: ``input``, ``normal``, ``gt``, ...). Pairs are
matched by id with any image extension; a split file lists one id per line.
"""

from __future__ import annotations

import io
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from nanolily.io.images import READ_SUFFIXES, read_image, to_uint
from nanolily.training.metrics import to_grey
from nanolily.engine.corrections import linear_to_srgb, srgb_to_linear
from nanolily.training.synthesis import paste_light

LAYOUTS = ("lol-v1", "lol-v2", "pair")
DATA_ENV = "NANOLILY_DATA"


class DatasetError(ValueError):
    """A dataset that cannot be used as asked; the message names the folder and what is wrong."""


@dataclass(frozen=True)
class Pair:
    id: str
    low: Path
    high: Path


@dataclass
class DatasetSpec:
    """Where a paired set lives: ``path`` is relative to the data root unless absolute.

    ``ids`` keeps the numeric ids in an inclusive range (``"690-789"``) of the split; ``repeat`` lists
    each pair that many times, so a training config can show part of a pool more often.
    """

    layout: str
    path: str
    subset: str | None = None
    split: str | None = None
    ids: str | None = None
    repeat: int = 1

    def __post_init__(self):
        if self.ids is not None:
            self.id_range()
        if not (isinstance(self.repeat, int) and self.repeat >= 1):
            raise ValueError(f"repeat must be a whole number >= 1, got {self.repeat!r}")

    def id_range(self) -> tuple[int, int]:
        match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", str(self.ids))
        if not match or int(match[1]) > int(match[2]):
            raise ValueError(f"ids must be an inclusive range of numeric ids like '690-789', got {self.ids!r}")
        return int(match[1]), int(match[2])


def data_root(option: str | os.PathLike | None) -> Path:
    """The data root from a CLI option, else ``$NANOLILY_DATA``; an error if neither is set."""
    value = option or os.environ.get(DATA_ENV)
    if not value:
        raise DatasetError(f"no data folder: pass --data DIR or set {DATA_ENV} "
                           "(e.g. ../shared/datasets, holding lol-v1/ and lol-v2-real/)")
    root = Path(value).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: data folder does not exist")
    return root


# the names paired datasets give their two folders (compared ignoring case): LoL's, LSRW's, FiveK-style
LOW_NAMES = ("low", "input", "dark")
HIGH_NAMES = ("high", "normal", "gt", "target", "reference", "expert")


def _child(folder: Path, names: tuple[str, ...]) -> Path | None:
    """The subfolder of ``folder`` with the first of ``names`` (ignoring case), or None."""
    found = {p.name.lower(): p for p in folder.iterdir() if p.is_dir()} if folder.is_dir() else {}
    return next((found[n] for n in names if n in found), None)


def _folders(root: Path, layout: str, subset: str | None) -> tuple[Path, Path, str, str]:
    """(low folder, high folder, low name prefix, high name prefix). A prefix is stripped where a name
    has it: LoL-v2-real's files are ``low00690.png`` / ``normal00690.png``, LoL-v2-synthetic's share one
    name."""
    if layout == "lol-v1":
        sub = root / (subset or "our485")
        prefixes = ("", "")
    elif layout == "lol-v2":
        sub = root / (subset or "Train")
        prefixes = ("low", "normal")
    elif layout == "pair":
        sub = root
        prefixes = ("", "")
    else:
        raise DatasetError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    low, high = _child(sub, LOW_NAMES), _child(sub, HIGH_NAMES)
    for folder, names in ((low, LOW_NAMES), (high, HIGH_NAMES)):
        if folder is None:
            raise DatasetError(f"{sub / names[0]}: folder does not exist (nor {', '.join(names[1:])}, in any case)")
    return low, high, *prefixes


def _index(folder: Path, prefix: str) -> dict[str, Path]:
    found = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in READ_SUFFIXES:
            key = f.stem[len(prefix):] if prefix and f.stem.lower().startswith(prefix) else f.stem
            if key in found:
                raise DatasetError(f"{folder}: id {key!r} appears twice ({found[key].name}, {f.name})")
            found[key] = f
    return found


def read_split(path: str | os.PathLike) -> list[str]:
    """Ids in a split file: one per line; blank lines and ``#`` comments ignored."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise DatasetError(f"{path}: cannot read split file ({e.strerror or e})") from None
    return [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]


def find_pairs(root: str | os.PathLike, layout: str, subset: str | None = None,
               split: str | os.PathLike | None = None) -> list[Pair]:
    """All (low, high) pairs of a dataset folder, sorted by id, optionally restricted to a split.

    Raises :class:`DatasetError` listing ids whose partner is missing, or split ids that are absent.
    """
    low_dir, high_dir, low_prefix, high_prefix = _folders(Path(root), layout, subset)
    lows, highs = _index(low_dir, low_prefix), _index(high_dir, high_prefix)
    if set(lows) ^ set(highs):
        raise DatasetError(
            f"{root}: unpaired images: low without high {_ids(set(lows) - set(highs))}, "
            f"high without low {_ids(set(highs) - set(lows))}")
    ids = sorted(lows, key=_id_key)
    if split is not None:
        wanted = read_split(split)
        absent = [i for i in wanted if i not in lows]
        if absent:
            raise DatasetError(f"{split}: {len(absent)} ids not found in {low_dir}: {_ids(absent)}")
        ids = wanted
    if not ids:
        raise DatasetError(f"{low_dir}: no images")
    return [Pair(i, lows[i], highs[i]) for i in ids]


SUBSETS = {"lol-v1": ("our485", "eval15"), "lol-v2": ("Train", "Test"), "pair": (None,)}


def detect_layout(root: str | os.PathLike) -> str:
    """The layout of a dataset folder, from the names of its subfolders."""
    root = Path(root)
    names = {p.name for p in root.iterdir()} if root.is_dir() else set()
    if names & {"our485", "eval15"}:
        return "lol-v1"
    if names & {"Train", "Test"}:
        return "lol-v2"
    if _child(root, LOW_NAMES) and _child(root, HIGH_NAMES):
        return "pair"
    hint = (f" (LoL-v2 holds two datasets: give {root / 'Real_captured'} or {root / 'Synthetic'})"
            if names & {"Real_captured", "Synthetic"} else "")
    raise DatasetError(f"{root}: not a known dataset layout (expected our485/ or eval15/, Train/ or Test/, "
                       f"or low/ + high/){hint}")


def all_pairs(root: str | os.PathLike, layout: str | None = None, split: str | os.PathLike | None = None) -> list[Pair]:
    """Pairs of every subset present (e.g. our485 and eval15), for checks over a whole dataset copy."""
    root = Path(root)
    layout = layout or detect_layout(root)
    present = [s for s in SUBSETS[layout] if s is None or (root / s).is_dir()]
    pairs = [p for s in present for p in find_pairs(root, layout, s)]
    if split is not None:
        wanted = set(read_split(split))
        pairs = [p for p in pairs if p.id in wanted]
    return pairs


def pairs_from_spec(root: Path, spec: DatasetSpec) -> list[Pair]:
    path = Path(spec.path) if Path(spec.path).is_absolute() else root / spec.path
    split = None if spec.split is None else (Path(spec.split) if Path(spec.split).is_absolute() else root / spec.split)
    pairs = find_pairs(path, spec.layout, spec.subset, split)
    if spec.ids is not None:
        lo, hi = spec.id_range()
        pairs = [p for p in pairs if p.id.isdigit() and lo <= int(p.id) <= hi]
        if not pairs:
            raise DatasetError(f"{path}: no ids in {spec.ids}" + (f" in split {split}" if split else ""))
    return pairs * spec.repeat


def _id_key(i: str):
    return (0, int(i), i) if i.isdigit() else (1, 0, i)


def _ids(ids) -> str:
    ids = sorted(ids, key=_id_key)
    return "[" + ", ".join(ids[:20]) + (f", ... ({len(ids)} in all)" if len(ids) > 20 else "") + "]"


def load_rgb_uint8(path: Path) -> torch.Tensor:
    """(3, H, W) uint8 tensor of an image (grayscale replicated)."""
    photo = read_image(path)
    pixels = np.repeat(photo.pixels, 3, axis=2) if photo.is_grayscale else photo.pixels
    return torch.from_numpy(to_uint(pixels, 8)).permute(2, 0, 1).contiguous()


class PairedImages:
    """Decoded pairs cached in RAM as uint8, with the augmentations used in training.

    ``crop``: ``"random"`` (a ``size x size`` crop at full resolution, the view Bloom gives the model),
    ``"resize"`` (the whole image resized to ``size x size``, the original's training view),
    ``"mixed"`` (resize with probability ``resize_prob``, else random crop) or ``"full"`` (the whole
    image at full resolution, ``size`` unused: the view a whole-image model gets in inference, its
    global statistics included; 90-degree rotations only by 180 degrees unless the image is square, so
    a batch needs images of one size).
    """

    def __init__(self, pairs: list[Pair], progress: bool = False):
        from tqdm.auto import tqdm

        self.pairs = pairs
        self.low, self.high = [], []
        decoded = {}  # a pair listed several times (DatasetSpec.repeat) is held once
        for p in tqdm(pairs, desc="loading images", unit="pair", disable=not progress, leave=False):
            if p not in decoded:
                low, high = load_rgb_uint8(p.low), load_rgb_uint8(p.high)
                if low.shape != high.shape:
                    raise DatasetError(f"{p.low}: size {tuple(low.shape[1:])} differs from its reference "
                                       f"{p.high} {tuple(high.shape[1:])}")
                decoded[p] = low, high
            self.low.append(decoded[p][0])
            self.high.append(decoded[p][1])

    def __len__(self) -> int:
        return len(self.pairs)

    def full(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(low, high) as (3, H, W) float tensors in [0, 1]."""
        return self.low[index].float() / 255, self.high[index].float() / 255

    def sample(self, index: int, generator: torch.Generator, size: int = 224, crop: str = "random",
               resize_prob: float = 0.5, flips: bool = True, rot90: bool = True,
               exposure: tuple[float, float] | None = None,
               zoom: tuple[float, float] | None = None,
               identity: float = 0.0, identity_exposure: tuple[float, float] | None = None,
               gray: float = 0.0, lights: float = 0.0, jpeg: float = 0.0,
               jpeg_quality: tuple[int, int] = (60, 95)) -> tuple[torch.Tensor, torch.Tensor]:
        """One augmented training view of pair ``index``: (low, high), each (3, size, size) in [0, 1].

        ``zoom=(lo, hi)`` (random crops only) takes a ``size / z`` square and resizes it to ``size``, ``z``
        drawn log-uniformly from [lo, hi]: factors above 1 show the scene as a larger photo would (each
        object over more pixels, the crop holding less of the scene).

        ``exposure=(lo, hi)`` scales the low image's exposure by a factor drawn log-uniformly from [lo, hi]
        in linear light (the reference is unchanged): factors below 1 show the model darker captures
        than the dataset's, above 1 brighter ones, so it learns the reference's brightness from the
        scene rather than from the input's level.

        ``identity``: the probability that the input is the reference itself (no exposure change), so the
        model learns to leave a photo that is already well lit as it is; ``identity_exposure=(lo, hi)``
        re-exposes such a view (input and target alike) by a log-uniform factor, so that a dim but well
        exposed photo also stays as it is.

        ``gray``: the probability that the view is turned grey (BT.601 luma in all three channels, input
        and target alike), so a grayscale photo is lit as its colour version would be.

        ``lights``: the probability that a light source is pasted into the view, input and target alike
        (:func:`~nanolily.training.synthesis.paste_light`), so the dark around a lamp is lifted as the dark
        elsewhere is, without a halo.

        ``jpeg``: the probability that the input is saved as a JPEG of a quality drawn uniformly from
        ``jpeg_quality`` (:func:`jpeg_roundtrip`; the target stays lossless), so the model learns not to
        lift compression's blocks and ringing with the shadows.
        """
        low, high = self.low[index], self.high[index]
        if crop == "mixed":
            crop = "resize" if torch.rand((), generator=generator).item() < resize_prob else "random"
        pair = torch.stack([low, high]).float() / 255  # (2, 3, H, W)
        if crop == "resize":
            pair = F.interpolate(pair, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        elif crop == "full":
            pass
        elif crop == "random":
            side = size if zoom is None else max(1, round(size / _log_uniform(zoom, generator)))
            h, w = pair.shape[-2:]
            if h < side or w < side:
                scale = side / min(h, w)
                pair = F.interpolate(pair, size=(math.ceil(h * scale), math.ceil(w * scale)), mode="bilinear",
                                     align_corners=False, antialias=True)
                h, w = pair.shape[-2:]
            y = int(torch.randint(0, h - side + 1, (), generator=generator))
            x = int(torch.randint(0, w - side + 1, (), generator=generator))
            pair = pair[..., y:y + side, x:x + side]
            if side != size:
                pair = F.interpolate(pair, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        else:
            raise ValueError(f"crop must be 'random', 'resize', 'mixed' or 'full', got {crop!r}")
        if flips and torch.rand((), generator=generator).item() < 0.5:
            pair = pair.flip(-1)
        if flips and torch.rand((), generator=generator).item() < 0.5:
            pair = pair.flip(-2)
        if rot90:
            k = int(torch.randint(0, 4, (), generator=generator))
            if pair.shape[-2] != pair.shape[-1]:
                k = 2 * (k % 2)  # a quarter turn would change the shape of a full-size view
            pair = torch.rot90(pair, k, dims=(-2, -1))
        if gray and torch.rand((), generator=generator).item() < gray:
            pair = to_grey(pair)
        low, high = pair[0], pair[1]
        if identity and torch.rand((), generator=generator).item() < identity:
            if identity_exposure is not None:
                high = expose_linear(high, _log_uniform(identity_exposure, generator))
            low = high
        elif exposure is not None:
            low = expose_linear(low, _log_uniform(exposure, generator))
        if lights and torch.rand((), generator=generator).item() < lights:
            low, high = paste_light(low, high, generator)
        if jpeg and torch.rand((), generator=generator).item() < jpeg:
            quality = int(torch.randint(jpeg_quality[0], jpeg_quality[1] + 1, (), generator=generator))
            low = jpeg_roundtrip(low, quality)
        return low.contiguous(), high.contiguous()


def _log_uniform(bounds: tuple[float, float], generator: torch.Generator) -> float:
    lo, hi = bounds
    u = float(torch.rand((), generator=generator))
    return math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))


def expose_linear(image: torch.Tensor, factor: float) -> torch.Tensor:
    """Scale an sRGB image's exposure by ``factor`` in linear light, clipped to [0, 1] (a longer or
    shorter capture of the same scene, noise aside)."""
    return linear_to_srgb(srgb_to_linear(image) * factor)


def jpeg_roundtrip(image: torch.Tensor, quality: int) -> torch.Tensor:
    """A (3, H, W) image in [0, 1] as saved in a JPEG at ``quality`` (8 bits, Pillow's defaults otherwise:
    4:2:0 chroma subsampling, as most cameras and phones save) and decoded again: a compressed capture.

    Example:
        >>> image = torch.linspace(0, 0.2, 48).expand(3, 32, 48)  # a smooth ramp: little to lose
        >>> saved = jpeg_roundtrip(image, 75)
        >>> saved.shape, bool((saved - image).abs().max() < 0.02)
        (torch.Size([3, 32, 48]), True)
    """
    buffer = io.BytesIO()
    pixels = image.mul(255).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return torch.from_numpy(np.array(Image.open(buffer).convert("RGB"))).permute(2, 0, 1).float().div_(255)


# --- leakage guard ------------------------------------------------------------------------------------

THUMB = 16
SAME_IMAGE_PSNR = 40.0  # dB; a JPEG q90 re-encode of a LoL image is ~43 dB from the original


def thumbnail(image: torch.Tensor) -> np.ndarray:
    """16x16 area-averaged luminance of a (3, H, W) uint8 image, in [0, 1]."""
    img = image.float() / 255
    luma = (0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2])[None, None]
    return F.adaptive_avg_pool2d(luma, THUMB)[0, 0].numpy()


def find_overlaps(train: list[Pair], test: list[Pair], min_psnr: float = SAME_IMAGE_PSNR,
                  progress: bool = False) -> list[tuple[str, str, str]]:
    """(train id, test id, "low" or "high") for every training image with the same content as a test image.

    Content, not names: two images match when they have the same size and a PSNR of at least
    ``min_psnr`` between them, so re-encoded copies (PNG, lossless WebP, high-quality JPEG) match.
    Thumbnails pick the candidates first. Low images are compared with low images and references with
    references; a shared reference means the same scene (another exposure of a test scene), which is
    leakage too.
    """
    from functools import lru_cache

    from tqdm.auto import tqdm

    from nanolily.training.metrics import psnr

    overlaps = []
    for kind in ("low", "high"):
        load = lru_cache(maxsize=None)(load_rgb_uint8)
        thumbs_a = np.stack([thumbnail(load(getattr(p, kind))) for p in
                             tqdm(train, desc=f"leakage guard ({kind})", disable=not progress, leave=False)])
        for b in test:
            image_b = load(getattr(b, kind))
            diff = np.abs(thumbs_a - thumbnail(image_b)).reshape(len(train), -1).max(axis=1)
            for i in np.nonzero(diff < 2 / 255)[0]:
                image_a = load(getattr(train[i], kind))
                if image_a.shape == image_b.shape and float(psnr(image_a[None] / 255.0, image_b[None] / 255.0)) >= min_psnr:
                    overlaps.append((train[i].id, b.id, kind))
        load.cache_clear()
    return overlaps
