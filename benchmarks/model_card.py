"""Evaluate the shipped models on the standard LoL-v1 test set (eval15) and on LoL-v2-real Test; write
the model card.

    python benchmarks/model_card.py --data ../shared/datasets            # evaluate what is missing, write
    python benchmarks/model_card.py --card-only                          # rewrite the card from the JSON

Writes benchmarks/results/<model>-lol-v2-real.json (every protocol and mode) and
<model>-lol-v1-eval15.json (the field's LoL-v1 protocol: full resolution, global mode, per-image means,
no GT-mean) per model (kept: a model is evaluated again only with --again) and docs/model-card.md
covering every shipped model. Metrics are of the network's output
through each engine, without the corrections (docs/quality.md measures those). LoL-v2-real Test is used
here only to report; nothing is chosen on it.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from nanolily.training.data import all_pairs, find_pairs
from nanolily.engine.pipeline import NO_CORRECTIONS
from nanolily.training.evaluate import evaluate, markdown_table
from nanolily.training.losses import VGGPerceptual
from nanolily.training.metrics import LPIPS
from nanolily.training.train import DEFAULT_VGG
from nanolily.models.weights import ASSETS, DEFAULT_MODEL, SHIPPED, feature_weights_path, file_sha256, load_model, read_metadata

ROOT = Path(__file__).resolve().parents[1]
SPLITS = {"splits/lol-v1-train.txt": "LoL-v1 our485, the leak-free split (359 pairs, none of LoL-v2-real Test)",
          "splits/lol-v1-train-full.txt": "LoL-v1 our485, the full pool (445 pairs; lol-v1-val held out)"}
RUNS = [("full", "global"), ("full", "bloom"), ("full", "core"), ("resize224", "core")]
SEED_RUNS = ROOT / "benchmarks/results/seed-stage1-gpu.json"  # written by benchmarks/seed_runs.py

# Published LoL-v1 (eval15) results, as reported by their papers (not re-measured here): name, parameters,
# PSNR, SSIM.
PUBLISHED_LOL_V1 = [
    ("Retinexformer (Cai et al., ICCV 2023)", "1.6M", "25.16", "0.845"),
    ("SNR-Aware (Xu et al., CVPR 2022)", "4.0M", "24.61", "0.842"),
    ("IAT (Cui et al., BMVC 2022)", "~90K", "23.38", "0.809"),
    ("KinD (Zhang et al., ACM MM 2019)", "8.0M", "20.87", "0.790"),
    ("RUAS (Liu et al., CVPR 2021)", "3.4K", "18.23", "0.720"),
    ("Zero-DCE (Guo et al., CVPR 2020)", "~80K", "14.86", "0.562"),
]

# Published LoL-v2-real results, as reported by their authors (not re-measured here).
PUBLISHED = [
    ("NanoLILY (original)", "129K", "19.19", "0.825",
     "the original project's report: 224x224-resized test images, unclamped, batch-pooled PSNR; its stage-1 "
     "training set held 89 of the 100 test images"),
    ("IAT (Cui et al., BMVC 2022)", "~90K", "23.5", "n/c",
     "arXiv 2205.14871 (parameters from its abstract; PSNR as cited in this project's issue #5)"),
    ("LYT-Net (Brateanu et al., 2024)", "45K", "27.23", "0.853",
     "arXiv 2401.15204, 3.49 GFLOPs; protocol as in the authors' code, not checked here"),
    ("Multinex (2025)", "45K", "23.0", "0.860", "as cited in this project's issue #5"),
    ("HVI-CIDNet (Yan et al., 2024)", "1.88M", "24.1", "0.871", "arXiv 2402.05809, as cited in issue #5"),
    ("FLOL+, Zero-DCE, SCI", "", "n/c", "n/c", "not yet checked against their papers in this project"),
]

SEED_RUNS_FINDINGS = """\
On the validation split, which decides, every GPU run of the original recipe is below the shipped
nanolily-v1 (core 17.4-18.8 dB against 20.0, global 16.8-19.2 against 20.5, SSIM far lower), so the
shipped weights stay. With the VGG19 weights in ../shared (Caffe convention: BGR input in 0..255) the
perceptual term's MSE starts at 1.0-1.4 million, so 0.05 x VGG is about 10^5 times the L1 term and the
gradient, clipped to 0.5, follows it alone: at lr 2e-5 for 2400 steps the outputs keep structure poorly
(SSIM 0.58 in core mode, 0.39 in global mode on lol-v1-val). Caffe inputs are about 255 x 0.226 = 57.4
times ImageNet-normalised ones, so a torchvision VGG's term would be about 57.4^2 times smaller; with
the weight divided by that (`vgg-rescaled`, stopped at epoch 176 by the lease) or the term removed
(`no-vgg`) validation SSIM rises to 0.72-0.73 (core), still below the CPU recipe (0.78), which uses 50x
the learning rate and random crops besides whole resized images. On the test set the original runs score
higher PSNR than the shipped model under the original's resize224 protocol (17.7-18.0 against 16.8 dB
pooled, still short of the original's 19.19, measured with 89 of the 100 test images in its training set)
and in core mode, with far lower SSIM (0.56-0.58 against 0.85) and worse LPIPS: they brighten less
(mean output level 0.37-0.39 over the test images in global mode, the references' 0.37, the shipped
model's 0.47), and LoL-v2-real's references are darker than LoL-v1's (docs/exposure.md).

How the data reached the GPU: a lent machine receives at most 64 MiB, less than LoL-v1's 163 MB, so the
359 training pairs were resized to 224x224 here exactly as the loader's `resize` view does and stored as
lossless 8-bit WebP (so within 0.5/255 of the loader's float resize; resizing a 224x224 image to 224x224
is the identity), and the 40 validation pairs travelled as they are. Commands:
`nanolily train --config configs/seed-stage1.yaml --data DATA --out runs/seed-stage1 [--set seed=1]
[--set "loss={l1: 1.0, ssim: 0.01, vgg: 1.5e-5, fft: 0.05}"]`."""

ARCHITECTURE_TEXT = {
    "NanoLILY": "The original NanoLILY architecture (129,016 parameters: a two-scale conv branch and a learnable "
                "224x224 FFT amplitude mask, fused into a residual added to the input).",
    "NanoLILYv2": "NanoLILYv2 (`src/nanolily/models/v2.py`): a resolution-free encoder-decoder that runs at 1/4 to "
                  "1/16 of the pixels and predicts per-pixel exposure maps, a global 3x3 colour matrix from the "
                  "whole image's mean features, and a small full-resolution refinement; no 224 grid, no "
                  "InstanceNorm, so one pass over a whole photo of any size is its natural mode.",
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(SHIPPED), choices=list(SHIPPED))
    p.add_argument("--data", default=str(ROOT.parent / "shared/datasets"))
    p.add_argument("--weights-dir", default=None)
    p.add_argument("--card", default=str(ROOT / "docs/model-card.md"))
    p.add_argument("--card-only", action="store_true", help="rebuild the card from the saved JSON, no evaluation")
    p.add_argument("--again", action="store_true", help="evaluate models that already have a JSON record")
    args = p.parse_args()

    records = []
    for name in args.models:
        out = ROOT / "benchmarks" / "results" / f"{name}-lol-v2-real.json"
        if not args.card_only and (args.again or not out.exists()):
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(evaluate_model(name, Path(args.data), args.weights_dir), indent=2))
        record = json.loads(out.read_text())
        v1_out = ROOT / "benchmarks" / "results" / f"{name}-lol-v1-eval15.json"
        if not args.card_only and (args.again or not v1_out.exists()):
            v1_out.write_text(json.dumps(evaluate_eval15(name, Path(args.data), args.weights_dir), indent=2))
        record["eval15"] = json.loads(v1_out.read_text())["summary"] if v1_out.exists() else None
        if not args.card_only and "validation_global" not in record:
            record["validation_global"] = validate_model(name, Path(args.data))
            out.write_text(json.dumps({k: v for k, v in record.items() if k != "eval15"}, indent=2))
        records.append(record)
        print(markdown_table([(name, s) for s in records[-1]["results"]]))
    Path(args.card).write_text(model_card(records))
    print(f"wrote {args.card}")


def evaluate_model(name: str, data: Path, weights_dir: str | None) -> dict:
    weights = ROOT / "src/nanolily/assets" / SHIPPED[name].file
    pairs = find_pairs(data / "lol-v2-real", "lol-v2", "Test")
    model = load_model(name, device="cpu")
    lpips = LPIPS.from_dir(weights_dir, data)
    vgg = VGGPerceptual(feature_weights_path(DEFAULT_VGG, weights_dir, data))
    results = []
    # core (one 224x224 pass, resized back) and bloom (224x224 tiles) are the original architecture's
    # engines; a resolution-free model runs whole images (the engine refuses it bloom)
    for protocol, mode in RUNS if not model.resolution_free else [r for r in RUNS if r[0] != "full" or r[1] == "global"]:
        start = time.perf_counter()
        _, summary = evaluate(model, pairs, mode, protocol, lpips=lpips, vgg=vgg, progress=True,
                              corrections=NO_CORRECTIONS)
        summary["seconds"] = round(time.perf_counter() - start, 1)
        results.append(summary)
    return {"weights": str(weights.relative_to(ROOT)), "sha256": file_sha256(weights), "version": name,
            "test_set": "LoL-v2-real Test (100 pairs)", "results": results, "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}


def evaluate_eval15(name: str, data: Path, weights_dir: str | None) -> dict:
    """The LoL-v1 protocol: eval15 at full resolution, global mode, the network's output, per-image means."""
    pairs = find_pairs(data / "lol-v1", "lol-v1", "eval15")
    _, summary = evaluate(load_model(name, device="cpu"), pairs, "global", lpips=LPIPS.from_dir(weights_dir, data),
                          corrections=NO_CORRECTIONS)
    return {"version": name, "test_set": "LoL-v1 eval15 (15 pairs)", "summary": summary, "torch": torch.__version__}


def validate_model(name: str, data: Path) -> dict:
    """PSNR / SSIM on lol-v1-val in global mode: the comparison that picks the default model."""
    pairs = all_pairs(data / "lol-v1", "lol-v1", data / "splits/lol-v1-val.txt")
    _, summary = evaluate(load_model(name, device="cpu"), pairs, "global", corrections=NO_CORRECTIONS)
    return {"split": "lol-v1-val", "images": summary["images"], "psnr": summary["psnr"], "ssim": summary["ssim"]}


def model_card(records: list[dict]) -> str:
    summary = ["| model | parameters | training CPU time | val PSNR / SSIM (global) | eval15 PSNR / SSIM / LPIPS | "
               "LoL-v2-real PSNR / SSIM / LPIPS (global) | LoL-v2-real bloom | LoL-v2-real resize224 per image / batch-pooled / all pooled |",
               "|---|---|---|---|---|---|---|---|"]
    sections = []
    for record in records:
        name = record["version"]
        meta = read_metadata(ROOT / record["weights"])
        metrics = json.loads(meta.get("metrics", "{}"))
        val, training = metrics.get("validation", {}), metrics.get("training", {})
        by = {(s["protocol"], s["mode"]): s for s in record["results"]}
        glob, bloom = by[("full", "global")], by.get(("full", "bloom"))
        bloom_psnr = f"{bloom['psnr']:.2f}" if bloom else "-"  # bloom runs the original architecture only
        r224 = by[("resize224", "resize224 forward")]
        global_val = record["validation_global"]
        seen = " (seen in training)" if SHIPPED[name].seen_in_training else ""
        summary.append(
            f"| {name}{' (default)' if name == DEFAULT_MODEL else ''} | {int(meta['parameters']):,} | "
            f"{cost_cell(name)} | "
            f"{global_val.get('psnr', float('nan')):.2f} / {global_val.get('ssim', float('nan')):.3f} | "
            f"{eval15_cell(record.get('eval15'))} | "
            f"{glob['psnr']:.2f} / {glob['ssim']:.3f} / {glob['lpips']:.3f}{seen} | {bloom_psnr} | "
            f"{r224['psnr']:.2f} / {r224['psnr_batch_pooled']:.2f} / {r224['psnr_pooled']:.2f}{seen} |")
        sections.append(model_section(record, meta, val, training, by))
    published = "\n".join(f"| {n} | {params} | {ps} | {ss} | {note} |" for n, params, ps, ss, note in PUBLISHED)
    published_v1 = "\n".join(f"| {n} | {params} | {ps} | {ss} |" for n, params, ps, ss in PUBLISHED_LOL_V1)
    return f"""# Model card: nanolily's shipped models

*Generated by `python benchmarks/model_card.py` from the weights, their metadata and the evaluation
records in `benchmarks/results/`; do not edit by hand.*

Every model here ships in the package: `nanolily enhance --model NAME`, `load_model("NAME")`. The
default, **{DEFAULT_MODEL}**, is chosen by a rule on the validation split (nothing is chosen on a test
set; docs/training.md). Each was trained by nanolily's own pipeline and selected on the held-out
lol-v1-val split (40 pairs, whole scenes); CPU time in the table. Training data:

{training_data_lines(records)}
Test figures: the standard LoL-v1 test set (eval15, 15 pairs) and LoL-v2-real Test (100 pairs); every
image at full resolution, outputs clamped, metrics per image then averaged, no GT-mean correction; the
network's output, without the corrections that `nanolily enhance` applies after it (their effect is in
docs/quality.md). A model trained on the full LoL-v1 pool has seen 86 of the LoL-v2-real test low
images: its LoL-v2-real figures are labelled "seen in training" and are not test figures.

{chr(10).join(summary)}

{chr(10).join(sections)}
{seed_runs_section()}
## Published models on LoL-v1 (eval15, as their papers report)

The field's most reported protocol: trained on our485, tested on eval15 at full resolution. Context,
not re-measured here.

| model | parameters | PSNR | SSIM |
|---|---|---|---|
{published_v1}

How these were chosen differs from this project's rule. LoL-v1 has no validation split, and these
projects' training code validates on eval15 itself and keeps the best checkpoint; their own issue
threads describe the spread that leaves: Retinexformer's maintainer writes that its eval15 figures vary
from run to run and during training (15 test images) and advises training several times
(github.com/caiyuanhao1998/Retinexformer issues 6 and 61; users retraining it report 23-24 dB, issues
61, 197, 198), and users retraining SNR-Aware report 22-22.9 dB against its 24.61
(github.com/JIA-Lab-research/SNR-Aware-Low-Light-Enhance issue 16). nanolily's checkpoints are chosen
on lol-v1-val and eval15 is read once, so its figures carry no such selection. The part of the gap this
explains is not measured here.

## Published lightweight models (LoL-v2-real, as reported by their authors)

Their protocols differ (most evaluate at full resolution; some apply GT-mean brightness correction or
train on LoL-v2-real Train, which is not available here), so the rows are context, not a ranking.

| model | parameters | PSNR | SSIM | source and protocol |
|---|---|---|---|---|
{published}

n/c: not checked in this project yet.

## Limitations

The models learned from indoor LoL-v1 scenes (359 or 445 pairs): outdoor night scenes with light
sources, strong colour casts and heavy sensor noise are outside their training data. The LoL-v2-real test references
are darker on average than LoL-v1's (median image mean 0.38 against 0.47), and the models brighten to
the LoL-v1 level, which costs PSNR there: docs/exposure.md (`python benchmarks/exposure.py`) measures
it, with PSNR/SSIM after matching each output's mean grey level to its reference's ("GT-mean", a
diagnosis that uses the reference). nanolily-v1's 224x224 frequency mask makes each bloom tile
estimate its own illumination. Both learned from 600x400 photos; nanolily-v2 read at its own scale
loses 0.6 dB on the validation scenes upscaled 4x, so the engine reads a photo over ~0.7 MP from a
coarser copy (scale matching, docs/scales.md). docs/quality.md measures four documented failure modes
and their fixes.
"""


def training_data_lines(records: list[dict]) -> str:
    """One line per model: what it was trained on, and any test images among them."""
    lines = []
    for record in records:
        name = record["version"]
        data = read_metadata(ROOT / record["weights"]).get("training_data", "?")
        data = next((text for split, text in SPLITS.items() if data.endswith(split)), data)
        seen = SHIPPED[name].seen_in_training
        lines.append(f"- {name}: {data}" + (f" (seen in training: {seen})" if seen else ""))
    return "\n".join(lines) + "\n"


def cpu_minutes(name: str) -> float:
    """The training CPU time of a shipped model's own run, from its metadata."""
    metrics = json.loads(read_metadata(ASSETS / SHIPPED[name].file).get("metrics", "{}"))
    return metrics.get("training", {}).get("cpu_time_s", 0) / 60


def total_minutes(name: str) -> float:
    """The recipe's CPU time: the run's own, plus that of the models it continued (``starts_from``)."""
    base = SHIPPED[name].starts_from
    return cpu_minutes(name) + (total_minutes(base) if base else 0)


def cost_cell(name: str) -> str:
    base = SHIPPED[name].starts_from
    if not base:
        return f"{cpu_minutes(name):.0f} CPU-min"
    return f"{total_minutes(name):.0f} CPU-min ({base}'s {total_minutes(base):.0f} + {cpu_minutes(name):.0f})"


def starts_from_note(name: str) -> str:
    base = SHIPPED[name].starts_from
    return (f" It continues {base} ({total_minutes(base):.0f} CPU-min in all), so the recipe's total is "
            f"{total_minutes(name):.0f} CPU-min.") if base else ""


def seen_line(name: str) -> str:
    seen = SHIPPED[name].seen_in_training
    return f"- **Seen in training**: {seen}; its LoL-v2-real rows below are not test figures.\n" if seen else ""


def eval15_cell(summary: dict | None) -> str:
    return "-" if not summary else f"{summary['psnr']:.2f} / {summary['ssim']:.3f} / {summary['lpips']:.3f}"


def seed_runs_section() -> str:
    """The original recipe at full length, run on a GPU (benchmarks/seed_runs.py), beside the shipped v1."""
    if not SEED_RUNS.exists():
        return ""
    from seed_runs import table  # beside this script

    return f"""## The original recipe at full length (GPU runs, not shipped)

`configs/seed-stage1.yaml` is the original's stage 1 exactly: 200 epochs of batch 32 on whole images
resized to 224x224, AdamW lr 2e-5, loss L1 + (0.01, from epoch 50 0.2) x (1 - SSIM) + 0.05 x VGG19
relu3_4 MSE + 0.05 x FFT amplitude, ReduceLROnPlateau from epoch 50, the checkpoint chosen by
validation SSIM in core mode; here on the same leak-free split as the shipped models. It ran on one
NVIDIA H200 lent to one session (about 6 minutes per run, two runs at a time); the original's stage 2
fine-tunes on LoL-v2-real Train, which these machines do not have. Run folders (weights, config, logs):
`checkpoints/seed-stage1-gpu/`; figures from `python benchmarks/seed_runs.py`, test set reported only:

{table(json.loads(SEED_RUNS.read_text()))}

{SEED_RUNS_FINDINGS}
"""


def model_section(record: dict, meta: dict, val: dict, training: dict, by: dict) -> str:
    name = record["version"]
    config = json.loads(meta.get("train_config", "{}"))
    table = markdown_table([(name, s) for s in record["results"]])
    loss = " + ".join(f"{w}*{k}" for k, w in config.get("loss", {}).items())
    r224 = by[("resize224", "resize224 forward")]
    extras = ""
    if config.get("exposure"):
        extras += " Each low image's exposure scaled by a factor from {} to {} in linear light.".format(*config["exposure"])
    if config.get("ema"):
        extras += f" Weights averaged (EMA, decay {config['ema']}); the average is validated and shipped."
    exposures = config.get("val_exposures", [1.0])
    over = (f"; the mean over the inputs re-exposed by {', '.join(f'{f:g}' for f in exposures)}"
            if len(exposures) > 1 else "")
    threads = f"{training['threads']} training thread{'s' if training['threads'] > 1 else ''}" if "threads" in training else "both cores"
    return f"""## {name}

{ARCHITECTURE_TEXT[meta['architecture']]} File: `{record['weights']}`, sha256 `{record['sha256']}`.

- Recipe: `{' '.join(filter(None, (SHIPPED[name].recipe, SHIPPED[name].recipe_overrides)))}` ({config.get('name')}): {config.get('max_steps')} steps of batch
  {config.get('batch_size')}, `{config.get('crop')}` views of size {config.get('size')}, flips and rotations; AdamW lr
  {config.get('lr')} ({config.get('scheduler')}, warm-up {config.get('warmup_steps')} steps, to {config.get('min_lr')}),
  weight decay {config.get('weight_decay')}, gradient clipping {config.get('grad_clip')}; loss {loss}.{extras} Seed {config.get('seed')}.
- Hardware: 2 CPU cores ({record['machine']}), torch {record['torch']}, {threads}. Wall time
  {training.get('wall_time_s', 0) / 60:.1f} min for {training.get('steps')} steps (validation included); CPU time
  {training.get('cpu_time_s', 0) / 60:.1f} min.{starts_from_note(name)}
{seen_line(name)}- Selected at step {meta.get('step')} by validation (lol-v1-val, full resolution, {val.get('val_mode')} mode{over}):
  PSNR {val.get('psnr', float('nan')):.2f} dB, SSIM {val.get('ssim', float('nan')):.4f}.

{table}
Rows: **global** is one pass over the whole image (the default mode); **bloom** the original's engine,
224x224 tiles at stride 112, blended; **core** (nanolily-v1 only) one 224x224 pass resized back;
**resize224** the original's
measurement (images resized to 224x224, one forward pass of the network at its own scale, unclamped).
The original pooled PSNR "over batches" without stating its evaluation batch, so three readings:
per image {r224['psnr']:.2f} dB, pooled within batches of {r224['pool_batch']} (its training batch; `psnr_batch_pooled`)
{r224['psnr_batch_pooled']:.2f} dB, pooled over all 100 images {r224['psnr_pooled']:.2f} dB. Comparable only with the
original's own 19.19 dB, measured with 89 of the 100 test images in its training set.
"""


if __name__ == "__main__":
    main()
