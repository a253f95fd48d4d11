import pytest
import torch

from nanolily.engine import corrections as adjust
from nanolily import native
from nanolily.engine.pipeline import apply_corrections


def test_protect_highlights_keeps_small_lifts_and_never_clips():
    x = torch.linspace(0, 0.99, 100).view(1, 1, 10, 10).expand(1, 3, 10, 10)
    for lift in (0.05, 0.5, 2.0, 50.0):
        y = adjust.protect_highlights(x, x + lift)
        assert (y <= 1).all() and (y >= x).all()
        small = lift <= 0.7 * (1 - x)  # within the knee: unchanged
        assert torch.allclose(y[small], (x + lift)[small])
        up_to_headroom = lift <= 1 - x  # what would have reached white stays visibly below it
        assert (y[up_to_headroom] <= x[up_to_headroom] + 0.93 * (1 - x[up_to_headroom])).all()
    darker = adjust.protect_highlights(x, x - 0.3)
    assert torch.equal(darker, x - 0.3)  # darkening passes through
    lifts = torch.linspace(0, 3, 50)
    out = torch.stack([adjust.protect_highlights(x, x + t) for t in lifts])
    assert (out.diff(dim=0) >= 0).all()  # monotone in the model's lift


def test_ycc_round_trip_and_box_filter():
    x = torch.rand(2, 3, 9, 13)
    assert torch.allclose(adjust.ycc_to_rgb(adjust.rgb_to_ycc(x)), x, atol=1e-6)
    assert torch.allclose(adjust.box_filter(torch.full((1, 2, 3, 20), 0.4), 4), torch.full((1, 2, 3, 20), 0.4))
    ramp = torch.arange(20.0).view(1, 1, 1, 20).expand(1, 1, 5, 20)
    assert torch.allclose(adjust.box_filter(ramp, 2)[..., 2:-2], ramp[..., 2:-2])  # a mean of a ramp
    for radius in (1, 4):  # against the direct 2-D window mean of the edge-padded image
        padded = torch.nn.functional.pad(x, (radius,) * 4, mode="replicate")
        direct = torch.nn.functional.avg_pool2d(padded, 2 * radius + 1, stride=1)
        assert torch.allclose(adjust.box_filter(x, radius), direct, atol=1e-6)


def test_denoise_removes_grain_and_colour_static_but_keeps_an_edge():
    g = torch.Generator().manual_seed(0)
    clean = torch.full((1, 3, 64, 64), 0.2)
    clean[..., 32:] = 0.7  # a step edge
    noisy = clean + 0.03 * torch.randn(clean.shape, generator=g)
    out = adjust.denoise(noisy, 1.0)
    flat = (slice(None), slice(None), slice(None), slice(4, 28))  # left of the edge
    assert out[flat].std() < 0.6 * noisy[flat].std()
    chroma = adjust.rgb_to_ycc(out)[:, 1:]
    assert chroma[flat].std() < 0.3 * adjust.rgb_to_ycc(noisy)[:, 1:][flat].std()
    assert out[..., 36:].mean() - out[..., :28].mean() > 0.95 * 0.5  # the edge keeps its contrast
    assert torch.equal(adjust.denoise(noisy, 0.0), noisy)
    assert torch.allclose(adjust.denoise(noisy, 0.5), noisy + 0.5 * (out - noisy), atol=1e-6)


def test_keep_white_balance_restores_the_input_channel_ratios():
    x = torch.rand(2, 3, 20, 20) * 0.2
    cast = x * 3 * torch.tensor([1.3, 1.0, 0.7]).view(1, 3, 1, 1)  # brighter and warmer
    y = adjust.keep_white_balance(x, cast)
    ratio = y.mean((-2, -1)) / x.mean((-2, -1))
    assert torch.allclose(ratio, ratio[:, :1].expand(-1, 3), rtol=1e-3)  # same balance as the input
    luma = torch.tensor([0.299, 0.587, 0.114])
    assert torch.allclose(y.mean((-2, -1)) @ luma, cast.mean((-2, -1)) @ luma, rtol=1e-3)  # same brightness


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("settings", [{}, {"denoise": 1.0}, {"denoise": 0.5, "strength": 1.5, "white_balance": True}])
def test_corrections_in_tiles_equal_one_pass(settings, compiled, monkeypatch):
    if compiled and native.library() is None:
        pytest.skip("no C compiler: the compiled corrections are not built here")
    settings = {**settings, "compiled": compiled}
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 100, 60, generator=g) * 0.4
    y = x * 2.5 + 0.05 * torch.randn(x.shape, generator=g)
    whole = apply_corrections(x, y.clone(), rows=1000, cols=1000, **settings)
    for rows, cols in ((7, 1000), (1000, 9), (7, 9), (24, 16)):
        assert torch.allclose(apply_corrections(x, y.clone(), rows=rows, cols=cols, **settings), whole, atol=1e-6)
    if settings.get("denoise"):  # the halo is what makes tiles exact
        monkeypatch.setattr(adjust, "DENOISE_HALO", 2)
        for rows, cols in ((7, 1000), (1000, 9)):
            assert not torch.allclose(apply_corrections(x, y.clone(), rows=rows, cols=cols, **settings), whole,
                                      atol=1e-4)


def test_fast_denoise_parts_match_their_references():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 6, 9, 14, generator=g)
    reference = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert torch.allclose(adjust.upsample2(x), reference, atol=1e-6)
    odd = torch.rand(1, 3, 7, 5, generator=g)
    padded = torch.nn.functional.pad(odd, (0, 1, 0, 1), mode="replicate")
    assert torch.allclose(adjust.pool2(odd), torch.nn.functional.avg_pool2d(padded, 2), atol=1e-6)
    guide, source = torch.rand(1, 1, 12, 12, generator=g), torch.rand(1, 2, 12, 12, generator=g)
    a, b = adjust.guided_coefficients(guide, source, 2, 1e-3)  # the textbook form, box by box
    box = lambda t: adjust.box_filter(t, 2)  # noqa: E731
    cov = box(guide * source) - box(guide) * box(source)
    a_ref = cov / (box(guide * guide) - box(guide) ** 2 + 1e-3)
    b_ref = box(source) - a_ref * box(guide)
    assert torch.allclose(a, box(a_ref), atol=1e-5) and torch.allclose(b, box(b_ref), atol=1e-5)


def test_exposure_gains_lift_only_photos_darker_than_the_floor_and_never_clip_their_lights():
    from nanolily.training.data import expose_linear

    scene = torch.rand(3, 3, 64, 96) * 0.5
    dark = expose_linear(scene, 0.01)  # far darker than LoL's captures
    gains = adjust.exposure_gains(dark)
    lifted = adjust.srgb_to_linear(adjust.lift_exposure(dark, gains))
    assert (gains > 1).all() and torch.allclose(lifted.mean(dim=(1, 2, 3)), torch.full((3,), adjust.LIFT_FLOOR),
                                                rtol=0.05)  # at the floor (the mean is read from a sample)
    assert torch.equal(adjust.exposure_gains(scene), torch.ones(3))  # a brighter photo: untouched
    night = dark.clone()
    night[:, :, 10:14, 10:14] = 1.0  # a lamp: 16 of 6144 pixels, more than the 0.1 % the lift may clip
    assert float(adjust.exposure_gains(night)[0]) == 1.0
    assert float(adjust.exposure_gains(torch.zeros(1, 3, 8, 8))[0]) == adjust.MAX_LIFT  # black: the cap
    # photos around the floor: the gains the definition gives (a bright photo skips the full reading)
    levels = expose_linear(torch.rand(1, 3, 40, 60).expand(12, -1, -1, -1), 1.0) * torch.logspace(-2, 0, 12)[:, None, None, None]
    linear = adjust.srgb_to_linear(levels)
    top = torch.quantile(linear.amax(1).flatten(1), adjust.LIFT_KEEP, dim=1)
    want = torch.minimum(adjust.LIFT_FLOOR / linear.mean(dim=(1, 2, 3)), 1 / top).clamp(1.0, adjust.MAX_LIFT)
    assert (want > 1).any() and (want == 1).any()
    assert torch.allclose(adjust.exposure_gains(levels), want)
    # per image, as the training's re-exposure, and in strips as in one pass
    batch = torch.cat([dark[:1], scene[:1]])
    gains = torch.tensor([5.0, 1.0])
    tall = torch.rand(1, 3, adjust.LIFT_ROWS + 37, 20) * 0.1
    assert torch.allclose(adjust.lift_exposure(batch, gains)[0], expose_linear(batch[:1], 5.0)[0], atol=1e-6)
    assert torch.equal(adjust.lift_exposure(batch, gains)[1], adjust.linear_to_srgb(adjust.srgb_to_linear(batch[1])))
    assert torch.allclose(adjust.lift_exposure(tall, torch.tensor([3.0])), expose_linear(tall, 3.0), atol=1e-6)
