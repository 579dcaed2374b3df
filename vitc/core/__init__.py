"""The bottom layer: errors, atomic file I/O, progress, the spec and ``build_model``, analytic MACs, the model
registry (timm names, small configs, checkpoints), artifacts, data sources, devices and settings schemas.

Layers import only downward: core → train → methods → onnx → backends → checks → tune → pipeline → api → cli;
the package's face (``vitc/__init__.py``) sits above them all and no layer imports it.
"""
