"""Files in and out: :mod:`.images` (reading and writing photos with their bit depth, colour profile and
metadata), :mod:`.samples` (the bundled dark samples) and :mod:`.figures` (side-by-side figures)."""
