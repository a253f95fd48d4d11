"""How long writing an enhanced photo takes: nanolily's encoders against the one-core ones they replaced.

    python benchmarks/encode.py                       # 3840x2160 and 7680x4320, 3 rounds
    python benchmarks/encode.py --sizes 7680x4320 --repeats 5

The input is the bundled dark sample resized (bicubic) to each size and brightened 3x, as an enhanced
photo would be. Each row encodes it with ``nanolily.io.images.encode_image`` (what ``nanolily enhance``
and the server write) and, where nanolily has its own encoder, with the one it replaced: Pillow's PNG
(zlib level 6, one core) for 8-bit PNG (and nanolily's writer held to one thread: on one core, 8-bit PNG
stays Pillow's), pypng for 16-bit PNG, tifffile's zlib without a predictor on one core for 16-bit TIFF.
Times are medians over rounds that run every encoder in turn. Prints a table and writes
benchmarks/results/encode-<machine class>.json.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from inference import SAMPLE, machine_class  # noqa: E402

from nanolily.io.images import Photo, encode_image, to_uint  # noqa: E402
from nanolily.io.png import available_cores, encode_png  # noqa: E402


def pillow_png(values: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(values).save(buf, format="PNG")
    return buf.getvalue()


def pypng_16(values: np.ndarray) -> bytes:
    import png

    height, width, channels = values.shape
    buf = io.BytesIO()
    png.Writer(width, height, greyscale=False, bitdepth=16).write(buf, values.reshape(height, width * channels))
    return buf.getvalue()


def tifffile_16(values: np.ndarray) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, values, photometric="rgb", compression="zlib")
    return buf.getvalue()


def cases(pixels: np.ndarray) -> list[tuple[str, int, str, object]]:
    """(format, bits, encoder, call) for every row of the table."""
    v8, v16 = to_uint(pixels, 8), to_uint(pixels, 16)
    photo8, photo16 = Photo(pixels, None, 8), Photo(pixels, None, 16)
    return [
        ("PNG", 8, "nanolily", lambda: encode_image(photo8, "PNG")),
        ("PNG", 8, "Pillow (replaced; still used on one core)", lambda: pillow_png(v8)),
        ("PNG", 8, "nanolily's writer on one thread", lambda: encode_png(v8, threads=1)),
        ("PNG", 16, "nanolily", lambda: encode_image(photo16, "PNG")),
        ("PNG", 16, "pypng (replaced)", lambda: pypng_16(v16)),
        ("TIFF", 16, "nanolily", lambda: encode_image(photo16, "TIFF")),
        ("TIFF", 16, "tifffile, no predictor (replaced)", lambda: tifffile_16(v16)),
        ("TIFF", 8, "nanolily (Pillow)", lambda: encode_image(photo8, "TIFF")),
        ("JPEG", 8, "nanolily (Pillow)", lambda: encode_image(photo8, "JPEG")),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="3840x2160,7680x4320", help="comma-separated WIDTHxHEIGHT")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (default: %(default)s)")
    parser.add_argument("--out", help="results JSON (default: benchmarks/results/encode-<machine class>.json)")
    args = parser.parse_args()
    rows = []
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.split("x"))
        image = Image.open(SAMPLE).convert("RGB").resize((width, height), Image.BICUBIC)
        pixels = np.clip(np.asarray(image, dtype=np.float32) * (3 / 255), 0, 1)
        runs = cases(pixels)
        times, sizes = {i: [] for i in range(len(runs))}, {}
        for _ in range(args.repeats):
            for i, (*_, call) in enumerate(runs):
                start = time.perf_counter()
                sizes[i] = len(call())
                times[i].append(time.perf_counter() - start)
        for i, (fmt, bits, encoder, _) in enumerate(runs):
            rows.append({"size": size, "format": fmt, "bits": bits, "encoder": encoder,
                         "seconds": statistics.median(times[i]), "megabytes": sizes[i] / 1e6})
    print("| size | format | bits | encoder | s | MB |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['format']} | {r['bits']} | {r['encoder']} | {r['seconds']:.2f} "
              f"| {r['megabytes']:.1f} |")
    out = Path(args.out or ROOT / f"benchmarks/results/encode-{machine_class()}.json")
    out.write_text(json.dumps({"command": "python benchmarks/encode.py " + " ".join(sys.argv[1:]),
                               "date": date.today().isoformat(), "machine": machine_class(),
                               "cores": available_cores(), "repeats": args.repeats, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
