"""TensorRT >= 10: the engine builder (``vitc build``) and the runner; TensorRT is imported only when used."""
