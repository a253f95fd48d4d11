import math

import pytest
import torch

from nanolily.engine.bloom import blend_window, bloom, core, plan_tiles, tile_starts

SIZES = [(1, 1), (1, 500), (223, 225), (224, 224), (225, 223), (400, 600), (1001, 777), (2160, 3840)]


@pytest.mark.parametrize("length,patch,stride", [(224, 224, 112), (225, 224, 112), (600, 224, 112),
                                                 (1001, 224, 100), (3840, 224, 224), (500, 224, 1)])
def test_tile_starts_cover_the_axis(length, patch, stride):
    starts = tile_starts(length, patch, stride)
    assert starts[0] == 0 and starts[-1] == length - patch
    assert all(0 < b - a <= stride for a, b in zip(starts, starts[1:]))
    covered = torch.zeros(length, dtype=torch.bool)
    for s in starts:
        covered[s:s + patch] = True
    assert covered.all()


def test_tile_starts_validates():
    with pytest.raises(ValueError, match="length must be >= patch"):
        tile_starts(100, 224, 112)
    with pytest.raises(ValueError, match="stride must be in"):
        tile_starts(300, 224, 0)
    with pytest.raises(ValueError, match="stride must be in"):
        tile_starts(300, 224, 225)


def test_plan_tiles_is_the_grid():
    plan = plan_tiles(400, 600, 224, 112)
    assert plan[0] == (0, 0) and plan[-1] == (176, 376)
    assert len(plan) == len(tile_starts(400, 224, 112)) * len(tile_starts(600, 224, 112))


def test_window_is_positive_and_half_overlaps_sum_to_one():
    w = blend_window(224)
    assert w.min() > 0
    assert torch.allclose(w[:112] + w[112:], torch.ones(112), atol=1e-3)  # exact but for the floor
    assert torch.allclose(w[1:], w[1:].flip(0))  # periodic: symmetric about the centre pixel
    assert torch.allclose(w[1:], torch.hann_window(224)[1:], atol=1e-7)  # the original loop's window
    assert w[0] == 1e-4  # ... floored
    with pytest.raises(ValueError, match="window must be one of"):
        blend_window(224, "hamming")


@pytest.mark.parametrize("height,width", SIZES)
def test_identity_predictor_reconstructs_the_input(height, width):
    torch.manual_seed(0)
    x = torch.rand(1, 3, height, width)
    y = bloom(lambda t: t, x, batch_size=16)
    assert y.shape == x.shape
    assert (y - x).abs().max() <= 1e-5


@pytest.mark.parametrize("stride", [1, 56, 100, 112, 224])
def test_identity_at_any_stride(stride):
    x = torch.rand(1, 3, 300, 260)
    assert (bloom(lambda t: t, x, stride=stride, batch_size=64) - x).abs().max() <= 1e-5


@pytest.mark.parametrize("predictor,expected", [(lambda t: 2 * t, lambda x: 2 * x), (lambda t: t + 1, lambda x: x + 1)])
def test_pointwise_predictors_pass_through(predictor, expected):
    x = torch.rand(2, 3, 250, 470)  # batched, non-square, not a multiple of the stride
    assert torch.allclose(bloom(predictor, x, batch_size=3), expected(x), atol=1e-5)


def test_per_tile_predictor_matches_a_hand_computed_blend():
    # 224 x 336 with stride 112: two tiles side by side, at x = 0 and x = 112; the first predicts 0, the second 1
    calls = []

    def predictor(t):
        calls.append(t.shape[0])
        return torch.stack([torch.full_like(t[k], float(len(calls) - 1 + k)) for k in range(t.shape[0])])

    y = bloom(predictor, torch.zeros(1, 1, 224, 336), batch_size=1)
    w = blend_window(224).double()
    col = torch.arange(336)
    w0 = torch.where(col < 224, w[col.clamp(max=223)], torch.zeros(()).double())
    w1 = torch.where(col >= 112, w[(col - 112).clamp(min=0)], torch.zeros(()).double())
    expected = (w1 / (w0 + w1)).float()
    assert calls == [1, 1]
    assert torch.allclose(y[0, 0, 100], expected, atol=1e-5)
    assert y[0, 0, :, :112].abs().max() < 1e-6 and (y[0, 0, :, 224:] - 1).abs().max() < 1e-6


def test_tiles_go_in_batches_of_batch_size():
    sizes = []
    bloom(lambda t: sizes.append(t.shape[0]) or t, torch.rand(1, 3, 400, 600), batch_size=4)
    assert max(sizes) == 4 and sum(sizes) == len(plan_tiles(400, 600, 224, 112))


def seam_score(y: torch.Tensor, x: torch.Tensor) -> float:
    """How much sharper the output's steps are than the input's: the largest neighbour difference in
    the output over that in the input (a smooth input with a seam-free predictor stays near 1-2)."""
    def steps(t):
        return max(t.diff(dim=-1).abs().max().item(), t.diff(dim=-2).abs().max().item())
    return steps(y) / steps(x)


def tile_dependent(t):
    # each tile brightened by its own mean, like a per-tile "global" illumination estimate
    return t + 0.5 * t.mean(dim=(1, 2, 3), keepdim=True)


def smooth_ramp(height, width):
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    return (0.2 + 0.5 * x + 0.3 * y).expand(1, 3, height, width).contiguous()


def test_seam_detector_flags_plain_tiling():
    x = smooth_ramp(448, 672)
    plain = bloom(tile_dependent, x, stride=224, window="constant")
    assert seam_score(plain, x) > 10


def test_bloom_is_seamless():
    x = smooth_ramp(448, 672)
    assert seam_score(bloom(tile_dependent, x), x) < 3


def test_small_images_are_padded_not_blacked_out():
    x = torch.rand(1, 3, 10, 20) + 0.5
    y = bloom(lambda t: t * 1.0, x)
    assert y.shape == x.shape and y.min() > 0.4


def test_core_mode_resizes_around_the_predictor():
    seen = []
    x = torch.rand(1, 3, 90, 130)
    y = core(lambda t: seen.append(tuple(t.shape)) or t, x)
    assert seen == [(1, 3, 224, 224)] and y.shape == x.shape


def test_bloom_validates_inputs():
    with pytest.raises(ValueError, match=r"images must be a \(N, C, H, W\) tensor"):
        bloom(lambda t: t, torch.rand(3, 10, 10))
    with pytest.raises(ValueError, match="images must be floating point"):
        bloom(lambda t: t, torch.zeros(1, 3, 10, 10, dtype=torch.uint8))
    with pytest.raises(ValueError, match="predictor must return the shape it was given"):
        bloom(lambda t: t[..., :100], torch.rand(1, 3, 224, 224))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        bloom(lambda t: t, torch.rand(1, 3, 224, 224), batch_size=0)


def test_bloom_runs_a_model(model):
    x = torch.rand(1, 3, 300, 400)
    with torch.inference_mode():
        y = bloom(model, x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert not math.isclose(float((y - x).abs().mean()), 0.0)


def test_stride_112_equals_the_original_loop_except_its_black_first_row_and_column(model):
    import importlib.util
    from pathlib import Path

    from nanolily.engine.pipeline import NO_CORRECTIONS, enhance_tensor

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "original_bloom.py"
    spec = importlib.util.spec_from_file_location("original_bloom", path)
    original = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(original)

    x = torch.rand(1, 3, 300, 500, generator=torch.Generator().manual_seed(0)) * 0.3
    theirs = original.original_bloom(original.original_model(model.state_dict()), x)
    ours = enhance_tensor(x, model, mode="bloom", stride=112, precision="fp32", **NO_CORRECTIONS)
    assert (theirs - ours)[..., 1:, 1:].abs().max() <= 1e-4
    assert theirs[..., 0, :].max() == 0 and theirs[..., :, 0].max() == 0  # the original's border bug
