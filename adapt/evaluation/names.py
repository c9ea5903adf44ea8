"""Choices of the evaluation protocol that the config schema checks against, importable without torch.

``adapt.schema`` validates ``evaluate`` command lines before torch, MONAI and transformers are
imported, so the names live here; ``adapt.evaluation.case`` and ``cases`` implement them.
"""

from __future__ import annotations

#: ``prompt=``: how each object is prompted (``adapt.evaluation.case.Protocol``).
PROMPTS = ("box", "box_jitter", "point", "points_k", "auto", "none")
#: The prompts simulated from the ground truth (correction clicks and propagation start from one).
GT_PROMPTS = ("box", "box_jitter", "point", "points_k")
#: ``split=``: the cases evaluated (``adapt.evaluation.cases.split_of``).
SPLITS = ("train", "val", "test", "all")
