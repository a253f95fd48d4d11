"""How far each model's brightness is from its references', per part of the LoL-v1 pool.

    python benchmarks/levels.py --data ../shared/datasets [--models nanolily-v5 checkpoints/RUN/best.safetensors]

PSNR on LoL is dominated by the overall level a model picks for each scene. For each model, each image of
three groups is measured by `nanolily evaluate`'s code (global mode, the default corrections, fp32):

- **pool 690..789**: the training pool's ids 690..789 (lol-v1-train-full), real scenes with darker
  references than the rest of LoL-v1;
- **pool, the rest**: the other lol-v1-train-full images, mostly staged still lifes;
- **lol-v1-val**: the validation split (none of its ids is in 690..789).

Per group: the outputs' mean level over their references' (geometric mean of the ratios), the spread of
the log ratio, PSNR, and PSNR once each output is scaled to its reference's level (GT-mean: what a perfect
level would give). The test set is not read. Writes benchmarks/results/levels.json and prints the table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from nanolily.models.weights import load_model
from nanolily.training.data import find_pairs
from nanolily.training.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]
SERIES = range(690, 790)
GROUPS = {"pool 690..789": ("lol-v1-train-full.txt", True), "pool, the rest": ("lol-v1-train-full.txt", False),
          "lol-v1-val": ("lol-v1-val.txt", None)}


def group_levels(model, data: Path, split: str, series: bool | None, quiet: bool) -> dict:
    pairs = find_pairs(data / "lol-v1", "lol-v1", "our485", data / "splits" / split)
    pairs = [p for p in pairs if series is None or (int(p.id) in SERIES) == series]
    rows, _ = evaluate(model, pairs, mode="global", progress=not quiet)
    logs = np.log([r["brightness_ratio"] for r in rows])
    return {"images": len(rows), "level_ratio": float(np.exp(logs.mean())), "log_spread": float(logs.std()),
            "psnr": float(np.mean([r["psnr"] for r in rows])),
            "psnr_at_reference_level": float(np.mean([r["psnr_gt_mean"] for r in rows]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="folder holding lol-v1/ and splits/ (e.g. ../shared/datasets)")
    ap.add_argument("--models", nargs="+", default=["nanolily-v5"], help="shipped names or .safetensors paths")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=str(ROOT / "benchmarks/results/levels.json"))
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    for name in args.models:
        model = load_model(name).eval()
        results[name] = {g: group_levels(model, Path(args.data), split, series, args.quiet)
                         for g, (split, series) in GROUPS.items()}
    print("| model | group | images | output / reference level | log spread | PSNR | PSNR at the reference's level |")
    print("|---|---|---|---|---|---|---|")
    for name, groups in results.items():
        for g, r in groups.items():
            print(f"| {name} | {g} | {r['images']} | {r['level_ratio']:.3f}x | {r['log_spread']:.3f} | "
                  f"{r['psnr']:.2f} | {r['psnr_at_reference_level']:.2f} |")
    Path(args.json).write_text(json.dumps({"mode": "global, default corrections, fp32", "models": results}, indent=2))


if __name__ == "__main__":
    main()
