import pytest
import torch

from nanolily.models.v1 import NanoLILY, NanoLILYConfig, _pixel_shuffle, compose_up_conv, phase_kernel, resample_mask


def test_parameter_count_is_the_original():
    assert NanoLILY().num_parameters() == 129_016


def test_parameter_breakdown():
    m = NanoLILY()
    counts = {name: p.numel() for name, p in m.named_parameters()}
    assert counts["frequency.mask"] == 3 * 224 * 113
    assert counts["fuse.weight"] == 3 * 6
    assert m.frequency.mask.detach().eq(0.01).all()


def test_output_is_input_plus_bounded_residual():
    torch.manual_seed(0)
    m = NanoLILY().eval()
    x = torch.rand(2, 3, 224, 224)
    parts = m.branches(x)
    assert parts["output"].shape == x.shape
    assert torch.allclose(parts["output"] - x, parts["residual"], atol=1e-6)
    assert parts["residual"].abs().max() <= 1
    assert torch.equal(m(x), parts["output"])


def test_frequency_branch_with_unit_mask_is_identity():
    m = NanoLILY()
    with torch.no_grad():
        m.frequency.mask.fill_(1.0)
    x = torch.rand(1, 3, 224, 224)
    assert torch.allclose(m.frequency(x), x, atol=1e-5)


def test_rejects_non_image_tensors():
    with pytest.raises(ValueError, match=r"expects a \(B, 3, H, W\) tensor, got \(3, 224, 224\)"):
        NanoLILY()(torch.rand(3, 224, 224))


def test_resampled_mask_is_the_mask_at_its_own_size():
    m = torch.randn(1, 3, 224, 113)
    assert torch.allclose(resample_mask(m, 224, 224), m, atol=1e-4)  # grid_sample rounding


def test_resampled_mask_keeps_gains_per_frequency():
    m = torch.randn(1, 3, 224, 113)
    r = resample_mask(m, 448, 448)  # twice the size: every other bin is an original bin
    assert torch.allclose(r[..., 0, 0], m[..., 0, 0])  # DC gain (overall brightness) unchanged
    assert torch.allclose(r[..., 2, 4], m[..., 1, 2], atol=1e-4)
    assert torch.allclose(r[..., -2, 4], m[..., -1, 2], atol=1e-4)  # negative frequencies


@pytest.mark.parametrize("height,width", [(1, 1), (31, 17), (224, 224), (300, 451)])
def test_any_size_runs_in_one_pass(height, width):
    torch.manual_seed(0)
    m = NanoLILY().eval()
    with torch.no_grad():
        m.frequency.mask.normal_(1.0, 0.1)
        y = m(torch.rand(1, 3, height, width))
    assert y.shape == (1, 3, height, width) and torch.isfinite(y).all()


@pytest.mark.parametrize("height,width,size", [(100, 90, 32), (257, 131, 64), (64, 64, 256), (3, 300, 16)])
def test_blocks_equal_a_single_pass(height, width, size):
    torch.manual_seed(1)
    m = NanoLILY().eval()
    x = torch.rand(2, 3, height, width)
    with torch.no_grad():
        # float32 rounding only: both are within 2e-5 of a float64 pass
        assert torch.allclose(m(x, block=size), m(x), atol=5e-5)
        assert torch.allclose(m.spatial.forward_blocks(x, size), m.spatial(x), atol=5e-5)
        assert torch.allclose(m.spatial.forward_blocks(x, size, cache_bytes=0), m.spatial(x), atol=5e-5)
    with pytest.raises(ValueError, match="must be even"):
        m.spatial.forward_blocks(x, 33)


@pytest.mark.parametrize("height,width", [(4, 4), (9, 30), (224, 224), (131, 257)])
def test_composed_decoder_equals_the_direct_layers(height, width):
    torch.manual_seed(2)
    spatial = NanoLILY().spatial
    for p in spatial.parameters():  # trained-looking weights, not the initial ones
        p.data.normal_(0, 0.1)
    d = torch.randn(2, 64, height // 2, width // 2)
    s1 = torch.randn(2, 32, height // 2 * 2, width // 2 * 2)
    direct = spatial.decode(d, s1)  # gradients on: the direct form
    with torch.no_grad():
        composed = spatial.decode(d, s1)
        assert torch.allclose(composed, direct, atol=1e-5)
        spatial.up.weight.mul_(2)  # the cached composition follows weight updates
        updated = spatial.decode(d, s1)
        assert not torch.allclose(updated, composed, atol=1e-3)
    assert torch.allclose(updated, spatial.decode(d, s1), atol=1e-4)  # |values| up to ~20 here


def test_composed_kernel_padding_adds_only_zero_channels():
    spatial = NanoLILY().spatial
    weight, bias = compose_up_conv(spatial.up, spatial.conv_out)
    padded_weight, padded_bias = compose_up_conv(spatial.up, spatial.conv_out, pad_to=8)
    assert weight.shape[0] == 12 and padded_weight.shape[0] == 16
    assert torch.equal(padded_weight[:12], weight) and torch.equal(padded_bias[:12], bias)
    assert not padded_weight[12:].any() and not padded_bias[12:].any()


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_pixel_shuffle_of_the_first_phases_equals_torchs(memory_format):
    phases = torch.randn(2, 16, 5, 7).contiguous(memory_format=memory_format)  # 12 phases + 4 padding channels
    out = _pixel_shuffle(phases, 3)
    assert out.is_contiguous() and torch.equal(out, torch.nn.functional.pixel_shuffle(phases[:, :12], 2))


def test_phase_kernel_is_the_convolution_at_every_pixel():
    torch.manual_seed(3)
    conv = NanoLILY().spatial.conv_out
    s1 = torch.randn(2, 32, 10, 14)
    kernel = phase_kernel(conv, pad_to=8)
    assert kernel.shape == (16, 32, 4, 4) and not kernel[12:].any()
    phases = torch.nn.functional.conv2d(s1, kernel, stride=2, padding=1)  # (2, 16, 5, 7)
    with torch.no_grad():
        assert torch.allclose(torch.nn.functional.pixel_shuffle(phases[:, :12], 2), conv(s1) - conv.bias[:, None, None],
                              atol=1e-5)


def test_followed_by_folds_the_fuse_layer_and_follows_weight_updates():
    torch.manual_seed(4)
    m = NanoLILY()
    for p in m.parameters():
        p.data.normal_(0, 0.1)
    x = torch.rand(1, 3, 40, 36)
    with torch.no_grad():
        spatial = m.spatial(x)
        expected = torch.einsum("oc,bchw->bohw", m.fuse.weight[:, :3, 0, 0], spatial) + m.fuse.bias[:, None, None]
        assert torch.allclose(m.spatial.followed_by(m.fuse)(x), expected, atol=1e-5)
        assert torch.equal(m.spatial(x), spatial)  # the branch itself is untouched
        m.fuse.weight.mul_(2)
        assert not torch.allclose(m.spatial.followed_by(m.fuse)(x), expected, atol=1e-3)


def test_inference_equals_the_published_layers():
    torch.manual_seed(5)
    m = NanoLILY().eval()
    for p in m.parameters():
        p.data.normal_(0, 0.1)
    x = torch.rand(2, 3, 224, 224)
    published = m(x).detach()  # gradients on: the layers as published
    with torch.inference_mode():
        # S x S tiles run the compiled kernels where built: the decoder's convolution in Winograd's form
        # rounds to a few 1e-6 of its maps' scale, which these weights drive to several units
        assert torch.allclose(m(x), published, atol=3e-5)
        assert torch.allclose(m(x, block=64), published, atol=1e-5)


def test_config_variant_is_a_configuration():
    m = NanoLILY(NanoLILYConfig(size=64, width=8))
    assert m(torch.rand(1, 3, 64, 64)).shape == (1, 3, 64, 64)
    assert m.num_parameters() < 129_016
