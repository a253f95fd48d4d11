"""Side-by-side figures with titles (Input | Core | Bloom, branch visualisations, galleries)."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

TITLE_HEIGHT = 28
GAP = 8
BACKGROUND = (24, 24, 24)


def stacked(rows: list[Image.Image]) -> Image.Image:
    """Figures (e.g. :func:`side_by_side` rows) one under another, left-aligned.

    Example:
        >>> stacked([Image.new("RGB", (40, 20)), Image.new("RGB", (30, 10))]).size
        (40, 30)
    """
    figure = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), BACKGROUND)
    top = 0
    for row in rows:
        figure.paste(row, (0, top))
        top += row.height
    return figure


def side_by_side(panels: list[tuple[str, Image.Image]], height: int | None = None) -> Image.Image:
    """Place images in a row, each scaled to a common height, with its title above it.

    Args:
        panels: (title, image) pairs.
        height: panel height in pixels; default the smallest input height, capped at 512.

    Example:
        >>> fig = side_by_side([("a", Image.new("RGB", (40, 20))), ("b", Image.new("RGB", (20, 20)))])
        >>> fig.size
        (84, 56)
    """
    if not panels:
        raise ValueError("side_by_side needs at least one panel")
    height = height or min(512, min(im.height for _, im in panels))
    scaled = [(title, _fit_height(im.convert("RGB"), height)) for title, im in panels]
    width = sum(im.width for _, im in scaled) + GAP * (len(scaled) + 1)
    figure = Image.new("RGB", (width, height + TITLE_HEIGHT + GAP), BACKGROUND)
    draw = ImageDraw.Draw(figure)
    font = _font(14)
    x = GAP
    for title, im in scaled:
        figure.paste(im, (x, TITLE_HEIGHT))
        draw.text((x + 2, 6), _shorten(draw, title, font, im.width), fill=(235, 235, 235), font=font)
        x += im.width + GAP
    return figure


def tensor_to_pil(t) -> Image.Image:
    """The first image of a (N, 3, H, W) float tensor, clamped to [0, 1], as an 8-bit RGB PIL image."""
    return Image.fromarray((t[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype("uint8"))


def _fit_height(im: Image.Image, height: int) -> Image.Image:
    if im.height == height:
        return im
    width = max(1, round(im.width * height / im.height))
    return im.resize((width, height), Image.Resampling.LANCZOS)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType
        return ImageFont.load_default()


def _shorten(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    while len(text) > 1 and draw.textlength(text, font=font) > width - 4:
        text = text[:-2] + "…"
    return text
