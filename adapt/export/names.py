"""Choices of ``python -m adapt.export`` that the config schema checks against, importable without torch.

The door validates the command line before torch and onnx are imported, so the names live here;
``adapt.export.record`` and ``build`` implement them.
"""

from __future__ import annotations

#: ``format=``: ONNX graphs, or a merged transformers folder.
FORMATS = ("onnx", "safetensors")
#: ``quantize=``: onnxruntime's dynamic int8 quantisation of the graphs, or none.
QUANTIZE = ("none", "int8")
