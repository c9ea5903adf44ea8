"""Names of the transform layer that the config schema checks against, importable without torch.

``adapt.schema`` validates ``evaluate shift=...`` before torch and MONAI are imported, so the
shift names live here; ``adapt.transforms.shifts`` implements each of them.
"""

from __future__ import annotations

#: Acquisition shifts of the robustness evaluation (``adapt.transforms.shifts``).
SHIFTS = ("noise", "blur", "contrast", "gamma", "bias_field", "resolution", "motion")

#: ``data.prompt.kind``: prompts simulated from a mask (``adapt.transforms.prompts.PromptSimulator``).
PROMPT_KINDS = ("box", "point", "points", "box+points")
