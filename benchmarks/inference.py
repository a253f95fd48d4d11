"""Inference speed, memory and quality: the original Bloom loop against nanolily's engines, in one run.

    python benchmarks/inference.py --data ../shared/datasets          # everything (~30 min on 2 cores)
    python benchmarks/inference.py --sizes 600x400,1920x1080 --no-quality --no-stride-sweep --no-defaults-sweep  # quick

Cases, all with the same shipped weights and the same inputs:
  a  original   the original project's loop (benchmarks/original_bloom.py): batch 1, stride 112, Hann, weight map
  b  bloom112   nanolily bloom, stride 112, fp32 (the original's tiling, nanolily's engine)
  c  bloom      nanolily bloom with its default settings (stride, tiles per call, precision auto)
  d  monai      MONAI sliding_window_inference (roi 224, overlap 0.5, gaussian) with the same model
  e  global     nanolily global mode: the whole image in one pass
  f  onnx       nanolily bloom, stride 112, with tiles run by ONNX Runtime (fp32: its difference to b is the parity)
and, with the other shipped model, what `nanolily enhance` runs by default:
  g  v2         the default model (resolution-free, e.g. nanolily-v5), global mode, the network alone
  h  default    `nanolily enhance` defaults: the default model, global, highlight protection and denoising
  i  v2onnx     the default model, global, run by ONNX Runtime (the backend's two graphs, full resolution in strips)

Each (case, size) runs once in its own subprocess, so peak resident memory (VmHWM) is that case's alone;
times come from one process running the cases round-robin (medians over rounds, after a warm-up on a
small image), so speed-ups against (a) are from the same rounds. Quality: PSNR / SSIM at full
resolution on LoL-v2-real test, and the difference to (b). Then how bloom's defaults were chosen:
lol-v1-val PSNR by stride, and 4K times by tiles per call and precision.
and, at each size, `nanolily enhance` of a PNG to a PNG in its own process (decode and encode included):
  cli        its wall time (Python start-up included) and peak memory

Writes benchmarks/results/inference-<machine class>.json (amd-epyc, intel-xeon-amx, ...) and
docs/performance.md from every machine class's JSON there, so figures from both kinds of machine stand
side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nanolily import native
from nanolily.engine.onnx import STAGES
from nanolily.models.weights import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parents[1]
MODEL = "nanolily-v1"  # the original architecture: the model the original loop (a) can run
sys.path.insert(0, str(Path(__file__).resolve().parent))

CASES = {
    "original": "(a) original loop, stride 112, batch 1",
    "bloom112": "(b) nanolily bloom, stride 112, fp32",
    "bloom": "(c) nanolily bloom, defaults",
    "bloom-pytorch": "(c') nanolily bloom, defaults, PyTorch only",
    "monai": "(d) MONAI sliding_window_inference",
    "global": "(e) nanolily global",
    "onnx": "(f) nanolily bloom, stride 112, ONNX Runtime",
    "v2": f"(g) {DEFAULT_MODEL} global (default model)",
    "default": "(h) nanolily enhance defaults (model + corrections)",
    "v2onnx": f"(i) {DEFAULT_MODEL} global, ONNX Runtime (strips)",
}
DEFAULT_MODEL_CASES = {"v2": DEFAULT_MODEL, "default": DEFAULT_MODEL, "v2onnx": DEFAULT_MODEL}  # not (a)-(f)'s weights
ONNX_FILES = {"onnx": ("nanolily-v1.onnx",), "v2onnx": tuple(f"{DEFAULT_MODEL}-{stage}.onnx" for stage in STAGES)}  # in onnx_dir
SIZES = "600x400,1920x1080,3840x2160,7680x4320"
SAMPLE = ROOT / "src/nanolily/assets/samples/astronaut_dark.png"


# ----------------------------------------------------------------------------- FLOPs and the peak

def conv_flops_per_pixel(config) -> dict[str, float]:
    """Multiply-adds x 2 per output-resolution pixel for each conv of NanoLILY (norms, activations and
    the FFT, all O(1) or O(log n) per pixel, are not counted)."""
    w, c = config.width, config.channels
    return {
        "conv_in": 2 * w * c * 9,
        "down": 2 * (2 * w) * w * 9 / 4,  # at half resolution
        "up": 2 * w * (2 * w) * 4,  # a 4x4 stride-2 transposed conv: 2x2 taps reach each output pixel
        "conv_out": 2 * c * w * 9,
        "fuse": 2 * c * 2 * c,
    }


def tile_flops(config) -> float:
    return sum(conv_flops_per_pixel(config).values()) * config.size ** 2


def global_flops(config, height: int, width: int, block: int, halo: int, cached: bool) -> float:
    """The convolution work of global mode's 3 passes (see model.blocks): pass 1 over each block's own
    pixels, passes 2 and 3 over halo-padded blocks, counted in the layers' direct form (the composed
    decoder does up + conv_out in fewer FLOPs, so the rates derived from this are effective rates);
    ``cached``: pass 3 reuses pass 2's maps."""
    f = conv_flops_per_pixel(config)
    height, width = height + height % 2, width + width % 2
    total = f["conv_in"] * height * width  # pass 1
    for y in range(0, height, block):
        for x in range(0, width, block):
            area = ((min(height, y + block + halo) - max(0, y - halo))
                    * (min(width, x + block + halo) - max(0, x - halo)))
            pass3 = f["up"] + f["conv_out"] + (0 if cached else f["conv_in"] + f["down"])
            total += area * (f["conv_in"] + f["down"] + pass3)
    return total + f["fuse"] * height * width


def fma_rate(cpuinfo: str) -> tuple[int, str]:
    """fp32 FLOP per cycle per core and what gives it: two FMA units x (16 or 8) lanes x 2 FLOP. AMD's
    Zen 4 (family 25) runs AVX-512 on its two 256-bit units, so 8 lanes there."""
    if " avx512f" not in cpuinfo:
        return 32, "two FMA units, 8 fp32 lanes each: AVX2"
    if "AuthenticAMD" in cpuinfo and re.search(r"^cpu family\s*:\s*25$", cpuinfo, re.M):
        return 32, "two 256-bit FMA units, 8 fp32 lanes each: AVX-512 on AMD Zen 4"
    return 64, "two FMA units, 16 fp32 lanes each: AVX-512"


def flop_peak(seconds: float = 3.0) -> dict:
    """The machine's fp32 peak two ways: theoretical (cores x FLOP/cycle x clock) and a large GEMM."""
    cores = torch.get_num_threads()
    mhz = None
    try:
        mhz = max(float(line.split(":")[1]) for line in open("/proc/cpuinfo") if line.startswith("cpu MHz"))
    except (OSError, ValueError):
        pass
    per_cycle, isa = fma_rate(open("/proc/cpuinfo").read() if Path("/proc/cpuinfo").exists() else "")
    theoretical = cores * per_cycle * mhz * 1e6 if mhz else None
    n = 2048
    a, b = torch.rand(n, n), torch.rand(n, n)
    a @ b
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        runs += 1
    gemm = 2 * n ** 3 * runs / (time.perf_counter() - start)
    return {"cores_used": cores, "clock_mhz": mhz, "flop_per_cycle_per_core": per_cycle, "isa": isa,
            "theoretical_gflops": theoretical / 1e9 if theoretical else None, "gemm_gflops": gemm / 1e9}


# ----------------------------------------------------------------------------- one case, in a subprocess

def make_input(width: int, height: int) -> torch.Tensor:
    """The bundled dark sample, resized (bicubic) to width x height: (1, 3, H, W) in [0, 1]."""
    from PIL import Image

    image = Image.open(SAMPLE).convert("RGB").resize((width, height), Image.BICUBIC)
    planes = torch.from_numpy(np.asarray(image).transpose(2, 0, 1).copy())  # uint8, so the peak stays small
    del image
    return planes[None].float().div_(255)


def case_runner(case: str, onnx_dir: str | None, precision: str = "auto"):
    """(run(x) -> output, tile counter) for a case; ``precision``: (c)'s and (c')'s."""
    from nanolily.engine.pipeline import DEFAULT_BATCH_SIZE, NO_CORRECTIONS, enhance_tensor
    from nanolily.models.weights import load_model

    model = load_model(DEFAULT_MODEL_CASES.get(case, MODEL), device="cpu").eval()
    calls = {"tiles": 0}

    def count(tiles):
        calls["tiles"] += tiles.shape[0]

    def counted(predictor):  # a callable backend, wrapped
        def run(tiles):
            count(tiles)
            return predictor(tiles)
        return run

    def hooked(module):  # a torch model, counted by a hook: the engine still sees the model itself
        module.register_forward_pre_hook(lambda _, args: count(args[0]))
        return module

    if case == "original":
        from original_bloom import original_bloom, original_model

        original = hooked(original_model(model.state_dict()))
        return (lambda x: original_bloom(original, x)), calls
    if case == "bloom112":
        hooked(model)
        return (lambda x: enhance_tensor(x, model, **NO_CORRECTIONS, mode="bloom", stride=112, precision="fp32")), calls
    if case in ("bloom", "bloom-pytorch"):
        hooked(model)
        compiled = case == "bloom"

        def run(x):
            with _native(compiled):
                return enhance_tensor(x, model, **NO_CORRECTIONS, mode="bloom", precision=precision)
        return run, calls
    if case == "monai":
        from monai.inferers import sliding_window_inference

        hooked_model = hooked(model)

        def run(x):
            with torch.inference_mode():
                return sliding_window_inference(x, (224, 224), DEFAULT_BATCH_SIZE, hooked_model, overlap=0.5,
                                                mode="gaussian").clamp(0, 1)
        return run, calls
    if case == "global":
        return (lambda x: enhance_tensor(x, model, **NO_CORRECTIONS, mode="global")), calls
    if case == "onnx":
        from nanolily.engine.onnx import OnnxPredictor

        predictor = counted(OnnxPredictor(Path(onnx_dir) / ONNX_FILES[case][0]))
        return (lambda x: enhance_tensor(x, model, **NO_CORRECTIONS, mode="bloom", stride=112, predictor=predictor)), calls
    if case == "v2":
        return (lambda x: enhance_tensor(x, model, **NO_CORRECTIONS, mode="global")), calls
    if case == "default":
        return (lambda x: enhance_tensor(x, model)), calls
    if case == "v2onnx":
        from nanolily.engine.onnx import StagedOnnxPredictor

        predictor = StagedOnnxPredictor([Path(onnx_dir) / name for name in ONNX_FILES[case]], model.config.factor)
        return (lambda x: enhance_tensor(x, model, **NO_CORRECTIONS, mode="global", predictor=predictor)), calls
    raise ValueError(case)


@contextlib.contextmanager
def _native(on: bool):
    """The compiled kernels on (where built) or off for the duration (``NANOLILY_NATIVE``, read per call)."""
    before = os.environ.get("NANOLILY_NATIVE")
    os.environ["NANOLILY_NATIVE"] = "1" if on else "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ["NANOLILY_NATIVE"]
        else:
            os.environ["NANOLILY_NATIVE"] = before


def conv_flop_counter() -> tuple[dict, object]:
    """Counts 2 x the multiply-adds of every convolution any module executes (a global forward hook, so
    convolutions built on the fly, such as global mode's folded ones, count too). Returns the counter
    and the hook's handle."""
    counter = {"flops": 0}

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.ConvTranspose2d):  # each input pixel scatters a kh x kw patch
            taps = inputs[0].numel() * module.out_channels // module.groups
        elif isinstance(module, torch.nn.Conv2d):
            taps = output.numel() * module.in_channels // module.groups
        else:
            return
        counter["flops"] += 2 * taps * module.kernel_size[0] * module.kernel_size[1]

    return counter, torch.nn.modules.module.register_module_forward_hook(hook)


def worker(args) -> None:
    torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.split("x"))
    run, calls = case_runner(args.worker, args.onnx, args.precision)
    run(make_input(600, 400))  # warm-up: first-call allocations, oneDNN kernel selection
    rss_before = peak_rss_mb()
    x = make_input(width, height)
    calls["tiles"] = 0
    counter, hook = conv_flop_counter()
    start = time.perf_counter()
    y = run(x)
    seconds = time.perf_counter() - start
    hook.remove()
    np.save(args.output_npy, y[0].float().numpy())
    print(json.dumps({"own_process_s": seconds, "tiles": calls["tiles"], "peak_rss_mb": peak_rss_mb(),
                      "rss_before_input_mb": rss_before, "counted_conv_flops": counter["flops"]}))


def interleaved_times(cases: list[str], width: int, height: int, args, onnx_dir: str | None) -> dict:
    """Wall times of every case in this one process, round-robin (a, b, c, ..., a, b, c, ...), so a slow
    spell of the machine hits all cases alike. Stops after ``repeats`` rounds or once a round took more
    than ``max_seconds``."""
    runners = {case: case_runner(case, onnx_dir, args.precision)[0] for case in cases}
    small = make_input(600, 400)
    for run in runners.values():  # warm-up
        run(small)
    x = make_input(width, height)
    times = {case: [] for case in cases}
    for _ in range(args.repeats):
        round_start = time.perf_counter()
        for case, run in runners.items():
            start = time.perf_counter()
            run(x)
            times[case].append(time.perf_counter() - start)
        if time.perf_counter() - round_start > args.max_seconds:
            break
    return times


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Not ru_maxrss: Linux carries that over from the parent
    across fork + exec, so a child would report its parent's peak."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_case(case: str, size: str, args, onnx_dir: str | None, out_npy: Path) -> dict:
    command = [sys.executable, __file__, "--worker", case, "--size", size, "--threads", str(args.threads),
               "--output-npy", str(out_npy), "--precision", args.precision] + (["--onnx", onnx_dir] if onnx_dir else [])
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{case} at {size} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


CLI_PEAK = ("import runpy, sys\nsys.argv = ['nanolily'] + sys.argv[1:]\ntry:\n"
            "    runpy.run_module('nanolily.interfaces.cli', run_name='__main__')\nfinally:\n"
            "    print(next(int(l.split()[1]) / 1024 for l in open('/proc/self/status') if l.startswith('VmHWM')),"
            " file=sys.stderr)\n")


def cli_run(size: str, args, tmp: str) -> dict:
    """`nanolily enhance in.png -o out.png -q` on the sample at ``size``, in its own process."""
    from PIL import Image

    width, height = (int(v) for v in size.split("x"))
    source, target = Path(tmp) / f"cli-{size}.png", Path(tmp) / f"cli-{size}-out.png"
    Image.open(SAMPLE).convert("RGB").resize((width, height), Image.BICUBIC).save(source)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CLI_PEAK, "enhance", str(source), "-o", str(target), "-q"],
                          capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"nanolily enhance at {size} failed:\n{done.stderr[-2000:]}")
    source.unlink()
    target.unlink()
    return {"seconds": seconds, "peak_rss_mb": float(done.stderr.strip().splitlines()[-1])}


# ----------------------------------------------------------------------------- quality on LoL-v2-real

def quality(args, onnx_dir: str | None) -> dict:
    from nanolily.training.data import find_pairs, load_rgb_uint8
    from nanolily.training.metrics import psnr, ssim

    pairs = find_pairs(Path(args.data) / "lol-v2-real", "lol-v2", "Test")
    runners = {case: case_runner(case, onnx_dir)[0] for case in CASES}
    sums = {case: {"psnr": 0.0, "ssim": 0.0} for case in CASES}
    worst = {case: 0.0 for case in CASES}
    from tqdm.auto import tqdm

    for pair in tqdm(pairs, desc="quality (LoL-v2-real test)", unit="img", disable=args.quiet):
        low = load_rgb_uint8(pair.low).float()[None] / 255
        high = load_rgb_uint8(pair.high).float()[None] / 255
        outs = {case: run(low).clamp(0, 1) for case, run in runners.items()}
        for case, out in outs.items():
            sums[case]["psnr"] += float(psnr(out, high))
            sums[case]["ssim"] += float(ssim(out, high))
            if case in DEFAULT_MODEL_CASES:
                worst[case] = None
                continue
            diff = (out - outs["bloom112"])[..., 1:, 1:] if case == "original" else out - outs["bloom112"]
            worst[case] = max(worst[case], float(diff.abs().max()))
    n = len(pairs)
    table = {case: {"psnr": s["psnr"] / n, "ssim": s["ssim"] / n, "max_abs_diff_vs_b": worst[case]}
             for case, s in sums.items()}
    for case in table:
        table[case]["psnr_minus_b"] = table[case]["psnr"] - table["bloom112"]["psnr"]
    return {"images": n, "cases": table}


STRIDE_RULE_DB = 0.025  # bloom's default stride: the largest within this much lol-v1-val PSNR of 112's


def stride_sweep(args, strides=(112, 116, 120, 124, 128, 160, 192, 224)) -> list[dict]:
    """The default-stride trade-off: lol-v1-val PSNR (the validation split: nothing is chosen on test)
    and the tile count of a 3840x2160 image, in fp32; then bloom's default stride and global mode with
    precision auto (what it does on this CPU)."""
    from nanolily.engine.bloom import plan_tiles
    from nanolily.training.data import all_pairs
    from nanolily.engine.pipeline import DEFAULT_STRIDE, NO_CORRECTIONS
    from nanolily.training.evaluate import evaluate
    from nanolily.models.weights import load_model

    model = load_model(MODEL, device="cpu")
    pairs = all_pairs(Path(args.data) / "lol-v1", "lol-v1", Path(args.data) / "splits/lol-v1-val.txt")
    auto = _auto_inner_dtype()
    rows = []
    for stride, precision in [(s, "fp32") for s in strides] + [(DEFAULT_STRIDE, "auto"), ("global", "fp32"),
                                                                 ("global", "auto")]:
        mode = "global" if stride == "global" else "bloom"
        _, summary = evaluate(model, pairs, mode=mode, stride=112 if mode == "global" else stride,
                              corrections=NO_CORRECTIONS | {"precision": precision})
        rows.append({"stride": stride, "precision": precision if precision == "fp32" else f"auto ({auto})",
                     "val_psnr": summary["psnr"], "val_ssim": summary["ssim"],
                     "tiles_4k": len(plan_tiles(2160, 3840, 224, stride)) if mode == "bloom" else None})
    return rows


def defaults_sweep(args, rounds: int = 5) -> dict:
    """Bloom's tiles per call and precision at 3840x2160, stride 112: medians of same-process rounds."""
    from nanolily.engine.pipeline import NO_CORRECTIONS, enhance_tensor
    from nanolily.models.weights import load_model

    model = load_model(MODEL, device="cpu")
    x = make_input(3840, 2160)
    settings = [(1, "fp32"), (2, "fp32"), (4, "fp32"), (2, "auto")]
    enhance_tensor(make_input(600, 400), model, mode="bloom", **NO_CORRECTIONS)  # warm-up
    times = {setting: [] for setting in settings}
    for _ in range(rounds):
        for batch, precision in settings:
            start = time.perf_counter()
            enhance_tensor(x, model, mode="bloom", stride=112, batch_size=batch, precision=precision,
                           **NO_CORRECTIONS)
            times[batch, precision].append(time.perf_counter() - start)
    auto = _auto_inner_dtype()
    return {"date": time.strftime("%Y-%m-%d", time.gmtime()), "cpu": _cpu_name(),
            "threads": torch.get_num_threads(), "auto_inner_dtype": auto,
            "rows": [{"batch_size": b, "precision": p, "times": times[b, p], "median_s": statistics.median(times[b, p])}
                     for b, p in settings]}


# ----------------------------------------------------------------------------- report

def speed_table(results: dict) -> str:
    lines = ["| size | case | runs | median s | ms/MP | speed-up vs (a) | GFLOP/s | % of peak | "
             "max abs diff vs (b) | peak RSS MB |", "|---|---|---|---|---|---|---|---|---|---|"]
    peak = results["peak"]["theoretical_gflops"]
    for size, cases in results["speed"].items():
        base = cases["original"]["median_s"] if "original" in cases else None
        for case, r in cases.items():
            speedup = f"{base / r['median_s']:.2f}x" if base else ""
            pct = f"{100 * r['gflops'] / peak:.0f}%" if peak else ""
            diff = r.get("max_abs_diff_vs_b")
            lines.append(f"| {size} | {CASES[case]} | {len(r['times'])} | {r['median_s']:.2f} | {r['ms_per_mp']:.0f} | "
                         f"{speedup} | {r['gflops']:.0f} | {pct} | {'' if diff is None else f'{diff:.1e}'} | "
                         f"{r['peak_rss_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def quality_table(q: dict) -> str:
    lines = ["| case | PSNR | SSIM | PSNR - (b) | max abs diff vs (b) |", "|---|---|---|---|---|"]
    for case, r in q["cases"].items():
        diff = r["max_abs_diff_vs_b"]
        lines.append(f"| {CASES[case]} | {r['psnr']:.3f} | {r['ssim']:.4f} | {r['psnr_minus_b']:+.3f} | "
                     f"{'-' if diff is None else f'{diff:.1e}'} |")
    return "\n".join(lines) + "\n"


def sweep_table(rows: list[dict]) -> str:
    base = next(r["val_psnr"] for r in rows if r["stride"] == 112 and r.get("precision", "fp32") == "fp32")
    lines = ["| bloom stride | precision | lol-v1-val PSNR | PSNR - stride 112 | SSIM | tiles at 3840x2160 |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['stride']} | {r.get('precision', 'fp32')} | {r['val_psnr']:.3f} | "
                     f"{r['val_psnr'] - base:+.3f} | {r['val_ssim']:.4f} | {r['tiles_4k'] or '-'} |")
    return "\n".join(lines) + "\n"


def defaults_table(sweep: dict) -> str:
    base = sweep["rows"][0]["median_s"]
    lines = ["| tiles per call | precision | median s | speed vs 1 tile, fp32 | rounds (s) |", "|---|---|---|---|---|"]
    for r in sweep["rows"]:
        precision = r["precision"] if r["precision"] == "fp32" else f"auto ({sweep['auto_inner_dtype']} inner convolutions)"
        lines.append(f"| {r['batch_size']} | {precision} | {r['median_s']:.2f} | {base / r['median_s']:.2f}x | "
                     f"{', '.join(f'{t:.2f}' for t in r['times'])} |")
    return "\n".join(lines) + "\n"


def export_all(directory: str) -> None:
    """The ONNX files the ONNX Runtime cases read, from the shipped weights."""
    from nanolily.engine.onnx import export_onnx, export_onnx_stages
    from nanolily.models.weights import load_model

    export_onnx(load_model(MODEL, device="cpu"), Path(directory) / ONNX_FILES["onnx"][0])
    export_onnx_stages(load_model(DEFAULT_MODEL_CASES["v2onnx"], device="cpu"),
                       [Path(directory) / name for name in ONNX_FILES["v2onnx"]])


def resweep_defaults(args) -> None:
    """``--defaults-only``: the tiles-per-call / precision section of the last full run's JSON, again."""
    results = json.loads(Path(args.out).read_text())
    results["defaults_sweep"] = defaults_sweep(args)
    results["defaults_sweep"]["command"] = "python benchmarks/inference.py " + " ".join(sys.argv[1:])
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    write_doc(Path(args.doc), Path(args.out).parent)
    print(defaults_table(results["defaults_sweep"]))


def requalify(args) -> None:
    """``--quality-only``: the quality section of the last full run's JSON, measured again."""
    results = json.loads(Path(args.out).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        export_all(tmp)
        results["quality"] = quality(args, tmp)
    results["quality"].update(command="python benchmarks/inference.py " + " ".join(sys.argv[1:]),
                              date=time.strftime("%Y-%m-%d", time.gmtime()))
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    write_doc(Path(args.doc), Path(args.out).parent)
    print(quality_table(results["quality"]))


def write_doc(path: Path, results_dir: Path) -> None:
    """docs/performance.md from every ``inference-<machine class>.json`` in ``results_dir``: a summary of
    the figures the project targets, then each machine's full report."""
    runs = {f.stem.removeprefix("inference-"): json.loads(f.read_text())
            for f in sorted(results_dir.glob("inference-*.json"))}
    parts = ["# Performance\n",
             "Written by `benchmarks/inference.py` (do not edit by hand) from `benchmarks/results/inference-*.json`, "
             "one file per machine class; each section names its machine, command and date.\n",
             "## Summary\n", summary_table(runs)]
    for name, results in runs.items():
        body = machine_report(results, path)
        parts += [f"## {name}: {results['machine']['cpu']}\n"] + [
            ("#" + line if line.startswith("## ") else line) for line in body]
    path.write_text("\n".join(parts))


SUMMARY_SIZE = "3840x2160"


def summary_table(runs: dict) -> str:
    """Per machine class: the default pipeline at 4K against the original loop, the corrections' share of
    it, bloom with nanolily-v1 at its defaults against the original loop, and `nanolily enhance` at 8K."""
    lines = ["| machine | `nanolily enhance` defaults at 4K, in-process (vs the original loop) | corrections' share of it | "
             "bloom, nanolily-v1, defaults at 4K (vs the original loop) | `nanolily enhance` 7680x4320 PNG to PNG: s / peak RSS |",
             "|---|---|---|---|---|"]
    for name, results in runs.items():
        speed = results["speed"].get(SUMMARY_SIZE, {})
        base = speed.get("original", {}).get("median_s")

        def ratio(case: str) -> str:
            r = speed.get(case)
            return f"{r['median_s']:.2f} s ({base / r['median_s']:.1f}x)" if r and base else "-"

        share = "-"
        if "default" in speed and "v2" in speed:
            d, g = speed["default"]["median_s"], speed["v2"]["median_s"]
            share = f"{100 * max(d - g, 0) / d:.0f} %"
        cli = results.get("cli", {}).get("7680x4320")
        big = f"{cli['seconds']:.1f} s / {cli['peak_rss_mb'] / 1000:.2f} GB" if cli else "-"
        lines.append(f"| {name} ({results['date'][:10]}) | {ratio('default')} | {share} | {ratio('bloom')} | {big} |")
    return "\n".join(lines) + "\n"


def machine_report(results: dict, path: Path) -> list[str]:
    m, p = results["machine"], results["peak"]
    corrections_path = m.get("corrections", "PyTorch")
    parts = [
        f"Command: `{results['command']}`\n",
        f"Machine: {m['cpu']}, {m['cores_used']} threads; torch {m['torch']}, onnxruntime {m['onnxruntime']}, "
        f"monai {m['monai']}; {results['date'][:10]}.\n",
        "## Speed and memory\n",
        "Input: the bundled dark sample resized (bicubic) to each size. Times come from one process that "
        "runs the cases round-robin after a warm-up on a 600x400 image, so changes in the machine's speed "
        "hit every case alike (virtual machines' timings vary by tens of percent from one minute to the next: "
        f"compare ratios within a run); each is the median of the rounds (at most {results['repeats']}; one where a round takes "
        f"over {results['max_seconds']:.0f} s). Speed-up is against (a) in the same rounds. Memory and "
        "outputs come from a separate process per case and size (one run each, after the same warm-up). "
        "GFLOP/s is the model's convolution work per second, counted as the original model computes it "
        "(tiles x 1.46 GFLOP for tiled cases; global mode's three passes over halo-padded blocks), so it is "
        "an effective rate: nanolily's engines execute fewer FLOPs for the same result (the composed "
        "decoder below), and their rate can exceed what the hardware does; for (g)-(i), the "
        "convolutions a forward hook counts during the case's memory run ((g)'s for (i), whose "
        "convolutions run in ONNX Runtime); "
        f"% of peak is against the theoretical peak, {p['theoretical_gflops']:.0f} GFLOP/s = "
        f"{p['cores_used']} cores x {p['flop_per_cycle_per_core']} FLOP/cycle ({p['isa']}) x "
        f"{p['clock_mhz']:.0f} MHz; a 2048x2048 fp32 matrix product reaches {p['gemm_gflops']:.0f} GFLOP/s "
        "here. Max abs diff vs (b) is over the whole image, except for (a) where the first row and column "
        "are left out (the original's window gives them zero weight: they come out black). Peak RSS is the "
        "process's maximum resident set (VmHWM), input and output tensors included; importing torch "
        f"alone takes ~{results['rss_baseline_mb']:.0f} MB.\n",
        speed_table(results),
        defaults_note(results),
        "## What makes nanolily's engines fast\n",
        "- **channels-last convolutions.** oneDNN runs the 64->32 transposed convolution about 3x faster on "
        "NHWC maps than on NCHW ones on this CPU; the spatial branch converts its input once.\n"
        "- **a composed decoder.** Without gradients, NanoLILY's last two layers (the 64->32 transposed "
        "convolution, 56% of the model's FLOPs, and the 32->3 convolution after it) run at half "
        "resolution as the four sub-pixel phases of the 3 output channels (12 maps, put in place by one "
        "pixel shuffle, done as one permuted copy: ~3x faster than `F.pixel_shuffle` on channels-last "
        "maps, which made bloom at 4K 1.05x faster): `conv_out(up(d))` is one 3x3 convolution on `d`, and the skip connection "
        "`conv_out(s1)` one 4x4 stride-2 convolution on `s1`, whose phases are added before the shuffle: "
        "the same linear maps, regrouped, in 6.5k instead of 18.1k FLOP per output pixel (the skip's "
        "phase form does more FLOPs than its 3x3 form, 3.1k against 1.7k, yet runs ~1.6x faster: oneDNN "
        "handles 16 outputs far better than 3). Where the 3x3 convolution's "
        "zero padding differs (the outermost row and column) the composed kernel has seen one ring of "
        "`up(d)` outside the image where the direct form sees zeros, so `conv_out`'s outer taps on that "
        "ring (each side's ring from `d`'s outermost row or column through one row of the transposed "
        "kernel) are subtracted: equal to the direct form to float rounding (tested). In PyTorch the 12 "
        "outputs are padded with 4 zero channels: oneDNN runs 64->16 about a quarter faster than 64->12. "
        "The ONNX export uses the composition too (fixed weights, 12 outputs); training keeps the direct "
        "form. In global mode, pass 2 also keeps the skip connection's phases, so pass 3 runs only the "
        "composed decoder.\n"
        "- **fuse folded away.** The 6->3 1x1 convolution after the two branches is linear: its spatial "
        "half and bias are folded into `conv_out` (and so into the composed kernels), its frequency half is "
        "a 3x3 channel mix; no concatenation, no 6->3 convolution.\n"
        "- **InstanceNorm as group norm** (one channel per group, each channel first shifted by a rough mean "
        "so the channels-last kernel's E[x^2] - E[x]^2 does not cancel): the same maths, several times "
        "faster than `F.instance_norm` on channels-last maps.\n"
        "- **two tiles per call**: faster than one at 4K on both machine classes (3-9 % on the Intel Xeon "
        "over several runs, 14 % on the AMD EPYC with AVX-512; the table at the end of each machine's "
        "section has its latest); four were no faster beyond the rounds' spread (slower in one Intel run: "
        "cache pressure), and on the AVX2 EPYC of earlier runs one tile per call was fastest (with the "
        "network in PyTorch).\n"
        "- **precision auto: the inner convolutions in bf16 on CPUs with AMX units.** The three "
        "convolutions that read normalised maps (the 32->64 stride-2 one, which reads `s1` in bf16 as the "
        "skip connection does, and the composed decoder's two) run in bf16 where oneDNN has AMX kernels "
        "for them (the stride-2 one ~3.7x faster than in fp32), everything else in fp32: bloom at 4K ran "
        "1.27x faster than with the decoder's two alone in bf16 (median of 5 same-process rounds), "
        "lol-v1-val PSNR moved by -0.0004 dB in bloom and -0.001 dB in global mode, outputs by at most "
        "0.011 (the stride table below; rule fixed before measuring: within 0.01 dB, 0.02 and >= 5 % "
        "faster). The first convolution stays fp32: it reads the raw input, and the first norm divides by "
        "its output's spread, so on a flat dark tile bf16 there moved outputs by up to 0.08. Elsewhere "
        "auto is fp32. (b) runs `--precision fp32`, the exact reference.\n"
        "- **compiled tile kernels.** nanolily-v1's tile forward on CPU runs six C passes "
        "(`nanolily.native`, OpenMP threads from PyTorch's own runtime): the first 3->32 convolution with "
        "its InstanceNorm and LeakyReLU (oneDNN keeps three input channels far from peak), the 32->64 "
        "stride-2 convolution in a Winograd form (81 products per 4x4 block of outputs instead of 144; "
        "where oneDNN has AVX-512's width, its own kernel is faster and runs it), the second norm and "
        "LeakyReLU, the composed decoder's convolution in Winograd's F(4x4, 3x3) form (36 products per 4x4 "
        "block instead of 144), the border terms of all four sides, and the output stage (the skip "
        "connection as a 3x3 convolution, the pixel shuffle, the border fix, the frequency mix, tanh and the "
        "residual), where eager PyTorch makes about twenty passes over the maps. Equal to the PyTorch path "
        "to float rounding (tested); with precision auto on an AMX CPU oneDNN runs both inner convolutions, "
        "in bf16, and the skip connection stays fp32. (c') runs (c) with them off. This run: "
        f"{m.get('tile_kernels', 'before they existed')}.\n"
        "- **global mode in cache-sized blocks.** The whole image in one pass, but the conv branch runs in "
        "256x256 blocks with a 4-pixel halo (the branch's receptive field): pass 1 gathers the "
        "first InstanceNorm's whole-image statistics from each block's own pixels (no halo, no crop; the "
        "moments are taken about a rough mean subtracted through the convolution's bias), pass 2 the "
        "second's (keeping each block's "
        "half-resolution map with its halo, which is exact where pass 3 reads it, when they fit in 768 MB: "
        "0.6 GB at 4K), pass 3 writes the output; each norm with fixed statistics is folded into "
        "the convolution before it. Equal to a single pass to float rounding (tested), at "
        "~1.2x the convolutions of one pass with the kept map and ~1.6x without, against bloom's ~3.9x "
        "at stride 112.\n"
        f"- **the default model.** (g)-(i) run {DEFAULT_MODEL}, which `nanolily enhance` uses unless told "
        "otherwise: other weights, so no max abs diff vs (b); its quality is in the next section. It computes "
        "most of its features at 1/4 to 1/16 of the pixels, and a photo over ~0.7 MP from a coarser copy "
        "(scale matching, README \"Large and small photos\": a 4K frame at 1/16 to 1/64), so a 4K photo costs a "
        "fraction of NanoLILY's convolutions; in PyTorch its 1/4-size stages and its full-resolution stage run in strips (128 "
        "image rows: faster and lighter than 256), with its element-wise maths (exposure maps, colour matrix) on "
        "planar maps and channels-last only for the refinement's two convolutions (a channel slice of a "
        "channels-last map is strided, and `exp` on one ran many times slower); (h) adds highlight protection and the guided-filter "
        "denoiser, on tiles of 256x1024 pixels (256x512 compiled), each tile one compiled pass where a C compiler is at hand "
        f"(`nanolily.native`, the tiles of a strip in threads; this run: {corrections_path}); (i) runs it in ONNX Runtime as `--backend onnxruntime` does: five graphs "
        "(`export_onnx_stages`; the halo guard's only on a photo with lights), the 1/4-size stages and the full-resolution stage in strips (128 rows), "
        "without ONNX Runtime's memory arena, so memory stays bounded; `nanolily export` writes the "
        "single whole-image graph for other runtimes.\n"
        "- **ONNX.** The exported graph computes the FFT branch as products with fixed DFT matrices: ONNX "
        "Runtime's `DFT` operator took ~65 ms of a ~100 ms tile on this CPU.\n",
    ]
    if results.get("quality"):
        q = results["quality"]
        parts += ["## Quality (LoL-v2-real test, full resolution)\n",
                  f"{q['images']} images, outputs clamped to [0, 1], PSNR / SSIM as in `nanolily evaluate`. "
                  "A faster setting must not hide a worse picture: PSNR - (b) is each case against nanolily "
                  "bloom at the original's stride."
                  + (f" Measured by `{q['command']}` ({q['date'][:10]})." if "command" in q else "")
                  + "\n", quality_table(q)]
    if results.get("stride_sweep"):
        parts += ["## Choosing bloom's default stride (validation split)\n",
                  "Chosen on lol-v1-val, never on the test set, by a rule fixed before measuring: the largest "
                  f"stride whose PSNR stays within {STRIDE_RULE_DB} dB of stride 112's (half the 0.05 dB that (c) "
                  "may lose against (b) on the test set). The PSNR each stride gives (fp32) and the tiles it "
                  "needs for a 4K frame; then the default stride and global mode with precision auto on this "
                  "CPU.\n", sweep_table(results["stride_sweep"])]
    if results.get("defaults_sweep"):
        d = results["defaults_sweep"]
        parts += ["## Choosing bloom's tiles per call and precision (3840x2160, stride 112)\n",
                  f"The bundled sample at 3840x2160, bloom at stride 112, each setting once per round, "
                  f"{len(d['rows'][0]['times'])} rounds in one process ({d['cpu']}, {d['threads']} threads, "
                  f"{d['date'][:10]}" + (f"; `{d['command']}`" if "command" in d else "") + "). Rule fixed before "
                  "measuring: two tiles per call if more than 5 % faster than one.\n", defaults_table(d)]
    if results.get("cli"):
        parts += ["### `nanolily enhance`, PNG to PNG\n",
                  "The same input saved as a PNG, enhanced by the command with its defaults into a PNG, in its "
                  "own process: wall time (Python start-up, model loading, decoding and encoding included) and "
                  "peak resident memory (VmHWM).\n",
                  "| size | seconds | peak RSS MB |", "|---|---|---|"]
        parts += [f"| {size} | {r['seconds']:.2f} | {r['peak_rss_mb']:.0f} |" for size, r in results["cli"].items()]
        parts.append("")
    if m["cpu"].startswith("Intel"):  # the int8 experiment ran on the Intel Xeon
        parts += int8_section(path.parent.parent / "benchmarks/results/int8_tiles.json")
    return parts


def defaults_note(results: dict) -> str:
    """What separates (c) from (b): bloom's defaults, and what precision auto does on this CPU."""
    from nanolily.engine.bloom import plan_tiles
    from nanolily.engine.pipeline import DEFAULT_BATCH_SIZE, DEFAULT_STRIDE

    auto = results["machine"].get("auto_inner_dtype")
    precision = {"bfloat16": "runs the three inner convolutions in bf16 (this CPU has AMX units)",
                 "float32": "is fp32 (this CPU has no AMX units)"}.get(auto, "was not recorded")
    if results.get("precision", "auto") != "auto":
        precision = f"was replaced by `--precision {results['precision']}` in this run"
    return (f"(c) runs bloom's defaults: stride {DEFAULT_STRIDE} ({len(plan_tiles(2160, 3840, 224, DEFAULT_STRIDE))} "
            f"tiles at 3840x2160 against 646 at 112, chosen on the validation split below), {DEFAULT_BATCH_SIZE} "
            f"tiles per call (as (b)), and precision auto, which here {precision}. (b) is the same engine "
            "at the original's stride in fp32.\n")


def int8_section(json_path: Path) -> list[str]:
    """docs/performance.md's account of ``benchmarks/int8_tiles.py``, from its last run's JSON."""
    if not json_path.exists():
        return []
    from int8_tiles import report

    results = json.loads(json_path.read_text())
    cases = results["speed"]["cases"]
    best = max(cases, key=lambda name: cases[name]["speedup_vs_a"])
    val = results["quality"]["lol-v1-val"]
    change = val["int8"]["psnr"] - val["float32"]["psnr"]

    def gain(name: str) -> float:
        return cases[name]["speedup_vs_a"] / cases["nanolily bloom, float32"]["speedup_vs_a"] - 1
    return ["## Tried for bloom: int8 tiles and two workers (not adopted)\n",
            "Measured on an AMD EPYC, at stride 112, before bloom's present defaults (stride 120, two "
            "tiles per call, the inner convolutions in bf16 on AMX CPUs). "
            "Bloom at its defaults is asked to run >= 3x faster than the original loop at 4K. Its tile is "
            "already near this CPU's convolution rate (the four convolutions are most of its time; the rest "
            "is the norms, the FFT branch and the output's element-wise passes), so `python "
            "benchmarks/int8_tiles.py --data ../shared/datasets` measured the two levers left: the three big "
            "convolutions in int8 through oneDNN (weights per output channel, activations in 7 bits with "
            "ranges calibrated on LoL-v1 training tiles; 8-bit activations saturate AVX2's int16 sums), and "
            "two tiles at a time on two one-thread workers. From its last run "
            "(`benchmarks/results/int8_tiles.json`):\n",
            report(results),
            f"The best, {best}, reaches {cases[best]['speedup_vs_a']:.2f}x, short of 3x. Two workers are "
            f"exact and {gain('float32, 2 one-thread workers'):.0%} faster than one, but only by setting "
            "PyTorch's process-wide thread count for the call (which breaks callers running other work "
            f"beside it); int8 is {gain('nanolily bloom, int8 tile'):.0%} faster and moves lol-v1-val PSNR "
            f"by {change:+.3f} dB, yet single pixels by up to "
            f"{cases['nanolily bloom, int8 tile']['max_abs_diff_vs_float32']:.2f} (where activations pass "
            "the calibrated range), on operators PyTorch keeps for its compiler's quantisation path. Neither "
            "was adopted: int8 moves pixels too far and the workers change the process's threads. "
            "Global mode is the fast way to run nanolily-v1 (its rows above).\n"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("NANOLILY_DATA"),
                        help="datasets root (lol-v2-real/, lol-v1/, splits/) for the quality sections")
    parser.add_argument("--sizes", default=SIZES, help="comma-separated WIDTHxHEIGHT (default: %(default)s)")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of " + ",".join(CASES))
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="precision of (c) and (c'): fp32 on a CPU with AMX units times them as on one "
                             "without (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per size (default: %(default)s)")
    parser.add_argument("--max-seconds", type=float, default=240,
                        help="no further rounds once a round over all cases took this long (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch threads (default: %(default)s)")
    parser.add_argument("--no-quality", action="store_true", help="skip the LoL-v2-real quality section")
    parser.add_argument("--no-stride-sweep", action="store_true", help="skip the default-stride section")
    parser.add_argument("--no-defaults-sweep", action="store_true",
                        help="skip the section timing bloom's tiles per call and precision at 4K")
    parser.add_argument("--out", help="results JSON (default: benchmarks/results/inference-<machine class>.json)")
    parser.add_argument("--doc", default=str(ROOT / "docs/performance.md"))
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--report-only", action="store_true", help="rewrite --doc from the --out JSON, no runs")
    parser.add_argument("--quality-only", action="store_true",
                        help="re-measure only the quality section (after new weights) into the --out JSON; the "
                        "speed and memory figures, which depend on the architectures alone, stay from their run")
    parser.add_argument("--defaults-only", action="store_true",
                        help="re-measure only the tiles-per-call / precision section into the --out JSON")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    parser.add_argument("--onnx", help=argparse.SUPPRESS)
    parser.add_argument("--output-npy", help=argparse.SUPPRESS)
    parser.add_argument("--no-cli", action="store_true", help="skip the `nanolily enhance` PNG-to-PNG runs")
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    args.out = args.out or str(ROOT / f"benchmarks/results/inference-{machine_class()}.json")
    if args.report_only:
        return write_doc(Path(args.doc), Path(args.out).parent)

    import onnxruntime
    import monai

    from nanolily.models.v1 import BLOCK_HALO, NanoLILYConfig

    torch.set_num_threads(args.threads)
    if args.quality_only:
        return requalify(args)
    if args.defaults_only:
        return resweep_defaults(args)
    cases = args.cases.split(",")
    config = NanoLILYConfig()
    results = {
        "command": "".join(f"{k}={os.environ[k]} " for k in ("ONEDNN_MAX_CPU_ISA",) if k in os.environ)
                   + "python benchmarks/inference.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": {"cpu": _cpu_name(), "cores_used": args.threads,
                    "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "monai": monai.__version__,
                    "corrections": "compiled" if native.library() is not None else "PyTorch",
                    "tile_kernels": "compiled" if native.tile_library() is not None else "PyTorch",
                    "auto_inner_dtype": _auto_inner_dtype()},
        "repeats": args.repeats, "max_seconds": args.max_seconds, "precision": args.precision,
        "tile_gflop": tile_flops(config) / 1e9, "peak": flop_peak(),
        "rss_baseline_mb": _import_rss(), "speed": {},
    }
    print(f"peak: {results['peak']}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_dir = tmp
        export_all(tmp)
        for size in args.sizes.split(","):
            width, height = (int(v) for v in size.split("x"))
            outputs, rows = {}, {}
            for case in cases:  # one process each: peak memory, output, tile count
                out_npy = Path(tmp) / f"{case}.npy"
                rows[case] = run_case(case, size, args, onnx_dir, out_npy)
                outputs[case] = out_npy
                print(f"{size} {case}: own process {rows[case]['own_process_s']:.2f} s, {rows[case]['tiles']} "
                      f"tiles, peak RSS {rows[case]['peak_rss_mb']:.0f} MB", file=sys.stderr)
            times = interleaved_times(cases, width, height, args, onnx_dir)
            for case, r in rows.items():
                r["times"] = times[case]
                r["median_s"] = statistics.median(r["times"])
                r["ms_per_mp"] = 1000 * r["median_s"] / (width * height / 1e6)
                from nanolily.engine.pipeline import GLOBAL_BLOCK

                if case == "v2onnx":  # ONNX Runtime's convolutions are not hooked: (g) runs the same ones
                    flops = rows["v2"]["counted_conv_flops"] if "v2" in rows else 0
                elif case in DEFAULT_MODEL_CASES:
                    flops = r["counted_conv_flops"]
                elif case == "global":
                    flops = global_flops(config, height, width, GLOBAL_BLOCK, BLOCK_HALO, _cached(height, width))
                else:
                    flops = r["tiles"] * tile_flops(config)
                r["gflop"] = flops / 1e9
                r["gflops"] = flops / 1e9 / r["median_s"]
                print(f"{size} {case}: {r['median_s']:.2f} s (median of {len(r['times'])})", file=sys.stderr)
            if "bloom112" in outputs:
                reference = np.load(outputs["bloom112"])
                for case, npy in outputs.items():
                    if case in DEFAULT_MODEL_CASES:
                        continue
                    out = np.load(npy)
                    diff = np.abs(out - reference)
                    rows[case]["max_abs_diff_vs_b"] = float((diff[:, 1:, 1:] if case == "original" else diff).max())
                del reference
            for npy in outputs.values():
                npy.unlink(missing_ok=True)
            results["speed"][size] = rows
            if not args.no_cli:
                results.setdefault("cli", {})[size] = cli_run(size, args, tmp)
                print(f"{size} cli: {results['cli'][size]}", file=sys.stderr)
        if args.data and not args.no_quality:
            results["quality"] = quality(args, onnx_dir)
    if args.data and not args.no_stride_sweep:
        results["stride_sweep"] = stride_sweep(args)
    if not args.no_defaults_sweep:
        results["defaults_sweep"] = defaults_sweep(args)
    keep_saved_sections(results, Path(args.out))

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    write_doc(Path(args.doc), Path(args.out).parent)
    print(speed_table(results))
    if results.get("quality"):
        print(quality_table(results["quality"]))
    if results.get("stride_sweep"):
        print(sweep_table(results["stride_sweep"]))
    if results.get("defaults_sweep"):
        print(defaults_table(results["defaults_sweep"]))
    print(f"wrote {args.out} and {args.doc}", file=sys.stderr)


def keep_saved_sections(results: dict, saved: Path) -> None:
    """A section this run skipped (``--no-quality``, ``--no-stride-sweep``, ``--no-defaults-sweep``) keeps the saved JSON's (the
    quality section labelled with the command that measured it), so a speed-only run drops no figures."""
    if not saved.exists():
        return
    old = json.loads(saved.read_text())
    if "quality" not in results and old.get("quality"):
        results["quality"] = {"command": old["command"], "date": old["date"]} | old["quality"]
    for section in ("stride_sweep", "defaults_sweep"):
        if section not in results and old.get(section):
            results[section] = old[section]


def _cached(height: int, width: int) -> bool:
    """Whether global mode's pass 2 keeps its maps for pass 3 (see SpatialBranch.blocks)."""
    from nanolily.engine.pipeline import GLOBAL_BLOCK
    from nanolily.models.v1 import BLOCK_CACHE_BYTES, NanoLILY

    return NanoLILY().spatial.kept_bytes(height, width, GLOBAL_BLOCK) * 4 <= BLOCK_CACHE_BYTES


def _auto_inner_dtype() -> str:
    from nanolily.engine.pipeline import auto_inner_dtype
    from nanolily.models.v1 import NanoLILY

    return str(auto_inner_dtype(NanoLILY(), torch.device("cpu"))).removeprefix("torch.")


def machine_class() -> str:
    """"amd-epyc", "intel-xeon-amx", "intel-xeon" or the CPU's name as a slug: figures are filed by it."""
    name = _cpu_name()
    flags = open("/proc/cpuinfo").read() if Path("/proc/cpuinfo").exists() else ""
    if "AMD EPYC" in name:
        return "amd-epyc"
    if "Xeon" in name:
        return "intel-xeon-amx" if "amx_tile" in flags else "intel-xeon"
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-") or "unknown"


def _cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


def _import_rss() -> float:
    """Peak RSS of a process that only imports torch and nanolily and loads the model (MB)."""
    code = ("import nanolily; nanolily.load_model('nanolily-v1', device='cpu'); "
            "print(next(int(l.split()[1]) / 1024 for l in open('/proc/self/status') if l.startswith('VmHWM')))")
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


if __name__ == "__main__":
    main()
