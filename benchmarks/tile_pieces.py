"""Where a LILY Bloom call's time goes: nanolily-v1's forward on two 224x224 tiles, piece by piece.

Times each pass of the compiled tile kernels (``nanolily.native``, ``NanoLILY._forward_compiled``), oneDNN's
form of the two convolutions the kernels run in Winograd's, the frequency branch, and the whole tile
forward with the kernels on and off.
Each piece is timed in rounds of 50 calls after a warm-up, the rounds interleaved so that changes in the
machine's speed hit every piece alike; the table shows the median per call. Not part of the package.

    python benchmarks/tile_pieces.py
    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/tile_pieces.py  # oneDNN at a CPU without AVX-512's width
    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/tile_pieces.py --march znver3  # and the kernels built for AMD's

Writes benchmarks/results/tile-kernels/pieces-<machine class>[-onednn-<isa>][-<march>].json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from inference import machine_class  # noqa: E402

from nanolily import native  # noqa: E402
from nanolily.models import v1  # noqa: E402
from nanolily.models.weights import load_model  # noqa: E402


def pieces(model: v1.NanoLILY, lib, x: torch.Tensor) -> dict:
    """name -> a call of that piece on the maps of a forward of ``x`` (B, 3, S, S)."""
    branch = model.spatial.followed_by(model.fuse)
    slope, c = branch.negative_slope, model.config.channels
    mix = model.fuse.weight[:, c:, 0, 0]
    s1 = native.first_stage(lib, x, branch.conv_in.weight, branch.conv_in.bias, slope)
    down = branch.down
    d0 = native.conv3x3(lib, s1, down.weight, down.bias, 2)
    d = native.norm_lrelu_(lib, d0.clone(), slope)
    weight, bias, _ = branch.composed_weights()
    phases = native.conv3x3(lib, d, weight, bias)
    kept = native.winograd_weights(lib, down.weight, 2), native.winograd_weights(lib, weight)  # as the model keeps them
    border = native.border_terms(lib, d, branch.up.weight, branch.up.bias, branch.conv_out.weight)
    frequency = model.frequency(x)

    def pytorch_only():
        os.environ["NANOLILY_NATIVE"] = "0"  # tile_library() answers None while it is set
        try:
            return model(x)
        finally:
            os.environ["NANOLILY_NATIVE"] = "1"

    return {
        "first stage: conv_in, norm, LeakyReLU (compiled)":
            lambda: native.first_stage(lib, x, branch.conv_in.weight, branch.conv_in.bias, slope),
        "stride-2 convolution, Winograd (compiled)":
            lambda: native.conv3x3(lib, s1, down.weight, down.bias, 2, kept[0]),
        "stride-2 convolution (oneDNN, replaced)": lambda: branch._down(s1),
        "second norm and LeakyReLU (compiled)": lambda: native.norm_lrelu_(lib, d0, slope),  # in place, again
        "decoder convolution, Winograd (compiled)": lambda: native.conv3x3(lib, d, weight, bias, 1, kept[1]),
        "decoder convolution (oneDNN, replaced)": lambda: v1._conv(d, weight, bias, padding=1),
        "border terms (compiled)":
            lambda: native.border_terms(lib, d, branch.up.weight, branch.up.bias, branch.conv_out.weight),
        "frequency branch (PyTorch FFT)": lambda: model.frequency(x),
        "output stage (compiled)":
            lambda: native.tile_output(lib, x, phases, s1, branch.conv_out.weight, border, frequency, mix),
        "tile forward, compiled kernels": lambda: model(x),
        "tile forward, PyTorch only": pytorch_only,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiles", type=int, default=2, help="tiles per call (default: bloom's, %(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default: %(default)s)")
    parser.add_argument("--calls", type=int, default=50, help="calls per piece and round (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--march", help="build the kernels for this -march instead of the CPU's own (e.g. znver3: "
                        "an AMD EPYC's instruction set, 16 vector registers, on an Intel machine)")
    parser.add_argument("--out", help="results JSON (default: benchmarks/results/tile-kernels/pieces-<machine>.json)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.march:
        native.FLAGS = tuple(f"-march={args.march}" if f == "-march=native" else f for f in native.FLAGS)
    lib = native.tile_library()
    if lib is None:
        sys.exit("tile_pieces: the compiled tile kernels are not built here (no C compiler with OpenMP, "
                 "or NANOLILY_NATIVE=0): nothing to time")
    model = load_model("nanolily-v1")
    x = torch.rand(args.tiles, 3, 224, 224, generator=torch.Generator().manual_seed(0)) ** 2 * 0.4
    times: dict[str, list[float]] = {}
    with torch.inference_mode():
        calls = pieces(model, lib, x)
        for call in calls.values():  # warm-up: builds, caches, oneDNN's kernel choice
            for _ in range(5):
                call()
        for _ in range(args.rounds):
            for name, call in calls.items():
                start = time.perf_counter()
                for _ in range(args.calls):
                    call()
                times.setdefault(name, []).append((time.perf_counter() - start) / args.calls * 1e3)
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    command = f"{f'ONEDNN_MAX_CPU_ISA={isa} ' if isa else ''}python benchmarks/tile_pieces.py " + " ".join(sys.argv[1:])
    rows = {name: statistics.median(ms) for name, ms in times.items()}
    print(f"{command.strip()}\n{machine_class()}, {args.threads} threads, {args.tiles} tiles per call, kernels built "
          f"for -march={args.march or 'native'}\n")
    print("| piece | ms per call (median) |\n|---|---|")
    for name, ms in rows.items():
        print(f"| {name} | {ms:.2f} |")
    suffix = (f"-onednn-{isa.lower()}" if isa else "") + (f"-{args.march}" if args.march else "")
    out = Path(args.out or ROOT / f"benchmarks/results/tile-kernels/pieces-{machine_class()}{suffix}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": command.strip(), "date": date.today().isoformat(), "machine": machine_class(),
                               "threads": args.threads, "tiles": args.tiles, "march": args.march or "native",
                               "ms_per_call": rows,
                               "rounds_ms": times}, indent=1) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
