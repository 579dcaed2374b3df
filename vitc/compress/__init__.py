"""Compression methods (UVC, DynamicViT) on top of one shared training loop (``trainer``)."""
