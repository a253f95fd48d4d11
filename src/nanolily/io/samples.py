"""The bundled dark sample photos (made by scripts/make_samples.py from CC0 / public-domain photos)."""

from __future__ import annotations

from pathlib import Path

SAMPLES_DIR = Path(__file__).parent.parent / "assets" / "samples"


def sample_paths() -> list[Path]:
    """Paths of the bundled dark samples, sorted by name."""
    return sorted(SAMPLES_DIR.glob("*.png"))
