"""Thin layers over the Python API: :mod:`.cli` (the ``nanolily`` command) and :mod:`.serve` (HTTP)."""
