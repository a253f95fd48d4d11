"""The original NanoLILY stage-1 recipe at full length (trained on a GPU), measured beside the shipped model.

    python benchmarks/seed_runs.py --data ../shared/datasets

Each folder under checkpoints/seed-stage1-gpu/ is one run of `configs/seed-stage1.yaml` (its
config.json, summary.json, logs and best.safetensors). The checkpoint was chosen during training, as the
original chose it: validation SSIM on lol-v1-val in core mode. This script measures every run and the
shipped nanolily-v1 the same way: lol-v1-val in core and global mode, and LoL-v2-real Test (reported
only, nothing is chosen on it) in global and core mode at full resolution and under the original's
resize224 protocol. Prints a markdown table and writes benchmarks/results/seed-stage1-gpu.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

from nanolily.training.data import all_pairs, find_pairs, load_rgb_uint8
from nanolily.engine.pipeline import NO_CORRECTIONS, enhance_tensor
from nanolily.training.evaluate import evaluate, to_float
from nanolily.training.metrics import LPIPS
from nanolily.models.weights import load_model

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "checkpoints/seed-stage1-gpu"
SHIPPED = "nanolily-v1"


def measure(weights: str, data: Path, lpips: LPIPS) -> dict:
    model = load_model(weights, device="cpu")
    val = all_pairs(data / "lol-v1", "lol-v1", data / "splits/lol-v1-val.txt")
    test = find_pairs(data / "lol-v2-real", "lol-v2", "Test")
    result = {}
    for name, pairs, protocol, mode, metric in [
            ("val_core", val, "full", "core", None), ("val_global", val, "full", "global", None),
            ("test_global", test, "full", "global", lpips), ("test_core", test, "full", "core", None),
            ("test_resize224", test, "resize224", "core", None)]:
        _, summary = evaluate(model, pairs, mode, protocol, lpips=metric, progress=True, corrections=NO_CORRECTIONS)
        result[name] = {k: summary[k] for k in ("images", "psnr", "ssim", "lpips", "psnr_pooled") if k in summary}
    # how bright the outputs come out (test, global mode) against the references: mean level over images
    levels = [(float(enhance_tensor(low, model, mode="global", **NO_CORRECTIONS).mean()), float(high.mean()))
              for low, high in ((to_float(load_rgb_uint8(p.low)), to_float(load_rgb_uint8(p.high))) for p in test)]
    result["test_global"]["mean_level"] = statistics.mean(out for out, _ in levels)
    result["test_reference_level"] = statistics.mean(ref for _, ref in levels)
    return result


def describe(run: Path) -> dict:
    """The run's recipe and course, from its config and validation log (a run stopped by a time limit
    has no summary.json: its last validation is where it stopped)."""
    config = json.loads((run / "config.json").read_text())
    with open(run / "val_log.csv", newline="") as f:
        log = list(csv.DictReader(f))
    best = [r for r in log if r["best"] == "True"][-1]
    return {"loss": config["loss"], "seed": config["seed"], "epochs": int(log[-1]["epoch"]) + 1,
            "of_epochs": config["epochs"], "steps": int(log[-1]["step"]), "wall_time_s": float(log[-1]["elapsed_s"]),
            "best_epoch": int(best["epoch"]), "note": (run / "NOTE").read_text().strip()}


def table(records: list[dict]) -> str:
    rows = ["| run | seed | VGG weight | epochs | selected at epoch | val core PSNR / SSIM (selects) | "
            "val global PSNR / SSIM | test global PSNR / SSIM / LPIPS | test global mean level | "
            "test core PSNR / SSIM | test resize224 pooled PSNR / SSIM |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        m = r["metrics"]
        vgg = f"{r['loss'].get('vgg', 0):g}" if "loss" in r else "0 (configs/cpu.yaml)"
        rows.append(
            f"| {r['run']} | {r.get('seed', 0)} | {vgg} | {r['epochs'] if 'epochs' in r else '-'} | "
            f"{r.get('best_epoch', '-')} | {m['val_core']['psnr']:.2f} / {m['val_core']['ssim']:.3f} | "
            f"{m['val_global']['psnr']:.2f} / {m['val_global']['ssim']:.3f} | "
            f"{m['test_global']['psnr']:.2f} / {m['test_global']['ssim']:.3f} / {m['test_global']['lpips']:.3f} | "
            f"{m['test_global']['mean_level']:.3f} (references {m['test_reference_level']:.3f}) | "
            f"{m['test_core']['psnr']:.2f} / {m['test_core']['ssim']:.3f} | "
            f"{m['test_resize224']['psnr_pooled']:.2f} / {m['test_resize224']['ssim']:.3f} |")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared/datasets"))
    p.add_argument("--weights-dir", default=None, help="folder with the AlexNet/LPIPS weights")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/seed-stage1-gpu.json"))
    p.add_argument("--table-only", action="store_true", help="print the table of an earlier run's JSON")
    args = p.parse_args()
    if args.table_only:
        print(table(json.loads(Path(args.out).read_text())))
        return
    data = Path(args.data)
    lpips = LPIPS.from_dir(args.weights_dir, data)
    records = []
    for run in sorted(d for d in RUNS.iterdir() if (d / "best.safetensors").exists()):
        records.append({"run": run.name, **describe(run),
                        "metrics": measure(str(run / "best.safetensors"), data, lpips)})
    records.sort(key=lambda r: (-r["loss"].get("vgg", 0), r["seed"]))  # the original recipe first
    records.append({"run": f"{SHIPPED} (shipped, CPU recipe)", "metrics": measure(SHIPPED, data, lpips)})
    Path(args.out).write_text(json.dumps(records, indent=2))
    print(table(records))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
