"""The made night scene and the halo it measures (benchmarks/no_harm.py)."""

import pytest
import torch

from nanolily.training.synthesis import HALO_DISTANCES, halo, night_scene


def test_night_scene_is_a_lit_building_on_a_dark_sky():
    image, (top, left, right) = night_scene(120, 240)
    assert image.shape == (1, 3, 120, 240) and (top, left, right) == (80, 105, 135)
    assert torch.all(image[..., top:, left:right] == 0.9)
    assert image[..., :top, :].mean() == pytest.approx(0.04, abs=0.002)


def test_halo_is_flat_for_an_even_lift_and_finds_a_dark_ring():
    image, building = night_scene(200, 600)
    assert halo(image, 3 * image, building) == [1.0] * len(HALO_DISTANCES)
    # a lift that falls to half within 10 pixels of the building: a dark halo there, none far off
    left = building[1]
    distance = (left - torch.arange(600.0)).clamp_min(0)
    gain = torch.where(distance <= 10, 6.0, 12.0)
    profile = halo(image, image * gain, building)
    assert profile[:3] == pytest.approx([0.5] * 3, abs=0.01) and profile[-1] == pytest.approx(1.0, abs=0.01)
