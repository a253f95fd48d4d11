"""How much of the test-set error is exposure, and how the models take darker and brighter captures.

    python benchmarks/exposure.py --data ../shared/datasets

Writes docs/exposure.md and benchmarks/results/exposure.json and prints the tables. About 20 minutes
for the shipped models on 2 CPU cores.

The first table separates the two kinds of error on each split: "GT-mean" (KinD, LLFlow,
Retinexformer, HVI-CIDNet) scales each output so that its mean grey level equals the reference's before
PSNR/SSIM, which removes the exposure error and keeps the rest (structure, noise, colour). It uses the
reference, so it is a diagnosis, not a result: nothing here is used to choose or tune anything.

The second shows each model the same scenes as darker and brighter captures: every low image re-exposed
by 0.25 to 4 in linear light (the references unchanged). A model that has learnt what a scene should
look like gives similar figures at every exposure; one that has learnt LoL-v1's fixed gain does not. The
mean validation PSNR over x0.5, x1 and x2 is how nanolily-v2's training runs are compared since design 5
(docs/training.md).

A third section measures the exposure lift (``--lift-exposure``, on by default) on the default model:
how the network takes captures far darker than LoL-v1's when they are first lifted to a floor level, and
the floor's choice on lol-v1-val (the rule is written in the section).

Rows: each model in global mode, the network's output (no corrections), and the input itself (the
"identity" row: how bright the references are relative to the dark captures). Splits: lol-v1-val (the
split models are chosen on), eval15 (LoL-v1's test set) and LoL-v2-real test, the last only for models
that have not seen its low images in training.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import contextlib

import torch

from nanolily.engine import corrections
from nanolily.engine.pipeline import NO_CORRECTIONS
from nanolily.models.weights import DEFAULT_MODEL, SHIPPED, load_model
from nanolily.training.data import all_pairs, find_pairs, load_rgb_uint8
from nanolily.training.evaluate import evaluate, image_metrics, to_float
from nanolily.training.metrics import LPIPS

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["psnr", "ssim", "psnr_gt_mean", "ssim_gt_mean", "brightness_ratio"]
EXPOSURES = (0.25, 0.5, 1.0, 2.0, 4.0)
RULE_EXPOSURES = (0.5, 1.0, 2.0)  # the training runs' selection rule averages these
VALIDATION, TEST_SPLITS = "lol-v1-val", ("eval15", "lol-v2-real-test")
DEFAULT_MODELS = list(SHIPPED)
LIFT_EXPOSURES = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
LIFT_RULE = (0.1, 0.25, 0.5, 1.0, 2.0)  # the floor's rule averages these
FLOORS = (0.001, 0.00175, 0.0025, 0.0035)  # the candidates, fixed with the rule before they were compared


@contextlib.contextmanager
def lift_floor(floor: float):
    """The exposure lift's floor set to ``floor`` for the block."""
    saved, corrections.LIFT_FLOOR = corrections.LIFT_FLOOR, floor
    try:
        yield
    finally:
        corrections.LIFT_FLOOR = saved


def lift_results(model, pairs, lpips=None) -> dict:
    """On ``pairs`` at each of LIFT_EXPOSURES: the network alone on captures rounded to 8 bits, without
    the lift and with each floor; then the default pipeline without and with it (with LPIPS if given) on
    captures rounded to 8 and to 16 bits."""
    def run(settings: dict, lpips=None, bits: int = 8) -> dict:
        return {f"{f:g}": summarise(evaluate(model, pairs, mode="global", exposure=f, exposure_bits=bits,
                                             corrections=settings, lpips=lpips)[0], lpips is not None)
                for f in LIFT_EXPOSURES}

    results = {"none": run(NO_CORRECTIONS)}
    for floor in FLOORS:
        with lift_floor(floor):
            results[f"{floor:g}"] = run(NO_CORRECTIONS | {"lift_exposure": True})
    results["pipeline"] = {"off": run({"lift_exposure": False}, lpips), "on": run({}, lpips),
                           "off16": run({"lift_exposure": False}, lpips, 16), "on16": run({}, lpips, 16)}
    return results


def model_label(name: str) -> str:
    """A shipped name as it is; a weights file by its run folder, e.g. checkpoints/v2-long-cpu."""
    path = Path(name)
    return name if path.suffix != ".safetensors" else str(path.parent.relative_to(ROOT) if path.is_absolute()
                                                          and ROOT in path.parents else path.parent)


def summarise(rows: list[dict], lpips: bool = False) -> dict:
    out = {k: statistics.fmean(r[k] for r in rows) for k in COLUMNS + ["lpips"] * lpips}
    out["brightness_ratio_median"] = statistics.median(r["brightness_ratio"] for r in rows)
    out["images"] = len(rows)
    return out


def identity_rows(pairs) -> list[dict]:
    return [image_metrics(to_float(load_rgb_uint8(p.low)), to_float(load_rgb_uint8(p.high))) for p in pairs]


def model_splits(name: str, splits: dict) -> list[str]:
    """The splits a model is measured on: LoL-v2-real test only if its low images were not in training."""
    seen = name in SHIPPED and SHIPPED[name].seen_in_training
    return [s for s in splits if not (seen and s == "lol-v2-real-test")]


def markdown(results: dict) -> str:
    lines = [
        "# Exposure: the references' brightness, and darker and brighter captures",
        "",
        "*Written by `benchmarks/exposure.py` (do not edit by hand); the JSON beside it is "
        "`benchmarks/results/exposure.json`.*",
        "",
        f"Command: `{results['command']}` ({results['date']}, {results['seconds']:.0f} s).",
        "",
        "Each model in global mode, the network's output without corrections, every image at full "
        "resolution. Models are chosen on lol-v1-val; eval15 and LoL-v2-real test are read only to report. "
        "Models trained on the full LoL-v1 pool have seen 86 of LoL-v2-real test's 100 low images, so they "
        "have no row there.",
        "",
        "## The references' brightness",
        "",
        "**GT-mean** scales the output so that its mean grey level (BT.601 luma) equals the reference's, "
        "then clamps, before PSNR/SSIM: the protocol KinD, LLFlow, Retinexformer and HVI-CIDNet report "
        "beside plain figures. It uses the reference, so it diagnoses; it is not a result. **Brightness "
        "ratio** is the output's mean grey level over the reference's (per image; mean and median); the "
        "identity row's is the dark input's.",
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
    identity = results["models"]["identity (input)"]
    lines.append("- The inputs' brightness over their references' (medians): " + ", ".join(
        f"{s['brightness_ratio_median']:.3f} on {split}" for split, s in identity.items())
        + "; the lower the figure, the brighter the references relative to the same kind of capture.")
    header = " | ".join(f"PSNR x{f:g}" for f in EXPOSURES)
    lines += [
        "",
        "## The same scenes as darker and brighter captures",
        "",
        "Each low image re-exposed by the factor in linear light before the model sees it (`nanolily "
        "evaluate --exposure F`), the reference unchanged. The models were trained on factors 0.35 to 2.8 "
        "(nanolily-v1: none); x0.25 and x4 lie outside. **rule mean** is the mean PSNR over x0.5, x1 and "
        "x2: on validation, the rule that compares nanolily-v2's training runs since design 5 "
        "(docs/training.md). **level** is the output's median brightness ratio at each factor, x0.25 to x4.",
        "",
        f"| model | split | {header} | rule mean | SSIM x0.25 / x1 / x4 | level x0.25 ... x4 |",
        "|---|---|" + "---|" * (len(EXPOSURES) + 3),
    ]
    for name, splits in results["exposures"].items():
        for split, by_exposure in splits.items():
            runs = [by_exposure[f"{f:g}"] for f in EXPOSURES]
            psnrs = " | ".join(f"{r['psnr']:.2f}" for r in runs)
            rule = statistics.fmean(by_exposure[f"{f:g}"]["psnr"] for f in RULE_EXPOSURES)
            ssims = " / ".join(f"{by_exposure[f'{f:g}']['ssim']:.3f}" for f in (0.25, 1.0, 4.0))
            levels = " / ".join(f"{r['brightness_ratio_median']:.2f}" for r in runs)
            lines.append(f"| {name} | {split} | {psnrs} | {rule:.2f} | {ssims} | {levels} |")
    lines += [
        "",
        "A model trained on LoL-v1 learns LoL-v1's exposure; it cannot learn LoL-v2-real's from the input, "
        "and choosing it on a test set would be tuning on test. A user who wants a darker result has "
        "`--strength` below 1.",
        "",
    ]
    if "lift" in results:
        lines += lift_markdown(results["lift"], results["lift_model"], results.get("lift_run"))
    return "\n".join(lines)


def lift_markdown(lift: dict, model: str, run: str | None = None) -> list[str]:
    pipeline = lift["pipeline"]
    lift = {name: runs for name, runs in lift.items() if name != "pipeline"}
    rule = {name: statistics.fmean(runs[f"{f:g}"]["psnr"] for f in LIFT_RULE) for name, runs in lift.items()}
    none = lift["none"]["1"]
    allowed = [f"{f:g}" for f in FLOORS if none["psnr"] - lift[f"{f:g}"]["1"]["psnr"] <= 0.05
               and none["ssim"] - lift[f"{f:g}"]["1"]["ssim"] <= 0.003]
    chosen = max(allowed, key=rule.get) if allowed else None
    header = " | ".join(f"x{f:g}" for f in LIFT_EXPOSURES)
    lines = [
        "## Captures far darker than LoL's: the exposure lift",
        "",
        *([f"Measured by {run}.", ""] if run else []),
        f"{model} on lol-v1-val, the network alone, each low image re-exposed by the factor first and rounded "
        "to 8 bits, as a file of that capture holds it. With the "
        "lift (`--lift-exposure`, on by default), a photo whose mean level in linear light is below a floor "
        "is scaled up to it in linear light before the network reads it, by at most 16x and never so far "
        "that more than 0.1 % of its pixels clip (a night scene with lamps is not lifted); the corrections "
        "after the network still compare with the photo itself. LoL-v1's captures have a median linear "
        "level of 0.005 (0.0006 to 0.15).",
        "",
        "The rule, fixed before the candidate floors were compared: the floor among "
        f"{', '.join(f'{f:g}' for f in FLOORS)} with the highest mean PSNR over x"
        f"{', x'.join(f'{f:g}' for f in LIFT_RULE)}, among those that keep PSNR at x1 within 0.05 dB and SSIM "
        "within 0.003 of no lift; the lift is on by default only if that mean gains at least 0.5 dB. The floors "
        "were first compared on re-exposures kept in float, which the lift undoes without loss (x0.05 to x0.25 "
        "then scored alike); the 8-bit captures below replaced them, and the same floor wins under both.",
        "",
        f"| floor | PSNR {header} | rule mean | SSIM x0.1 / x1 | level x0.05 ... x4 |",
        "|---|---|" + "---|" * (len(LIFT_EXPOSURES) + 1),
    ]
    for name, runs in lift.items():
        label = "no lift" if name == "none" else name + (" (chosen)" if name == chosen else "")
        cells = " | ".join(f"{runs[f'{f:g}']['psnr']:.2f}" for f in LIFT_EXPOSURES)
        levels = " / ".join(f"{runs[f'{f:g}']['brightness_ratio_median']:.2f}" for f in LIFT_EXPOSURES)
        lines.append(f"| {label} | {cells} | {rule[name]:.2f} | {runs['0.1']['ssim']:.3f} / {runs['1']['ssim']:.3f} "
                     f"| {levels} |")
    if chosen:
        lines += ["", f"By the rule the floor is {chosen} (`nanolily.engine.corrections.LIFT_FLOOR`): the rule mean "
                      f"goes from {rule['none']:.2f} to {rule[chosen]:.2f} dB."]
    with_lpips = "lpips" in pipeline["on"]["1"]
    lines += [
        "",
        "The default pipeline (`nanolily enhance`: the halo guard and the corrections after the network), "
        "without and with the lift at its floor, the same captures, and the same rounded to 16 bits (a 16-bit "
        "PNG or TIFF, or a camera RAW file as nanolily develops it, keeps what the lift brings back)"
        + (", PSNR / SSIM / LPIPS:" if with_lpips else ", PSNR / SSIM:"),
        "",
        f"| pipeline | {header} |",
        "|---|" + "---|" * len(LIFT_EXPOSURES),
    ]
    for name, label in (("off", "8 bits, --no-lift-exposure"), ("on", "8 bits, default (lift on)"),
                        ("off16", "16 bits, --no-lift-exposure"), ("on16", "16 bits, default (lift on)")):
        if name not in pipeline:
            continue
        runs = pipeline[name]
        cells = " | ".join(f"{runs[f'{f:g}']['psnr']:.2f} / {runs[f'{f:g}']['ssim']:.3f}"
                           + (f" / {runs[f'{f:g}']['lpips']:.3f}" if with_lpips else "") for f in LIFT_EXPOSURES)
        lines.append(f"| {label} | {cells} |")
    lines.append("")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared/datasets"))
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS,
                   help="shipped names or .safetensors files (a file is labelled by its folder)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images of each set (a quick look)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lift-only", action="store_true",
                   help="measure only the exposure lift, keeping the JSON's other tables (about 12 minutes)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    start = time.time()
    data = Path(args.data)
    splits = {VALIDATION: all_pairs(data / "lol-v1", "lol-v1", data / "splits/lol-v1-val.txt"),
              "eval15": find_pairs(data / "lol-v1", "lol-v1", "eval15"),
              "lol-v2-real-test": find_pairs(data / "lol-v2-real", "lol-v2", "Test")}
    splits = {name: pairs[:args.limit] for name, pairs in splits.items()}
    out_json = ROOT / "benchmarks/results/exposure.json"
    if args.lift_only:
        results = json.loads(out_json.read_text())
    else:
        models = {"identity (input)": {name: summarise(identity_rows(pairs)) for name, pairs in splits.items()}}
        exposures = {}
        for name in args.models:
            model = load_model(name, device="cpu")
            label = model_label(name)
            exposures[label] = {split: {f"{f:g}": summarise(evaluate(model, splits[split], mode="global",
                                                                     corrections=NO_CORRECTIONS, exposure=f)[0])
                                        for f in EXPOSURES}
                                for split in model_splits(name, splits)}
            models[label] = {split: by_exposure["1"] for split, by_exposure in exposures[label].items()}
            print(f"[{time.time() - start:4.0f} s] {label} done", flush=True)
        results = {"models": models, "exposures": exposures,
                   "command": "python benchmarks/exposure.py --data " + args.data
                   + (f" --models {' '.join(args.models)}" if args.models != DEFAULT_MODELS else "")
                   + (f" --limit {args.limit}" if args.limit else ""),
                   "date": time.strftime("%Y-%m-%d"), "seconds": time.time() - start}
    if DEFAULT_MODEL in args.models:
        lift_start = time.time()
        try:
            lpips = LPIPS.from_dir(None, data)
        except FileNotFoundError:
            lpips = None
        results["lift"] = lift_results(load_model(DEFAULT_MODEL, device="cpu"), splits[VALIDATION], lpips)
        results["lift_model"] = DEFAULT_MODEL
        results["lift_run"] = (f"`python benchmarks/exposure.py --data {args.data} --lift-only` "
                               f"({time.strftime('%Y-%m-%d')}, {time.time() - lift_start:.0f} s)")
        print(f"[{time.time() - start:4.0f} s] the exposure lift done", flush=True)
    out_json.write_text(json.dumps(results, indent=2))
    text = markdown(results)
    (ROOT / "docs/exposure.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
