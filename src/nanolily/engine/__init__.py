"""Running a network over a photo of any size: :mod:`.bloom` (LILY Bloom, blended tiles around any
predictor), :mod:`.pipeline` (the whole-photo pipeline behind :func:`nanolily.enhance`), :mod:`.corrections`
(highlight protection, denoising, white balance) and :mod:`.onnx` (ONNX export and ONNX Runtime predictors)."""
