import pytest
import torch
import torch.nn.functional as F

from nanolily.engine.pipeline import NO_CORRECTIONS, enhance_tensor
from nanolily.models.v2 import (ANALYSIS_PIXELS, LIGHT_FLOOR, NanoLILYv2, NanoLILYv2Config, analysis_factor,
                                fill_lights, guarded_maps, light_mask, light_thresholds, pool)
from nanolily.training.synthesis import halo, night_scene
from nanolily.training.train import train
from nanolily.models.weights import build_model, load_model, read_metadata, save_weights

from ..training.test_train import data, tiny_config  # noqa: F401  (the data fixture)


def test_within_the_parameter_budget_and_identity_at_start():
    model = NanoLILYv2()
    assert model.num_parameters() <= 129_016
    x = torch.rand(2, 3, 45, 70)
    with torch.no_grad():
        assert torch.equal(model(x), x)  # zero-initialised heads: training starts from "change nothing"


@pytest.mark.parametrize("height,width", [(1, 1), (7, 300), (64, 64), (250, 333)])
def test_any_size_in_one_pass(height, width):
    torch.manual_seed(0)
    model = NanoLILYv2()
    for p in model.parameters():  # leave the identity start so every path is exercised
        torch.nn.init.normal_(p, 0, 0.05)
    x = torch.rand(1, 3, height, width)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    with pytest.raises(ValueError, match="expects a"):
        model(torch.rand(1, 4, 8, 8))


@pytest.mark.parametrize("config", [{"head": "gain"}, {"head": "curve"}, {"priors": True}])
def test_strips_equal_one_pass(config):
    torch.manual_seed(2)
    model = NanoLILYv2(NanoLILYv2Config(**config)).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, 0, 0.05)
    x = torch.rand(2, 3, 101, 67)
    with torch.no_grad():
        whole = model(x)
        for block in (1, 5, 16, 50, 100):  # strips of `block` rows, down to 1
            assert torch.allclose(model(x, block=block), whole, atol=1e-6), block
        rows = model.output_rows(x, block=16)
        for first, last in ((0, 101), (3, 40), (40, 101), (100, 101)):  # any rows, into a given tensor
            out = torch.empty(2, 3, last - first, 67)
            assert rows((first, last), out) is out and torch.allclose(out, whole[:, :, first:last], atol=1e-6)
        small = pool(torch.rand(1, 3, 203, 131), model.config.factor)  # 52 rows at 1/4 resolution
        maps, matrix = model.maps_from_pooled(small)
        for block in (1, 2, 5, 51):  # the 1/4-resolution encoder and decoder stages in strips
            strips = model.maps_from_pooled(small, block)
            assert torch.allclose(strips[0], maps, atol=1e-6) and torch.allclose(strips[1], matrix, atol=1e-6), block


def test_pool_reads_channels_last_maps_and_their_slices_as_planar_ones():
    x = torch.rand(2, 3, 203, 131)
    nhwc = x.contiguous(memory_format=torch.channels_last)  # a photo's pixels are laid out so
    for factor in (1, 3, 4, 16):
        assert torch.allclose(pool(nhwc, factor), pool(x, factor), atol=1e-6)
        assert torch.allclose(pool(nhwc[..., 5:, 2:], factor), pool(x[..., 5:, 2:], factor), atol=1e-6)


def test_analysis_factor_is_the_networks_own_up_to_the_analysis_size_then_grows_with_the_side():
    assert analysis_factor(400, 600) == analysis_factor(600, 900) == 4  # LoL's size and a little more: as trained
    assert analysis_factor(200, 300) == 2 and analysis_factor(1, 1) == 1  # half LoL's side: half the pooling
    sides = [analysis_factor(h, 3 * h // 2) for h in range(1, 8000, 25)]
    assert sides == sorted(sides) and sides[0] == 1 and sides[-1] > 4  # never finer for a larger photo
    assert analysis_factor(2 * 1000, 2 * 1500, pixels=1000 * 1500) == 8  # twice the side: pooled twice as far


def test_a_scale_matched_large_photo_is_read_as_the_same_scene_at_the_analysis_size():
    torch.manual_seed(3)
    model = NanoLILYv2().eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, 0, 0.05)
    x = torch.rand(1, 3, 64, 96)
    big = x.repeat_interleave(2, -2).repeat_interleave(2, -1)  # the same scene, every pixel 2x2
    with torch.no_grad():
        maps, matrix = model.low_resolution(x)
        big_maps, big_matrix = model.low_resolution(big, factor=8)
        assert torch.allclose(big_maps, maps, atol=1e-5) and torch.allclose(big_matrix, matrix, atol=1e-6)
        assert not torch.allclose(model.low_resolution(big)[1], matrix, atol=1e-3)  # read at 1/4 it is another scene


def test_engine_reads_photos_of_the_learned_size_as_the_network_does_and_others_scale_matched():
    torch.manual_seed(4)
    model = NanoLILYv2().eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, 0, 0.05)
    learned = torch.rand(1, 3, 400, 600)  # LoL's size
    assert 1024 * 1280 > ANALYSIS_PIXELS and analysis_factor(1024, 1280) > 4 > analysis_factor(40, 60)
    run = lambda x, match: enhance_tensor(x, model, match_scale=match, **NO_CORRECTIONS)  # noqa: E731
    assert torch.equal(run(learned, True), run(learned, False))
    for other in (torch.rand(1, 3, 1024, 1280), torch.rand(1, 3, 40, 60)):
        with torch.no_grad():
            expected = model(other, factor=analysis_factor(*other.shape[-2:])).clamp(0, 1)
        matched = run(other, True)
        assert torch.allclose(matched, expected, atol=1e-5)
        assert (matched - run(other, False)).abs().max() > 1e-3


def random_v2(seed: int = 5) -> NanoLILYv2:
    torch.manual_seed(seed)
    model = NanoLILYv2().eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, 0, 0.05)
    return model


@pytest.mark.parametrize("height,width", [(400, 600), (1080, 1920)])
def test_halo_guard_lifts_the_sky_beside_a_light_as_the_far_sky(height, width):
    scene, building = night_scene(height, width)
    model = load_model("nanolily-v5", device="cpu")
    guarded = enhance_tensor(scene, model)  # the engine's default
    alone = enhance_tensor(scene, model, guard_halos=False)
    assert all(abs(r - 1) <= 0.1 for r in halo(scene, guarded, building))
    assert min(halo(scene, alone, building)) < 0.9  # the network alone leaves a dark halo
    top, left, right = building  # the light itself keeps its own reading
    assert (guarded[..., top:, left:right] - alone[..., top:, left:right]).abs().mean() < 0.01
    half = enhance_tensor(scene, model, precision="bf16")  # the maps in bf16 (autocast): blended all the same
    assert (half - guarded).abs().max() < 0.03 and all(abs(r - 1) <= 0.1 for r in halo(scene, half, building))


def test_halo_guard_keeps_a_soft_lights_falloff_monotonic():
    # a lamp fading smoothly into the dark crosses the light mask's ramp: the two readings meet there
    rows, cols = torch.meshgrid(torch.arange(200), torch.arange(300), indexing="ij")
    radius = ((rows - 100) ** 2 + (cols - 150) ** 2).float().sqrt()
    model = load_model("nanolily-v5", device="cpu")
    for background, sigma in ((0.04, 10), (0.08, 30)):
        x = (background + (1 - background) * torch.exp(-(radius / sigma) ** 2)) * torch.tensor([1, 0.9, 0.7])[:, None, None]
        out = enhance_tensor(x[None], model, denoise=0)[0, :, 100, 150:]  # (3, 150): centre outwards
        assert (out[:, 1:] - out[:, :-1]).max() < 0.02, (background, sigma)


def test_halo_guard_switches_on_without_a_jump():
    # a light brightening across the threshold from one video frame to the next: no step in the output
    model = random_v2()
    frame = torch.rand(1, 3, 60, 90) * 0.05
    frames = []
    for peak in (LIGHT_FLOOR - 1e-3, LIGHT_FLOOR + 1e-3):
        x = frame.clone()
        x[..., 20:40, 30:50] = peak
        frames.append(x)
    with torch.no_grad():
        assert guarded_maps(model, frames[0], 4)[2] is None and guarded_maps(model, frames[1], 4)[2] is not None
        below, above = (model(x, guard_halos=True) for x in frames)
    assert (above - below).abs().max() < 5e-3


def test_halo_guard_leaves_photos_without_lights_as_they_were():
    model = random_v2()
    dark = torch.rand(1, 3, 60, 90) * LIGHT_FLOOR  # nothing passes LIGHT_FLOOR
    lit = torch.rand(1, 3, 60, 90) * 0.4 + 0.5  # bright pixels, but no brighter than the scene around them
    with torch.no_grad():
        for x in (dark, lit):
            assert guarded_maps(model, x, 4)[2] is None
            assert torch.equal(model(x, guard_halos=True), model(x))


def test_guarded_strips_equal_one_pass_and_the_lights_keep_their_own_maps():
    model = random_v2()
    x = torch.rand(2, 3, 101, 67) * 0.1
    x[0, :, 30:60, 20:40] = 0.95  # a light in the first image only
    with torch.no_grad():
        whole = model(x, guard_halos=True)
        for block in (1, 5, 16, 50):  # strips with a light's share over and under 1 in 10: dense and gathered blends
            assert torch.allclose(model(x, block=block, guard_halos=True), whole, atol=1e-6), block
        plain = model(x)
        assert torch.equal(whole[1], plain[1])  # no lights: as without the guard
        assert (whole[0] - plain[0]).abs().max() > 1e-3
        maps, matrix, lights = guarded_maps(model, x, 4)
        assert lights is not None and torch.equal(lights.thresholds, light_thresholds(pool(x, 4)))
        # in a light, the photo's own maps: as the plain forward but through the filled photo's colour matrix
        own = model.apply_maps(x, F.interpolate(lights.maps, scale_factor=4, mode="bilinear")[..., :101, :67], matrix)
        assert torch.allclose(whole[0, :, 34:56, 24:36], own[0, :, 34:56, 24:36], atol=1e-5)


def test_fill_lights_pools_the_dark_and_fills_the_lights_from_around_them():
    x = torch.full((1, 3, 96, 128), 0.05)
    x[..., 40:72, 48:96] = 0.9  # a light of 8 x 12 pooled pixels
    thresholds = torch.tensor([LIGHT_FLOOR])
    assert light_mask(x, thresholds)[..., 40:72, 48:96].min() == 1
    filled = fill_lights(x, thresholds, 4)
    assert filled.shape == pool(x, 4).shape and torch.allclose(filled, torch.full_like(filled, 0.05))
    y = torch.rand(1, 3, 97, 130) * 0.3
    y[..., 10:50, 10:30] = 1.0
    assert torch.allclose(fill_lights(y, thresholds, 4, rows=16), fill_lights(y, thresholds, 4, rows=1000))
    assert torch.allclose(fill_lights(y, thresholds, 4, rows=16, small=pool(y, 4)), fill_lights(y, thresholds, 4))
    dim = y * LIGHT_FLOOR * 0.9  # no pixel a light: pooled as it is
    assert torch.allclose(fill_lights(dim, thresholds, 4), pool(dim, 4), atol=1e-6)


def test_curve_head_stays_in_range_and_lifts_shadows_more():
    model = NanoLILYv2(NanoLILYv2Config(head="curve"))
    x = torch.linspace(0, 1, 101).view(1, 1, 1, 101).expand(1, 3, 1, 101)
    lifted = model._brighten(x, torch.full((1, 3, 1, 101), 10.0))  # the strongest lift: alpha = tanh(10) ~ 1
    assert (lifted >= x).all() and (lifted <= 1).all()
    gain = lifted - x
    assert (gain[..., 10] > gain[..., 90] * 5).all()  # shadows lifted far more than highlights
    darkened = model._brighten(x, torch.full((1, 3, 1, 101), -10.0))
    assert (darkened >= 0).all() and (darkened <= x).all()
    with pytest.raises(ValueError, match="head must be one of"):
        NanoLILYv2(NanoLILYv2Config(head="nope"))


def test_weights_round_trip_with_the_architecture_in_the_metadata(tmp_path):
    torch.manual_seed(1)
    model = build_model("NanoLILYv2", {"widths": [8, 16, 24], "refine": 4})
    for p in model.parameters():
        torch.nn.init.normal_(p, 0, 0.05)
    path = save_weights(model, tmp_path / "v2.safetensors", version="test")
    assert read_metadata(path)["architecture"] == "NanoLILYv2"
    loaded = load_model(path, device="cpu")
    assert isinstance(loaded, NanoLILYv2) and loaded.config == NanoLILYv2Config(widths=(8, 16, 24), refine=4)
    x = torch.rand(1, 3, 40, 52)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))
    with pytest.raises(ValueError, match="unknown architecture 'Nope'"):
        build_model("Nope")
    with pytest.raises(ValueError, match=r"unknown NanoLILYv2 config keys \['width'\]"):
        build_model("NanoLILYv2", {"width": 3})


def test_trains_and_validates_in_global_mode(data):  # noqa: F811
    config = tiny_config(architecture="NanoLILYv2", model={"widths": [4, 8, 8], "refine": 4}, val_mode="global",
                         crop="random")
    summary = train(config, data, data / "v2", progress=False)
    assert summary["steps"] == 4
    assert isinstance(load_model(data / "v2" / "best.safetensors", device="cpu"), NanoLILYv2)


def test_cli_runs_v2_weights_and_explain_says_it_has_no_branches(tmp_path, capsys):
    from PIL import Image

    from nanolily.interfaces.cli import main

    from ..conftest import dark_image

    path = save_weights(NanoLILYv2(), tmp_path / "v2.safetensors", version="test")
    photo = tmp_path / "night.png"
    Image.fromarray(dark_image(70, 90)).save(photo)
    for mode in ("global", "core"):
        assert main(["enhance", str(photo), "-o", str(tmp_path / f"{mode}.png"), "--mode", mode, "-q",
                     "--weights", str(path)]) == 0
    assert main(["explain", str(photo), "--weights", str(path)]) == 1
    assert "NanoLILYv2 has no spatial / frequency branches" in capsys.readouterr().err


def test_cli_match_scale_option_reads_a_large_photo_as_the_api_does(tmp_path):
    import numpy as np
    from PIL import Image

    from nanolily import enhance
    from nanolily.interfaces.cli import main

    from ..conftest import dark_image

    photo = tmp_path / "big.png"
    pixels = dark_image(800, 1000)  # 0.8 MP: read at 1/5 with scale matching, 1/4 without
    Image.fromarray(pixels).save(photo)
    model = load_model(device="cpu")  # the default model, as the CLI runs
    outs = {}
    for option, match in (("--match-scale", True), ("--no-match-scale", False)):
        target = tmp_path / f"{match}.png"
        assert main(["enhance", str(photo), "-o", str(target), "-q", "--denoise", "0", option]) == 0
        outs[match] = np.asarray(Image.open(target)).astype(int)
        api = enhance(pixels, model=model, denoise=0, match_scale=match).astype(int)
        assert np.abs(outs[match] - api).max() <= 1, option
    assert np.abs(outs[True] - outs[False]).max() > 2


def test_cli_guard_halos_option_matches_the_api(tmp_path):
    import numpy as np
    from PIL import Image

    from nanolily import enhance
    from nanolily.interfaces.cli import main

    scene, _ = night_scene(200, 300)
    pixels = (scene[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    photo = tmp_path / "night.png"
    Image.fromarray(pixels).save(photo)
    model = load_model(device="cpu")
    outs = {}
    for option, guard in (("--guard-halos", True), ("--no-guard-halos", False)):
        target = tmp_path / f"{guard}.png"
        assert main(["enhance", str(photo), "-o", str(target), "-q", option]) == 0
        outs[guard] = np.asarray(Image.open(target)).astype(int)
        assert np.abs(outs[guard] - enhance(pixels, model=model, guard_halos=guard).astype(int)).max() <= 1, option
    assert np.abs(outs[True] - outs[False]).max() > 2
