"""nanolily: make dark photos look as if they were shot in good light.

    >>> from nanolily import enhance
    >>> bright = enhance(dark_pil_image)  # doctest: +SKIP

Public API: :class:`NanoLILY` (the network), :func:`bloom` (tiled inference over any predictor),
:func:`enhance` (one call on PIL / numpy / torch images), :func:`load_model`, :func:`available_models`.
"""

__version__ = "0.1.0"

# The functions `bloom` and `enhance` share their names with their modules, so they are imported
# eagerly: a lazy attribute would be shadowed by the submodule as soon as it is imported.
from .bloom import bloom, core, plan_tiles, blend_window  # noqa: E402
from .enhance import enhance  # noqa: E402
from .io import ImageError, read_image, write_image  # noqa: E402
from .model import NanoLILY, NanoLILYConfig  # noqa: E402
from .weights import WeightsError, available_models, load_model, save_weights  # noqa: E402

__all__ = ["NanoLILY", "NanoLILYConfig", "bloom", "core", "plan_tiles", "blend_window", "enhance",
           "load_model", "available_models", "save_weights", "WeightsError", "read_image", "write_image",
           "ImageError", "__version__"]
