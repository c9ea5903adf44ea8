"""Every shipped recipe trains for two steps on the tiny model, on fake data in its card's format.

The recipe is composed exactly as ``python -m adapt.train recipe=<name>`` would, then only the
model (``model=tiny``), the schedule and the data location are overridden: the card, task,
adapter, prompts and loss stay the recipe's own. Real-dataset cards read files written by
``tests/data/generate.py`` in that dataset's layout; synthetic cards generate their own.
"""

from __future__ import annotations

import math

import pytest
from hydra import compose, initialize_config_dir

from adapt.adapters.io import read_metadata
from adapt.conf import CONFIG_DIR, recipe_names, register_recipes, register_resolvers
from adapt.data.cards import load_card
from conftest import TWO_STEPS

register_resolvers()
register_recipes()


def recipe_card(name: str) -> str:
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[f"recipe={name}", "out_dir=unused"]).data.card


@pytest.mark.slow
@pytest.mark.parametrize("recipe", recipe_names())
def test_recipe_trains_two_steps_on_fake_data_of_its_card(recipe, tmp_path, fake_data):
    from adapt.train import train

    card = load_card(recipe_card(recipe))
    overrides = [f"recipe={recipe}", *TWO_STEPS, f"out_dir={tmp_path / 'run'}"]
    if card.source["kind"] != "synthetic":
        root = fake_data.write_dataset(card.name, tmp_path / "data")
        overrides.append(f"data.root={root}")
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    metrics, _ = train(cfg)

    assert metrics["steps"] == 2
    assert metrics["data"]["card"] == card.name
    assert 0 < metrics["params"]["trainable"] < metrics["params"]["total"]
    dice = metrics["after"]["val/dice"]
    assert math.isfinite(dice) and 0.0 <= dice <= 1.0
    saved = read_metadata(tmp_path / "run" / "adapter")
    assert saved["recipe"] == recipe and saved["data_card"] == card.name
    assert saved["task"] == cfg.task and saved["adapter"]["kind"] == cfg.adapter.kind


def test_the_task_group_mirrors_the_task_registry_and_brings_its_data():
    """``configs/task/`` has one option per registered task; ``task=propagation`` selects the clip
    data, from the command line and from a recipe, so a task cannot be paired with the wrong data."""
    from adapt.tasks import TASKS

    assert {path.stem for path in (CONFIG_DIR / "task").glob("*.yaml")} == set(TASKS)
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        for overrides, task, clips in (
            [[], "segmentation", False],
            [["task=propagation"], "propagation", True],
            [["task=semantic"], "semantic", False],
            [["recipe=demo_3d"], "propagation", True],
            [["recipe=ct_multiorgan"], "semantic", False],
        ):
            cfg = compose("train", overrides=[*overrides, "out_dir=unused"])
            assert cfg.task == task and ("clip" in cfg.data) == clips, overrides
