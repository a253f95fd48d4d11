import pytest
import torch

from nanolily.model import NanoLILY, NanoLILYConfig


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


def test_rejects_other_sizes():
    with pytest.raises(ValueError, match=r"expects a \(B, 3, 224, 224\) tensor, got \(1, 3, 100, 224\)"):
        NanoLILY()(torch.rand(1, 3, 100, 224))


def test_config_variant_is_a_configuration():
    m = NanoLILY(NanoLILYConfig(size=64, width=8))
    assert m(torch.rand(1, 3, 64, 64)).shape == (1, 3, 64, 64)
    assert m.num_parameters() < 129_016
