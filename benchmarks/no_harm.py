"""Do no harm: what the enhancer does to photos that are already well lit.

    python benchmarks/no_harm.py --data ../shared/datasets [--models nanolily-v2 checkpoints/RUN/best.safetensors]

Three sets, each run through the pipeline as `nanolily enhance` runs it (global mode, the default
corrections):

- **references**: the normal-light references of LoL-v1's eval15 and lol-v1-val, fed as inputs. Targets
  (issue #24): the output's mean level within 10 % of the input's, and no image with more than 0.5 %
  newly clipped pixels.
- **photos**: well-lit and mixed photos that ship with scikit-image (a portrait, skies, a night sky
  with stars, indoor scenes, grayscale photos; the `bench` extra). Target: no image with more than 1 %
  newly clipped pixels. Reported beside it: the mean level ratio, and how much the darkest tenth of the
  input (a night sky) brightens.
- **grayscale**: each colour photo and its grayscale version; the grayscale output's mean level
  against the colour output's luminance (the same treatment for both is a ratio near 1).
- **halo**: a made night scene (`nanolily.training.synthesis.night_scene`: a lit building on a dark sky)
  at 600x400, 1920x1080 and 3840x2160; the sky's lift 2..128 pixels beside the building over the lift
  of the sky far from it (`synthesis.halo`). Target (issue #24, "without halos around light sources"):
  within 1 +- 0.1 at every distance and size. Beside it, the same without the halo guard
  (`--no-guard-halos`: the network's own reading), and the seconds each takes (medians of 3 interleaved
  runs, `--threads` threads). Then, at 1920x1080, the building at levels 0.3 to 0.9: the lowest and
  highest ratio over the distances, with and without the guard.

Newly clipped: the share of pixels whose brightest channel is >= 0.98 in the output where it was
< 0.9 in the input. Mean level: the mean of the BT.601 luminance in [0, 1].
Writes benchmarks/results/no_harm.json and docs/no-harm.md and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch

from nanolily.engine.pipeline import enhance_photo, enhance_tensor
from nanolily.io.images import read_image, with_pixels
from nanolily.io.samples import sample_paths
from nanolily.models.weights import available_models, load_model
from nanolily.training import metrics
from nanolily.training.metrics import LEVEL_TOLERANCE, PHOTO_CLIP, REFERENCE_CLIP
from nanolily.training.data import find_pairs
from nanolily.training.synthesis import HALO_DISTANCES, halo, night_scene

from inference import machine_class  # noqa: E402  (benchmarks/inference.py)

ROOT = Path(__file__).resolve().parents[1]
CLIP, BELOW = 0.98, 0.9
HALO_SIZES = ((400, 600), (1080, 1920), (2160, 3840))
HALO_LIGHTS = (0.3, 0.5, 0.7, 0.9)  # the building's level in the sweep (1920x1080)
HALO_TOLERANCE = 0.1  # the sky beside a light lifted within 10 % of the far sky's lift
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# scikit-image's bundled photos (CC0 / public domain, skimage/data/README.txt): what each shows
PHOTOS = {
    "astronaut.png": "portrait, face in studio light",
    "coffee.png": "cup on a table, daylight",
    "chelsea.png": "cat, indoor",
    "rocket.jpg": "rocket and sky, daylight",
    "motorcycle_left.png": "motorcycle, bright indoor",
    "brick.png": "brick wall (gray)",
    "camera.png": "cameraman, sky (gray)",
    "coins.png": "coins (gray)",
    "moon.png": "moon surface (gray)",
    "hubble_deep_field.jpg": "night sky with stars",
    "grass.png": "grass (gray)",
    "gravel.png": "gravel (gray)",
}


def level(pixels: np.ndarray) -> float:
    """Mean BT.601 luminance of (H, W, C) pixels in [0, 1]; grayscale as it is."""
    return float((pixels @ LUMA).mean() if pixels.shape[-1] == 3 else pixels.mean())


def newly_clipped(before: np.ndarray, after: np.ndarray) -> float:
    """:func:`nanolily.training.metrics.newly_clipped` of (H, W, C) pixels."""
    as_batch = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None]
    return float(metrics.newly_clipped(as_batch(before), as_batch(after), CLIP, BELOW)[0])


def dark_lift(before: np.ndarray, after: np.ndarray) -> float:
    """Mean output level over the darkest tenth of the input's pixels, minus their input level."""
    luma_in = before @ LUMA if before.shape[-1] == 3 else before[..., 0]
    luma_out = after @ LUMA if after.shape[-1] == 3 else after[..., 0]
    dark = luma_in <= np.quantile(luma_in, 0.1)
    return float(luma_out[dark].mean() - luma_in[dark].mean())


def halo_passes(ratios: list[float]) -> bool:
    """The sky beside the light lifted within HALO_TOLERANCE of the far sky's lift, at every distance."""
    return all(abs(r - 1) <= HALO_TOLERANCE for r in ratios)


def measure(photo, model) -> dict:
    out = enhance_photo(photo, model)
    before, after = photo.pixels, out.pixels
    return {"level_in": level(before), "level_out": level(after), "ratio": level(after) / max(level(before), 1e-6),
            "newly_clipped": newly_clipped(before, after), "dark_lift": dark_lift(before, after)}


def reference_set(data: Path) -> list[tuple[str, Path]]:
    lol = data / "lol-v1"
    pairs = [("eval15/" + p.id, p.high) for p in find_pairs(lol, "lol-v1", "eval15")]
    pairs += [("val/" + p.id, p.high) for p in find_pairs(lol, "lol-v1", "our485", data / "splits/lol-v1-val.txt")]
    return pairs


def photo_set() -> list[tuple[str, Path]]:
    folder = files("skimage") / "data"
    return [(name, Path(str(folder / name))) for name in PHOTOS] + [(p.name, p) for p in sample_paths()]


def gray_version(photo):
    return with_pixels(photo, (photo.pixels @ LUMA)[..., None])


def run_model(name: str, data: Path | None, progress: bool) -> dict:
    from tqdm.auto import tqdm

    model = load_model(name, device="cpu")
    result = {"references": {}, "photos": {}, "grayscale": {}, "halo": {}, "halo_alone": {}, "halo_seconds": {},
              "halo_by_light": {}}
    sets = [("references", reference_set(data))] if data else []
    sets.append(("photos", photo_set()))
    for kind, items in sets:
        for label, path in tqdm(items, desc=f"{Path(name).stem} {kind}", disable=not progress, leave=False):
            photo = read_image(path)
            result[kind][label] = measure(photo, model)
            if kind == "photos" and not photo.is_grayscale:
                colour_out = enhance_photo(photo, model).pixels
                gray_out = enhance_photo(gray_version(photo), model).pixels
                result["grayscale"][label] = {"colour_out": level(colour_out), "gray_out": level(gray_out),
                                              "ratio": level(gray_out) / max(level(colour_out), 1e-6)}
    for height, width in HALO_SIZES:
        scene, building = night_scene(height, width)
        size = f"{width}x{height}"
        result["halo"][size] = halo(scene, enhance_tensor(scene, model), building)
        result["halo_alone"][size] = halo(scene, enhance_tensor(scene, model, guard_halos=False), building)
        seconds = {True: [], False: []}
        for _ in range(3):
            for guard in seconds:
                start = time.perf_counter()
                enhance_tensor(scene, model, guard_halos=guard)
                seconds[guard].append(time.perf_counter() - start)
        result["halo_seconds"][size] = {"guard": statistics.median(seconds[True]),
                                        "alone": statistics.median(seconds[False])}
    for light in HALO_LIGHTS:
        scene, building = night_scene(1080, 1920, light=light)
        result["halo_by_light"][str(light)] = {
            key: halo(scene, enhance_tensor(scene, model, guard_halos=guard), building)
            for key, guard in (("guard", True), ("alone", False))}
    return result


def summary(result: dict) -> dict:
    refs, photos = result["references"].values(), result["photos"].values()
    out = {}
    if refs:
        out["references"] = {
            "images": len(refs), "ratio_min": min(r["ratio"] for r in refs), "ratio_max": max(r["ratio"] for r in refs),
            "outside_level_tolerance": sum(abs(r["ratio"] - 1) > LEVEL_TOLERANCE for r in refs),
            "max_newly_clipped": max(r["newly_clipped"] for r in refs),
            "over_clip_limit": sum(r["newly_clipped"] > REFERENCE_CLIP for r in refs)}
        out["references"]["passes"] = not (out["references"]["outside_level_tolerance"]
                                          or out["references"]["over_clip_limit"])
    out["photos"] = {"images": len(photos), "max_newly_clipped": max(r["newly_clipped"] for r in photos),
                     "over_clip_limit": sum(r["newly_clipped"] > PHOTO_CLIP for r in photos)}
    out["photos"]["passes"] = out["photos"]["over_clip_limit"] == 0
    gray = [g["ratio"] for g in result["grayscale"].values()]
    out["grayscale"] = {"ratio_min": min(gray), "ratio_max": max(gray), "ratio_median": statistics.median(gray)}
    ratios = [r for profile in result["halo"].values() for r in profile]
    out["halo"] = {"ratio_min": min(ratios), "ratio_max": max(ratios), "passes": halo_passes(ratios)}
    return out


def tables(results: dict) -> str:
    lines = ["| model | references: level ratio min-max | outside +-10 % | max newly clipped | passes | "
             "photos: max newly clipped | over 1 % | passes | gray / colour level, min-max |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results["models"].items():
        s, ref = r["summary"], r["summary"].get("references")
        ref_cells = (f"{ref['ratio_min']:.2f}-{ref['ratio_max']:.2f} | {ref['outside_level_tolerance']} of "
                     f"{ref['images']} | {100 * ref['max_newly_clipped']:.2f} % | {'yes' if ref['passes'] else 'no'}"
                     if ref else "- | - | - | -")
        p, g = s["photos"], s["grayscale"]
        lines.append(f"| {name} | {ref_cells} | {100 * p['max_newly_clipped']:.2f} % | {p['over_clip_limit']} of "
                     f"{p['images']} | {'yes' if p['passes'] else 'no'} | {g['ratio_min']:.2f}-{g['ratio_max']:.2f} |")
    lines += ["", "Halo: the made night scene's sky lifted beside the building, over the far sky's lift, "
              f"at {', '.join(str(d) for d in HALO_DISTANCES)} pixels (within 1 +- {HALO_TOLERANCE} passes):", "",
              "| model | size | ratio by distance | passes | without the halo guard | passes | seconds with / "
              "without |", "|---|---|---|---|---|---|---|"]
    for name, r in results["models"].items():
        for size, profile in r["halo"].items():
            alone, seconds = r["halo_alone"][size], r["halo_seconds"][size]
            lines.append(f"| {name} | {size} | {' '.join(f'{x:.2f}' for x in profile)} | "
                         f"{'yes' if halo_passes(profile) else 'no'} | {' '.join(f'{x:.2f}' for x in alone)} | "
                         f"{'yes' if halo_passes(alone) else 'no'} | {seconds['guard']:.2f} / {seconds['alone']:.2f} |")
    lines += ["", "Halo by the light's level (1920x1080; the sky beside the building over the far sky, lowest and "
              "highest over the distances):", "",
              "| model | " + " | ".join(f"building {light}" for light in HALO_LIGHTS) + " |",
              "|---|" + "---|" * len(HALO_LIGHTS)]
    for name, r in results["models"].items():
        cells = [f"{min(p['guard']):.2f}-{max(p['guard']):.2f} (alone {min(p['alone']):.2f}-{max(p['alone']):.2f})"
                 for p in r["halo_by_light"].values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Per photo (level in -> out, newly clipped, lift of the darkest tenth):", "",
              "| model | photo | shows | level in | level out | newly clipped | dark lift |", "|---|---|---|---|---|---|---|"]
    for name, r in results["models"].items():
        for label, m in r["photos"].items():
            lines.append(f"| {name} | {label} | {PHOTOS.get(label, 'bundled dark sample')} | {m['level_in']:.3f} | "
                         f"{m['level_out']:.3f} | {100 * m['newly_clipped']:.2f} % | {m['dark_lift']:+.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="datasets root (lol-v1/, splits/); without it, the photos only")
    parser.add_argument("--models", nargs="+", default=available_models()[::-1],
                        help="shipped names or .safetensors files (default: every shipped model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/no_harm.json"))
    parser.add_argument("--doc", default=str(ROOT / "docs/no-harm.md"))
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = Path(args.data) if args.data else None
    results = {"command": "python benchmarks/no_harm.py " + " ".join(__import__("sys").argv[1:]),
               "date": time.strftime("%Y-%m-%d", time.gmtime()), "machine": machine_class(), "threads": args.threads,
               "models": {}}
    for name in args.models:
        r = run_model(name, data, not args.quiet)
        r["summary"] = summary(r)
        results["models"][name] = r
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    text = tables(results)
    Path(args.doc).write_text("# Do no harm: well-lit photos through the enhancer\n\n"
                              "*Written by `benchmarks/no_harm.py` (do not edit by hand); JSON: "
                              "`benchmarks/results/no_harm.json`.*\n\n"
                              f"Command: `{results['command']}` ({results['date']}; times on {results['machine']}, "
                              f"{results['threads']} threads). What each set and column "
                              "means is in the script's docstring; every output is what `nanolily enhance` "
                              "writes with its defaults.\n\n" + text)
    print(text)


if __name__ == "__main__":
    main()
