import pytest
import torch

from nanolily.training import losses as L
from nanolily.training.metrics import psnr, ssim

from ..conftest import SHARED

VGG = SHARED / "weights" / "vgg19-features-relu3_4-caffe.safetensors"
PAIRWISE = [L.l1, L.charbonnier, L.ssim_loss, L.fft_amplitude, L.color, L.level]


@pytest.mark.parametrize("fn", PAIRWISE)
@pytest.mark.parametrize("shape", [(1, 3, 16, 16), (2, 3, 31, 17)])
def test_zero_for_identical_inputs(fn, shape):
    x = torch.rand(shape)
    assert abs(float(fn(x, x))) < 1e-5


@pytest.mark.parametrize("fn", PAIRWISE)
def test_positive_for_different_inputs(fn):
    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    assert float(fn(x, y)) > 1e-3


@pytest.mark.parametrize("fn", PAIRWISE + [L.tv])
def test_gradcheck_float64(fn):
    torch.manual_seed(0)
    x = torch.rand(1, 3, 12, 12, dtype=torch.float64, requires_grad=True)
    y = torch.rand(1, 3, 12, 12, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: fn(a, y), (x,), eps=1e-6, atol=1e-4)


def test_level_is_the_brightness_error_alone():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16) * 0.5
    shuffled = x.flatten(2)[..., torch.randperm(256)].view_as(x)  # other detail, the same mean level
    assert float(L.level(shuffled, x)) < 1e-5
    assert float(L.level(2 * x, x)) == pytest.approx(float(torch.log(torch.tensor(2.0))), abs=0.01)


def test_tv_of_a_constant_is_zero():
    assert float(L.tv(torch.full((1, 3, 8, 8), 0.3))) == 0


def test_metrics():
    x = torch.rand(2, 3, 20, 20)
    assert torch.allclose(psnr(x, (x + 0.1)), torch.full((2,), 20.0), atol=1e-3)
    assert torch.allclose(ssim(x, x), torch.ones(2))
    assert (ssim(x, torch.rand(2, 3, 20, 20)) < 0.5).all()
    with pytest.raises(ValueError, match="expected two .* of one shape"):
        psnr(x, x[:1])
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(x[..., :5, :5], x[..., :5, :5])


def test_ssim_agrees_with_a_direct_computation():
    # SSIM of a constant image shifted by c: luminance term only, (2 m (m + c) + C1) / (m^2 + (m + c)^2 + C1)
    x = torch.full((1, 1, 16, 16), 0.4, dtype=torch.float64)
    c1 = 0.01 ** 2
    expected = (2 * 0.4 * 0.5 + c1) / (0.4 ** 2 + 0.5 ** 2 + c1)
    assert abs(float(ssim(x, x + 0.1)) - expected) < 1e-9


def test_ssim_of_a_batch_is_each_images_own_and_matches_scikit_image():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 40, 48, dtype=torch.float64)
    y = (x + 0.2 * torch.rand_like(x)).clamp(0, 1)
    batch = ssim(x, y)
    one_by_one = torch.cat([ssim(x[i:i + 1], y[i:i + 1]) for i in range(4)])
    assert torch.allclose(batch, one_by_one, atol=1e-12)
    structural_similarity = pytest.importorskip("skimage.metrics").structural_similarity
    # skimage: Gaussian weights, population covariance, the mean over the valid region (its default crop)
    expected = structural_similarity(x[1].permute(1, 2, 0).numpy(), y[1].permute(1, 2, 0).numpy(), channel_axis=2,
                                     data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert float(batch[1]) == pytest.approx(expected, abs=1e-6)


def test_color_equals_cosine_similarity_in_value_and_gradient():
    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 8, 8, dtype=torch.float64), torch.rand(2, 3, 8, 8, dtype=torch.float64)
    x[0, :, :2] = 0  # black pixels: the eps clamp
    ours, reference = x.clone().requires_grad_(), x.clone().requires_grad_()
    L.color(ours, y).backward()
    (1 - torch.nn.functional.cosine_similarity(reference, y, dim=1, eps=1e-8)).mean().backward()
    assert float(L.color(x, y)) == pytest.approx(float((1 - torch.nn.functional.cosine_similarity(x, y, dim=1)).mean()))
    assert torch.allclose(ours.grad, reference.grad, rtol=1e-9, atol=1e-12)


def test_composite_weights_and_schedule():
    x, y = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    comp = L.CompositeLoss({"l1": 1.0, "ssim": 0.5})
    total, parts = comp(x, y)
    assert torch.isclose(total, L.l1(x, y) + 0.5 * L.ssim_loss(x, y))
    total, parts = comp(x, y, weights={"ssim": 0.0})
    assert set(parts) == {"l1"}
    with pytest.raises(ValueError, match="unknown loss terms \\['lpips'\\]"):
        L.CompositeLoss({"lpips": 1.0})
    with pytest.raises(ValueError, match="needs vgg_weights"):
        L.CompositeLoss({"vgg": 1.0})


def test_vgg_layout_matches_torchvision_keys():
    keys = set(L.vgg19_features().state_dict())
    assert keys == {f"{i}.{p}" for i in (0, 2, 5, 7, 10, 12, 14, 16) for p in ("weight", "bias")}


@pytest.mark.skipif(not VGG.exists(), reason="needs ../shared/weights")
def test_vgg_perceptual_loss_with_the_shared_weights():
    vgg = L.VGGPerceptual(VGG)
    assert vgg.convention == "caffe"
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 64)
    assert float(vgg(x, x)) == 0
    assert float(vgg(x, x.flip(-1))) > float(vgg(x, (x + 0.01).clamp(0, 1)))
    tv = L.VGGPerceptual(VGG, convention="torchvision")
    assert float(tv(x, x * 0.5)) > 0
