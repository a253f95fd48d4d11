"""Do no harm, on made images: a photo that is already well lit comes back nearly as it was through the
default model and pipeline (benchmarks/no_harm.py measures real photos and LoL's references)."""

import numpy as np
import pytest
import torch

from nanolily.engine.pipeline import enhance
from nanolily.models.weights import load_model
from nanolily.training.metrics import mean_grey, newly_clipped

LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def daylight_scene(gain: float = 1.0, height: int = 300, width: int = 400, seed: int = 0) -> np.ndarray:
    """A made well-lit scene, (H, W, 3) float in [0, 0.89]: a sky gradient, textured ground, a skin-toned
    patch and a near-white wall (bright, but below the 0.9 that counts as already clipped)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.empty((height, width, 3), np.float32)
    sky = yy < height * 0.4
    image[sky] = np.array([0.55, 0.70, 0.88]) * (0.9 + 0.1 * yy[sky] / (height * 0.4))[:, None]
    texture = 0.08 * np.sin(xx / 7) * np.cos(yy / 5) + 0.03 * rng.standard_normal((height, width))
    image[~sky] = np.array([0.42, 0.45, 0.30]) + texture[~sky][:, None]
    image[int(height * .5):int(height * .8), int(width * .1):int(width * .3)] = [0.78, 0.60, 0.50]
    image[int(height * .55):int(height * .75), int(width * .6):int(width * .8)] = [0.86, 0.86, 0.84]
    return np.clip(image * gain + 0.05 * (gain - 1), 0, 0.89)


def batch(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]


@pytest.fixture(scope="module")
def default_model():
    return load_model(device="cpu")


@pytest.mark.parametrize("gain", [1.0, 1.2])
def test_a_well_lit_photo_stays_as_bright_and_unclipped(default_model, gain):
    image = daylight_scene(gain)
    out = enhance(image, model=default_model)
    before, after = batch(image), batch(out)
    assert abs(float(mean_grey(after) / mean_grey(before)) - 1) <= 0.10  # its level within 10 %
    assert float(newly_clipped(before, after)) <= 0.005  # at most 0.5 % of its pixels newly clipped


def test_grayscale_gets_the_treatment_of_colour(default_model):
    """A grayscale photo's output has the level of its colour version's output (the same scene)."""
    image = daylight_scene()
    gray = image @ LUMA
    colour_out, gray_out = enhance(image, model=default_model), enhance(gray, model=default_model)
    assert abs(float(gray_out.mean() / (colour_out @ LUMA).mean()) - 1) <= 0.05


def test_the_checks_see_harm():
    """The two measures flag a pipeline that brightens everything: they can fail."""
    image = daylight_scene(1.2)
    harmed = np.clip(image * 1.3, 0, 1)
    assert float(mean_grey(batch(harmed)) / mean_grey(batch(image))) > 1.1
    assert float(newly_clipped(batch(image), batch(harmed))) > 0.005
