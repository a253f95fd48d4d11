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
level would give). Then the network alone (no corrections) on two seeded 256x256 crops of each image, the
view it is trained on: its level there over the reference's ("on crops"), and over the same region of its
output for the whole image ("crop / whole": below 1 when seeing the whole photo lifts a region more than
seeing the crop does). Last, the constant factor (0.80..1.20) that, applied to every whole-image output of
the group, gives the highest mean PSNR, and that PSNR: the level the group's references ask of the network.
The test set is not read. Writes benchmarks/results/levels.json and prints the table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from nanolily.models.weights import load_model
from nanolily.training.data import Pair, find_pairs, load_rgb_uint8
from nanolily.training.evaluate import evaluate
from nanolily.training.metrics import mean_grey, psnr

ROOT = Path(__file__).resolve().parents[1]
SERIES = range(690, 790)
CROP, CROPS = 256, 2  # the training views' size, and how many per image
FACTORS = np.round(np.arange(0.80, 1.2001, 0.02), 2)  # constant level factors tried on the whole outputs
GROUPS = {"pool 690..789": ("lol-v1-train-full.txt", True), "pool, the rest": ("lol-v1-train-full.txt", False),
          "lol-v1-val": ("lol-v1-val.txt", None)}


def group_levels(model, data: Path, split: str, series: bool | None, quiet: bool) -> dict:
    pairs = find_pairs(data / "lol-v1", "lol-v1", "our485", data / "splits" / split)
    pairs = [p for p in pairs if series is None or (int(p.id) in SERIES) == series]
    rows, _ = evaluate(model, pairs, mode="global", progress=not quiet)
    logs = np.log([r["brightness_ratio"] for r in rows])
    network = [network_levels(model, p) for p in pairs]
    crops = np.array([ratio for ratios, _ in network for ratio in ratios])  # (CROPS * images, 2): log ratios
    by_factor = np.mean([psnrs for _, psnrs in network], axis=0)  # (len(FACTORS),)
    return {"images": len(rows), "level_ratio": float(np.exp(logs.mean())), "log_spread": float(logs.std()),
            "psnr": float(np.mean([r["psnr"] for r in rows])),
            "psnr_at_reference_level": float(np.mean([r["psnr_gt_mean"] for r in rows])),
            "crop_level_ratio": float(np.exp(crops[:, 0].mean())), "crop_over_whole": float(np.exp(crops[:, 1].mean())),
            "best_factor": float(FACTORS[by_factor.argmax()]), "psnr_at_best_factor": float(by_factor.max()),
            "network_psnr": float(by_factor[np.flatnonzero(FACTORS == 1)[0]])}


@torch.no_grad()
def network_levels(model, pair: Pair) -> tuple[list[tuple[float, float]], list[float]]:
    """The network alone on ``pair``. For CROPS seeded crops: log(level of its output for the crop / the
    reference's there) and log(that level / the level of the same region in its output for the whole
    image). And the PSNR of its whole output scaled by each of FACTORS, then clamped to [0, 1]."""
    low, ref = (load_rgb_uint8(path).float()[None] / 255 for path in (pair.low, pair.high))
    raw = model(low)
    whole = raw.clamp(0, 1)
    generator = torch.Generator().manual_seed(int(pair.id))
    out = []
    for _ in range(CROPS):
        y, x = (int(torch.randint(0, n - CROP + 1, (), generator=generator)) for n in low.shape[-2:])
        region = (..., slice(y, y + CROP), slice(x, x + CROP))
        level = mean_grey(model(low[region]).clamp(0, 1))  # the mean BT.601 grey, as brightness_ratio's
        out.append((float(torch.log(level / mean_grey(ref[region]))), float(torch.log(level / mean_grey(whole[region])))))
    return out, [float(psnr((raw * f).clamp_(0, 1), ref)) for f in FACTORS]


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
    print("| model | group | images | output / reference level | log spread | PSNR | PSNR at the reference's level "
          "| on crops | crop / whole | network alone | best factor (PSNR) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, groups in results.items():
        for g, r in groups.items():
            print(f"| {name} | {g} | {r['images']} | {r['level_ratio']:.3f}x | {r['log_spread']:.3f} | "
                  f"{r['psnr']:.2f} | {r['psnr_at_reference_level']:.2f} | {r['crop_level_ratio']:.3f}x | "
                  f"{r['crop_over_whole']:.3f}x | {r['network_psnr']:.2f} | {r['best_factor']:.2f}x ({r['psnr_at_best_factor']:.2f}) |")
    Path(args.json).write_text(json.dumps({"mode": "global, default corrections, fp32", "models": results}, indent=2))


if __name__ == "__main__":
    main()
