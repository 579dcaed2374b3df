"""The one training loop (AMP, DDP, resume, NaN guard) with its objectives, settings and defaults, and
``vitc train``."""
