"""Names of the transform layer that the config schema checks against, importable without torch.

``adapt.schema`` validates a command line before torch and MONAI are imported, so the choices it
reads live here (the robustness shifts in ``adapt.transforms.shift_table``).
"""

from __future__ import annotations

#: ``data.prompt.kind``: prompts simulated from a mask (``adapt.transforms.prompts.PromptSimulator``).
PROMPT_KINDS = ("box", "point", "points", "box+points")
