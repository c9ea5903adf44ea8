"""Label less: pre-annotate a card's unlabelled cases, rank them for review, calibrate the accept flag.

``python -m adapt.annotate adapter=<run> out=<dir>`` (``command``) runs ``pipeline``: prompts per
case (``prompts``), pre-annotations in the input's format, uncertainty scores (``scores``), the
worklist (``worklist``) and exports for annotation tools (``exports``).
``python -m adapt.annotate calibrate adapter=<run>`` fits predicted IoU to measured Dice on the
adapter's validation split (``calibration``). ``python -m adapt.annotate save worklist=<out>/worklist.csv``
copies reviewed pre-annotations into the label folder (``save``). This module stays light (no numpy, no torch): the
door reads it before the command's module is imported.
"""

from __future__ import annotations

ACTIONS = ("run", "calibrate", "save")
#: The calibration an adapter folder carries (written by ``calibrate``, pushed with the adapter).
CALIBRATION_FILE = "calibration.json"


def action_argv(argv: list[str]) -> list[str]:
    """``annotate calibrate k=v`` -> ``annotate action=calibrate k=v``: the action reads like a subcommand."""
    if len(argv) > 1 and argv[1] in ACTIONS:
        return [argv[0], f"action={argv[1]}", *argv[2:]]
    return argv
