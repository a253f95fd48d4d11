"""nanolily: make dark photos look as if they were shot in good light.

    >>> from nanolily import enhance
    >>> bright = enhance(dark_pil_image)  # doctest: +SKIP

Public API: :class:`NanoLILY` (the network), :func:`bloom` (tiled inference over any predictor),
:func:`enhance` (one call on PIL / numpy / torch images), :func:`load_model`, :func:`available_models`.
Imports are lazy so that ``nanolily --version`` does not load torch.
"""

__version__ = "0.1.0"

_EXPORTS = {
    "NanoLILY": "model", "NanoLILYConfig": "model",
    "bloom": "bloom", "core": "bloom", "plan_tiles": "bloom", "blend_window": "bloom",
    "enhance": "enhance",
    "load_model": "weights", "available_models": "weights", "save_weights": "weights",
    "WeightsError": "weights",
    "read_image": "io", "write_image": "io", "ImageError": "io",
}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        from importlib import import_module

        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'nanolily' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
