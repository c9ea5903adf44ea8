"""Sharing adapters: push/pull/merge on the Hugging Face Hub (``share``) and the generated model
card (``model_card``); loading an adapter onto its recorded base is ``adapt.adapters.loading``.

``action_argv`` reads ``python -m adapt.hub push ...`` as a subcommand; the actions are the
schema's (``adapt.schema.HUB_ACTIONS``), checked before ``share`` and its model code are imported.
"""

from __future__ import annotations


def action_argv(argv: list[str]) -> list[str]:
    """``hub push k=v`` -> ``hub action=push k=v``: the action reads like a subcommand. Any first bare word
    becomes the action (``hub publish`` -> ``action=publish``), so that the schema refuses a mistyped one by
    name with its choices ``HUB_ACTIONS``, rather than Hydra as an override without ``=``; flags (``--help``)
    stay as they are."""
    if len(argv) > 1 and "=" not in argv[1] and not argv[1].startswith("-"):
        return [argv[0], f"action={argv[1]}", *argv[2:]]
    return argv
