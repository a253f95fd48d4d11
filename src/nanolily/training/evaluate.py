"""Evaluation on paired test sets: per-image metrics, a summary, and a markdown table.

Protocols:
    full       (default, the honest one) every image at its own resolution, the model run in the chosen
               mode (bloom or core), outputs clamped to [0, 1], metrics per image, then averaged.
    resize224  the original NanoLILY measurement: low and reference images resized to 224x224, one
               forward pass, outputs not clamped, and PSNR from MSEs pooled within batches: over
               batches of ``pool_batch`` images (``psnr_batch_pooled``; the original does not state
               its evaluation batch, 32 is its training batch) and over all images (``psnr_pooled``),
               beside the per-image mean (``psnr``). Only comparable with itself.

Metrics (all fp32): PSNR; SSIM (Gaussian 11x11, sigma 1.5, per RGB channel, data range 1, valid region);
LPIPS (AlexNet, v0.1); and the original's loss terms as metrics: VGG19 relu3_4 perceptual MSE,
Charbonnier, FFT amplitude L1, colour (1 - cosine of RGB vectors), TV of the output. And, labelled
apart, ``psnr_gt_mean`` / ``ssim_gt_mean``: PSNR and SSIM after the output's mean grey level is matched
to the reference's (:func:`nanolily.training.metrics.gt_mean_match`, the literature's "GT-mean" protocol), which
separate exposure from everything else; ``brightness_ratio``, the output's mean grey level over the
reference's.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import torch

from nanolily.training import losses
from nanolily.engine.bloom import resize
from nanolily.io.images import READ_SUFFIXES, read_image
from nanolily.training.data import DatasetError, Pair, expose_linear, jpeg_roundtrip, load_rgb_uint8
from nanolily.engine.pipeline import enhance_tensor
from nanolily.training.metrics import LPIPS, batch_pooled_psnr, gt_mean_match, mean_grey, psnr, ssim
from nanolily.models.v1 import NanoLILY

PROTOCOLS = ("full", "resize224")
POOL_BATCH = 32  # resize224's batch for batch-pooled PSNR: the original's training batch


def to_float(image: torch.Tensor) -> torch.Tensor:
    return image.float()[None] / 255  # (1, 3, H, W)


def _in_fp32(corrections: dict | None) -> dict:
    """``corrections`` for :func:`enhance_tensor`, in fp32 unless they name a ``precision``: figures must
    not depend on the CPU they were measured on."""
    return {"precision": "fp32"} | (corrections or {})


@torch.inference_mode()
def evaluate(model: NanoLILY, pairs: list[Pair], mode: str = "bloom", protocol: str = "full", stride: int = 112,
             lpips: LPIPS | None = None, vgg: losses.VGGPerceptual | None = None,
             progress: bool = False, corrections: dict | None = None,
             exposure: float = 1.0, pool_batch: int = POOL_BATCH, jpeg: int | None = None,
             exposure_bits: int | None = None) -> tuple[list[dict], dict]:
    """Metrics per image and their summary for ``model`` on ``pairs``; ``corrections`` are keyword
    arguments of :func:`enhance_tensor` (default: its defaults, i.e. what ``nanolily enhance`` does, but
    in fp32 whatever the hardware unless they name a ``precision``).
    ``exposure`` re-exposes each low image by that factor in linear light first (the reference
    unchanged; :func:`nanolily.training.data.expose_linear`): how a model copes with darker or brighter captures;
    ``exposure_bits`` (8 or 16) rounds the re-exposed image to that many bits, as a file of that capture
    holds it (in float, a darker re-exposure loses nothing that a lift before the network could not
    give back).
    ``jpeg`` (a quality, 1..100) then re-encodes each low image as a JPEG
    (:func:`nanolily.training.data.jpeg_roundtrip`): how it copes with compressed captures.

    Returns:
        (rows, summary): one dict per image (``id`` and each metric) and a dict of means plus the
        protocol, mode and image count (and ``psnr_pooled``, ``psnr_batch_pooled`` and ``pool_batch``
        under resize224).
    """
    from tqdm.auto import tqdm

    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if pool_batch < 1:
        raise ValueError(f"pool_batch must be >= 1, got {pool_batch}")
    rows, squared_errors = [], []
    for pair in tqdm(pairs, desc=f"evaluate ({protocol}, {mode})", unit="img", disable=not progress):
        low, high = to_float(load_rgb_uint8(pair.low)), to_float(load_rgb_uint8(pair.high))
        if exposure != 1:
            low = expose_linear(low, exposure)
            if exposure_bits:
                top = (1 << exposure_bits) - 1
                low = low.mul_(top).round_().div_(top)
        if jpeg:  # the capture as a camera saves it: exposed first, then compressed
            low = jpeg_roundtrip(low[0], jpeg)[None]
        if protocol == "full":
            out = enhance_tensor(low, model, mode=mode, stride=stride, **_in_fp32(corrections))
        else:
            low, high = resize(low, (224, 224)), resize(high, (224, 224))
            out = model(low.to(next(model.parameters()).device)).cpu()  # unclamped, as the original measured
        row = {"id": pair.id, "height": int(high.shape[-2]), "width": int(high.shape[-1])}
        row.update(image_metrics(out, high, lpips, vgg))
        rows.append(row)
        squared_errors.append(float((out - high).pow(2).mean()))
    summary = {"protocol": protocol, "mode": mode if protocol == "full" else "resize224 forward",
               "stride": stride if protocol == "full" and mode == "bloom" else None, "images": len(rows)}
    if exposure != 1:
        summary["exposure"] = exposure
        summary["exposure_bits"] = exposure_bits
    if jpeg:
        summary["jpeg"] = jpeg
    summary.update(_means(rows))
    if protocol == "resize224":  # every image is 224x224, so per-image MSEs pool like pixels
        summary["psnr_pooled"] = batch_pooled_psnr(squared_errors)
        summary["psnr_batch_pooled"] = batch_pooled_psnr(squared_errors, pool_batch)
        summary["pool_batch"] = pool_batch
    return rows, summary


def find_predictions(pairs: list[Pair], folder: str | os.PathLike) -> dict[str, Path]:
    """Each pair's output image in ``folder``: the file named by the pair's id, its low image's or its
    reference's name (any image extension; e.g. ``1.png``, ``low00690.png`` or ``normal00690.jpg``).

    Raises :class:`~nanolily.training.data.DatasetError` naming the ids without one, or with two.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder does not exist")
    by_stem: dict[str, list[Path]] = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in READ_SUFFIXES:
            by_stem.setdefault(f.stem, []).append(f)
    found, missing, twice = {}, [], []
    for pair in pairs:
        names = dict.fromkeys((pair.id, pair.low.stem, pair.high.stem))  # in order, without repeats
        files = [f for name in names for f in by_stem.get(name, [])]
        if not files:
            missing.append(pair.id)
        elif len(files) > 1:
            twice.append(f"{pair.id} ({', '.join(f.name for f in files)})")
        else:
            found[pair.id] = files[0]
    if missing:
        raise DatasetError(f"{folder}: no output image for {len(missing)} of {len(pairs)} ids "
                           f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); name each by its id "
                           f"or its low image's name")
    if twice:
        raise DatasetError(f"{folder}: more than one output image for {', '.join(twice[:3])}")
    return found


@torch.inference_mode()
def evaluate_predictions(pairs: list[Pair], folder: str | os.PathLike, lpips: LPIPS | None = None,
                         vgg: losses.VGGPerceptual | None = None,
                         progress: bool = False) -> tuple[list[dict], dict]:
    """:func:`evaluate`'s metrics and summary for images another method already made (:func:`find_predictions`
    finds them), read at their own bit depth, against the references at full resolution: any low-light
    method measured exactly as nanolily's models are. An output of another size than its reference is an
    error (:class:`~nanolily.training.data.DatasetError`)."""
    from tqdm.auto import tqdm

    files = find_predictions(pairs, folder)
    rows = []
    for pair in tqdm(pairs, desc="evaluate (predictions)", unit="img", disable=not progress):
        high = to_float(load_rgb_uint8(pair.high))
        photo = read_image(files[pair.id])
        if photo.size != (high.shape[-1], high.shape[-2]):
            raise DatasetError(f"{files[pair.id]}: {photo.size[0]}x{photo.size[1]}, but its reference "
                               f"{pair.high.name} is {high.shape[-1]}x{high.shape[-2]}")
        out = torch.from_numpy(photo.pixels).permute(2, 0, 1)[None].expand(-1, 3, -1, -1)  # (1, 3, H, W)
        rows.append({"id": pair.id, "height": int(high.shape[-2]), "width": int(high.shape[-1]),
                     **image_metrics(out, high, lpips, vgg)})
    return rows, {"protocol": "full", "mode": "predictions", "stride": None, "images": len(rows)} | _means(rows)


def _means(rows: list[dict]) -> dict[str, float]:
    """Each metric's mean over the images."""
    names = [k for k in rows[0] if k not in ("id", "height", "width")] if rows else []
    return {k: sum(r[k] for r in rows) / len(rows) for k in names}


def image_metrics(out: torch.Tensor, ref: torch.Tensor, lpips: LPIPS | None = None,
                  vgg: losses.VGGPerceptual | None = None) -> dict[str, float]:
    """All metrics for one (1, 3, H, W) output against its reference."""
    m = {"psnr": float(psnr(out, ref)), "ssim": float(ssim(out, ref))}
    matched = gt_mean_match(out.clamp(0, 1), ref)
    m["psnr_gt_mean"], m["ssim_gt_mean"] = float(psnr(matched, ref)), float(ssim(matched, ref))
    m["brightness_ratio"] = float(mean_grey(out.clamp(0, 1)) / mean_grey(ref))  # > 1: brighter than the reference
    if lpips is not None:
        m["lpips"] = float(lpips(out.clamp(0, 1), ref))
    if vgg is not None:
        m["vgg"] = float(vgg(out, ref))
    m["charbonnier"] = float(losses.charbonnier(out, ref))
    m["fft"] = float(losses.fft_amplitude(out, ref))
    m["color"] = float(losses.color(out, ref))
    m["tv"] = float(losses.tv(out))
    return m


def write_report(out_dir: str | os.PathLike, rows: list[dict], summary: dict, title: str) -> dict[str, Path]:
    """per_image.csv, summary.json and summary.md in ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "per_image.csv", "json": out / "summary.json", "md": out / "summary.md"}
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    paths["json"].write_text(json.dumps({"title": title, **summary}, indent=2))
    paths["md"].write_text(markdown_table([(title, summary)]))
    return paths


def markdown_table(results: list[tuple[str, dict]]) -> str:
    """A markdown table with one row per (name, summary); the VGG feature distance stays in the JSON."""
    columns = ["psnr", "psnr_batch_pooled", "psnr_pooled", "ssim", "lpips", "charbonnier", "fft", "color", "tv",
               "psnr_gt_mean", "ssim_gt_mean"]
    columns = [c for c in columns if any(c in s for _, s in results)]
    lines = ["| run | protocol | mode | images | " + " | ".join(columns) + " |",
             "|---|---|---|---|" + "---|" * len(columns)]
    for name, s in results:
        cells = [("" if c not in s else f"{s[c]:.2f}" if c.startswith("psnr") else f"{s[c]:.4f}") for c in columns]
        mode = s["mode"] + (f", stride {s['stride']}" if s.get("stride") else "")
        lines.append(f"| {name} | {s['protocol']} | {mode} | {s['images']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_gallery(model: NanoLILY, pairs: list[Pair], ids: list[str], out_dir: str | os.PathLike,
                  mode: str = "bloom", stride: int = 112, corrections: dict | None = None) -> list[Path]:
    """Input | Output | Target triptychs (PNG) for the chosen ids."""
    from nanolily.io.figures import side_by_side, tensor_to_pil

    by_id = {p.id: p for p in pairs}
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise ValueError(f"gallery ids not in the evaluated set: {unknown}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i in ids:
        low, high = to_float(load_rgb_uint8(by_id[i].low)), to_float(load_rgb_uint8(by_id[i].high))
        with torch.inference_mode():
            result = enhance_tensor(low, model, mode=mode, stride=stride, **_in_fp32(corrections))
        score = float(psnr(result, high))
        figure = side_by_side([(f"Input {i}", tensor_to_pil(low)),
                               (f"Output ({mode}) {score:.2f} dB", tensor_to_pil(result)),
                               ("Target", tensor_to_pil(high))])
        path = out / f"{i}.png"
        figure.save(path)
        written.append(path)
    return written
