"""Sharing adapters: push/pull/merge on the Hugging Face Hub (``share``) and the generated model
card (``model_card``); loading an adapter onto its recorded base is ``adapt.adapters.loading``.

The actions of ``python -m adapt.hub`` live here, importable without torch: the command line is
checked before ``share`` and its model code are imported.
"""

from __future__ import annotations

ACTIONS = ("push", "pull")


def action_argv(argv: list[str]) -> list[str]:
    """``hub push k=v`` -> ``hub action=push k=v``: the action reads like a subcommand."""
    if len(argv) > 1 and argv[1] in ACTIONS:
        return [argv[0], f"action={argv[1]}", *argv[2:]]
    return argv
