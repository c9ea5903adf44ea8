"""Choices of the data layer that the config schema checks against, importable without numpy or torch.

``adapt.schema`` validates a command line before the heavy libraries are imported, so the names
live here and the modules that implement them (``cache``, ``datamodule``, ``clips``,
``encoding``) import them from here.
"""

from __future__ import annotations

#: ``data.cache=``: where prepared cases are kept (``adapt.data.cache``).
CACHE_MODES = ("auto", "none", "memory", "disk")
#: ``data.objects=``: one sample per labelled object, or all objects of a plane at once (``adapt.data.datamodule``).
OBJECT_MODES = ("each", "all")
#: ``data.clip.prompt_frames=``: which frames of a clip are prompted (``adapt.data.clips``).
PROMPT_FRAME_MODES = ("first", "middle", "random")
#: ``data.clip.require=``: a clip needs the object in all or in any of its frames.
REQUIRE_MODES = ("all", "any")
#: ``data.prompt.kind`` of a clip's prompted frames that gives the ground-truth mask itself.
MASK_PROMPT = "mask"
#: ``mask_values=``: masks written with the card's stored values or with the label ids (``adapt.data.encoding``).
OUTPUT_CHOICES = ("card", "ids")
#: ``evaluate split=``: the cases evaluated (``adapt.evaluation.cases.split_of``): a split, or all.
EVALUATION_SPLITS = ("train", "val", "test", "all")
