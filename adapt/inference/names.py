"""Choices of the inference layer that the config schema checks against, importable without torch.

``adapt.schema`` validates ``predict``/``evaluate``/``app`` command lines before torch and
onnxruntime are imported, so the names live here and the modules that implement them
(``onnx_backend``, ``runner``, the batched engine) import them from here.
"""

from __future__ import annotations

#: ``backend=``: the model that runs (``adapt.inference.onnx_backend.load_predictor``).
BACKENDS = ("torch", "onnx")
#: ``propagation=``: how a volume's or video's slices are prompted (``adapt.inference.runner.Predictor``).
PROPAGATION_MODES = ("auto", "memory", "boxes")
#: ``evaluate precision=``: the autocast of batched model calls.
PRECISIONS = ("32", "bf16")
