"""Reading and writing photos the way photographers expect.

- PNG, JPEG, WebP, TIFF and BMP in and out; AVIF too where Pillow has it (recent Pillow wheels do), HEIC
  with the pillow-heif plugin (the ``[heif]`` extra), and camera RAW files in (DNG, CR2, CR3, NEF, ARW,
  RAF, RW2, ORF, ...) with rawpy (the ``[raw]`` extra), developed at the captured exposure. The output
  format follows the output file's extension.
- EXIF orientation is applied on read (and the tag reset on write), ICC profile, EXIF and XMP are copied
  (16-bit TIFF outputs, written by tifffile, keep only EXIF's camera, date and author tags).
- Alpha is carried through untouched; grayscale stays grayscale.
- 16-bit PNG and TIFF are read at 16 bits (Pillow alone would reduce 16-bit RGB to 8 bits, so those go
  through :mod:`nanolily.io.png`, or pypng where no C compiler built its kernels, and tifffile) and
  written back at 16 bits; PNG and 16-bit TIFF are compressed on up to 8 cores. Float and 32-bit TIFF,
  which Pillow does not open in colour, are read with tifffile and written at 16 bits.
- Files are written to a temporary name and renamed into place, so a failure never leaves half a file,
  and an existing file is only replaced when asked.
"""

from __future__ import annotations

import importlib.util
import io as _io
import os
import re
import tempfile
import threading
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, PngImagePlugin, features

from nanolily.io.png import STRIP_BYTES, XMP_KEYWORD, decode_png16, encode_png, encode_threads, read_chunks

WRITE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP",
                 ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}
RAW_SUFFIXES = (".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".raf", ".rw2",
                ".orf", ".pef", ".srw", ".x3f", ".3fr", ".iiq", ".rwl", ".erf", ".kdc", ".mrw", ".mos")
HEIF_SUFFIXES = (".heic", ".heif")
RAW_OUTPUT_SUFFIX = ".tif"  # a RAW file is developed at 16 bits: beside it, a 16-bit TIFF keeps them
# what each optional format needs, for the message when it is missing
MISSING_SUPPORT = {**{s: "camera RAW files need rawpy: pip install 'nanolily[raw]'" for s in RAW_SUFFIXES},
                   **{s: "HEIC/HEIF files need pillow-heif: pip install 'nanolily[heif]'" for s in HEIF_SUFFIXES},
                   ".avif": "AVIF needs a Pillow built with libavif (pip install -U pillow)"}
if features.check("avif"):
    WRITE_FORMATS[".avif"] = "AVIF"
if importlib.util.find_spec("pillow_heif") is not None:
    from pillow_heif import register_heif_opener

    register_heif_opener()  # Pillow then opens and saves HEIC/HEIF (format "HEIF")
    WRITE_FORMATS.update({".heic": "HEIF", ".heif": "HEIF"})
HAS_RAW = importlib.util.find_spec("rawpy") is not None
READ_SUFFIXES = tuple(WRITE_FORMATS) + (RAW_SUFFIXES if HAS_RAW else ())
LOSSY_FORMATS = ("JPEG", "WEBP", "AVIF", "HEIF")  # take a quality
SIXTEEN_BIT_FORMATS = ("PNG", "TIFF")
ALPHA_FORMATS = ("PNG", "WEBP", "TIFF", "AVIF", "HEIF")
DEFAULT_MAX_PIXELS = 200_000_000  # 200 MP: above any camera photo (an 8K frame is 33 MP), below a bomb
ORIENTATION_TAG = 0x0112
XMP_TAG = 700  # TIFF's XMP packet
_pillow_limit_lock = threading.Lock()


class ImageError(Exception):
    """A file that cannot be read or written; ``str()`` is one line naming the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


@dataclass
class Photo:
    """A decoded photo.

    Attributes:
        pixels: (H, W, C) float32 in [0, 1]; C = 3 (colour) or 1 (grayscale).
        alpha: (H, W) alpha channel in its original dtype (uint8 or uint16), or None.
        bit_depth: 8 or 16, bits per channel of the source.
        icc_profile / exif / xmp: raw bytes to copy to the output, or None.
    """

    pixels: np.ndarray
    alpha: np.ndarray | None = None
    bit_depth: int = 8
    icc_profile: bytes | None = None
    exif: bytes | None = None
    xmp: bytes | None = None

    @property
    def is_grayscale(self) -> bool:
        return self.pixels.shape[2] == 1

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as PIL reports it."""
        return self.pixels.shape[1], self.pixels.shape[0]


def missing_support(suffix: str) -> str | None:
    """What this installation needs to read files ending in ``suffix`` (an optional format whose extra
    is not installed), or None."""
    suffix = suffix.lower()
    return MISSING_SUPPORT[suffix] if suffix in MISSING_SUPPORT and suffix not in READ_SUFFIXES else None


def read_image(source: str | os.PathLike | BinaryIO, max_pixels: int = DEFAULT_MAX_PIXELS,
               name: str = "stdin") -> Photo:
    """Decode an image file into a :class:`Photo`; any failure is an :class:`ImageError`.

    ``source`` is a path, or a binary file object such as ``sys.stdin.buffer`` (read to its end; its
    format is told from the content, except camera RAW files, told by ``name``'s extension; ``name``
    labels its errors). CMYK, palette, 1-bit and other modes are converted (palette transparency
    becomes alpha). ``max_pixels`` guards against decompression bombs: larger images are refused
    before decoding.
    """
    if hasattr(source, "read"):
        data = source.read()
        if not data:
            raise ImageError(name, "empty input (0 bytes)")
        if Path(name).suffix.lower() in RAW_SUFFIXES:  # LibRaw reads files: through a temporary one
            with tempfile.TemporaryDirectory(prefix="nanolily-") as folder:
                path = Path(folder) / f"upload{Path(name).suffix.lower()}"
                path.write_bytes(data)
                try:
                    return _read_raw(path, max_pixels)
                except ImageError as e:
                    raise ImageError(name, e.reason) from None
        return _decode(_io.BytesIO(data), name, "", max_pixels)
    path = Path(source)
    if not path.exists():
        raise ImageError(path, "no such file")
    if path.is_dir():
        raise ImageError(path, "is a folder, not an image")
    if path.stat().st_size == 0:
        raise ImageError(path, "empty file (0 bytes)")
    suffix = path.suffix.lower()
    if suffix in RAW_SUFFIXES:
        return _read_raw(path, max_pixels)
    return _decode(path, path, suffix, max_pixels)


def _decode(source: Path | _io.BytesIO, path: Path | str, suffix: str, max_pixels: int) -> Photo:
    """:func:`read_image` of a file or an in-memory one, through Pillow; ``path`` names it in errors."""
    try:
        with _open_limited(source, max_pixels) as img:
            width, height = img.size
            _check_pixels(path, width, height, max_pixels)
            sixteen_bit_rgb = _is_16bit_rgb(img)  # before getexif(), which may decode a PNG and drop its tile
            data = None
            if sixteen_bit_rgb and img.format == "PNG":
                # Pillow's PNG getexif() decodes the whole image at 8 bits to find an eXIf chunk after the
                # pixel data: take it from the file's chunks instead, then read EXIF as Pillow does
                data = source.read_bytes() if isinstance(source, Path) else source.getvalue()
                found = next((body for kind, body in read_chunks(data) if kind == b"eXIf"), None)
                if found is not None and "exif" not in img.info:
                    img.info["exif"] = b"Exif\x00\x00" + found
                exif = Image.Image.getexif(img)
            else:
                exif = img.getexif()
            orientation = exif.get(ORIENTATION_TAG, 1)
            icc = img.info.get("icc_profile")
            if sixteen_bit_rgb:
                pixels, alpha = _read_16bit_rgb(source, img.format, data)
                bit_depth = 16
            else:
                img.load()
                pixels, alpha, bit_depth, icc = _from_pil(img, icc)
            xmp = kept_xmp(img.info.get("xmp"), rotated=orientation != 1)
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(path, f"image is over the {max_pixels / 1e6:g} MP limit (raise it with --max-pixels)")
    except Image.UnidentifiedImageError:
        if _is_tiff(source):  # float or 32-bit RGB TIFF, which Pillow does not open
            return _read_tiff(source, path, max_pixels)
        raise ImageError(path, missing_support(suffix) or "not an image file, or a format nanolily cannot read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(path, f"damaged image ({_first_line(e)})")
    pixels = _orient(pixels, orientation)
    alpha = None if alpha is None else _orient(alpha, orientation)
    if ORIENTATION_TAG in exif:
        del exif[ORIENTATION_TAG]
    return Photo(np.ascontiguousarray(pixels), None if alpha is None else np.ascontiguousarray(alpha),
                 bit_depth, icc, exif.tobytes() if len(exif) else None, xmp)


# XMP that points at data stored after the image (an HDR gain map, a motion photo's video, a depth map):
# that data is not carried over, so neither is the packet that would send a reader looking for it
XMP_APPENDED_DATA = (b"hdrgm:", b"Container:Directory", b"GCamera:MicroVideo", b"GCamera:MotionPhoto")
XMP_ORIENTATION = (re.compile(rb'\s*tiff:Orientation="[0-9]"'),
                   re.compile(rb"<tiff:Orientation>[0-9]</tiff:Orientation>"))


def kept_xmp(xmp: bytes | str | None, rotated: bool = False) -> bytes | None:
    """The XMP packet to copy to the output (ratings, keywords, captions, edit history), or None: its
    orientation removed when the pixels were turned upright (as ``PIL.ImageOps.exif_transpose`` does),
    and none at all where it describes data stored after the image, which is not copied."""
    if not xmp:
        return None
    xmp = xmp.encode() if isinstance(xmp, str) else bytes(xmp)
    if any(marker in xmp for marker in XMP_APPENDED_DATA):
        return None
    if rotated:
        for pattern in XMP_ORIENTATION:
            xmp = pattern.sub(b"", xmp)
    return xmp


def encode_image(photo: Photo, fmt: str, quality: int = 95) -> bytes:
    """The file :func:`write_image` writes, as bytes: ``fmt`` is a format name, e.g. ``"PNG"`` (the values
    of ``WRITE_FORMATS``)."""
    sixteen = photo.bit_depth == 16 and fmt in SIXTEEN_BIT_FORMATS
    return _encode(photo, fmt, sixteen, photo.alpha if fmt in ALPHA_FORMATS else None, quality)


def write_image(path: str | os.PathLike, photo: Photo, quality: int = 95, overwrite: bool = False) -> Path:
    """Encode ``photo`` to ``path`` (format from the extension), atomically.

    16-bit photos stay 16-bit in PNG and TIFF and are rounded to 8 bits elsewhere; alpha is dropped
    only where the format cannot hold it (JPEG, BMP).
    """
    path = Path(path)
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ImageError(path, f"unknown output format {path.suffix!r}; use one of {sorted(WRITE_FORMATS)}")
    if path.exists() and not overwrite:
        raise ImageError(path, "already exists (use --overwrite to replace it)")
    if not path.parent.is_dir():
        raise ImageError(path, f"output folder {path.parent} does not exist")
    data = encode_image(photo, fmt, quality)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".part", dir=path.parent)
    except OSError as e:
        raise ImageError(path, f"cannot write to {path.parent} ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise ImageError(path, f"cannot write ({e.strerror or e})") from None
    return path


def to_uint(pixels: np.ndarray, bits: int, rows: int = 256) -> np.ndarray:
    """[0, 1] floats to uint8 / uint16 with rounding, ``rows`` rows at a time (no full-size float temporaries)."""
    top = (1 << bits) - 1
    out = np.empty(pixels.shape, np.uint16 if bits == 16 else np.uint8)
    for i in range(0, pixels.shape[0], rows):
        part = np.clip(pixels[i:i + rows], 0.0, 1.0)
        out[i:i + rows] = np.round(part * top, out=part)
    return out


def to_float(values: np.ndarray) -> np.ndarray:
    """uint8 / uint16 / float arrays to float32 in [0, 1] (scaled in place: one full-size array)."""
    if values.dtype in (np.uint8, np.uint16):
        out = values.astype(np.float32)
        out *= np.float32(1 / 255.0 if values.dtype == np.uint8 else 1 / 65535.0)
        return out
    return values.astype(np.float32)


# --- reading ------------------------------------------------------------------------------------------

def _open_limited(path: Path | _io.BytesIO, max_pixels: int) -> Image.Image:
    """Open (header only) with Pillow's bomb guard set to our limit instead of its fixed ~179 MP."""
    with _pillow_limit_lock, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, max_pixels
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _check_pixels(path: Path | str, width: int, height: int, max_pixels: int) -> None:
    """Refuse an image of more than ``max_pixels`` before it is decoded (a decompression bomb guard)."""
    if width * height > max_pixels:
        raise ImageError(path, f"{width}x{height} = {width * height / 1e6:.1f} MP is over the "
                               f"{max_pixels / 1e6:g} MP limit (raise it with --max-pixels)")


def _read_raw(path: Path, max_pixels: int) -> Photo:
    """Develop a camera RAW file with LibRaw (rawpy) as a camera would, but without brightening it: the
    camera's white balance, demosaicing, the sRGB primaries and tone curve, and ``no_auto_bright``, so a
    night shot stays as dark as it was captured (the network's job), in 16 bits. The camera's
    orientation is applied; EXIF is not carried over (LibRaw does not expose it)."""
    if not HAS_RAW:
        raise ImageError(path, MISSING_SUPPORT[RAW_SUFFIXES[0]])
    import rawpy

    try:
        with rawpy.imread(str(path)) as raw:
            width, height = raw.sizes.width, raw.sizes.height
            _check_pixels(path, width, height, max_pixels)
            rgb = raw.postprocess(use_camera_wb=True, no_auto_bright=True, output_bps=16)  # (H, W, 3) uint16
    except rawpy.LibRawError as e:
        reason = e.args[0].decode(errors="replace") if e.args and isinstance(e.args[0], bytes) else _first_line(e)
        raise ImageError(path, f"not a RAW file LibRaw can read ({reason})") from None
    return Photo(to_float(rgb), None, 16, None, None)


def _is_16bit_rgb(img: Image.Image) -> bool:
    if img.mode not in ("RGB", "RGBA") or not img.tile:
        return False
    if img.format == "PNG":
        return ";16" in str(img.tile[0][3])  # raw mode, e.g. "RGB;16B"
    if img.format == "TIFF":
        bits = img.tag_v2.get(258, (8,))
        return max(bits if isinstance(bits, tuple) else (bits,)) == 16
    return False


def _read_16bit_rgb(source: Path | _io.BytesIO, fmt: str,
                    png_bytes: bytes | None) -> tuple[np.ndarray, np.ndarray | None]:
    if isinstance(source, _io.BytesIO):
        source.seek(0)
    if fmt == "PNG":
        import png

        data = decode_png16(png_bytes)
        if data is None:  # interlaced, a transparent colour, or no compiled kernels: pypng (slow, in Python)
            reader = png.Reader(filename=str(source)) if isinstance(source, Path) else png.Reader(file=source)
            try:
                width, height, rows, info = reader.asDirect()
                data = np.vstack([np.asarray(r, dtype=np.uint16) for r in rows]).reshape(height, width, -1)
            except png.Error as e:
                raise ValueError(str(e)) from None
    else:
        import tifffile

        data = tifffile.imread(source)
        if data.ndim == 3 and data.shape[0] in (3, 4) and data.shape[-1] not in (3, 4):
            data = np.moveaxis(data, 0, -1)  # planar (C, H, W) storage
    data = data.astype(np.uint16, copy=False)
    alpha = data[..., 3] if data.shape[-1] == 4 else None
    return to_float(data[..., :3]), alpha


def _unit_float(values: np.ndarray) -> np.ndarray:
    """Float samples as float32 in [0, 1]: clipped, NaN to 0 (float TIFFs may hold HDR values and NaN)."""
    return np.clip(np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0), 0, 1)


def _is_tiff(source: Path | _io.BytesIO) -> bool:
    if isinstance(source, _io.BytesIO):
        head = source.getvalue()[:4]
    else:
        with open(source, "rb") as f:
            head = f.read(4)
    return head in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _read_tiff(source: Path | _io.BytesIO, path: Path | str, max_pixels: int) -> Photo:
    """A TIFF Pillow cannot open, through tifffile: float samples are taken as [0, 1] (clipped, as
    Pillow's float grayscale is), 32-bit integers scaled from their full range; 16 bits out."""
    import tifffile

    if isinstance(source, _io.BytesIO):
        source.seek(0)
    try:
        with tifffile.TiffFile(source) as tif:
            page = tif.pages[0]
            width, height = page.imagewidth, page.imagelength
            _check_pixels(path, width, height, max_pixels)
            data = page.asarray()
            if data.ndim == 3 and page.planarconfig == 2:
                data = np.moveaxis(data, 0, -1)  # planar (C, H, W) storage
            icc = page.tags[34675].value if 34675 in page.tags else None
            orientation = int(page.tags[274].value) if 274 in page.tags else 1
            xmp = kept_xmp(page.tags[XMP_TAG].value if XMP_TAG in page.tags else None, rotated=orientation != 1)
    except ImageError:
        raise
    except Exception as e:  # tifffile raises many kinds on damaged or exotic files
        raise ImageError(path, f"a TIFF nanolily cannot read ({_first_line(e)})") from None
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3 or data.shape[-1] not in (1, 2, 3, 4):
        raise ImageError(path, f"a TIFF of shape {data.shape}, not a grayscale or RGB(A) image")
    if data.dtype.kind == "f":
        values = _unit_float(data)
    elif data.dtype.kind in "ui":
        values = np.clip(data.astype(np.float64) / float(np.iinfo(data.dtype).max), 0, 1).astype(np.float32)
    else:
        raise ImageError(path, f"a TIFF of {data.dtype} samples, not an image nanolily can read")
    colour = 3 if data.shape[-1] >= 3 else 1
    alpha = to_uint(values[..., colour], 16) if data.shape[-1] in (2, 4) else None
    pixels = np.ascontiguousarray(_orient(values[..., :colour], orientation))
    return Photo(pixels, None if alpha is None else np.ascontiguousarray(_orient(alpha, orientation)),
                 16, bytes(icc) if icc is not None else None, None, xmp)


def _from_pil(img: Image.Image, icc: bytes | None):
    """(pixels (H,W,C) float32, alpha or None, bit depth, icc profile to keep) from a loaded image."""
    mode = img.mode
    if mode == "P" or mode == "PA":
        img = img.convert("RGBA" if "transparency" in img.info or mode == "PA" else "RGB")
        mode = img.mode
    if mode == "CMYK":
        img, mode, icc = img.convert("RGB"), "RGB", None  # a CMYK profile does not describe RGB pixels
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return to_float(np.array(img).astype(np.uint16))[..., None], None, 16, icc
    if mode == "I":  # 16-bit grayscale PNG/TIFF in some Pillow versions
        a = np.array(img)
        if a.min() >= 0 and a.max() <= 65535:
            return to_float(a.astype(np.uint16))[..., None], None, 16, icc
        return np.clip(a.astype(np.float32) / max(float(a.max()), 1.0), 0, 1)[..., None], None, 16, icc
    if mode == "F":
        return _unit_float(np.array(img))[..., None], None, 16, icc
    if mode == "1":
        img, mode = img.convert("L"), "L"
    if mode in ("L", "LA"):
        a = np.array(img)
        if mode == "LA":
            return to_float(a[..., :1]), a[..., 1].copy(), 8, icc
        return to_float(a)[..., None], None, 8, icc
    if mode not in ("RGB", "RGBA"):
        img = img.convert("RGBA" if "A" in mode else "RGB")
    a = np.array(img)
    return to_float(a[..., :3]), (a[..., 3].copy() if a.shape[-1] == 4 else None), 8, icc


def _orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an (H, W, ...) array, as `PIL.ImageOps.exif_transpose` does."""
    if orientation == 2:
        return a[:, ::-1]
    if orientation == 3:
        return a[::-1, ::-1]
    if orientation == 4:
        return a[::-1]
    if orientation == 5:
        return np.swapaxes(a, 0, 1)
    if orientation == 6:
        return np.rot90(a, -1)
    if orientation == 7:
        return np.swapaxes(a[::-1, ::-1], 0, 1)
    if orientation == 8:
        return np.rot90(a, 1)
    return a


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


# --- writing ------------------------------------------------------------------------------------------

def _encode(photo: Photo, fmt: str, sixteen: bool, alpha: np.ndarray | None, quality: int) -> bytes:
    bits = 16 if sixteen else 8
    values = to_uint(photo.pixels, bits)  # (H, W, C)
    if alpha is not None:
        alpha_bits = 16 if alpha.dtype == np.uint16 else 8
        alpha = alpha if alpha_bits == bits else to_uint(to_float(alpha), bits)
        values = np.concatenate([values, alpha[..., None]], axis=-1)
    channels = values.shape[-1]
    if sixteen and fmt == "TIFF":
        import tifffile

        buf = _io.BytesIO()
        tifffile.imwrite(buf, values if channels > 1 else values[..., 0],
                         photometric="minisblack" if photo.is_grayscale else "rgb",
                         extrasamples=("unassalpha",) if alpha is not None else None,
                         iccprofile=photo.icc_profile, compression="zlib", predictor=True,  # as Lightroom's ZIP
                         rowsperstrip=max(1, STRIP_BYTES // values[0].nbytes), maxworkers=encode_threads(),
                         metadata=None, software=False,  # no tifffile description or name among the photo's tags
                         extratags=_tiff_tags(photo))
        return buf.getvalue()
    # PNG deflated on every core (io/png.py): at 8K, a one-core encoder takes most of `enhance`'s time;
    # on a single core, Pillow's (zlib-ng, filters in C) is the faster for 8 bits
    if fmt == "PNG" and (sixteen or encode_threads() > 1):
        return encode_png(values, photo.icc_profile, photo.exif, photo.xmp)
    img = Image.fromarray(values if channels > 1 else values[..., 0])  # L, LA, RGB or RGBA from the shape
    kwargs = {}
    if photo.icc_profile and fmt != "BMP":
        kwargs["icc_profile"] = photo.icc_profile
    if photo.exif and fmt in ("JPEG", "PNG", "WEBP", "TIFF", "AVIF", "HEIF"):
        kwargs["exif"] = photo.exif
    if photo.xmp and fmt in ("JPEG", "WEBP", "AVIF", "HEIF"):
        kwargs["xmp"] = photo.xmp
    elif photo.xmp and fmt == "PNG":
        kwargs["pnginfo"] = PngImagePlugin.PngInfo()
        kwargs["pnginfo"].add_itxt(XMP_KEYWORD, photo.xmp.decode("utf-8", "replace"))
    elif photo.xmp and fmt == "TIFF":
        kwargs["tiffinfo"] = {XMP_TAG: photo.xmp}
    if fmt in LOSSY_FORMATS:
        kwargs["quality"] = quality
    if fmt == "TIFF":
        kwargs["compression"] = "tiff_deflate"
    buf = _io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


# EXIF's first-directory text tags, which a TIFF holds as its own: ImageDescription, Make, Model, Software,
# DateTime, Artist, Copyright (tifffile writes no EXIF directory, so exposure and GPS tags are not kept)
TIFF_TEXT_TAGS = (270, 271, 272, 305, 306, 315, 33432)


def _tiff_tags(photo: Photo) -> list[tuple]:
    """tifffile's ``extratags`` for a photo's XMP and the EXIF tags a TIFF's own directory can hold."""
    tags = [(XMP_TAG, "B", len(photo.xmp), photo.xmp, True)] if photo.xmp else []
    if photo.exif:
        exif = Image.Exif()
        exif.load(photo.exif)
        tags += [(tag, "s", 0, str(exif[tag]), True) for tag in TIFF_TEXT_TAGS
                 if isinstance(exif.get(tag), str) and exif[tag].isascii()]
    return tags


def with_pixels(photo: Photo, pixels: np.ndarray) -> Photo:
    """A copy of ``photo`` with new pixels (same metadata, alpha and bit depth)."""
    return replace(photo, pixels=np.asarray(pixels, dtype=np.float32))


def pil_to_photo(img: Image.Image) -> Photo:
    """A :class:`Photo` from an in-memory PIL image. No EXIF rotation: the pixels are taken as given, and
    the EXIF is kept whole, orientation included, so that the pixels still display as they did."""
    img.load()
    pixels, alpha, bit_depth, icc = _from_pil(img, img.info.get("icc_profile"))
    exif = img.getexif()
    return Photo(pixels, alpha, bit_depth, icc, exif.tobytes() if len(exif) else None, kept_xmp(img.info.get("xmp")))


def photo_to_pil(photo: Photo) -> Image.Image:
    """The PIL image for a photo: L, LA, RGB, RGBA, or I;16 for 16-bit grayscale; its ICC profile, EXIF
    and XMP in ``info`` (``getexif()`` reads them; Pillow writes EXIF when given ``exif=`` on save)."""
    if photo.bit_depth == 16 and photo.is_grayscale and photo.alpha is None:
        return Image.fromarray(to_uint(photo.pixels[..., 0], 16))  # mode I;16
    values = to_uint(photo.pixels, 8)
    if photo.alpha is not None:
        alpha = photo.alpha if photo.alpha.dtype == np.uint8 else to_uint(to_float(photo.alpha), 8)
        values = np.concatenate([values, alpha[..., None]], axis=-1)
    img = Image.fromarray(values if values.shape[-1] > 1 else values[..., 0])  # L, LA, RGB or RGBA
    if photo.icc_profile:
        img.info["icc_profile"] = photo.icc_profile
    if photo.exif:
        img.info["exif"] = photo.exif
    if photo.xmp:
        img.info["xmp"] = photo.xmp
    return img
