"""nanolily: make dark photos look as if they were shot in good light.

    >>> from nanolily import enhance
    >>> bright = enhance(dark_pil_image)  # doctest: +SKIP

Public API: :class:`NanoLILY` (the network), :func:`bloom` (tiled inference over any predictor),
:func:`enhance` (one call on PIL / numpy / torch images), :func:`load_model`, :func:`available_models`.

Subpackages: :mod:`nanolily.models` (networks, weights), :mod:`nanolily.engine` (whole-photo and tiled
inference, corrections, ONNX), :mod:`nanolily.io` (files), :mod:`nanolily.training` (data, losses,
metrics, training, evaluation), :mod:`nanolily.interfaces` (CLI, HTTP server).
"""

__version__ = "0.1.0"

from nanolily.engine.bloom import blend_window, bloom, core, plan_tiles  # noqa: E402
from nanolily.engine.pipeline import enhance  # noqa: E402
from nanolily.io.images import ImageError, read_image, write_image  # noqa: E402
from nanolily.models.v1 import NanoLILY, NanoLILYConfig  # noqa: E402
from nanolily.models.weights import WeightsError, available_models, load_model, save_weights  # noqa: E402

__all__ = ["NanoLILY", "NanoLILYConfig", "bloom", "core", "plan_tiles", "blend_window", "enhance",
           "load_model", "available_models", "save_weights", "WeightsError", "read_image", "write_image",
           "ImageError", "__version__"]
