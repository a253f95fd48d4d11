"""The networks and their weights: :mod:`.v1` (NanoLILY, the original architecture with its 224x224
frequency mask), :mod:`.v2` (NanoLILYv2, resolution-free) and :mod:`.weights` (safetensors files with
metadata, the shipped-model registry, the frozen feature networks of the losses and metrics)."""
