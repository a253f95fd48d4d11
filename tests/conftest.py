import os
from pathlib import Path

import numpy as np
import pytest
import torch

from nanolily.models.v1 import NanoLILY
from nanolily.models.weights import save_weights

SHARED = Path(os.environ.get("NANOLILY_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory) -> Path:
    """An untrained NanoLILY (seeded) saved as safetensors: exercises the plumbing, says nothing of quality."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "untrained.safetensors"
    return save_weights(NanoLILY(), path, version="test-untrained", training_data="none (random init)")


@pytest.fixture(scope="session")
def model(random_weights):
    from nanolily.models.weights import load_model

    return load_model(random_weights, device="cpu")


def dark_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A dark RGB uint8 image: smooth waves whose frequencies and phases depend on ``seed``, plus noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    fx, fy, px, py = rng.uniform(5, 25, 2).tolist() + rng.uniform(0, 6.3, 2).tolist()
    base = 30 + 20 * np.sin(x / fx + px)[..., None] + 15 * np.cos(y / fy + py)[..., None]
    base = base + rng.integers(0, 8, (height, width, 3))
    return np.clip(base * rng.uniform(0.5, 1.0, 3), 0, 255).astype(np.uint8)


def write_dng(path: Path, cfa: np.ndarray, orientation: int = 1) -> Path:
    """A minimal DNG (RGGB Bayer mosaic, 16-bit, white level 65535, no colour matrix, so a grey scene
    develops grey) that LibRaw reads: camera RAW tests without a camera file in the repository."""
    import tifffile

    tags = [(50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
            (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
            (33422, "B", 4, (0, 1, 1, 2), True),  # CFAPattern: R G / G B
            (50717, "I", 1, (65535,), True),  # WhiteLevel
            (274, "H", 1, (orientation,), True)]  # Orientation
    tifffile.imwrite(path, cfa.astype(np.uint16), photometric=32803, extratags=tags)  # 32803: CFA
    return path
