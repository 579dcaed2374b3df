"""vitc: compress Vision Transformers (UVC, DynamicViT) and deploy them through ONNX and TensorRT."""

__version__ = "0.1.0"
