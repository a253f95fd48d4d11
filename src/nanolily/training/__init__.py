"""Training and measuring: :mod:`.data` (paired datasets, augmentation, the leakage guard), :mod:`.synthesis`
(low-light simulation), :mod:`.losses`, :mod:`.metrics`, :mod:`.train` (configs, the loop, resume) and
:mod:`.evaluate` (metrics on a paired test set)."""
