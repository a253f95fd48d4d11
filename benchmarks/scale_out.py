"""Scale-out: a folder of photos through `nanolily enhance` on one process against Ray Data workers.

    python benchmarks/scale_out.py [--images 24] [--size 1920x1080] [--workers 2]

Makes a folder of dark photos (the bundled samples, resized), then times, each in a fresh process,
``nanolily enhance DIR -o OUT`` (one process, every core) and ``nanolily enhance DIR -o OUT --ray
--workers N`` (a local Ray instance, N model actors of one thread), start-up included, and compares
the two runs' outputs. Prints a table and writes benchmarks/results/scale_out.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from nanolily.io.samples import sample_paths

ROOT = Path(__file__).resolve().parents[1]


def make_photos(folder: Path, count: int, size: tuple[int, int]) -> None:
    samples = [Image.open(p).convert("RGB").resize(size, Image.BICUBIC) for p in sample_paths()]
    for i in range(count):
        samples[i % len(samples)].save(folder / f"photo_{i:03d}.png")


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=24)
    p.add_argument("--size", default="1920x1080")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/scale_out.json"))
    args = p.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    nanolily = [sys.executable, "-m", "nanolily.interfaces.cli", "enhance"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        make_photos(tmp / "in", args.images, size)
        rows = [("one process (2 threads)", timed(nanolily + [str(tmp / "in"), "-o", str(tmp / "one"), "-q"])),
                (f"Ray Data, {args.workers} workers (1 thread each)",
                 timed(nanolily + [str(tmp / "in"), "-o", str(tmp / "ray"), "-q", "--ray",
                                   "--workers", str(args.workers)]))]
        diff = max((int(np.abs(np.asarray(Image.open(tmp / "one" / f.name), dtype=int)
                               - np.asarray(Image.open(f), dtype=int)).max())
                    for f in sorted((tmp / "ray").glob("*.png"))), default=-1)
        written = len(list((tmp / "ray").glob("*.png")))
    machine = platform.processor() or platform.machine()
    print(f"{args.images} photos of {args.size}, {os.cpu_count()} CPUs ({machine}); {written} written by Ray; largest pixel difference between the two runs' outputs: {diff} of 255\n")
    print("| run | seconds, start-up included | photos/s |\n|---|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.1f} | {args.images / seconds:.2f} |")
    Path(args.out).write_text(json.dumps({
        "images": args.images, "size": args.size, "cpus": os.cpu_count(), "machine": machine,
        "max_pixel_difference": diff, "ray_outputs": written, "date": time.strftime("%Y-%m-%d"),
        "runs": [{"run": name, "seconds": round(seconds, 2)} for name, seconds in rows]}, indent=2))


if __name__ == "__main__":
    main()
