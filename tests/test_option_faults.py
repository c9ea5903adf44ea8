"""Options that each pass alone but not together, and folders left by earlier runs: each refused with the key,
the file and the fix, before data or a model is loaded and without changing what is there.

* a recipe of ``task=propagation`` (``recipe=demo_3d``) with ``task=segmentation``: its memory options
  (``loss.presence``, ``prompts.direction``, ``data.clip``, the ``memory`` LoRA preset) were a traceback
  once the model loaded; ``task=propagation`` with correction clicks, or on a 2D card (``adapt.schema``);
* ``out_dir=`` on ``adapt.train``'s command line, which Hydra's log, the folder checks and ``ckpt_path=last``
  do not follow (``adapt.training.run_dir.check_out_dir``);
* a run folder holding the checkpoints of an interrupted run, which a new run would replace
  (``check_run_dir``);
* ``data.empty_share`` asking for more images without a target than the data has (a warning);
* a sweep folder where a job failed: its row is missing from the table, so the table says so
  (``adapt.evaluation.sweep.unfinished``);
* ``label=`` of a value the adapter's label map does not hold (``adapt.inference.user_files.foreground_value``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import compose_cfg, load_user_folders
from omegaconf import OmegaConf

from adapt.data.cards import load_card
from adapt.data.datamodule import SegmentationDataModule
from adapt.errors import ConfigError
from adapt.evaluation import sweep
from adapt.inference.user_files import foreground_value
from adapt.schema import validate
from adapt.training.run_dir import HYDRA_OUT_DIR, check_out_dir, check_run_dir
from adapt.transforms.prompts import PromptSimulator

CARD = """name: scans
title: Ultrasound scans
modality: US
dims: 2
license: CC-BY-4.0
citation: "A. Author, Scans (2024)"
source: {{kind: folder, root: {root}, images: "images/*.png", labels: "masks/{{name}}"}}
labels: {{background: 0, lesion: 1}}
mask_values: {{background: 0, lesion: 255}}
targets: [lesion]
intensity: {{window: [0, 255]}}
split: {{val: 0.25, seed: 0}}
"""


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> Path:
    """A user's 2D card: four grey PNG scans whose 0/255 masks all hold the lesion."""
    base = tmp_path_factory.mktemp("scans")
    root = load_user_folders().write_ultrasound_folder(base / "scans", num_cases=4, shape=(40, 48))
    card = base / "scans.yaml"
    card.write_text(CARD.format(root=root))
    return card


@pytest.mark.parametrize(
    "overrides, expected",
    [
        pytest.param(
            ["recipe=demo_3d", "task=segmentation"],
            [
                "the config has 4 problems",
                "loss.presence is an option of task=propagation",
                "~loss.presence",
                "prompts.direction is an option",
                "data.clip is an option",
                "adapter.targets=['encoder_attn', 'decoder_attn', 'memory'] holds memory",
            ],
            id="propagation recipe, task=segmentation",
        ),
        pytest.param(
            ["task=segmentation", "adapter.targets=[decoder_attn,memory]"],
            ["holds memory", "task=segmentation builds SAM2's image model"],
            id="memory preset without memory",
        ),
        pytest.param(
            ["recipe=demo_3d", "prompts.iterations=2"],
            ["prompts.iterations=2 (correction clicks) applies to task=segmentation", "prompts.iterations=0"],
            id="clicks with propagation",
        ),
        pytest.param(
            ["task=propagation", "data.card={card}"],
            ["data card {card} has dims=2", "task=propagation follows an object", "use task=segmentation"],
            id="propagation on a 2D card",
        ),
    ],
)
def test_options_that_contradict_the_task_are_refused_when_composed(overrides, expected, scans, tmp_path):
    cfg = compose_cfg(tmp_path / "run", "model=tiny", *(o.format(card=scans) for o in overrides))
    with pytest.raises(ConfigError) as err:
        validate(cfg, "train")
    for part in expected:
        assert part.format(card=scans) in str(err.value)
    assert not (tmp_path / "run").exists()


def test_out_dir_on_the_command_line_names_hydra_run_dir(tmp_path):
    with pytest.raises(ConfigError, match=rf"out_dir={tmp_path}/run: .* write hydra.run.dir={tmp_path}/run instead"):
        check_out_dir(compose_cfg(tmp_path / "run"))
    check_out_dir(OmegaConf.create({"out_dir": HYDRA_OUT_DIR}))  # the config's own value: Hydra's run folder


def test_a_run_folder_with_an_interrupted_runs_checkpoints_is_not_trained_over(tmp_path):
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"step 40")
    with pytest.raises(
        ConfigError, match="holds the checkpoints of an interrupted run; .*ckpt_path=last.*overwrite=true"
    ):
        check_run_dir(tmp_path / "run", overwrite=False, ckpt_path=None)
    assert checkpoint.read_bytes() == b"step 40"
    assert check_run_dir(tmp_path / "run", overwrite=False, ckpt_path="last") == tmp_path / "run"
    assert check_run_dir(tmp_path / "run", overwrite=True, ckpt_path=None) == tmp_path / "run"


def test_empty_share_beyond_the_images_without_a_target_is_said(scans, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SAM2_ADAPT_DATA", str(tmp_path / "cache"))
    prompts = PromptSimulator("box")
    with caplog.at_level(logging.WARNING, logger="adapt.data.datamodule"):
        module = SegmentationDataModule(
            load_card(str(scans)), None, 64, 1, 1, 0, prompts, prompts, empty_share=0.5, cache="memory"
        )
    assert len(module.train_set) == 3  # the three training scans, each with its lesion: nothing else to draw
    [warning] = [r.getMessage() for r in caplog.records if "empty_share" in r.getMessage()]
    assert "data.empty_share=0.5 asks for 3 samples without a target beside the 3 with one" in warning
    assert f"data card {scans} hold only 0" in warning and "lower data.empty_share" in warning


def test_a_sweep_job_without_metrics_is_named_under_the_table(tmp_path):
    done, failed = tmp_path / "sweep" / "0", tmp_path / "sweep" / "1"
    for job, cases in ((done, 1), (failed, 9)):
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- data.train_cases={cases}\n")
    metrics = {"data": {"train_cases": 1, "card": "scans"}, "before": {"val/dice": 0.2}, "after": {"val/dice": 0.5}}
    (done / "metrics.json").write_text(json.dumps({**metrics, "adapter": {"kind": "lora", "rank": 8}}))
    _, table, summary = sweep.write_tables(tmp_path / "sweep")
    assert summary["unfinished"] == [f"{failed} (data.train_cases=9)"]
    text = table.read_text()
    assert "| 1 | 0.500 |" in text
    assert (
        f"1 run(s) without metrics.json (failed, killed or still running; see each one's train.log):\n- {failed}"
        in text
    )


@pytest.mark.parametrize(
    "label, expected",
    [(None, 1), ("lesion", 1), (1, 1), ("1", 1), (99, "label=99 is not in the adapter's label map")],
)
def test_label_names_a_label_of_the_adapter(label, expected):
    loaded = SimpleNamespace(label_map={"background": 0, "lesion": 1}, metadata={"targets": ["lesion"]})
    if isinstance(expected, int):
        assert foreground_value(loaded, label) == expected
    else:
        with pytest.raises(ConfigError, match=expected):
            foreground_value(loaded, label)


def test_a_backbone_whose_extra_is_not_installed_is_named_when_the_training_is_composed(tmp_path, monkeypatch):
    """EdgeTAM's trunk comes from timm (the ``edgetam`` extra): without it the training is refused at the door,
    naming the package and the install line, not after the data and the model were read."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "timm" else real(name, *a))
    with pytest.raises(
        ConfigError,
        match=r"model.name=tiny_edgetam: EdgeTAM \(RepViT\) needs timm, which is not "
        r"installed; pip install 'sam2-adapt\[edgetam\]'",
    ):
        validate(compose_cfg(tmp_path / "run", "model=tiny_edgetam", "adapter=bottleneck"), "train")
    validate(compose_cfg(tmp_path / "run", "model=tiny"), "train")  # SAM2 needs nothing more
    monkeypatch.setattr(importlib.util, "find_spec", real)
    validate(compose_cfg(tmp_path / "run", "model=tiny_edgetam", "adapter=bottleneck"), "train")
