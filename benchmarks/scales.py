"""Does a model hold up on photos larger than its training data? PSNR/SSIM at 1x, 2x and 4x.

    python benchmarks/scales.py --data ../shared/datasets --models nanolily-v1 nanolily-v2 [--test]

Writes docs/scales.md and benchmarks/results/scales.json and prints the table.

The models learn from LoL images (600x400); photographers bring 12-50 MP. Upscaling a pair (bicubic,
the low image and its reference alike) keeps the scene and its exposure and makes every structure
2x or 4x larger in pixels: what a model sees in a bigger photo of the same scene. Each model runs in
global mode (the whole image, one pass), the network's output without corrections, so the figures
isolate the network. The validation split (lol-v1-val) is the one to compare models on; `--test` adds
LoL-v2-real test (every 4th image at 4x), reported only. A second table has the same pairs at half the
side and at 224x224 (smaller photos).

`--analysis` says at what scale nanolily-v2 reads a photo's light: `native` (its own 1/4 at every size,
the network as trained; the default here, and the scale guard's) or a pixel count P (the engine's scale
matching, `nanolily.models.v2.analysis_factor`: a photo of more than about P pixels pooled further), each
its own row. `python benchmarks/scales.py --models nanolily-v2 --analysis 240000 540000 960000 --add`
chose the engine's P on validation.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from nanolily.engine.bloom import resize
from nanolily.training.data import all_pairs, find_pairs, load_rgb_uint8
from nanolily.engine.pipeline import NO_CORRECTIONS, enhance_tensor, strip_rows
from nanolily.training.evaluate import image_metrics, to_float
from nanolily.models.v2 import analysis_factor
from nanolily.models.weights import load_model

from exposure import model_label  # benchmarks/exposure.py

ROOT = Path(__file__).resolve().parents[1]
SCALES = (1, 2, 4)
SMALLER = {"x0.5": None, "224x224": (224, 224)}  # half the side (anti-aliased), the original's 224x224
COLUMNS = ("psnr", "ssim", "brightness_ratio")


def upscale(image: torch.Tensor, scale: int) -> torch.Tensor:
    """(1, 3, H, W) -> (1, 3, scale*H, scale*W), bicubic, clamped to [0, 1]."""
    if scale == 1:
        return image
    return F.interpolate(image, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)


def network_output(model, image: torch.Tensor, analysis: str) -> torch.Tensor:
    """Global mode, no corrections; nanolily-v2 read at its own scale (``"native"``) or scale-matched to
    ``analysis`` pixels."""
    if analysis == "native" or not model.resolution_free:
        return enhance_tensor(image, model, mode="global", match_scale=False, **NO_CORRECTIONS)
    factor = analysis_factor(*image.shape[-2:], model.config.factor, int(analysis))
    return model(image, block=strip_rows(image.shape[-1]), factor=factor).clamp(0, 1)  # as the engine runs it


def measure(model, pairs, every: dict[int, int], analysis: str = "native") -> dict:
    """Mean PSNR / SSIM / brightness ratio per scale (scale s uses every[s]-th image), and per smaller
    size (:data:`SMALLER`, every image)."""
    rows = {f"x{s}": [] for s in SCALES} | {name: [] for name in SMALLER}
    for k, pair in enumerate(pairs):
        low, ref = (to_float(load_rgb_uint8(p)) for p in (pair.low, pair.high))
        versions = {f"x{s}": (upscale(low, s), upscale(ref, s)) for s in SCALES if not k % every[s]}
        for name, size in SMALLER.items():
            size = size or (low.shape[-2] // 2, low.shape[-1] // 2)
            versions[name] = resize(low, size), resize(ref, size)
        for name, (small_or_big, reference) in versions.items():
            m = image_metrics(network_output(model, small_or_big, analysis), reference)
            rows[name].append({c: m[c] for c in COLUMNS})
    return {name: {c: statistics.fmean(r[c] for r in rs) for c in COLUMNS} | {"images": len(rs)}
            for name, rs in rows.items()}


def markdown(results: dict) -> str:
    lines = [
        "# Scales: the same scenes as larger photos",
        "",
        "*Written by `benchmarks/scales.py` (do not edit by hand); JSON: `benchmarks/results/scales.json`.*",
        "",
        "Commands (a later `--add` run measures more models and keeps the rows before it):",
        "",
        *(f"- `{run['command']}` ({run['date']}, {run['seconds']:.0f} s)" for run in results["runs"]),
        "",
        "Each pair upscaled 2x and 4x (bicubic, low image and reference alike), each model in global mode, "
        "the network's output without corrections. **mean** is the mean PSNR over the three scales; "
        "**x4 - x1** how much a model loses when the same scene fills a 16x larger photo. Validation "
        "(lol-v1-val) compares models; test figures are reported only. A new nanolily-v2 "
        "must not score more than 0.2 dB below the model it replaces at x2 or x4 on validation "
        "(docs/training.md, \"Design 8\"). Rows without a note read nanolily-v2 at its own scale (the network "
        "as trained); \"analysis P MP\" rows scale-match it as the engine does (`analysis_factor`: a photo "
        "of more than about P pixels read from a coarser copy, and one under 0.24 MP "
        "from a finer one).",
        "",
        "| model | split | images x1 / x2 / x4 | PSNR x1 | x2 | x4 | mean | x4 - x1 | SSIM x1 / x4 | brightness x1 / x4 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, splits in results["models"].items():
        for split, r in splits.items():
            psnrs = [r[f"x{s}"]["psnr"] for s in SCALES]
            lines.append(
                f"| {name} | {split} | {' / '.join(str(r[f'x{s}']['images']) for s in SCALES)} | "
                f"{' | '.join(f'{p:.2f}' for p in psnrs)} | {statistics.fmean(psnrs):.2f} | "
                f"{psnrs[-1] - psnrs[0]:+.2f} | {r['x1']['ssim']:.3f} / {r['x4']['ssim']:.3f} | "
                f"{r['x1']['brightness_ratio']:.2f} / {r['x4']['brightness_ratio']:.2f} |")
    return "\n".join(lines + [""] + smaller_table(results) + analysis_choice(results))


def smaller_table(results: dict) -> list[str]:
    """The rows measured at :data:`SMALLER` sizes too (since the small-photo rule)."""
    rows = [(name, split, r) for name, splits in results["models"].items() for split, r in splits.items()
            if all(size in r for size in SMALLER)]
    if not rows:
        return []
    return [
        "## Smaller photos",
        "",
        "The same pairs at half the side (300x200, anti-aliased) and resized to 224x224 (the original's "
        "protocol size, here per image and clamped). An \"analysis\" row reads a photo smaller than LoL's "
        "0.24 MP at a finer scale (`analysis_factor`: 300x200 and 224x224 at 1/2 instead of 1/4), adopted "
        "by a rule fixed before measuring: both mean PSNR and mean SSIM must rise at both sizes.",
        "",
        "| model | split | PSNR x0.5 | SSIM x0.5 | PSNR 224x224 | SSIM 224x224 |",
        "|---|---|---|---|---|---|",
        *(f"| {name} | {split} | {r['x0.5']['psnr']:.2f} | {r['x0.5']['ssim']:.3f} | {r['224x224']['psnr']:.2f} | "
          f"{r['224x224']['ssim']:.3f} |" for name, split, r in rows),
        "",
    ]


def analysis_choice(results: dict, model: str = "nanolily-v2") -> list[str]:
    """The rule that chose the engine's analysis size (``ANALYSIS_PIXELS``), applied to the saved rows."""
    prefix = f"{model}, analysis "
    rows = {name[len(prefix):]: splits["lol-v1-val"] for name, splits in results["models"].items()
            if name.startswith(prefix) and "lol-v1-val" in splits}
    if not rows:
        return []
    score = {size: tuple(statistics.fmean(r[f"x{s}"][c] for s in (2, 4)) for c in ("psnr", "ssim"))
             for size, r in rows.items()}
    best = max(score, key=lambda size: score[size][0])
    chosen = max((size for size in score if score[size][0] >= score[best][0] - 0.05), key=lambda size: score[size][1])
    return [
        "## The engine's analysis size",
        "",
        f"{model} reads a photo of more than about P pixels from a coarser copy (`analysis_factor`). P was "
        "chosen on lol-v1-val by a rule fixed before these rows were measured: the highest mean PSNR over x2 "
        "and x4, unless a size within 0.05 dB of it has a higher mean SSIM over x2 and x4. x1 (600x400) is "
        "read at the network's own scale by every candidate.",
        "",
        "| analysis size | mean PSNR x2, x4 | mean SSIM x2, x4 |",
        "|---|---|---|",
        *(f"| {size}{' (chosen)' if size == chosen else ''} | {p:.3f} | {q:.4f} |" for size, (p, q) in score.items()),
        "",
    ]


def write_report(results: dict) -> str:
    text = markdown(results)
    (ROOT / "docs/scales.md").write_text(text)
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared/datasets"))
    p.add_argument("--models", nargs="+", default=["nanolily-v1", "nanolily-v2"],
                   help="shipped names or .safetensors files (a file is labelled by its folder)")
    p.add_argument("--test", action="store_true", help="also report LoL-v2-real test (every 4th image at 4x)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images of each set (a quick look)")
    p.add_argument("--analysis", nargs="+", default=["native"],
                   help="nanolily-v2's scale: native, or pixel counts P to scale-match to, a row each")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--report-only", action="store_true", help="rewrite docs/scales.md from the saved JSON")
    p.add_argument("--add", action="store_true",
                   help="keep the saved JSON's other models and add (or re-measure) these")
    args = p.parse_args()
    out_json = ROOT / "benchmarks/results/scales.json"
    if args.report_only:
        print(write_report(json.loads(out_json.read_text())))
        return
    torch.set_num_threads(args.threads)
    start = time.time()
    data = Path(args.data)
    splits = {"lol-v1-val": (all_pairs(data / "lol-v1", "lol-v1", data / "splits/lol-v1-val.txt"),
                             {1: 1, 2: 1, 4: 1})}
    if args.test:
        splits["lol-v2-real-test"] = (find_pairs(data / "lol-v2-real", "lol-v2", "Test"), {1: 1, 2: 1, 4: 4})
    results = json.loads(out_json.read_text()) if args.add else {"models": {}, "runs": []}
    with torch.inference_mode():
        for name in args.models:
            model = load_model(name, device="cpu")
            for analysis in args.analysis:
                label = model_label(name) + ("" if analysis == "native" else f", analysis {int(analysis) / 1e6:g} MP")
                results["models"][label] = {split: measure(model, pairs[:args.limit], every, analysis)
                                            for split, (pairs, every) in splits.items()}
                print(f"[{time.time() - start:5.0f} s] {label} done", flush=True)
    command = "python benchmarks/scales.py " + " ".join(
        ["--data " + args.data, "--models " + " ".join(args.models)] + (["--test"] if args.test else [])
        + ([f"--limit {args.limit}"] if args.limit else []) + (["--add"] if args.add else [])
        + ([f"--analysis {' '.join(args.analysis)}"] if args.analysis != ["native"] else []))
    results["runs"].append({"command": command, "date": time.strftime("%Y-%m-%d"), "seconds": time.time() - start})
    out_json.write_text(json.dumps(results, indent=2))
    print(write_report(results))


if __name__ == "__main__":
    main()
