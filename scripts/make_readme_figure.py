"""Make docs/images/before-after.png, the README's picture: each bundled dark sample beside what
`nanolily enhance` makes of it with the shipped default model and settings.

    python scripts/make_readme_figure.py
"""

from pathlib import Path


from nanolily.engine.pipeline import default_model, enhance_photo
from nanolily.io.figures import side_by_side, stacked
from nanolily.io.images import photo_to_pil, pil_to_photo, read_image, write_image
from nanolily.io.samples import sample_paths

OUT = Path(__file__).resolve().parents[1] / "docs" / "images" / "before-after.png"


def main() -> None:
    model = default_model("cpu")
    rows = []
    for path in sample_paths():
        photo = read_image(path)
        rows.append(side_by_side([("dark input", photo_to_pil(photo)),
                                  ("nanolily", photo_to_pil(enhance_photo(photo, model)))], height=220))
    figure = stacked(rows)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    print(write_image(OUT, pil_to_photo(figure), overwrite=True))


if __name__ == "__main__":
    main()
