"""Messages that used to mislead, and output that used to be noisy.

* a file that is no checkpoint given as ``model.checkpoint=`` is "not a checkpoint", at the door;
* an adapter folder without ``sam2_adapt.json`` says so first; an ``in_domain=`` card that does not
  exist names ``in_domain``;
* ``python -m adapt.app`` on a port in use (or an address it cannot bind) ends in one message naming
  ``port=``/``host=`` before the model loads;
* evaluate's table fills the compared run's click column; the robustness table is titled in words;
  the random-weights notice is given once per process (``tests/test_models.py``).
"""

from __future__ import annotations

import io
import shutil
import socket
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import compose_cfg, run_user_action
from omegaconf import OmegaConf
from rich.console import Console

from adapt.conf import CONFIG_DIR
from adapt.errors import ConfigError


def zip_without_pickle(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("weights/readme.txt", "not a torch archive")


NOT_CHECKPOINTS = [  # (what the file holds, how it is written, what the message says)
    ("random bytes", lambda p: p.write_bytes(bytes(range(256)) * 8), "is not a checkpoint"),
    ("text", lambda p: p.write_text("model weights go here"), "is not a checkpoint"),
    ("an empty file", lambda p: p.write_bytes(b""), "is empty"),
    ("a zip without data.pkl", zip_without_pickle, "without torch.save's data.pkl"),
    (
        "a truncated checkpoint",
        lambda p: (torch.save({"model": {"w": torch.ones(64, 64)}}, p), p.write_bytes(p.read_bytes()[:300])),
        "broken or truncated zip",
    ),
]


@pytest.mark.parametrize("write, said", [r[1:] for r in NOT_CHECKPOINTS], ids=[r[0] for r in NOT_CHECKPOINTS])
def test_a_file_that_is_no_checkpoint_is_named_at_the_door(tmp_path, forbid_model, write, said):
    from adapt.models.meta_checkpoint import read_meta_checkpoint
    from adapt.train import train

    path = tmp_path / "medsam2.pt"
    write(path)
    cfg = compose_cfg(tmp_path / "run", "model=tiny", f"model.checkpoint={path}")
    code, message, seconds = run_user_action(lambda: train(cfg))
    assert code == 2 and "Traceback" not in message and "weights_only" not in message, message
    assert "model.checkpoint" in message and "medsam2.pt" in message and said in message
    assert not (tmp_path / "run").exists() and seconds < 30
    with pytest.raises(ConfigError, match=said):  # the loader says the same when called directly
        read_meta_checkpoint(path)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    from tiny_adapters import make_adapter

    return make_adapter(tmp_path_factory.mktemp("messages") / "adapter", 128)


@pytest.mark.parametrize("command", ["predict", "evaluate", "export"])
def test_an_adapter_without_its_metadata_says_so_first(adapter, tmp_path, forbid_model, command):
    folder = tmp_path / "copy"
    shutil.copytree(adapter, folder)
    (folder / "sam2_adapt.json").unlink()
    values = {
        "predict": {"input": str(tmp_path / "scan.png"), "output": str(tmp_path / "mask.png")},
        "evaluate": {"out": str(tmp_path / "out"), "data": {"card": "ct_phantom"}},
        "export": {"out": str(tmp_path / "out")},
    }[command]
    cfg = OmegaConf.load(CONFIG_DIR / f"{command}.yaml")
    cfg.merge_with({"adapter": str(folder), **values})
    if command == "export":
        from adapt.export.__main__ import run
    elif command == "evaluate":
        from adapt.evaluation import evaluate as run
    else:
        from adapt.predict import run

        (tmp_path / "scan.png").write_bytes(b"")  # the adapter is read before the input
    code, message, _ = run_user_action(lambda: run(cfg))
    assert code == 2 and "Traceback" not in message, message
    assert "sam2_adapt.json is missing" in message and str(folder) in message
    assert not (tmp_path / "out").exists() and not (tmp_path / "mask.png").exists()


def test_an_in_domain_card_that_does_not_exist_names_in_domain():
    from adapt.evaluation.domain import in_domain_cases

    metadata = {"data_card": "ct_phantom", "label_map": {"background": 0, "liver": 1}, "targets": ["liver"]}
    for choice in ("phantom_ct", "/nowhere/own_card.yaml"):
        with pytest.raises(ConfigError) as err:
            in_domain_cases(metadata, SimpleNamespace(name="other_card"), {"liver": 1}, choice, None, "val")
        assert str(err.value).startswith("in_domain") and "data.card" not in str(err.value)


def app_config(adapter: Path, tmp_path: Path, **values):
    cfg = OmegaConf.load(CONFIG_DIR / "app.yaml")
    cfg.merge_with({"adapter": str(adapter), "out_dir": str(tmp_path / "masks"), **values})
    return cfg


def test_the_app_names_a_port_in_use_before_the_model_loads(adapter, tmp_path, forbid_model):
    from adapt.app.__main__ import build

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, message, _ = run_user_action(lambda: build(app_config(adapter, tmp_path, port=port)))
    assert code == 2 and "Traceback" not in message, message
    assert f"port={port}: already in use" in message and f"port={port + 1}" in message
    # an address that is not this machine's (TEST-NET-3, no name lookup): the host is named
    code, message, _ = run_user_action(lambda: build(app_config(adapter, tmp_path, host="203.0.113.7")))
    assert code == 2 and "host=203.0.113.7" in message and "Traceback" not in message


def summary_with(clicks: dict, other_clicks: dict | None) -> dict:
    """The smallest evaluate summary ``print_table`` draws: one class, two runs, a click curve."""
    stats = {"mean": 0.5, "std": 0.1}
    classes = {"liver": {m: stats for m in ("dice", "iou", "nsd", "hd95")}}
    other = {
        "adapter": "zero-shot sam2",
        "classes": classes,
        "miou": 0.4,
        "global_accuracy": 0.9,
        "clicks": other_clicks,
        "difference": {
            "liver": {m: 0.0 for m in ("dice", "iou", "nsd", "hd95")},
            "dataset": {"miou": 0.0, "global_accuracy": 0.0},
        },
    }
    return {
        "adapter": "lora",
        "data_card": "ct_phantom",
        "split": "val",
        "cases": 2,
        "protocol": {"prompt": "box"},
        "domain": {"kind": "none"},
        "classes": classes,
        "distance_unit": "mm",
        "miou": 0.5,
        "global_accuracy": 0.9,
        "compare": other,
        "clicks": clicks,
        "throughput": {"per_second": None, "unit": "slices/s"},
    }


def test_the_click_rows_show_the_compared_run_and_the_difference():
    from adapt.evaluation.report import print_table

    console = Console(file=io.StringIO(), width=200)
    print_table(summary_with({0: {"dice": 0.61}, 3: {"dice": 0.8}}, {0: {"dice": 0.41}, 3: {"dice": 0.7}}), console)
    rows = [line for line in console.file.getvalue().splitlines() if "clicks" in line]
    assert "0.6100" in rows[0] and "0.4100" in rows[0] and "+0.2000" in rows[0]
    assert "0.8000" in rows[1] and "0.7000" in rows[1] and "+0.1000" in rows[1]


def test_the_robustness_table_is_titled_in_words():
    from adapt.evaluation.robustness import print_table

    console = Console(file=io.StringIO(), width=120)
    print_table({"family": "aerial", "seed": 3, "models": {"adapter": "lora"}, "conditions": []}, console)
    title = " ".join(console.file.getvalue().split())
    assert "Robustness to acquisition shifts: Dice and NSD under each shift and severity" in title
    assert "aerial and satellite tiles" in title and "seed 3" in title and "(aerial scales" not in title
