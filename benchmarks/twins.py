"""Twin low images with different references: how far LoL-v1's reference level is set by the low image.

    python benchmarks/twins.py --data ../shared/datasets [--models nanolily-v5]

LoL-v1 holds many low images with a near twin: the same scene, camera and darkness, the two low images
within 35-42 dB PSNR of each other, whose normal-light references were taken separately. For every
lol-v1-val low image with a twin in the training pool (lol-v1-train-full), and for every twin pair
inside the pool, this reports how the two references differ: the ratio of their mean grey levels and
their PSNR. A network that maps one low image to one output cannot match both references of a twin
pair; the PSNR of the twin's reference against the val reference is what learning the pool's
reference exactly would give, and that PSNR + 6.02 dB what the best common output (the mean of the
two references) would give each of them. Each model's PSNR (`nanolily evaluate`'s code: global mode,
the default corrections) on the val images with and without a twin is printed beside. The test set is
not read. Writes benchmarks/results/twins.json and prints the tables.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from nanolily.models.weights import load_model
from nanolily.training.data import find_overlaps, find_pairs, load_rgb_uint8
from nanolily.training.evaluate import evaluate
from nanolily.training.metrics import mean_grey, psnr

ROOT = Path(__file__).resolve().parents[1]
TWIN_PSNR = 35.0  # dB between two low images; a LoL image and its JPEG q90 copy are ~43 dB apart
SAME_REFERENCE_PSNR = 60.0  # dB; twins above it share one reference (the pool's ids 590.. mostly do)


def reference_pair(a, b) -> dict:
    """How ``b``'s reference differs from ``a``'s (two Pairs): level ratio and PSNR."""
    ref_a, ref_b = (load_rgb_uint8(p.high).float()[None] / 255 for p in (a, b))
    low_a, low_b = (load_rgb_uint8(p.low).float()[None] / 255 for p in (a, b))
    return {"ids": [a.id, b.id], "low_psnr": float(psnr(low_a, low_b)), "reference_psnr": float(psnr(ref_a, ref_b)),
            "level_ratio": float(mean_grey(ref_b) / mean_grey(ref_a))}


def twins(train, test, quiet: bool) -> list[dict]:
    """Each (train, test) pair of low-image twins, once, with :func:`reference_pair`."""
    found = {tuple(sorted((i, j), key=int)) if test is train else (i, j)
             for i, j, kind in find_overlaps(train, test, TWIN_PSNR, progress=not quiet) if kind == "low" and i != j}
    by_id = {p.id: p for p in train + test}
    return [reference_pair(by_id[i], by_id[j]) for i, j in sorted(found, key=lambda ij: (int(ij[0]), int(ij[1])))]


def summary(rows: list[dict]) -> dict:
    """The pairs whose references differ (below SAME_REFERENCE_PSNR): count, level ratios, PSNR apart."""
    differ = [r for r in rows if r["reference_psnr"] < SAME_REFERENCE_PSNR]
    logs = np.log([r["level_ratio"] for r in differ])
    apart = np.array([r["reference_psnr"] for r in differ])
    return {"pairs": len(rows), "references_differ": len(differ),
            "level_ratio_min": float(np.exp(logs.min())), "level_ratio_max": float(np.exp(logs.max())),
            "log_level_spread": float(np.sqrt((logs ** 2).mean())),
            "reference_psnr_mean": float(apart.mean()), "common_output_psnr_mean": float(apart.mean() + 6.02)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="folder holding lol-v1/ and splits/ (e.g. ../shared/datasets)")
    ap.add_argument("--models", nargs="*", default=["nanolily-v5"], help="shipped names or .safetensors paths")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=str(ROOT / "benchmarks/results/twins.json"))
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    pool = find_pairs(data / "lol-v1", "lol-v1", "our485", data / "splits" / "lol-v1-train-full.txt")
    val = find_pairs(data / "lol-v1", "lol-v1", "our485", data / "splits" / "lol-v1-val.txt")
    groups = {"lol-v1-val against the pool": twins(pool, val, args.quiet), "inside the pool": twins(pool, pool, args.quiet)}
    results = {"twin_psnr": TWIN_PSNR, "groups": {g: {"summary": summary(rows), "pairs": rows} for g, rows in groups.items()}}

    print("| twins | pairs | references differ | their level ratio | log spread | references' PSNR apart | "
          "best common output |")
    print("|---|---|---|---|---|---|---|")
    for g, r in results["groups"].items():
        s = r["summary"]
        print(f"| {g} | {s['pairs']} | {s['references_differ']} | {s['level_ratio_min']:.2f}-{s['level_ratio_max']:.2f}x | "
              f"{s['log_level_spread']:.3f} | {s['reference_psnr_mean']:.2f} | {s['common_output_psnr_mean']:.2f} |")

    twin_ids = {r["ids"][1] for r in groups["lol-v1-val against the pool"]}
    parts = {"with a twin in the pool": [p for p in val if p.id in twin_ids],
             "without": [p for p in val if p.id not in twin_ids]}
    results["models"] = {}
    if args.models:
        print("\n| model | lol-v1-val images | count | PSNR | PSNR at the reference's level |")
        print("|---|---|---|---|---|")
    for name in args.models:
        model = load_model(name).eval()
        results["models"][name] = {}
        for part, pairs in parts.items():
            rows, _ = evaluate(model, pairs, mode="global", progress=not args.quiet)
            r = {"images": len(rows), "psnr": float(np.mean([x["psnr"] for x in rows])),
                 "psnr_at_reference_level": float(np.mean([x["psnr_gt_mean"] for x in rows]))}
            results["models"][name][part] = r
            print(f"| {name} | {part} | {r['images']} | {r['psnr']:.2f} | {r['psnr_at_reference_level']:.2f} |")
    Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
