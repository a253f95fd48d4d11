import io
import struct
import zlib

import numpy as np
import png as pypng
import pytest
from PIL import Image

import nanolily.io.png
import nanolily.native
from nanolily.io.png import _chunk, decode_png16, encode_png, filter_rows

from ..conftest import dark_image


def decode(data: bytes) -> np.ndarray:
    """(H, W, C) through pypng, which reads every bit depth and channel count (Pillow reduces some)."""
    width, height, rows, info = pypng.Reader(bytes=data).read()
    return np.vstack([np.asarray(r) for r in rows]).reshape(height, width, info["planes"])


def idat_stream(data: bytes) -> bytes:
    pos, stream = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            stream += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    return stream


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (33, 64)])
def test_every_layout_decodes_to_its_values(monkeypatch, dtype, channels, shape):
    monkeypatch.setattr(nanolily.io.png, "STRIP_BYTES", 100)  # many strips, a few rows each
    values = np.random.default_rng(channels).integers(0, np.iinfo(dtype).max + 1, shape + (channels,), dtype=dtype)
    values[: shape[0] // 2] //= 7  # smooth and noisy rows, so that the filters differ from row to row
    data = encode_png(values)
    np.testing.assert_array_equal(decode(data), values)  # pypng checks every chunk's CRC
    zlib.decompress(idat_stream(data))  # one valid zlib stream: its Adler-32 checks out


def test_filters_match_pillows_size_on_a_photo_and_every_filter_is_used():
    photo = np.asarray(Image.fromarray(dark_image(300, 400)).resize((800, 600), Image.BICUBIC))
    photo = np.concatenate([photo, np.random.default_rng(0).integers(0, 256, (40, 800, 3), dtype=np.uint8)])
    ours = encode_png(photo)
    pillow = io.BytesIO()
    Image.fromarray(photo).save(pillow, format="PNG")
    assert len(ours) <= 1.03 * len(pillow.getvalue())  # unfiltered, the file would be far larger
    filtered = np.frombuffer(filter_rows(photo.reshape(len(photo), -1), np.zeros(800 * 3, np.uint8), 3), np.uint8)
    assert set(filtered.reshape(len(photo), -1)[:, 0]) - {0} >= {1, 2, 4}


def test_threads_do_not_change_the_file_and_strips_hardly_its_size(monkeypatch):
    values = dark_image(200, 300)
    whole = encode_png(values)  # one strip
    monkeypatch.setattr(nanolily.io.png, "STRIP_BYTES", 20_000)  # 9 strips; unprimed, they would cost 4 %
    assert encode_png(values, threads=1) == encode_png(values, threads=4)
    assert len(encode_png(values)) <= 1.01 * len(whole)


def test_metadata_chunks_come_before_the_pixels():
    data = encode_png(dark_image(4, 4), icc_profile=b"profile bytes", exif=b"Exif\x00\x00MM\x00*")
    kinds = []
    pos = 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        kinds.append(kind)
        pos += 12 + length
    assert kinds[:4] == [b"IHDR", b"iCCP", b"eXIf", b"IDAT"] and set(kinds[4:-1]) == {b"IDAT"}
    assert kinds[-1] == b"IEND"
    assert Image.open(io.BytesIO(data)).info["icc_profile"] == b"profile bytes"


@pytest.mark.parametrize("values", [np.zeros((2, 2, 5), np.uint8), np.zeros((2, 2, 3), np.float32),
                                    np.zeros((0, 4, 3), np.uint8)])
def test_unsupported_arrays_are_refused(values):
    with pytest.raises(ValueError, match="encode_png"):
        encode_png(values)


needs_kernels = pytest.mark.skipif(nanolily.native.library() is None, reason="no C compiler for the kernels")


@needs_kernels
@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_reader_undoes_every_filter(monkeypatch, channels):
    monkeypatch.setattr(nanolily.io.png, "STRIP_BYTES", 300)
    values = np.random.default_rng(channels).integers(0, 65536, (40, 23, channels), dtype=np.uint16)
    values[:20] //= 9  # smooth rows and noisy ones: the writer picks every filter somewhere
    values[20:30] = np.linspace(0, 65535, 23, dtype=np.uint16)[None, :, None]
    data = encode_png(values)
    types = set(np.frombuffer(zlib.decompress(idat_stream(data)), np.uint8).reshape(40, -1)[:, 0])
    assert types == {0, 1, 2, 3, 4}
    decoded = decode_png16(data)
    assert decoded.dtype == np.uint16
    np.testing.assert_array_equal(decoded, values)


@needs_kernels
def test_16bit_reader_leaves_other_pngs_to_pypng_and_refuses_damaged_ones():
    assert decode_png16(encode_png(dark_image(4, 4))) is None  # 8 bits: Pillow reads those
    buf = io.BytesIO()
    pypng.Writer(3, 2, greyscale=False, bitdepth=16, interlace=True).write(buf, [[1] * 9, [2] * 9])
    assert decode_png16(buf.getvalue()) is None
    stream = zlib.compress(b"\x07" + bytes(6 * 3))  # one row, filter type 7
    header = struct.pack(">IIBBBBB", 3, 1, 16, 2, 0, 0, 0)
    bad = b"".join([b"\x89PNG\r\n\x1a\n", *_chunk(b"IHDR", header), *_chunk(b"IDAT", stream)])
    with pytest.raises(ValueError, match="filter type"):
        decode_png16(bad)
    short = struct.pack(">IIBBBBB", 3, 2, 16, 2, 0, 0, 0)  # two rows announced, one in the stream
    stream = zlib.compress(b"\x00" + bytes(6 * 3))
    with pytest.raises(ValueError, match="bytes of image data"):
        decode_png16(b"".join([b"\x89PNG\r\n\x1a\n", *_chunk(b"IHDR", short), *_chunk(b"IDAT", stream)]))
    with pytest.raises(ValueError, match="image data"):  # a truncated stream
        decode_png16(encode_png(np.ones((5, 5, 3), np.uint16))[:-40] + b"".join(_chunk(b"IEND", b"")))
