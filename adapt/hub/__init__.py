"""Sharing adapters: push/pull/merge on the Hugging Face Hub (``share``) and the generated model
card (``model_card``); loading an adapter onto its recorded base is ``adapt.adapters.loading``.

``action_argv`` reads ``python -m adapt.hub push ...`` as a subcommand; the actions are the
schema's (``adapt.schema.HUB_ACTIONS``), checked before ``share`` and its model code are imported.
"""

from __future__ import annotations

from adapt.schema import HUB_ACTIONS


def action_argv(argv: list[str]) -> list[str]:
    """``hub push k=v`` -> ``hub action=push k=v``: the action reads like a subcommand."""
    if len(argv) > 1 and argv[1] in HUB_ACTIONS:
        return [argv[0], f"action={argv[1]}", *argv[2:]]
    return argv
