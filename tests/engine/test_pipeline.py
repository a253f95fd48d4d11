import functools
import importlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from nanolily import enhance
from nanolily.engine import corrections
from nanolily.engine.pipeline import NO_CORRECTIONS, enhance_tensor
from nanolily.io.images import Photo, to_float
from nanolily.models.weights import load_model

from ..conftest import dark_image


def test_numpy_uint8_in_uint8_out(model):
    a = dark_image(100, 130)
    out = enhance(a, model=model)
    assert out.dtype == np.uint8 and out.shape == a.shape


@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.float64])
def test_numpy_dtypes_are_kept(model, dtype):
    a = dark_image(50, 60).astype(np.float64) / 255
    a = (a * 65535).astype(dtype) if dtype == np.uint16 else a.astype(dtype)
    out = enhance(a, model=model)
    assert out.dtype == dtype and out.shape == a.shape


def test_numpy_alpha_and_grayscale(model):
    rgba = np.dstack([dark_image(40, 50), np.arange(2000, dtype=np.uint8).reshape(40, 50)])
    out = enhance(rgba, model=model)
    assert out.shape == rgba.shape and np.array_equal(out[..., 3], rgba[..., 3])
    gray = dark_image(40, 50)[..., 0]
    assert enhance(gray, model=model).shape == gray.shape


def test_matches_the_engine(model):
    a = dark_image(64, 300)
    x = torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255
    expected = enhance_tensor(x, model, precision="fp32")[0].permute(1, 2, 0).numpy()
    got = enhance(a, model=model, precision="fp32")  # auto may round the decoder to bf16 (one level apart)
    assert np.abs(got.astype(float) / 255 - expected).max() <= 0.5 / 255 + 1e-6


@pytest.mark.parametrize("shape", [(3, 60, 70), (2, 3, 60, 70)])
def test_tensors_keep_shape_and_dtype(model, shape):
    t = torch.rand(shape, dtype=torch.float64)
    out = enhance(t, model=model, mode="core")
    assert out.shape == t.shape and out.dtype == t.dtype
    assert 0 <= out.min() and out.max() <= 1


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA"])
def test_pil_modes_are_kept(model, mode):
    img = Image.fromarray(dark_image(40, 50)).convert(mode)
    out = enhance(img, model=model)
    assert isinstance(out, Image.Image) and out.mode == mode and out.size == img.size
    if "A" in mode:
        assert np.array_equal(np.asarray(out)[..., -1], np.asarray(img)[..., -1])


def test_a_pil_image_keeps_its_exif_orientation_icc_and_xmp(model, tmp_path):
    img = Image.fromarray(dark_image(40, 60))
    exif = img.getexif()
    exif[0x0112], exif[0x010F] = 6, "Camera maker"  # rotated 90 degrees to display; Make
    img.save(tmp_path / "phone.jpg", exif=exif, icc_profile=b"not a real profile", xmp=b"<x:xmpmeta/>")
    src = Image.open(tmp_path / "phone.jpg")
    out = enhance(src, model=model)
    assert out.size == src.size and out.info["icc_profile"] == b"not a real profile"
    assert out.info["xmp"] == b"<x:xmpmeta/>"
    assert dict(out.getexif()) == {0x0112: 6, 0x010F: "Camera maker"}
    assert ImageOps.exif_transpose(out).size == ImageOps.exif_transpose(src).size == (40, 60)


def test_modes_differ_and_are_checked(model):
    a = dark_image(300, 400)
    assert not np.array_equal(enhance(a, model=model, mode="bloom"), enhance(a, model=model, mode="core"))
    glob = enhance(a, model=model, mode="global")
    assert glob.shape == a.shape and not np.array_equal(glob, enhance(a, model=model, mode="bloom"))
    with pytest.raises(ValueError, match=r"mode must be one of \('global', 'bloom', 'core'\), got 'fast'"):
        enhance(a, model=model, mode="fast")


def test_a_photo_keeps_depth_alpha_and_metadata(tmp_path):
    a = (dark_image(40, 50).astype(np.uint16) * 257)
    rgba = np.dstack([a, np.arange(2000, dtype=np.uint16).reshape(40, 50) * 30])
    photo = Photo(to_float(rgba[..., :3]), rgba[..., 3].copy(), 16, b"icc", b"exif", b"<x:xmpmeta/>")
    before = photo.pixels.copy()
    out = enhance(photo)
    assert isinstance(out, Photo) and np.array_equal(photo.pixels, before)  # the input is left alone
    assert (out.bit_depth, out.icc_profile, out.exif, out.xmp) == (16, b"icc", b"exif", b"<x:xmpmeta/>")
    assert out.alpha is photo.alpha and out.pixels.shape == photo.pixels.shape
    assert np.abs(out.pixels - enhance(rgba)[..., :3] / 65535).max() <= 0.5 / 65535 + 1e-6  # as the numpy path


def test_bad_types_are_rejected(model):
    with pytest.raises(TypeError, match="got str: to enhance a file, pass read_image"):
        enhance("photo.jpg", model=model)
    with pytest.raises(TypeError, match=r"numpy array, torch tensor or Photo, got list$"):
        enhance([[0.1]], model=model)
    with pytest.raises(ValueError, match=r"image has no pixels \(60x0\)"):
        enhance(np.zeros((0, 60, 3), np.uint8), model=model)
    with pytest.raises(ValueError, match=r"numpy image must be .* got \(4, 5, 2\)"):
        enhance(np.zeros((4, 5, 2)), model=model)
    with pytest.raises(ValueError, match="tensor image must be floating point"):
        enhance(torch.zeros(3, 8, 8, dtype=torch.uint8), model=model)


def test_global_mode_blocks_equal_one_pass(model, monkeypatch):
    E = importlib.import_module("nanolily.engine.pipeline")

    x = torch.rand(1, 3, 300, 200)
    with torch.no_grad():
        single = model(x).clamp(0, 1)
    assert torch.allclose(enhance_tensor(x, model, mode="global", precision="fp32", **NO_CORRECTIONS), single,
                          atol=5e-5)
    monkeypatch.setattr(E, "GLOBAL_BLOCK", 64)
    assert torch.allclose(enhance_tensor(x, model, mode="global", precision="fp32", **NO_CORRECTIONS), single,
                          atol=5e-5)


def test_nanolily_v2_global_mode_runs_in_strips_equal_to_one_pass():
    from nanolily.models.v2 import NanoLILYv2, NanoLILYv2Config

    E = importlib.import_module("nanolily.engine.pipeline")
    torch.manual_seed(1)
    model = NanoLILYv2(NanoLILYv2Config(priors=True)).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, 0, 0.05)
    x = torch.rand(1, 3, 2 * E.GLOBAL_STRIP + 37, 150) * 0.3  # three strips, the last one short
    with torch.no_grad():
        single = model(x).clamp(0, 1)
    assert torch.allclose(enhance_tensor(x, model, mode="global", match_scale=False, **NO_CORRECTIONS), single,
                          atol=1e-5)


def test_strength_scales_the_change_monotonically(model):
    x = torch.from_numpy(dark_image(120, 150)).permute(2, 0, 1)[None].float() / 255
    run = functools.partial(enhance_tensor, precision="fp32")  # compared with the fp32 network below
    full = run(x, model)
    assert torch.allclose(run(x, model, strength=0.0), x)
    assert torch.equal(run(x, model, strength=1.0), full)
    means = [float(run(x, model, strength=s).mean()) for s in (0.0, 0.5, 1.0, 1.5)]
    change = [abs(m - means[0]) for m in means]
    assert change == sorted(change) and change[-1] > change[1]
    with torch.no_grad():
        raw = model(x)  # global mode on an image under one block is a single pass
    half = run(x, model, strength=0.5, **NO_CORRECTIONS)
    assert torch.allclose(half, (x + 0.5 * (raw - x)).clamp(0, 1), atol=1e-6)
    outs = [run(x, model, strength=s, denoise=0) for s in (0.5, 1.0, 2.0, 4.0)]  # highlights protected
    brighter = raw > x  # where the model lifts, a higher strength lifts at least as far
    for weaker, stronger in zip(outs, outs[1:]):
        assert (stronger[brighter] >= weaker[brighter] - 1e-6).all()
    with pytest.raises(ValueError, match="strength must be >= 0"):
        run(x, model, strength=-1)


@pytest.mark.parametrize("name", ["nanolily-v1", "nanolily-v2"])
def test_bf16_precision_is_close_to_fp32(name, monkeypatch):
    E = importlib.import_module("nanolily.engine.pipeline")
    monkeypatch.setattr(E, "GLOBAL_BLOCK", 64)  # v1's global mode in blocks, with kept maps
    model = load_model(name, device="cpu")
    x = torch.from_numpy(dark_image(150, 230)).permute(2, 0, 1)[None].float() / 255
    for mode in ("global", "core") + (("bloom",) if not model.resolution_free else ()):
        full = enhance_tensor(x, model, mode=mode, **NO_CORRECTIONS)
        half = enhance_tensor(x, model, mode=mode, precision="bf16", **NO_CORRECTIONS)
        assert half.dtype == torch.float32 and 0 < (half - full).abs().max() < 0.03
        assert (half - full).abs().mean() < 0.005


def test_auto_precision_rounds_only_nanolily_v1s_inner_convolutions_to_bf16_and_only_on_amx_cpus(monkeypatch):
    E = importlib.import_module("nanolily.engine.pipeline")
    v1, v2 = load_model("nanolily-v1", device="cpu"), load_model("nanolily-v2", device="cpu")
    cpu = torch.device("cpu")
    x = torch.from_numpy(dark_image(150, 230)).permute(2, 0, 1)[None].float() / 255  # one global block
    with torch.inference_mode():
        full = v1(x)
        half = v1(x, inner_dtype=torch.bfloat16)
        blocks = v1(x, block=64, inner_dtype=torch.bfloat16)
        branch = v1.spatial.followed_by(v1.fuse, torch.bfloat16)
        s1 = torch.rand(1, 32, 16, 16)
        assert torch.equal(branch._down(s1), F.conv2d(s1.bfloat16(), v1.spatial.down.weight.bfloat16(), stride=2,
                                                       padding=1).float() + v1.spatial.down.bias[:, None, None])
    assert 0 < (half - full).abs().max() < 0.02 and (half - full).abs().mean() < 1e-3
    assert (blocks - full).abs().max() < 0.02
    for amx, network in ((False, full), (True, half)):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
        assert E.auto_inner_dtype(v1, cpu) == (torch.bfloat16 if amx else torch.float32)
        assert E.auto_inner_dtype(v2, cpu) == torch.float32
        assert torch.equal(enhance_tensor(x, v1, mode="global", **NO_CORRECTIONS), network.clamp(0, 1))
        assert torch.equal(enhance_tensor(x, v1, mode="global", precision="fp32", **NO_CORRECTIONS), full.clamp(0, 1))
    assert E.auto_inner_dtype(v1, torch.device("cuda")) == torch.float32


def test_precision_is_checked(model):
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        enhance_tensor(x, model, precision="fp16")
    with pytest.raises(ValueError, match=r"precision must be one of \('auto', 'fp32', 'bf16', 'fp16'\), got 'int8'"):
        enhance_tensor(x, model, precision="int8")


def test_bloom_is_refused_for_a_resolution_free_model():
    v2 = load_model("nanolily-v2", device="cpu")
    with pytest.raises(ValueError, match="nanolily-v1's engine"):
        enhance(dark_image(40, 50), model=v2, mode="bloom")
    assert enhance(dark_image(40, 50), model=v2, mode="core").shape == (40, 50, 3)


@pytest.mark.parametrize("name", ["nanolily-v2", "nanolily-v1"])
def test_grayscale_gets_the_colour_path_of_a_gray_image(name):
    """A grayscale photo is enhanced exactly as the same gray image stored as RGB (then made gray)."""
    from nanolily.engine.pipeline import enhance_photo
    from nanolily.io.images import pil_to_photo

    model = load_model(name, device="cpu")
    gray = Image.fromarray(dark_image(60, 80)[..., 1])
    # fp32: on a CPU with AMX, "auto" rounds nanolily-v1's inner convolutions to bf16, which moves both by ~1e-3
    as_gray = enhance_photo(pil_to_photo(gray), model, precision="fp32").pixels  # (H, W, 1)
    as_rgb = enhance_photo(pil_to_photo(gray.convert("RGB")), model, precision="fp32").pixels  # R = G = B input
    assert as_gray.shape == (60, 80, 1)
    assert np.allclose(as_gray[..., 0], as_rgb.mean(axis=-1), atol=1e-6)


def test_enhance_photo_leaves_the_input_pixels_alone(model):
    from nanolily.engine.pipeline import enhance_photo
    from nanolily.io.images import pil_to_photo

    photo = pil_to_photo(Image.fromarray(dark_image(50, 70)))
    before = photo.pixels.copy()
    out = enhance_photo(photo, model)
    assert np.array_equal(photo.pixels, before) and out.pixels.shape == before.shape
    assert out.pixels.flags.c_contiguous and not np.shares_memory(out.pixels, photo.pixels)


@pytest.mark.parametrize("options", [{}, {"strength": 0.6}, {"denoise": 0.0}, {"denoise": 1.0, "compiled": False}])
@pytest.mark.parametrize("height,width", [(30, 41), (301, 173), (530, 64)])
def test_reuse_input_writes_the_same_result_over_the_input(options, height, width, monkeypatch):
    """nanolily-v2 in global mode writes the corrected output over the input strip by strip, behind the
    rows still to be read: the same result as a separate output tensor."""
    from nanolily.engine import pipeline

    if options.pop("compiled", None) is False:
        monkeypatch.setenv("NANOLILY_NATIVE", "0")
    monkeypatch.setattr(pipeline, "CORRECTION_ROWS", 64)  # several strips at these sizes
    model = load_model("nanolily-v2", device="cpu")
    x = torch.from_numpy(dark_image(height, width).astype(np.float32) / 255).permute(2, 0, 1)[None]
    if height == 301:  # both memory layouts: a photo's (channels-last) and NCHW
        x = x.contiguous()
    expected = enhance_tensor(x, model, **options)
    reused = x.clone()
    out = enhance_tensor(reused, model, reuse_input=True, **options)
    assert out.data_ptr() == reused.data_ptr()
    assert torch.allclose(out, expected, atol=1e-5)


def test_reuse_input_is_a_permission_other_settings_return_a_new_tensor(model):
    x = torch.rand(1, 3, 40, 50) * 0.3
    before = x.clone()
    for options in ({"model": model}, {"model": load_model("nanolily-v2", device="cpu"), "white_balance": True}):
        out = enhance_tensor(x, reuse_input=True, **options)
        assert out.data_ptr() != x.data_ptr() and torch.equal(x, before)


def test_enhance_photo_may_reuse_the_input_pixels():
    from nanolily.engine.pipeline import enhance_photo
    from nanolily.io.images import pil_to_photo

    model = load_model("nanolily-v2", device="cpu")
    expected = enhance_photo(pil_to_photo(Image.fromarray(dark_image(50, 70))), model).pixels
    photo = pil_to_photo(Image.fromarray(dark_image(50, 70)))
    out = enhance_photo(photo, model, reuse_pixels=True).pixels
    assert np.shares_memory(out, photo.pixels) and np.allclose(out, expected, atol=1e-6)


def test_a_photo_far_darker_than_the_training_captures_is_lifted_first(tmp_path):
    from nanolily.io.images import read_image
    from nanolily.io.samples import sample_paths
    from nanolily.training.data import expose_linear

    model = load_model(device="cpu")  # the default: a resolution-free model
    photo = torch.from_numpy(read_image(sample_paths()[2]).pixels).permute(2, 0, 1)[None].contiguous()
    assert torch.equal(enhance_tensor(photo, model), enhance_tensor(photo, model, lift_exposure=False))  # as dark as LoL
    dark = expose_linear(photo, 0.1)  # ten times darker
    normal = float(enhance_tensor(photo, model).mean())
    lifted, alone = float(enhance_tensor(dark, model).mean()), float(enhance_tensor(dark, model, lift_exposure=False).mean())
    assert abs(lifted - normal) < abs(alone - normal) / 2  # lit nearer the normal capture's result
    in_place = enhance_tensor(dark.clone(), model, reuse_input=True)
    assert torch.equal(in_place, enhance_tensor(dark, model))  # strip by strip, as in one pass
    assert torch.equal(enhance_tensor(dark, model, strength=0.0), dark)  # strength 0: the photo itself, not the lift
    # an 8-bit photo is lifted in place, the corrections reading its codes: the same result, bit for bit
    dark8 = (dark * 255).round() * torch.tensor(1 / 255)
    assert corrections.eight_bit_codes(dark8) is not None and corrections.eight_bit_codes(dark) is None
    assert torch.equal(enhance_tensor(dark8.clone(), model, reuse_input=True), enhance_tensor(dark8, model))
    assert torch.equal(enhance_tensor(dark8.clone(), model, reuse_input=True, strength=0.0), dark8)

    Image.fromarray((dark[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(tmp_path / "d.png")
    from nanolily.interfaces.cli import main

    for flag, name in (("--lift-exposure", "on.png"), ("--no-lift-exposure", "off.png")):
        assert main(["enhance", str(tmp_path / "d.png"), "-o", str(tmp_path / name), "-q", flag]) == 0
    on, off = (np.asarray(Image.open(tmp_path / n)).astype(float) for n in ("on.png", "off.png"))
    assert on.mean() > off.mean() + 10
