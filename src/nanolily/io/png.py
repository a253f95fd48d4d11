"""A PNG writer that compresses on every core (8- and 16-bit grey, grey + alpha, RGB and RGBA), and a fast
reader for 16-bit RGB(A) PNG, which Pillow reduces to 8 bits.

PNG compresses its rows as one zlib stream, which Pillow (like libpng) deflates on one core: at 8K that is
most of ``nanolily enhance``'s time. Here the rows are cut into strips; each strip is filtered (per row,
the PNG filter whose bytes have the least absolute sum: libpng's heuristic) and deflated on its own
thread (zlib releases the GIL), and the strips' raw deflate blocks, each ended by a sync flush, are joined
into the one stream that every decoder reads. Each strip's compressor is primed with the 32 KB before it,
so matches reach across the cuts (as pigz does): files come out about the size of Pillow's.

:func:`decode_png16` reads what pypng reads byte by byte in Python, with the filters undone in C
(``nanolily.native``): an 8K 16-bit photo in seconds, not most of a minute.

Example:
    >>> import io, numpy as np
    >>> from PIL import Image
    >>> pixels = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    >>> np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(pixels)))), pixels)
    True
"""

from __future__ import annotations

import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np

XMP_KEYWORD = "XML:com.adobe.xmp"  # the iTXt keyword of a PNG's XMP packet

COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type: grey, grey + alpha, RGB, RGBA
STRIP_BYTES = 1 << 19  # about this much image data per strip: enough strips to keep every core busy
WINDOW = 1 << 15  # deflate's window: each strip's compressor is primed with the bytes before it
MAX_THREADS = 8
SIGNATURE = b"\x89PNG\r\n\x1a\n"
SIGNED_SIZE = np.minimum(np.arange(256), 256 - np.arange(256)).astype(np.uint8)  # |byte read as signed|


def filter_rows(rows: np.ndarray, previous: np.ndarray, bpp: int) -> bytes:
    """PNG-filter rows of bytes: ``rows`` (R, N) uint8, the row above them ``previous`` (N,) (zeros at the
    top of the image), ``bpp`` bytes per pixel. Returns the R filtered rows, each led by its filter type
    (0 none, 1 sub, 2 up, 3 average, 4 Paeth), the one whose bytes, read as signed, sum to the least
    absolute value."""
    x = rows  # uint8 arithmetic wraps modulo 256, as PNG's filters do
    up = np.concatenate([previous[None], x[:-1]])
    left = np.zeros_like(x)
    left[:, bpp:] = x[:, :-bpp]
    up_left = np.zeros_like(x)
    up_left[:, bpp:] = up[:, :-bpp]
    a, b, c = left.astype(np.int16), up.astype(np.int16), up_left.astype(np.int16)
    # Paeth predicts with the neighbour closest to p = a + b - c: distances |p - a|, |p - b|, |p - c|
    pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, up_left))
    candidates = np.stack([x, x - left, x - up, x - ((a + b) >> 1).astype(np.uint8), x - paeth])  # (5, R, N)
    best = SIGNED_SIZE[candidates].sum(-1, dtype=np.int32).argmin(0)  # (R,)
    chosen = candidates[best, np.arange(len(x))]
    return np.concatenate([best.astype(np.uint8)[:, None], chosen], axis=1).tobytes()


def _chunk(kind: bytes, data: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """A PNG chunk as its four parts (length, type, data, CRC of type and data), for one join into the
    file: the data is not copied before it."""
    return struct.pack(">I", len(data)), kind, data, struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def encode_threads() -> int:
    """Threads an encoder uses: the cores this process may run on, at most :data:`MAX_THREADS` (a container
    may see far more cores than its share, and each thread holds a strip's temporaries, some 13 MB)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(cores, MAX_THREADS)


def encode_png(values: np.ndarray, icc_profile: bytes | None = None, exif: bytes | None = None,
               xmp: bytes | None = None, level: int = 6, threads: int | None = None) -> bytes:
    """A PNG file of ``values``: (H, W) or (H, W, C) uint8 or uint16, C = 1 (grey), 2 (grey + alpha),
    3 (RGB) or 4 (RGBA). ``icc_profile`` goes into an iCCP chunk, ``exif`` (with or without its
    ``Exif\\0\\0`` header) into eXIf, ``xmp`` into an iTXt chunk as Adobe's tools write it; ``level`` is
    zlib's (6: Pillow's default); ``threads``: :func:`encode_threads` unless given."""
    if values.ndim == 2:
        values = values[..., None]
    if values.ndim != 3 or values.shape[2] not in COLOUR_TYPES or values.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"encode_png takes (H, W[, 1-4]) uint8 or uint16, got {values.shape} {values.dtype}")
    height, width, channels = values.shape
    if height < 1 or width < 1:
        raise ValueError(f"encode_png needs at least one pixel, got {height}x{width}")
    bpp = channels * values.itemsize
    rows = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder(">")).view(np.uint8).reshape(height, -1)
    per_strip = max(1, STRIP_BYTES // rows.shape[1])
    starts = list(range(0, height, per_strip))
    row_bytes = rows.shape[1] + 1  # filtered, with its filter type
    lead = -(-WINDOW // row_bytes)  # rows before a strip whose filtered bytes fill deflate's window

    def strip(start: int) -> tuple[bytes, int, int]:
        end, first = min(start + per_strip, height), max(start - lead, 0)
        data = filter_rows(rows[first:end], rows[first - 1] if first else np.zeros(rows.shape[1], np.uint8), bpp)
        cut = (start - first) * row_bytes
        # raw deflate, so the strips join into one stream; primed with the preceding bytes, which the
        # decoder has just produced, so matches reach back across the cut as in a one-core stream
        deflate = (zlib.compressobj(level, zlib.DEFLATED, -15, zdict=data[max(cut - WINDOW, 0):cut]) if cut
                   else zlib.compressobj(level, zlib.DEFLATED, -15))
        body = data[cut:]
        return (deflate.compress(body) + deflate.flush(zlib.Z_FINISH if end == height else zlib.Z_SYNC_FLUSH),
                zlib.adler32(body), len(body))

    with ThreadPoolExecutor(min(threads or encode_threads(), len(starts))) as pool:
        strips = list(pool.map(strip, starts))
    checksum = 1
    for _, adler, length in strips:  # the stream's Adler-32, combined from the strips' (zlib's adler32_combine)
        checksum = _adler32_combine(checksum, adler, length)
    header = struct.pack(">IIBBBBB", width, height, 8 * values.itemsize, COLOUR_TYPES[channels], 0, 0, 0)
    chunks = [_chunk(b"IHDR", header)]
    if icc_profile:
        chunks.append(_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc_profile)))
    if exif:
        chunks.append(_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif))
    if xmp:  # keyword, no compression, no language or translated keyword, then the UTF-8 packet
        chunks.append(_chunk(b"iTXt", XMP_KEYWORD.encode() + b"\x00\x00\x00\x00\x00" + xmp))
    # one IDAT chunk per strip (a chunk holds under 2 GB), plus the stream's header and checksum
    chunks += [_chunk(b"IDAT", piece) for piece in [b"\x78\x9c", *(s for s, _, _ in strips),
                                                     struct.pack(">I", checksum)]]
    chunks.append(_chunk(b"IEND", b""))
    return b"".join([SIGNATURE, *(part for chunk in chunks for part in chunk)])


def _adler32_combine(first: int, second: int, length: int) -> int:
    """The Adler-32 of A + B from A's checksum, B's checksum and B's length (zlib's adler32_combine)."""
    base = 65521
    rem = length % base
    a1, b1 = first & 0xFFFF, first >> 16
    a2, b2 = second & 0xFFFF, second >> 16
    a = (a1 + a2 - 1) % base
    b = (b1 + b2 + rem * a1 - rem) % base
    return (b << 16) | a


def read_chunks(data: bytes):
    """(type, body) of each chunk of a PNG file's bytes, in file order, up to IEND; each body a memoryview
    of ``data``, so a scan for one small chunk does not copy the image data."""
    view, pos = memoryview(data), len(SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", view[pos:pos + 8])
        yield kind, view[pos + 8:pos + 8 + length]
        if kind == b"IEND":
            return
        pos += 12 + length


def decode_png16(data: bytes) -> np.ndarray | None:
    """(H, W, 3 or 4) uint16 pixels of a non-interlaced 16-bit RGB or RGBA PNG file's bytes, the filters
    undone by the compiled kernels; None for any other PNG (interlaced, with a transparent colour or
    significant bits to apply) or where the kernels are not built: pypng reads those. ValueError for a
    damaged file."""
    from nanolily import native

    lib = native.library()
    if lib is None or not data.startswith(SIGNATURE):
        return None
    header, idat = None, []
    for kind, body in read_chunks(data):
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body[:13])
        elif kind == b"IDAT":
            idat.append(body)
        elif kind in (b"tRNS", b"sBIT"):
            return None
    if header is None or header[2:5] not in ((16, 2, 0), (16, 6, 0)) or header[6] != 0:
        return None
    width, height, _, colour = header[:4]
    channels = 3 if colour == 2 else 4
    try:
        stream = zlib.decompress(b"".join(idat))
    except zlib.error as e:
        raise ValueError(f"image data: {e}") from None
    pixels = native.png_unfilter(lib, stream, height, width * channels * 2, channels * 2)
    return np.frombuffer(pixels, dtype=">u2").reshape(height, width, channels).astype(np.uint16)
