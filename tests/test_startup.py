"""The door answers before the heavy libraries load: a mistake on the command line, ``--help``, a
broken data card and a missing data folder are reported without importing torch, Lightning,
torchmetrics or transformers (which take seconds). This asserts the behaviour (what is in
``sys.modules`` when the command exits), not a time; ``benchmarks/door.py`` measures the time.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "lightning", "torchmetrics", "transformers", "monai", "peft", "gradio")

#: Runs ``python -m <module> <args>`` in-process and reports the heavy modules it imported.
RUN_MODULE = f"""
import json, runpy, sys
module, sys.argv = sys.argv[1], [sys.argv[1], *sys.argv[2:]]
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
finally:
    print("HEAVY=" + json.dumps([m for m in {HEAVY!r} if m in sys.modules]), file=sys.stderr)
"""


def run_door(module: str, *args: str, cwd: Path) -> tuple[int, str, list[str]]:
    """Exit status, stdout + stderr, and the heavy modules ``python -m module args`` imported."""
    done = subprocess.run(
        [sys.executable, "-c", RUN_MODULE, module, *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    output = done.stdout + done.stderr
    heavy = json.loads(output.rsplit("HEAVY=", 1)[1].splitlines()[0])
    return done.returncode, output, heavy


@pytest.fixture(scope="module")
def bad_card(tmp_path_factory) -> Path:
    """A data card with a mistake in one field (``dims: 4``)."""
    path = tmp_path_factory.mktemp("cards") / "broken.yaml"
    path.write_text(
        "name: broken\ntitle: t\nmodality: CT\ndims: 4\nlicense: CC0-1.0\ncitation: c\n"
        "source: {kind: folder, root: ., images: '*.nii.gz', labels: '*.nii.gz'}\n"
        "labels: {background: 0, liver: 1}\ntargets: [liver]\n"
    )
    return path


DOORS = [
    # (module, arguments ({card}: the broken card, {missing}: a folder that does not exist), message)
    ("adapt.train", ["optim.lr=-1"], "optim.lr=-1 must be > 0"),
    ("adapt.train", ["+trainer.max_stepz=3"], "not an option of Lightning's Trainer; did you mean"),
    ("adapt.train", ["task=nope"], "task"),
    ("adapt.train", ["+prompts.direction=sideways"], "prompts.direction='sideways' is not one of"),
    ("adapt.train", ["data.card=no_such_card"], "is not a shipped card"),
    ("adapt.train", ["data.card={card}"], "dims must be one of [2, 3]"),
    ("adapt.train", ["data.card=msd_spleen", "data.root={missing}"], "no dataset at"),
    ("adapt.evaluate", ["batch_size=0"], "batch_size=0 must be >= 1"),
    ("adapt.evaluate", ["shift=[noise,snow]"], "shift=['noise', 'snow'] must be null, all, or one or a list of"),
    ("adapt.evaluate", ["data.card={card}"], "dims must be one of [2, 3]"),
    ("adapt.predict", ["backend=tensorrt"], "backend='tensorrt' is not one of"),
    ("adapt.export", ["quantize=int4"], "quantize='int4' is not one of"),
    ("adapt.app", ["port=0"], "port=0 must be >= 1"),
    ("adapt.annotate", ["calibrate", "accept_dice=2"], "accept_dice=2 must be <= 1"),
    ("adapt.annotate", ["data.card={card}", "out={missing}"], "dims must be one of [2, 3]"),
    ("adapt.hub", ["push", "repo_id=no-slash"], "repo_id='no-slash' must be of the form user/name"),
    ("adapt.data", ["check", "card={card}"], "dims must be one of [2, 3]"),
    ("adapt.data", ["check", "card=msd_spleen", "root={missing}"], "root={missing}: no such folder"),
    ("adapt.data", ["init", "{missing}"], "{missing}"),
]


@pytest.mark.parametrize(("module", "args", "message"), DOORS, ids=[f"{m} {' '.join(a)}" for m, a, _ in DOORS])
def test_a_mistake_is_reported_before_torch_imports(module, args, message, bad_card, tmp_path):
    missing = str(tmp_path / "no_such_folder")
    args = [a.format(card=bad_card, missing=missing) for a in args]
    status, output, heavy = run_door(module, *args, cwd=tmp_path)
    assert status == 2, output
    assert message.format(missing=missing) in output
    assert "Traceback" not in output
    assert heavy == [], f"{module} {args} imported {heavy} before answering"


@pytest.mark.parametrize(
    "module",
    ["adapt.train", "adapt.evaluate", "adapt.predict", "adapt.export", "adapt.app", "adapt.hub", "adapt.annotate"],
)
def test_help_answers_before_torch_imports(module, tmp_path):
    status, output, heavy = run_door(module, "--help", cwd=tmp_path)
    assert status == 0, output
    assert "Powered by Hydra" in output or "== Config ==" in output
    assert heavy == []


def test_the_door_modules_import_without_torch():
    code = (
        "import sys; import adapt.schema, adapt.cli, adapt.conf, adapt.train, adapt.evaluate, adapt.predict, "
        "adapt.tasks, adapt.models.names, adapt.transforms.names, adapt.hub; "
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


def test_trainer_options_read_from_source_match_lightning():
    """The schema reads Lightning's ``Trainer`` parameters from its source file; the import agrees."""
    import inspect

    import lightning as L

    from adapt.schema import trainer_options

    assert trainer_options() == set(inspect.signature(L.Trainer.__init__).parameters) - {"self"}


def test_the_light_registries_are_the_ones_the_code_uses():
    """Each name list lives once: the model code imports it from the light module."""
    from adapt.adapters import lora
    from adapt.models import names as model_names, sam2, tracking
    from adapt.evaluation import runner
    from adapt.schema import SCHEMAS
    from adapt.transforms import shift_table, shifts
    import adapt.tasks

    assert sam2.HUB_IDS is model_names.HUB_IDS and tracking.DIRECTIONS is model_names.DIRECTIONS
    assert lora.TARGET_PRESETS is model_names.TARGET_PRESETS
    assert shifts.SHIFTS is shift_table.SHIFTS
    assert runner.TASKS is adapt.tasks.TASKS and runner.EVALUATED is adapt.tasks.EVALUATED
    task_choices = {
        command: next(f for f in dataclasses.fields(SCHEMAS[command]) if f.name == "task").metadata["choices"]
        for command in ("train", "evaluate")
    }
    assert task_choices == {"train": tuple(sorted(adapt.tasks.TASKS)), "evaluate": ("segmentation", "propagation")}
    assert task_choices["evaluate"] is adapt.tasks.EVALUATED


def test_each_choice_of_the_schema_is_the_constant_its_implementation_uses():
    """The schema's choices are the very tuples the implementing modules check against (no copy)."""
    from adapt import schema
    from adapt.adapters import bottleneck
    from adapt.data import cache, clips, datamodule, encoding
    from adapt.evaluation import case, cases
    from adapt.export import build
    from adapt.inference import engine, onnx_backend, runner
    from adapt.training import callbacks
    from adapt.transforms import names as transform_names, prompts

    def choices(section, key):
        return next(f for f in dataclasses.fields(section) if f.name == key).metadata["choices"]

    pairs = [
        (choices(schema.Predict, "backend"), onnx_backend.BACKENDS),
        (choices(schema.Predict, "propagation"), runner.PROPAGATION_MODES),
        (choices(schema.Predict, "mask_values"), encoding.OUTPUT_CHOICES),
        (choices(schema.Evaluate, "prompt"), case.PROMPTS),
        (choices(schema.Evaluate, "split"), cases.EVALUATION_SPLITS),
        (choices(schema.Export, "quantize"), build.QUANTIZE),
        (choices(schema.Export, "format"), build.EXPORT_FORMATS),
        (choices(schema.Data, "cache"), cache.CACHE_MODES),
        (choices(schema.Data, "objects"), datamodule.OBJECT_MODES),
        (choices(schema.Clip, "require"), clips.REQUIRE_MODES),
        (choices(schema.Clip, "prompt_frames"), clips.PROMPT_FRAME_MODES),
        (choices(schema.Logger, "kind"), callbacks.LOGGERS),
        (choices(schema.Bottleneck, "placement"), bottleneck.PLACEMENTS),
    ]
    for declared, used in pairs:
        assert declared is used
    assert choices(schema.Prompt, "kind") == (*prompts.PROMPT_KINDS, clips.MASK_PROMPT)
    assert choices(schema.Evaluate, "precision") == (*engine.PRECISIONS, 32)
    assert prompts.PROMPT_KINDS is transform_names.PROMPT_KINDS
