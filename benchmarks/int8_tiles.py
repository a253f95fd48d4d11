"""Would int8 make LILY Bloom fast enough? An experiment for issue #4 (bloom at its default settings
>= 3x the original loop at 4K, losing <= 0.05 dB): NanoLILY's tile with its three big convolutions in
int8, measured for speed and quality. Not part of the package.

The int8 tile (:class:`Int8Tile`) keeps the first convolution, both InstanceNorms, the FFT branch and
the fused output in float32 and runs the 32->64 stride-2 convolution and the composed decoder's two
convolutions (nanolily.models.v1.SpatialBranch.decode) through oneDNN's int8 kernels
(``torch.ops.onednn.qconv2d_pointwise``, the ones PyTorch's x86 quantisation lowers to), with
weights quantised per output channel and activations per tensor with a fixed range. The ranges are
calibrated once on LoL-v1 *training* tiles (the 0.01 % / 99.99 % quantiles of each normalised map).
Activations use 7 bits (0..127): on an AVX2 CPU without VNNI, oneDNN multiplies u8 x s8 in pairs that
are summed in int16, which saturates with full 8-bit activations (measured: errors of ~0.1 on maps of
range ~3); with 7 bits the integer arithmetic is exact.

Measured in one process, round-robin (changes in the machine's speed hit every case alike): a 3840x2160
photo through the original's loop, nanolily bloom (float32; the package's engine), the int8 tile, and
both on two worker threads of one intra-op thread each (tiles split between them, each with its own
canvas). Quality: bloom at stride 112 on lol-v1-val (the validation split) and LoL-v2-real test
(reported only), PSNR / SSIM per image as `nanolily evaluate`, against float32 bloom.

    python benchmarks/int8_tiles.py --data ../shared/datasets
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from inference import make_input  # noqa: E402
from original_bloom import original_bloom, original_model  # noqa: E402

from nanolily.models import v1 as nanolily_model  # noqa: E402
from nanolily.engine.bloom import blend_window, bloom, plan_tiles  # noqa: E402
from nanolily.training.data import all_pairs, find_pairs, load_rgb_uint8  # noqa: E402
from nanolily.training.metrics import psnr, ssim  # noqa: E402
from nanolily.models.weights import load_model  # noqa: E402

LEVELS = 127  # 7-bit activations: exact on AVX2 (see the module docstring)
CHANNELS_LAST = torch.channels_last


def normalised_maps(branch, tile: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The spatial branch's two normalised maps for a tile: s1 (after the first norm) and d (after the
    second), as float32 runs them."""
    slope = branch.negative_slope
    s1 = F.leaky_relu(nanolily_model._instance_norm_(branch.conv_in(tile.contiguous(memory_format=CHANNELS_LAST))), slope)
    d = F.leaky_relu(nanolily_model._instance_norm_(branch.down(s1)), slope)
    return s1, d


def calibrate(model, tiles: list[torch.Tensor], low_q: float = 1e-4, high_q: float = 1 - 1e-4) -> dict:
    """Activation ranges (low, high) for s1 and d from ``tiles`` (training images only)."""
    branch = model.spatial.followed_by(model.fuse)
    samples = {"s1": [], "d": []}
    with torch.inference_mode():
        for tile in tiles:
            s1, d = normalised_maps(branch, tile)
            samples["s1"].append(s1.flatten()[::97])
            samples["d"].append(d.flatten()[::23])
    ranges = {}
    for name, parts in samples.items():
        values = torch.cat(parts)
        ranges[name] = [float(torch.quantile(values, low_q)), float(torch.quantile(values, high_q))]
    return ranges


class Int8Tile:
    """NanoLILY on one (1, 3, 224, 224) tile with its three big convolutions in int8 (see the module
    docstring); ``ranges``: :func:`calibrate`'s."""

    def __init__(self, model, ranges: dict):
        self.model = model
        self.branch = branch = model.spatial.followed_by(model.fuse)
        decoder_weight, self.decoder_bias, skip_weight = branch.composed_weights()
        self.scale = {name: (high - low) / LEVELS for name, (low, high) in ranges.items()}
        self.zero = {name: round(-low / self.scale[name]) for name, (low, _) in ranges.items()}
        self.down = self._pack(branch.down.weight, "s1", 2)
        self.decoder = self._pack(decoder_weight, "d", 1)
        self.skip = self._pack(skip_weight, "s1", 2)
        self.mix = model.fuse.weight[:, model.config.channels:, 0, 0].detach()

    def _pack(self, weight: torch.Tensor, source: str, stride: int) -> tuple:
        weight = weight.detach().float()
        scale = weight.abs().amax((1, 2, 3)) / 127
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # the zero padding channels
        q = (weight / scale[:, None, None, None]).round().clamp(-127, 127).to(torch.int8)
        packed = torch.ops.onednn.qconv_prepack(q.contiguous(memory_format=CHANNELS_LAST), scale, self.scale[source],
                                                self.zero[source], [stride] * 2, [1, 1], [1, 1], 1, None)
        return packed, scale, torch.zeros(len(scale), dtype=torch.long), source, stride

    def _conv(self, q: torch.Tensor, packed: tuple, bias: torch.Tensor | None) -> torch.Tensor:
        weight, scale, zero, source, stride = packed
        return torch.ops.onednn.qconv2d_pointwise(q, self.scale[source], self.zero[source], weight, scale, zero, bias,
                                                  [stride] * 2, [1, 1], [1, 1], 1, 1.0, 0, torch.float32, "none", [], "")

    def _quantise(self, t: torch.Tensor, name: str) -> torch.Tensor:
        """``t`` in ``name``'s 7-bit grid; ``t`` is overwritten."""
        t = t.mul_(1 / self.scale[name]).add_(self.zero[name] + 0.5)  # +0.5: the cast below truncates
        return t.clamp_(0, LEVELS + 0.49).to(torch.uint8)

    @torch.inference_mode()
    def __call__(self, tile: torch.Tensor) -> torch.Tensor:  # (1, 3, 224, 224) -> (1, 3, 224, 224)
        branch, slope = self.branch, self.branch.negative_slope
        s1 = nanolily_model._instance_norm_(branch.conv_in(tile.contiguous(memory_format=CHANNELS_LAST)))
        s1 = self._quantise(F.leaky_relu(s1, slope, inplace=True), "s1")  # (1, 32, 224, 224) uint8
        down = self._conv(s1, self.down, branch.down.bias.detach())
        d = F.leaky_relu(nanolily_model._instance_norm_(down), slope, inplace=True)  # (1, 64, 112, 112)
        phases = self._conv(self._quantise(d.clone(), "d"), self.decoder, self.decoder_bias).add_(self._conv(s1, self.skip, None))
        spatial = branch.fix_border(F.pixel_shuffle(phases[:, :4 * tile.shape[1]], 2), d, (True,) * 4)
        return nanolily_model._fused_output(tile, spatial, self.model.frequency(tile), self.mix)


def bloom_on_workers(predictor, image: torch.Tensor, workers: int = 2, patch: int = 224, stride: int = 112) -> torch.Tensor:
    """nanolily's bloom (same plan, window and normalisation) with the tiles split between ``workers``
    threads of one intra-op thread each, each adding into its own canvas; ``image``: (1, 3, H, W)."""
    height, width = image.shape[-2:]
    tiles = plan_tiles(height, width, patch, stride)
    window = blend_window(patch)
    tile_weight = window[:, None] * window[None, :]
    canvases = [torch.zeros_like(image) for _ in range(workers)]
    weight = torch.zeros(height, width)
    for y, x in tiles:
        weight[y:y + patch, x:x + patch] += tile_weight

    def work(k: int) -> None:
        with torch.inference_mode():
            for y, x in tiles[k::workers]:
                canvases[k][..., y:y + patch, x:x + patch] += predictor(image[..., y:y + patch, x:x + patch]) * tile_weight

    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pool = [threading.Thread(target=work, args=(k,)) for k in range(workers)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
    finally:
        torch.set_num_threads(threads_before)
    return sum(canvases) / weight


def quality(cases: dict, pairs: list, quiet: bool) -> dict:
    from tqdm.auto import tqdm

    sums = {name: {"psnr": 0.0, "ssim": 0.0, "rms_vs_float32": 0.0} for name in cases}
    for pair in tqdm(pairs, unit="img", disable=quiet, leave=False):
        low = load_rgb_uint8(pair.low).float()[None] / 255
        high = load_rgb_uint8(pair.high).float()[None] / 255
        outs = {name: run(low).clamp(0, 1) for name, run in cases.items()}
        for name, out in outs.items():
            sums[name]["psnr"] += float(psnr(out, high))
            sums[name]["ssim"] += float(ssim(out, high))
            sums[name]["rms_vs_float32"] += float((out - outs["float32"]).pow(2).mean().sqrt())
    return {name: {key: value / len(pairs) for key, value in s.items()} for name, s in sums.items()}


def report(results: dict) -> str:
    """The speed and quality tables of a run, as markdown."""
    speed = results["speed"]
    rounds = len(next(iter(speed["cases"].values()))["times"])
    lines = [f"{speed['size']}, stride 112, {speed['tiles']} tiles, {results['threads']} threads, median of "
             f"{rounds} rounds ({results['date'][:10]}):\n",
             "| case | median s | vs (a) | max abs diff vs float32 bloom (clamped) |", "|---|---|---|---|"]
    for name, row in speed["cases"].items():
        lines.append(f"| {name} | {row['median_s']:.2f} | {row['speedup_vs_a']:.2f}x | "
                     f"{row['max_abs_diff_vs_float32']:.1e} |")
    lines += ["", "Bloom at stride 112, PSNR / SSIM per image, and the RMS difference from float32 bloom:\n",
              "| split | float32 | int8 tile | PSNR change | RMS vs float32 |", "|---|---|---|---|---|"]
    for split, q in results["quality"].items():
        f, i = q["float32"], q["int8"]
        lines.append(f"| {split} | {f['psnr']:.3f} / {f['ssim']:.4f} | {i['psnr']:.3f} / {i['ssim']:.4f} | "
                     f"{i['psnr'] - f['psnr']:+.3f} dB | {i['rms_vs_float32']:.4f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="datasets root (lol-v1/, lol-v2-real/, splits/)")
    parser.add_argument("--size", default="3840x2160", help="WIDTHxHEIGHT of the timed photo (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/int8_tiles.json"))
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    model = load_model("nanolily-v1", device="cpu").eval()

    train = all_pairs(data / "lol-v1", "lol-v1", data / "splits/lol-v1-train.txt")[:20]
    calibration_tiles = []
    for pair in train:
        image = load_rgb_uint8(pair.low).float()[None] / 255
        calibration_tiles += [image[..., y:y + 224, x:x + 224]
                              for y, x in plan_tiles(*image.shape[-2:], 224, 112)[::3]]
    ranges = calibrate(model, calibration_tiles)
    int8 = Int8Tile(model, ranges)
    print(f"activation ranges from {len(calibration_tiles)} training tiles: {ranges}", file=sys.stderr)

    results = {"command": "python benchmarks/int8_tiles.py " + " ".join(sys.argv[1:]),
               "date": time.strftime("%Y-%m-%d", time.gmtime()), "torch": torch.__version__,
               "threads": args.threads, "ranges": ranges}

    with torch.inference_mode():
        bloom_cases = {"float32": lambda x: bloom(model, x), "int8": lambda x: bloom(int8, x)}
        val = all_pairs(data / "lol-v1", "lol-v1", data / "splits/lol-v1-val.txt")
        test = find_pairs(data / "lol-v2-real", "lol-v2", "Test")
        results["quality"] = {"lol-v1-val": quality(bloom_cases, val, args.quiet),
                              "lol-v2-real-test": quality(bloom_cases, test, args.quiet)}

        width, height = (int(v) for v in args.size.split("x"))
        photo = make_input(width, height)
        original = original_model(model.state_dict()).eval()
        timed = {
            "(a) original loop": lambda: original_bloom(original, photo),
            "nanolily bloom, float32": lambda: bloom(model, photo),
            "nanolily bloom, int8 tile": lambda: bloom(int8, photo),
            "float32, 2 one-thread workers": lambda: bloom_on_workers(model, photo),
            "int8 tile, 2 one-thread workers": lambda: bloom_on_workers(int8, photo),
        }
        outputs = {name: run().clamp(0, 1) for name, run in timed.items()}  # warm-up, and the outputs to compare
        reference = outputs["nanolily bloom, float32"]
        times = {name: [] for name in timed}
        for _ in range(args.rounds):
            for name, run in timed.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["(a) original loop"])
    results["speed"] = {"size": args.size, "tiles": len(plan_tiles(height, width, 224, 112)), "cases": {
        name: {"times": t, "median_s": statistics.median(t), "speedup_vs_a": base / statistics.median(t),
               "max_abs_diff_vs_float32": float((outputs[name] - reference)[..., 1:, 1:].abs().max())}  # (a): black edge
        for name, t in times.items()}}

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(report(results))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
