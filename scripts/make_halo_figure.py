"""Make docs/images/halo-guard.png: two night scenes with a light, as the network alone lifts them
(`--no-guard-halos`) and with the halo guard (the default): the made night scene of benchmarks/no_harm.py
and a bundled dark sample with a lamp drawn in (a disc and its glow).

    python scripts/make_halo_figure.py
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nanolily.engine.pipeline import default_model, enhance_tensor
from nanolily.io.figures import side_by_side, stacked
from nanolily.io.images import pil_to_photo, read_image, write_image
from nanolily.io.samples import sample_paths
from nanolily.training.synthesis import night_scene

OUT = Path(__file__).resolve().parents[1] / "docs" / "images" / "halo-guard.png"


def with_lamp(image: torch.Tensor, y: int, x: int, radius: int) -> torch.Tensor:
    """``image`` (1, 3, H, W) with a warm lamp: a near-white disc and a glow falling off around it."""
    h, w = image.shape[-2:]
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    r = ((rows - y) ** 2 + (cols - x) ** 2).float().sqrt()
    warm = torch.tensor([1.0, 0.85, 0.6])[:, None, None]
    lit = image + 0.3 * torch.exp(-r / (1.5 * radius)) * warm
    return torch.where(r <= radius, torch.tensor([1.0, 0.95, 0.85])[:, None, None], lit).clamp(0, 1)


def to_pil(t: torch.Tensor) -> Image.Image:
    return Image.fromarray((t[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def main() -> None:
    model = default_model("cpu")
    scene, _ = night_scene(400, 600)
    sample = next(p for p in sample_paths() if p.name == "coffee_dark.png")
    photo = torch.from_numpy(read_image(sample).pixels).permute(2, 0, 1)[None].float()
    rows = []
    for image in (scene, with_lamp(photo, 90, 470, 14)):
        rows.append(side_by_side([("input", to_pil(image)),
                                  ("network alone", to_pil(enhance_tensor(image, model, guard_halos=False))),
                                  ("with the halo guard", to_pil(enhance_tensor(image, model)))], height=240))
    figure = stacked(rows)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    print(write_image(OUT, pil_to_photo(figure), overwrite=True))


if __name__ == "__main__":
    main()
