"""How much of the test-set error is exposure? Plain and GT-mean PSNR/SSIM, validation against test.

    python benchmarks/exposure.py --data ../shared/datasets

Writes docs/exposure.md and benchmarks/results/exposure.json and prints the table. About 2 minutes on
2 CPU cores.

Both shipped models learned from LoL-v1 references and score ~4 dB lower on LoL-v2-real test than on
the LoL-v1 validation split. The test's low images are LoL-v1 captures (89 of 100 are pixel-identical
to LoL-v1 images, ../shared/datasets/README.md), but its references were made separately. This script
separates the two kinds of error: "GT-mean" (KinD, LLFlow, Retinexformer, HVI-CIDNet) scales each
output so that its mean grey level equals the reference's before PSNR/SSIM, which removes the exposure
error and keeps the rest (structure, noise, colour). It uses the reference, so it is a diagnosis, not
a result: nothing here is used to choose or tune anything.

Rows: each model in global mode, the network's output (no corrections), and the input itself (the
"identity" row: what the references' brightness is relative to the dark captures).

A second table shows each model the same scenes as darker and brighter captures: every low image
re-exposed by 0.5 and 2 in linear light (the references unchanged). A model that has learnt what a
scene should look like gives similar figures at all three; one that has learnt LoL-v1's fixed gain
does not. The mean validation PSNR over the three is how nanolily-v2's training runs are compared
since design 5 (docs/training.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from nanolily.training.data import all_pairs, find_pairs, load_rgb_uint8
from nanolily.engine.pipeline import NO_CORRECTIONS
from nanolily.training.evaluate import evaluate, image_metrics, to_float
from nanolily.models.weights import load_model

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["psnr", "ssim", "psnr_gt_mean", "ssim_gt_mean", "brightness_ratio"]
EXPOSURES = (0.5, 1.0, 2.0)
DEFAULT_MODELS = ["nanolily-v1", "nanolily-v2"]


def model_label(name: str) -> str:
    """A shipped name as it is; a weights file by its run folder, e.g. checkpoints/v2-long-cpu."""
    path = Path(name)
    return name if path.suffix != ".safetensors" else str(path.parent.relative_to(ROOT) if path.is_absolute()
                                                          and ROOT in path.parents else path.parent)


def summarise(rows: list[dict]) -> dict:
    out = {k: statistics.fmean(r[k] for r in rows) for k in COLUMNS}
    out["brightness_ratio_median"] = statistics.median(r["brightness_ratio"] for r in rows)
    out["images"] = len(rows)
    return out


def identity_rows(pairs) -> list[dict]:
    return [image_metrics(to_float(load_rgb_uint8(p.low)), to_float(load_rgb_uint8(p.high))) for p in pairs]


def markdown(results: dict) -> str:
    lines = [
        "# Exposure: how much of the test error is the references' brightness",
        "",
        "*Written by `benchmarks/exposure.py` (do not edit by hand); the JSON beside it is "
        "`benchmarks/results/exposure.json`.*",
        "",
        f"Command: `{results['command']}` ({results['date']}, {results['seconds']:.0f} s).",
        "",
        "Each model in global mode, the network's output without corrections, every image at full "
        "resolution. **GT-mean** scales the output so that its mean grey level (BT.601 luma) equals the "
        "reference's, then clamps, before PSNR/SSIM: the protocol KinD, LLFlow, Retinexformer and "
        "HVI-CIDNet report beside plain figures. It uses the reference, so it diagnoses; it is not a "
        "result. **Brightness ratio** is the output's mean grey level over the reference's (per image; "
        "mean and median); the identity row's is the dark input's.",
        "",
        "| model | split | images | PSNR | SSIM | GT-mean PSNR | GT-mean SSIM | brightness ratio mean / median |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, splits in results["models"].items():
        for split, s in splits.items():
            lines.append(f"| {name} | {split} | {s['images']} | {s['psnr']:.2f} | {s['ssim']:.3f} | "
                         f"{s['psnr_gt_mean']:.2f} | {s['ssim_gt_mean']:.3f} | "
                         f"{s['brightness_ratio']:.2f} / {s['brightness_ratio_median']:.2f} |")
    lines.append("")
    for name, (val, test) in ((n, tuple(s.values())) for n, s in results["models"].items()):
        if name.startswith("identity"):
            lines.append(
                f"- The inputs are {val['brightness_ratio_median']:.3f} of their references' brightness on "
                f"validation and {test['brightness_ratio_median']:.3f} on test (medians): relative to the "
                f"same kind of capture, the test references are "
                f"{'darker' if test['brightness_ratio_median'] > val['brightness_ratio_median'] else 'brighter'}.")
        else:
            lines.append(
                f"- {name}: {test['brightness_ratio_median']:.2f}x the references' brightness on test against "
                f"{val['brightness_ratio_median']:.2f}x on validation (medians); matching exposure takes its "
                f"PSNR from {test['psnr']:.2f} to {test['psnr_gt_mean']:.2f} dB on test and from "
                f"{val['psnr']:.2f} to {val['psnr_gt_mean']:.2f} dB on validation.")
    lines += [
        "",
        "## The same scenes as darker and brighter captures",
        "",
        "Each low image re-exposed by 0.5 and 2 in linear light before the model sees it (`nanolily evaluate "
        "--exposure F`), the reference unchanged. **mean** is the mean PSNR over the three exposures: on "
        "validation, the rule that compares nanolily-v2's training runs since design 5 (docs/training.md). "
        "Test figures are reported only.",
        "",
        "| model | split | PSNR x0.5 | PSNR x1 | PSNR x2 | mean | SSIM mean | brightness ratio median x0.5 / x1 / x2 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, splits in results["exposures"].items():
        for split, by_exposure in splits.items():
            runs = [by_exposure[f"{f:g}"] for f in EXPOSURES]
            psnrs = " | ".join(f"{r['psnr']:.2f}" for r in runs)
            ratios = " / ".join(f"{r['brightness_ratio_median']:.2f}" for r in runs)
            lines.append(f"| {name} | {split} | {psnrs} | {statistics.fmean(r['psnr'] for r in runs):.2f} | "
                         f"{statistics.fmean(r['ssim'] for r in runs):.3f} | {ratios} |")
    lines += [
        "",
        "A model trained on LoL-v1 learns LoL-v1's exposure; it cannot learn LoL-v2-real's from the input, "
        "and choosing it on the test set would be tuning on test. A user who wants a darker result has "
        "`--strength` below 1.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared/datasets"))
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS,
                   help="shipped names or .safetensors files (a file is labelled by its folder)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images of each set (a quick look)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    start = time.time()
    data = Path(args.data)
    splits = {"lol-v1-val": all_pairs(data / "lol-v1", "lol-v1", data / "splits/lol-v1-val.txt")[:args.limit],
              "lol-v2-real-test": find_pairs(data / "lol-v2-real", "lol-v2", "Test")[:args.limit]}
    models = {"identity (input)": {name: summarise(identity_rows(pairs)) for name, pairs in splits.items()}}
    exposures = {}
    for name in args.models:
        model = load_model(name, device="cpu")
        label = model_label(name)
        exposures[label] = {split: {f"{f:g}": summarise(evaluate(model, pairs, mode="global",
                                                                 corrections=NO_CORRECTIONS, exposure=f)[0])
                                    for f in EXPOSURES}
                            for split, pairs in splits.items()}
        models[label] = {split: by_exposure["1"] for split, by_exposure in exposures[label].items()}
        print(f"[{time.time() - start:4.0f} s] {label} done", flush=True)
    results = {"models": models, "exposures": exposures,
               "command": "python benchmarks/exposure.py --data " + args.data
               + (f" --models {' '.join(args.models)}" if args.models != DEFAULT_MODELS else "")
               + (f" --limit {args.limit}" if args.limit else ""),
               "date": time.strftime("%Y-%m-%d"), "seconds": time.time() - start}
    out_json = ROOT / "benchmarks/results/exposure.json"
    out_json.write_text(json.dumps(results, indent=2))
    text = markdown(results)
    (ROOT / "docs/exposure.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
