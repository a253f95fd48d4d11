"""Make the bundled dark samples in src/nanolily/assets/samples/ from public-domain / CC0 photos.

    pip install scikit-image   # only to get its sample photos; not a nanolily dependency
    python scripts/make_samples.py

Sources (the photos ship inside the scikit-image wheel, skimage/data/; licences from skimage.data's
docstrings):
    coffee.png     "Coffee cup", Rachel Michetti, CC0
    chelsea.png    "Chelsea the cat", Stefan van der Walt, CC0
    astronaut.png  Eileen Collins, NASA, public domain
"""

from importlib.resources import files
from pathlib import Path

import numpy as np
from PIL import Image

from nanolily.io.images import to_uint
from nanolily.training.synthesis import darken

OUT = Path(__file__).resolve().parents[1] / "src" / "nanolily" / "assets" / "samples"
# name: (source file, exposure, gamma, photons, read noise, seed)
SAMPLES = {
    "coffee_dark.png": ("coffee.png", 0.06, 1.2, 1500.0, 0.002, 1),
    "chelsea_dark.png": ("chelsea.png", 0.10, 1.1, 800.0, 0.003, 2),
    "astronaut_dark.png": ("astronaut.png", 0.05, 1.3, 2000.0, 0.002, 3),
}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    data = files("skimage") / "data"
    for name, (source, exposure, gamma, photons, read_noise, seed) in SAMPLES.items():
        with Image.open(data / source) as img:
            rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
        dark = darken(rgb, exposure=exposure, gamma=gamma, photons=photons, read_noise=read_noise, seed=seed)
        Image.fromarray(to_uint(dark, 8)).save(OUT / name, optimize=True)
        print(f"{name}: from skimage/data/{source}, {rgb.shape[1]}x{rgb.shape[0]}, "
              f"mean {rgb.mean():.3f} -> {dark.mean():.3f}")


if __name__ == "__main__":
    main()
