"""How long reading a photo and writing an enhanced one take: nanolily's codecs against those they replaced.

    python benchmarks/image_io.py                       # 3840x2160 and 7680x4320, 3 rounds
    python benchmarks/image_io.py --sizes 7680x4320 --repeats 5

The input is the bundled dark sample resized (bicubic) to each size and brightened 3x, as an enhanced
photo would be. Each row encodes it with ``nanolily.io.images.encode_image`` (what ``nanolily enhance``
and the server write) and, where nanolily has its own encoder, with the one it replaced: Pillow's PNG
(zlib level 6, one core) for 8-bit PNG (and nanolily's writer held to one thread: on one core, 8-bit PNG
stays Pillow's), pypng for 16-bit PNG, tifffile's zlib without a predictor on one core for 16-bit TIFF.
Reading: ``nanolily.io.images.read_image`` of the 16-bit PNG and TIFF nanolily wrote, and of the same
PNG with the compiled kernels off, where it falls back to pypng (its 16-bit PNG reader before). Times are
medians over rounds that run every case in turn. Prints a table and writes
benchmarks/results/image-io-<machine class>.json.
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

from inference import SAMPLE, _native, machine_class  # noqa: E402

from nanolily.io.images import Photo, encode_image, read_image, to_uint  # noqa: E402
from nanolily.io.png import encode_threads, encode_png  # noqa: E402


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


def cases(pixels: np.ndarray) -> list[tuple[str, str, int, str, object]]:
    """(operation, format, bits, implementation, call -> bytes or pixels) for every row of the table."""
    v8, v16 = to_uint(pixels, 8), to_uint(pixels, 16)
    photo8, photo16 = Photo(pixels, None, 8), Photo(pixels, None, 16)
    png16, tiff16 = encode_image(photo16, "PNG"), encode_image(photo16, "TIFF")

    def read(data: bytes, kernels: bool = True) -> np.ndarray:
        with _native(kernels):  # without the kernels, read_image falls back to pypng
            return read_image(io.BytesIO(data)).pixels
    writes = [
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
    reads = [
        ("PNG", 16, "nanolily (compiled unfilter)", lambda: read(png16)),
        ("PNG", 16, "pypng (replaced; still used without the kernels)", lambda: read(png16, kernels=False)),
        ("TIFF", 16, "nanolily (tifffile)", lambda: read(tiff16)),
    ]
    return [("write", *w) for w in writes] + [("read", *r) for r in reads]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="3840x2160,7680x4320", help="comma-separated WIDTHxHEIGHT")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (default: %(default)s)")
    parser.add_argument("--out", help="results JSON (default: benchmarks/results/image-io-<machine class>.json)")
    args = parser.parse_args()
    rows = []
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.split("x"))
        image = Image.open(SAMPLE).convert("RGB").resize((width, height), Image.BICUBIC)
        pixels = np.clip(np.asarray(image, dtype=np.float32) * (3 / 255), 0, 1)
        runs = cases(pixels)
        times, sizes = {i: [] for i in range(len(runs))}, {}
        for _ in range(args.repeats):
            for i, (operation, *_, call) in enumerate(runs):
                start = time.perf_counter()
                result = call()
                times[i].append(time.perf_counter() - start)
                sizes[i] = len(result) if operation == "write" else None
        for i, (operation, fmt, bits, implementation, _) in enumerate(runs):
            rows.append({"size": size, "operation": operation, "format": fmt, "bits": bits,
                         "implementation": implementation, "seconds": statistics.median(times[i]),
                         "megabytes": sizes[i] and sizes[i] / 1e6})
    print("| size | operation | format | bits | implementation | s | file MB |\n|---|---|---|---|---|---|---|")
    for r in rows:
        mb = f"{r['megabytes']:.1f}" if r["megabytes"] else ""
        print(f"| {r['size']} | {r['operation']} | {r['format']} | {r['bits']} | {r['implementation']} "
              f"| {r['seconds']:.2f} | {mb} |")
    out = Path(args.out or ROOT / f"benchmarks/results/image-io-{machine_class()}.json")
    out.write_text(json.dumps({"command": "python benchmarks/image_io.py " + " ".join(sys.argv[1:]),
                               "date": date.today().isoformat(), "machine": machine_class(),
                               "threads": encode_threads(), "repeats": args.repeats, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
