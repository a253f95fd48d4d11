import io

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

import nanolily.io.images
from nanolily.io.images import (WRITE_FORMATS, ImageError, Photo, pil_to_photo, photo_to_pil, read_image, to_float,
                                to_uint, write_image)

from ..conftest import dark_image, write_dng


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".tif", ".bmp"])
def test_round_trip_each_format(tmp_path, ext):
    a = dark_image(40, 60)
    src = tmp_path / f"a{ext}"
    Image.fromarray(a).save(src, **({"quality": 98} if ext in (".jpg", ".webp") else {}))
    photo = read_image(src)
    assert photo.pixels.shape == (40, 60, 3) and photo.pixels.dtype == np.float32 and photo.bit_depth == 8
    out = write_image(tmp_path / f"b{ext}", photo, quality=98)
    back = np.asarray(Image.open(out).convert("RGB")).astype(int)
    tolerance = 0 if ext in (".png", ".tif", ".bmp") else 6
    assert np.abs(back - np.asarray(Image.open(src).convert("RGB")).astype(int)).max() <= tolerance


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path, orientation):
    a = dark_image(30, 50)
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "o.jpg"
    img.save(path, exif=exif.tobytes(), quality=100, subsampling=0)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    photo = read_image(path)
    assert np.array_equal(to_uint(photo.pixels, 8), expected)
    out = write_image(tmp_path / "out.jpg", photo)
    assert Image.open(out).getexif().get(0x0112, 1) == 1  # not rotated twice by viewers


def test_alpha_is_untouched(tmp_path):
    rgba = np.dstack([dark_image(20, 30), np.arange(600, dtype=np.uint8).reshape(20, 30)])
    Image.fromarray(rgba).save(tmp_path / "a.png")
    photo = read_image(tmp_path / "a.png")
    assert photo.alpha.dtype == np.uint8
    write_image(tmp_path / "b.png", Photo(photo.pixels * 2, photo.alpha))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b.png"))[..., 3], rgba[..., 3])


def test_grayscale_stays_grayscale(tmp_path):
    Image.fromarray(dark_image(20, 30)[..., 0]).save(tmp_path / "g.png")
    photo = read_image(tmp_path / "g.png")
    assert photo.is_grayscale
    write_image(tmp_path / "o.png", photo)
    assert Image.open(tmp_path / "o.png").mode == "L"


def test_16bit_grayscale_png_round_trip(tmp_path):
    g = (np.linspace(0, 65535, 600).reshape(20, 30)).astype(np.uint16)
    Image.fromarray(g).save(tmp_path / "g16.png")
    photo = read_image(tmp_path / "g16.png")
    assert photo.bit_depth == 16 and photo.is_grayscale
    write_image(tmp_path / "o.png", photo)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o.png")).astype(np.uint16), g)


@pytest.mark.parametrize("kernels", ["1", "0"])  # the compiled reader, and pypng where there is none
def test_16bit_rgb_png_keeps_16_bits(tmp_path, monkeypatch, kernels):
    import png

    monkeypatch.setenv("NANOLILY_NATIVE", kernels)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 65536, (12, 17, 3), dtype=np.uint16)
    png.from_array(a.reshape(12, -1), "RGB;16").save(str(tmp_path / "c16.png"))
    photo = read_image(tmp_path / "c16.png")
    assert photo.bit_depth == 16
    assert np.array_equal(to_uint(photo.pixels, 16), a)  # no 8-bit round trip
    write_image(tmp_path / "o.png", photo)
    w, h, rows, info = png.Reader(filename=str(tmp_path / "o.png")).asDirect()
    assert info["bitdepth"] == 16
    assert np.array_equal(np.vstack([np.asarray(r, np.uint16) for r in rows]).reshape(12, 17, 3), a)


@pytest.mark.parametrize("where", ["before", "after"])  # the eXIf chunk before or after the image data
def test_16bit_png_exif_is_read_without_an_8bit_decode(tmp_path, monkeypatch, where):
    from PIL import PngImagePlugin

    from nanolily.io.png import SIGNATURE, _chunk, encode_png, read_chunks

    a = np.random.default_rng(0).integers(0, 65536, (6, 9, 3), dtype=np.uint16)
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "TestCam"  # rotated 90 degrees clockwise; Make
    parts = list(read_chunks(encode_png(a, exif=exif.tobytes())))
    if where == "after":
        parts.insert(-1, parts.pop(next(i for i, (kind, _) in enumerate(parts) if kind == b"eXIf")))
    (tmp_path / "e16.png").write_bytes(SIGNATURE + b"".join(b"".join(_chunk(k, b)) for k, b in parts))

    def no_decode(self):
        raise AssertionError("the image was decoded by Pillow")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", no_decode)
    photo = read_image(tmp_path / "e16.png")
    assert photo.bit_depth == 16 and np.array_equal(to_uint(photo.pixels, 16), np.rot90(a, -1))
    kept = Image.Exif()
    kept.load(photo.exif)
    assert kept.get(0x010F) == "TestCam" and 0x0112 not in kept  # orientation applied, so dropped


@pytest.mark.parametrize("kernels", ["1", "0"])
def test_damaged_16bit_png(tmp_path, monkeypatch, kernels):
    monkeypatch.setenv("NANOLILY_NATIVE", kernels)
    photo = Photo(to_float(np.random.default_rng(0).integers(0, 65536, (40, 50, 3), dtype=np.uint16)), None, 16)
    data = write_image(tmp_path / "c16.png", photo).read_bytes()
    cut = data.index(b"IDAT") + 200
    (tmp_path / "cut.png").write_bytes(data[:cut] + data[cut + 100:])  # 100 bytes of image data gone
    with pytest.raises(ImageError, match="cut.png: damaged image"):
        read_image(tmp_path / "cut.png")


def test_16bit_rgba_tiff_round_trip(tmp_path):
    import tifffile

    rng = np.random.default_rng(1)
    a = rng.integers(0, 65536, (9, 13, 4), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "c16.tif", a, photometric="rgb", extrasamples=("unassalpha",))
    photo = read_image(tmp_path / "c16.tif")
    assert photo.bit_depth == 16 and photo.alpha.dtype == np.uint16
    assert np.array_equal(to_uint(photo.pixels, 16), a[..., :3])
    write_image(tmp_path / "o.tif", photo)
    assert np.array_equal(tifffile.imread(tmp_path / "o.tif"), a)
    with tifffile.TiffFile(tmp_path / "o.tif") as tif:  # deflate after horizontal differencing, as Lightroom's ZIP
        assert tif.pages[0].compression == 8 and tif.pages[0].predictor == 2


@pytest.mark.parametrize("kind", ["float32", "float16", "uint32", "planar"])
def test_tiffs_pillow_cannot_open_are_read_with_tifffile(tmp_path, kind):
    import tifffile

    rng = np.random.default_rng(2)
    a = rng.random((9, 13, 3), dtype=np.float32) * 1.2 - 0.1  # out-of-range floats are clipped
    a[0, :3, 0] = np.nan, np.inf, -np.inf  # and NaN is black
    want = np.nan_to_num(np.clip(a, 0, 1), nan=0.0)
    if kind == "uint32":
        tifffile.imwrite(tmp_path / "t.tif", np.round(want.astype(np.float64) * 0xFFFFFFFF).astype(np.uint32),
                         photometric="rgb")
    elif kind == "planar":
        tifffile.imwrite(tmp_path / "t.tif", np.moveaxis(a, -1, 0), planarconfig="separate", photometric="rgb")
    else:
        tifffile.imwrite(tmp_path / "t.tif", a.astype(kind), photometric="rgb",
                         extratags=[(274, "H", 1, 6, True)])  # and EXIF orientation 6
        want = np.rot90(want, -1)
    with pytest.raises(Image.UnidentifiedImageError):
        Image.open(tmp_path / "t.tif")
    photo = read_image(tmp_path / "t.tif")
    assert photo.bit_depth == 16 and photo.alpha is None
    np.testing.assert_allclose(photo.pixels, want, atol=1e-3 if kind == "float16" else 1e-6)
    photo = read_image(io.BytesIO((tmp_path / "t.tif").read_bytes()))  # an upload, told by its content
    np.testing.assert_allclose(photo.pixels, want, atol=1e-3 if kind == "float16" else 1e-6)


def test_float_rgba_tiff_keeps_alpha(tmp_path):
    import tifffile

    a = np.random.default_rng(3).random((5, 7, 4), dtype=np.float32)
    tifffile.imwrite(tmp_path / "t.tif", a, photometric="rgb", extrasamples=("unassalpha",))
    photo = read_image(tmp_path / "t.tif")
    assert np.array_equal(photo.alpha, to_uint(a[..., 3], 16))
    np.testing.assert_allclose(photo.pixels, a[..., :3])


def test_unreadable_tiff_is_one_line(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "t.tif", np.zeros((4, 5, 6), np.float32), photometric="minisblack",
                     planarconfig="contig")  # six samples per pixel: not a photo
    check_error(tmp_path / "t.tif", "TIFF")


@pytest.mark.parametrize("cores", [1, 2])  # PNG: Pillow's encoder on one core, nanolily's on several
def test_icc_profile_and_exif_are_copied(tmp_path, monkeypatch, cores):
    monkeypatch.setattr(nanolily.io.images, "encode_threads", lambda: cores)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    img = Image.fromarray(dark_image(20, 30))
    exif = img.getexif()
    exif[0x010F] = "TestCam"  # Make
    img.save(tmp_path / "a.jpg", icc_profile=icc, exif=exif.tobytes())
    photo = read_image(tmp_path / "a.jpg")
    for ext in (".jpg", ".png", ".webp", ".tif"):
        out = Image.open(write_image(tmp_path / f"o{ext}", photo))
        assert out.info.get("icc_profile") == icc, ext
        assert out.getexif().get(0x010F) == "TestCam", ext
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o.png")), to_uint(photo.pixels, 8))


XMP = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       '<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
       'xmp:Rating="4"{extra}/></rdf:RDF></x:xmpmeta>')


@pytest.mark.parametrize("cores", [1, 2])  # PNG: Pillow's encoder on one core, nanolily's on several
def test_xmp_is_copied_and_its_orientation_follows_the_pixels(tmp_path, monkeypatch, cores):
    monkeypatch.setattr(nanolily.io.images, "encode_threads", lambda: cores)
    img = Image.fromarray(dark_image(20, 30))
    exif = img.getexif()
    exif[0x0112] = 6  # rotated: the pixels are turned upright on reading, so XMP's orientation goes too
    img.save(tmp_path / "a.jpg", exif=exif, xmp=XMP.format(extra=' tiff:Orientation="6"').encode())
    photo = read_image(tmp_path / "a.jpg")
    assert photo.size == (20, 30) and photo.xmp == XMP.format(extra="").encode()
    outputs = [(ext, photo) for ext in (".jpg", ".png", ".webp", ".tif")]
    outputs += [(ext, Photo(photo.pixels, None, 16, None, None, photo.xmp)) for ext in (".png", ".tif")]  # 16 bits
    for i, (ext, source) in enumerate(outputs):
        assert read_image(write_image(tmp_path / f"o{i}{ext}", source)).xmp == photo.xmp, (ext, source.bit_depth)
    img.save(tmp_path / "upright.jpg", xmp=XMP.format(extra=' tiff:Orientation="1"').encode())
    assert b'tiff:Orientation="1"' in read_image(tmp_path / "upright.jpg").xmp  # not rotated: kept whole


def test_16bit_tiff_keeps_the_exif_tags_a_tiff_directory_holds(tmp_path):
    import tifffile

    exif = Image.Exif()
    exif[0x010F], exif[0x0132], exif[0x0131] = "TestCam", "2026:01:02 03:04:05", "Lightroom"  # Make, DateTime, Software
    photo = Photo(to_float(dark_image(6, 8).astype(np.uint16) * 257), None, 16, None, exif.tobytes())
    write_image(tmp_path / "o.tif", photo)
    with tifffile.TiffFile(tmp_path / "o.tif") as tif:
        tags = {t.code: t.value for t in tif.pages[0].tags.values()}
    assert (tags[271], tags[306], tags[305]) == ("TestCam", "2026:01:02 03:04:05", "Lightroom")
    assert 270 not in tags  # no tifffile description
    assert tifffile.imread(tmp_path / "o.tif").dtype == np.uint16


def test_xmp_that_points_past_the_image_is_not_copied(tmp_path):
    img = Image.fromarray(dark_image(20, 30))  # an Ultra HDR photo's packet: its gain map is not carried over
    img.save(tmp_path / "hdr.jpg", xmp=XMP.format(extra=' xmlns:hdrgm="http://ns.adobe.com/hdr-gain-map/1.0/" '
                                                         'hdrgm:Version="1.0"').encode())
    assert read_image(tmp_path / "hdr.jpg").xmp is None


def test_jpeg_quality_changes_the_file(tmp_path):
    photo = Photo(to_float(dark_image(64, 64, seed=3)))
    small = write_image(tmp_path / "q30.jpg", photo, quality=30).stat().st_size
    large = write_image(tmp_path / "q95.jpg", photo, quality=95).stat().st_size
    assert small < large


@pytest.mark.parametrize("mode", ["CMYK", "P", "LA", "1", "I;16"])
def test_other_modes_are_converted(tmp_path, mode):
    img = Image.fromarray(dark_image(16, 16)).convert(mode if mode != "I;16" else "L")
    if mode == "I;16":
        img = Image.fromarray(np.asarray(img).astype(np.uint16) * 257)
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    img.save(path)
    photo = read_image(path)
    assert photo.pixels.shape[:2] == (16, 16) and 0 <= photo.pixels.min() and photo.pixels.max() <= 1
    assert photo.is_grayscale == (mode in ("LA", "1", "I;16"))
    assert (photo.alpha is not None) == (mode == "LA")


def test_palette_transparency_becomes_alpha(tmp_path):
    img = Image.fromarray(dark_image(8, 8)).convert("P")
    img.info["transparency"] = 0
    img.save(tmp_path / "p.png", transparency=0)
    assert read_image(tmp_path / "p.png").alpha is not None


# --- bad input: one line naming the file and the reason --------------------------------------------

def check_error(path, match, **kwargs):
    with pytest.raises(ImageError, match=match) as info:
        read_image(path, **kwargs)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_corrupt_file(tmp_path):
    data = io.BytesIO()
    Image.fromarray(dark_image(64, 64)).save(data, "PNG")
    raw = bytearray(data.getvalue())
    raw[100:400] = b"\x00" * 300  # destroy compressed data
    (tmp_path / "c.png").write_bytes(bytes(raw))
    check_error(tmp_path / "c.png", "damaged image")


def test_truncated_jpeg(tmp_path):
    data = io.BytesIO()
    Image.fromarray(dark_image(128, 128)).save(data, "JPEG")
    (tmp_path / "t.jpg").write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    check_error(tmp_path / "t.jpg", "damaged image .*truncated")


def test_zero_byte_file(tmp_path):
    (tmp_path / "z.png").write_bytes(b"")
    check_error(tmp_path / "z.png", r"empty file \(0 bytes\)")


def test_not_an_image(tmp_path):
    (tmp_path / "n.jpg").write_text("this is text, not a JPEG\n")
    check_error(tmp_path / "n.jpg", "not an image file")


def test_missing_path(tmp_path):
    check_error(tmp_path / "nope.png", "no such file")


def test_pixel_limit(tmp_path):
    Image.new("RGB", (300, 200)).save(tmp_path / "big.png")
    check_error(tmp_path / "big.png", r"300x200 = 0.1 MP is over the 0.05 MP limit \(raise it with --max-pixels\)",
                max_pixels=50_000)
    assert read_image(tmp_path / "big.png", max_pixels=60_000).size == (300, 200)


def test_pixel_limit_beyond_pillows_own_guard(tmp_path):
    Image.new("L", (1000, 1000)).save(tmp_path / "bomb.png")
    check_error(tmp_path / "bomb.png", "limit", max_pixels=100_000)  # > 2x the limit: Pillow's error, reworded


def test_outputs_are_atomic_and_never_overwrite(tmp_path):
    target = tmp_path / "o.png"
    target.write_bytes(b"keep me")
    with pytest.raises(ImageError, match="already exists"):
        write_image(target, Photo(np.zeros((4, 4, 3), np.float32)))
    assert target.read_bytes() == b"keep me"
    write_image(target, Photo(np.zeros((4, 4, 3), np.float32)), overwrite=True)
    assert Image.open(target).size == (4, 4)
    assert [p.name for p in tmp_path.iterdir()] == ["o.png"]  # no temporary file left behind


def test_unwritable_output_folder(tmp_path):
    (tmp_path / "file").write_text("a file, not a folder")
    with pytest.raises(ImageError, match="does not exist"):
        write_image(tmp_path / "file" / "o.png", Photo(np.zeros((4, 4, 3), np.float32)))
    with pytest.raises(ImageError, match="unknown output format"):
        write_image(tmp_path / "o.gif", Photo(np.zeros((4, 4, 3), np.float32)))


def test_pil_conversions_round_trip():
    img = Image.fromarray(np.dstack([dark_image(8, 9), np.full((8, 9), 7, np.uint8)]))
    back = photo_to_pil(pil_to_photo(img))
    assert back.mode == "RGBA" and np.array_equal(np.asarray(back), np.asarray(img))


@pytest.mark.parametrize("ext", [".avif", ".heic"])
def test_avif_and_heic_round_trip_with_exif_orientation(tmp_path, ext):
    if ext not in WRITE_FORMATS:
        pytest.skip(f"this Pillow cannot write {ext} (AVIF: Pillow with libavif; HEIC: the [heif] extra)")
    img = Image.fromarray(dark_image(40, 60))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    img.save(tmp_path / f"a{ext}", quality=95, exif=exif.tobytes())
    photo = read_image(tmp_path / f"a{ext}")
    assert photo.pixels.shape == (60, 40, 3)  # shown upright, whichever of the two applied the rotation
    expected = to_float(np.rot90(dark_image(40, 60), -1))
    assert np.abs(photo.pixels - expected).mean() < 0.02  # lossy at quality 95
    out = write_image(tmp_path / f"b{ext}", photo, quality=95)
    back = Image.open(out)
    assert back.size == (40, 60) and back.getexif().get(0x0112, 1) == 1


def _bt709(linear: float) -> float:
    return 1.099 * linear ** 0.45 - 0.099 if linear >= 0.018 else 4.5 * linear


def test_camera_raw_is_developed_at_its_captured_exposure(tmp_path):
    pytest.importorskip("rawpy")
    cfa = np.full((40, 60), 1500, np.uint16)
    cfa[:, 30:] = 3000  # the right half one stop brighter
    photo = read_image(write_dng(tmp_path / "night.dng", cfa))
    assert photo.bit_depth == 16 and photo.pixels.shape == (40, 60, 3) and photo.alpha is None
    # not brightened (LibRaw's auto-brightening would put this scene near 0.85): the linear values
    # through the BT.709 curve, grey stays grey
    left, right = photo.pixels[5:-5, 5:25], photo.pixels[5:-5, 35:-5]
    assert np.allclose(left, _bt709(1500 / 65535), atol=0.005)
    assert np.allclose(right, _bt709(3000 / 65535), atol=0.005)
    rotated = read_image(write_dng(tmp_path / "turned.nef", cfa, orientation=6))  # any RAW extension
    assert np.allclose(rotated.pixels, np.rot90(photo.pixels, -1), atol=1e-3)


def test_camera_raw_errors_are_one_line(tmp_path, monkeypatch):
    pytest.importorskip("rawpy")
    (tmp_path / "bad.cr2").write_bytes(b"not a raw file at all" * 10)
    with pytest.raises(ImageError, match=r"bad\.cr2: not a RAW file LibRaw can read \(") as e:
        read_image(tmp_path / "bad.cr2")
    assert "\n" not in str(e.value) and "b'" not in str(e.value)
    big = write_dng(tmp_path / "big.dng", np.zeros((40, 60)))
    with pytest.raises(ImageError, match="MP limit"):
        read_image(big, max_pixels=1000)
    monkeypatch.setattr(nanolily.io.images, "HAS_RAW", False)
    with pytest.raises(ImageError, match=r"need rawpy: pip install 'nanolily\[raw\]'"):
        read_image(big)
