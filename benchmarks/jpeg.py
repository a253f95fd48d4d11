"""Compressed captures: what JPEG compression of the dark photo costs the enhanced result.

    python benchmarks/jpeg.py --data ../shared/datasets [--models nanolily-v5] [--qualities 95 90 75 50]

Most photos people enhance are JPEGs, whose compression drops fine detail and leaves 8x8 blocks in the
shadows; lifting the shadows tenfold lifts those too. Each low image of lol-v1-val (the validation
split) and eval15 (the LoL-v1 test set, read to report) is re-encoded as a JPEG at each quality (Pillow,
4:2:0 chroma subsampling: `nanolily.training.data.jpeg_roundtrip`) and enhanced as `nanolily enhance`
does by default (global mode, the default corrections), and also with the strongest denoising
(`--denoise 1`); the references are the stored lossless ones. The first row of each model is the low
image as stored (lossless). PSNR, SSIM and LPIPS (AlexNet; skipped without the feature weights) as
`nanolily evaluate --jpeg Q` reports them. Writes benchmarks/results/jpeg.json and docs/jpeg.md and
prints the table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from nanolily.models.weights import DEFAULT_MODEL, load_model
from nanolily.training.data import find_pairs
from nanolily.training.evaluate import evaluate
from nanolily.training.metrics import LPIPS

ROOT = Path(__file__).resolve().parents[1]
QUALITIES = (95, 90, 75, 50)
SETTINGS = {"defaults": {}, "denoise 1": {"denoise": 1.0}}  # enhance_tensor keywords over its defaults


def splits(data: Path) -> dict:
    lol = data / "lol-v1"
    return {"lol-v1-val": find_pairs(lol, "lol-v1", "our485", data / "splits/lol-v1-val.txt"),
            "eval15": find_pairs(lol, "lol-v1", "eval15")}


def run(models: list[str], data: Path, qualities: tuple[int, ...], weights_dir: str | None, quiet: bool,
        only: list[str]) -> dict:
    try:
        lpips = LPIPS.from_dir(weights_dir, data)
    except FileNotFoundError:
        lpips = None
    results = {}
    for name in models:
        model = load_model(name, device="cpu")
        for split, pairs in splits(data).items():
            if split not in only:
                continue
            for quality in (None, *qualities):
                for setting, options in SETTINGS.items():
                    if quality is None and setting != "defaults":
                        continue
                    _, summary = evaluate(model, pairs, "global", lpips=lpips, progress=not quiet,
                                          corrections=options, jpeg=quality)
                    results.setdefault(name, {}).setdefault(split, []).append(
                        {"jpeg": quality, "setting": setting, "images": summary["images"], "psnr": summary["psnr"],
                         "ssim": summary["ssim"], "lpips": summary.get("lpips")})
    return results


def table(results: dict) -> str:
    lines = ["| model | split | low image | setting | PSNR | SSIM | LPIPS |", "|---|---|---|---|---|---|---|"]
    for name, by_split in results.items():
        for split, rows in by_split.items():
            for r in rows:
                stored = "as stored (lossless)" if r["jpeg"] is None else f"JPEG q{r['jpeg']}"
                lp = "-" if r["lpips"] is None else f"{r['lpips']:.3f}"
                lines.append(f"| {name} | {split} ({r['images']}) | {stored} | {r['setting']} | {r['psnr']:.2f} | "
                             f"{r['ssim']:.3f} | {lp} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="datasets root (lol-v1/, splits/)")
    parser.add_argument("--models", nargs="+", default=[DEFAULT_MODEL], help="shipped names or .safetensors files")
    parser.add_argument("--qualities", nargs="+", type=int, default=list(QUALITIES))
    parser.add_argument("--splits", nargs="+", default=["lol-v1-val", "eval15"], choices=["lol-v1-val", "eval15"],
                        help="lol-v1-val alone to choose a model with; eval15 only to report (default: both)")
    parser.add_argument("--weights-dir", help="AlexNet/LPIPS weights (default: as nanolily evaluate finds them)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/jpeg.json"))
    parser.add_argument("--doc", default=str(ROOT / "docs/jpeg.md"))
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    results = run(args.models, Path(args.data), tuple(args.qualities), args.weights_dir, args.quiet, args.splits)
    record = {"command": "python benchmarks/jpeg.py " + " ".join(__import__("sys").argv[1:]),
              "date": time.strftime("%Y-%m-%d", time.gmtime()), "seconds": round(time.perf_counter() - start),
              "results": results}
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    text = table(results)
    Path(args.doc).write_text(
        "# Compressed captures: JPEG and the enhanced result\n\n"
        "*Written by `benchmarks/jpeg.py` (do not edit by hand); JSON: `benchmarks/results/jpeg.json`.*\n\n"
        f"Command: `{record['command']}` ({record['date']}, {record['seconds']} s). What the rows mean is in the "
        "script's docstring: each low image re-encoded as a JPEG, enhanced as `nanolily enhance` does, against "
        "the lossless reference.\n\n" + text)
    print(text)


if __name__ == "__main__":
    main()
