"""Choices of the inference layer that the config schema checks against, importable without torch.

``adapt.schema`` validates ``predict``/``evaluate``/``export``/``app`` command lines before torch and
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
#: ``evaluate prompt=``: how each object is prompted (``adapt.evaluation.case.Protocol``); ``auto``
#: is the runner's promptless mode (``adapt.inference.engine.auto``).
PROMPTS = ("box", "box_jitter", "point", "points_k", "auto", "none")
#: The prompts simulated from the ground truth (correction clicks and propagation start from one).
GT_PROMPTS = ("box", "box_jitter", "point", "points_k")
#: ``export format=``: the runner as ONNX graphs, or a merged transformers folder
#: (``adapt.inference.record``: what ``backend=onnx`` reads).
EXPORT_FORMATS = ("onnx", "safetensors")
#: ``export quantize=``: onnxruntime's dynamic int8 quantisation of the graphs, or none.
QUANTIZE = ("none", "int8")
