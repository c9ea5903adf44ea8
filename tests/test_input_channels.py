"""More than three channels: the learned input projection (``adapt.models.channels``).

The projection starts as the fixed channel map every model without one sees, bit for bit;
a tiny run changes it, saves it with the adapter and reloads it with equal outputs, on 3-sequence
MSD volumes and on a user's folder of 4-band GeoTIFF tiles that walks the whole journey (``data
init`` drafts its card, ``recipe=demo_bands`` trains, the model card names the bands, predict, the
app, evaluate and the ONNX export apply the projection); a card selecting another number of channels
is refused by name.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from conftest import compose_cfg, load_fake_data
from omegaconf import OmegaConf
from safetensors.torch import load_file

import adapt
from adapt import predict
from adapt.conf import CONFIG_DIR
from adapt.data import synthetic
from adapt.data.__main__ import main as data_command
from adapt.data.formats import read_raster
from adapt.errors import ConfigError
from adapt.evaluation import evaluate
from adapt.export.build import export_adapter
from adapt.hub.model_card import render_card
from adapt.app.session import Session
from adapt.inference.onnx_backend import OnnxPredictor, load_predictor
from adapt.inference.runner import Predictor
from adapt.models.channels import ChannelProjection, check_channels, mapping_matrix, wants_projection
from adapt.models.primitives import channel_mapping, preprocess

SIZE = 64


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 5, 13])
def test_the_projection_at_its_initial_value_gives_todays_tensors(channels):
    image = torch.rand(2, channels, 40, 52, generator=torch.Generator().manual_seed(channels))
    projection = ChannelProjection(channels)
    assert torch.equal(preprocess(image, SIZE, projection), preprocess(image, SIZE))  # bit for bit
    matrix = projection.weight.detach()
    assert torch.equal(matrix, mapping_matrix(channels)) and matrix.shape == (3, channels)
    torch.testing.assert_close(torch.einsum("oc,bchw->bohw", matrix, image), channel_mapping(image))
    assert torch.allclose(matrix.sum(1), torch.ones(3))  # each output is a mean of inputs


@pytest.mark.parametrize(
    "mode, channels, wanted",
    [
        ("auto", 1, False),
        ("auto", 3, False),
        ("auto", 2, True),
        ("auto", 5, True),
        ("project", 3, True),
        ("fixed", 5, False),
    ],
)
def test_which_runs_learn_a_projection(mode, channels, wanted):
    assert wants_projection(mode, channels) is wanted


BANDS = ["R", "G", "B", "NIR"]


def write_user_bands(root: Path, num_cases: int = 4) -> Path:
    """A user's folder: 4-band GeoTIFF tiles (R, G, B, NIR; uint16) in tiles/, their masks in masks/, no card."""
    for folder in ("tiles", "masks"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i in range(num_cases):
        image, label = synthetic.make_aerial_tile(50 + i, (48, 48))
        origin = (500000.0 + 24 * i, 5200000.0)
        synthetic.write_geotiff(root / "tiles" / f"t{i}.tif", image, origin)
        synthetic.write_geotiff(root / "masks" / f"t{i}.tif", label, origin)
    return root


def init_user_card(folder: Path, card: Path) -> Path:
    """``python -m adapt.data init`` on the folder, then what the user adds: licence, citation, band names."""
    assert data_command(["init", str(folder), f"out={card}"]) == 0
    drafted = yaml.safe_load(card.read_text())
    assert drafted["intensity"] == {"channels": [0, 1, 2, 3], "percentiles": [2, 98]}  # every band kept
    drafted.update(license="CC0-1.0", citation="Test tiles.")
    drafted["intensity"]["channel_names"] = BANDS
    card.write_text(yaml.safe_dump(drafted))
    return card


def write_mr_sequences(root: Path) -> Path:
    """MSD volumes with three sequences on the 4th axis (dataset.json names them) and a card."""
    load_fake_data().write_msd("mr_phantom", root, num_cases=3, channels=3, hu=False)
    card = yaml.safe_load(open("data_cards/mr_phantom.yaml"))
    card.update(
        name="mr3",
        source={"kind": "msd", "root": str(root)},
        intensity={"channels": [0, 1, 2], "channel_names": ["T2", "ADC", "DWI"], "percentiles": [0.5, 99.5]},
    )
    (root / "card.yaml").write_text(yaml.safe_dump(card))
    return root / "card.yaml"


def train_on(card: Path, run_dir: Path, *extra: str, recipe: str = "demo") -> Path:
    from adapt.train import train

    train(
        compose_cfg(
            run_dir,
            f"recipe={recipe}",
            "model=tiny",
            f"model.image_size={SIZE}",
            "trainer.max_steps=3",
            "data.batch_size=2",
            "data.val_batch_size=2",
            "optim.warmup_steps=1",
            "optim.lr=0.05",
            "validate_before=false",
            "data.val_max_slices_per_case=1",
            f"data.card={card}",
            *extra,
        )
    )
    return run_dir / "adapter"


def predict_cfg(adapter: Path, input: Path, output: Path, prompt: str, **extra) -> OmegaConf:
    cfg = OmegaConf.load(CONFIG_DIR / "predict.yaml")
    cfg.merge_with(
        {
            "adapter": str(adapter),
            "input": str(input),
            "output": str(output),
            "prompt": prompt,
            "device": "cpu",
            **extra,
        }
    )
    return cfg


def evaluate_cfg(adapter: Path, card: Path, out: Path) -> OmegaConf:
    cfg = OmegaConf.load(CONFIG_DIR / "evaluate.yaml")
    cfg.merge_with(
        {
            "adapter": str(adapter),
            "data": {"card": str(card)},
            "out": str(out),
            "clicks": [],
            "batch_size": 4,
            "device": "cpu",
            "save_masks": 0,
        }
    )
    return cfg


@pytest.fixture(scope="module")
def bands4(tmp_path_factory):
    """The journey of a multispectral user: their folder, ``data init``, ``recipe=demo_bands`` on the tiny model."""
    base = tmp_path_factory.mktemp("bands4")
    card = init_user_card(write_user_bands(base / "data"), base / "data" / "card.yaml")
    return card, train_on(card, base / "run", recipe="demo_bands")


@pytest.mark.parametrize("kind", ["lora", "bottleneck"])
def test_training_moves_the_projection_and_the_adapter_reloads_it(tmp_path, kind, bands4):
    card, adapter = bands4 if kind == "lora" else (None, None)
    if kind != "lora":  # the 3-sequence MR volumes, with our own adapter kind's file layout; 3 channels
        card = write_mr_sequences(tmp_path / "mr")  # take the fixed map unless asked
        adapter = train_on(card, tmp_path / "run", "adapter=bottleneck", "adapter.input_channels=project")
    weights = load_file(adapter / "adapter_model.safetensors")
    delta = next(
        v
        for k, v in weights.items()
        if k.endswith("input_projection.delta") or k.endswith("input_projection.modules_to_save.default.delta")
    )
    metadata = json.loads((adapter / "sam2_adapt.json").read_text())
    channels = 4 if kind == "lora" else 3
    assert delta.shape == (3, channels) and delta.abs().max() > 0  # trained away from today's map
    assert metadata["input_channels"]["count"] == channels
    names = BANDS if kind == "lora" else ["T2", "ADC", "DWI"]
    assert metadata["input_channels"]["names"] == names
    card_text = render_card(metadata, "me/x").text  # the model card says what goes in, by name
    assert (
        f"| channels per image | {channels} ({', '.join(names)}), channels {', '.join(map(str, range(channels)))} "
        in (card_text)
    )
    fixed = "mean(R, G), 2 = B, 3 = NIR" if kind == "lora" else "T2, 2 = ADC, 3 = DWI"
    assert (
        f"a **learned** input projection {channels} → 3, trained and saved with the adapter (it started as "
        in (card_text)
        and f"fixed map: model input 1 = {fixed})" in card_text
    )
    loaded = adapt.load_adapter(adapter)
    image = np.random.default_rng(0).random((1, channels, 40, 40), dtype=np.float32)
    again = adapt.load_adapter(adapter)
    with torch.no_grad():
        first, second = Predictor(loaded, device="cpu").embed(image), Predictor(again, device="cpu").embed(image)
        fixed = Predictor(loaded, device="cpu")
        fixed_pixels = preprocess(torch.from_numpy(image), SIZE)
        learned_pixels = preprocess(
            torch.from_numpy(image),
            SIZE,
            loaded.model.base_model.model.input_projection if kind == "lora" else loaded.model.input_projection,
        )
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    assert not torch.equal(fixed_pixels, learned_pixels)  # the reloaded projection is the trained one
    assert fixed.size == SIZE
    if kind == "bottleneck":  # a volume followed through SAM2's memory: the video model projects too
        volume = sorted((card.parent / "imagesTr").glob("*.nii.gz"))[0]
        x, y, z = nib.load(volume).shape[:3]
        [written] = predict.run(
            predict_cfg(
                adapter, volume, tmp_path / "mask.nii.gz", f"box 4,4,24,24 slice={z // 2}", propagation="memory"
            )
        )
        assert nib.load(written).shape == (x, y, z)


def test_predict_the_app_evaluate_and_onnx_apply_the_projection(bands4, tmp_path):
    card, adapter = bands4
    tile = sorted((card.parent / "tiles").glob("*.tif"))[0]
    outputs = {}
    export = export_adapter(adapter, "onnx", tmp_path / "onnx")
    check = json.loads((export / "export.json").read_text())
    assert max(v for k, v in check["check"].items() if k.startswith("max_logit_diff")) < 1e-3
    for backend, source in (("torch", adapter), ("onnx", export)):
        out = tmp_path / f"{backend}.tif"
        [written] = predict.run(predict_cfg(source, tile, out, "box 8,8,40,40", backend=backend))
        outputs[backend] = read_raster(written).array
    assert outputs["torch"].shape[-2:] == (48, 48)
    assert (outputs["torch"] != outputs["onnx"]).mean() < 0.01
    session = Session(load_predictor(adapter), tmp_path / "saved")  # the app: the same runner, the same mask
    session.open([tile])
    for corner in ((8, 8), (40, 40)):
        session.click(*corner, "box")
    session.segment(session.prompt)
    assert session.prompt == "box 8,8,40,40" and session.render().shape[-1] == 3
    np.testing.assert_array_equal(read_raster(session.save()).array, outputs["torch"])
    embedded = [Predictor(adapt.load_adapter(adapter), device="cpu"), OnnxPredictor(export)]
    image = np.random.default_rng(1).random((1, 4, 48, 48), dtype=np.float32)
    with torch.no_grad():
        ours, theirs = (runner.embed(image) for runner in embedded)
    assert max(float((a - b).abs().max()) for a, b in zip(ours, theirs)) < 1e-3
    summary = evaluate(evaluate_cfg(adapter, card, tmp_path / "eval"))
    assert 0 <= summary["classes"]["label_1"]["dice"]["mean"] <= 1


def test_another_channel_count_is_refused_with_both_counts(bands4, tmp_path):
    card, adapter = bands4
    metadata = json.loads((adapter / "sam2_adapt.json").read_text())
    with pytest.raises(
        ConfigError,
        match=r"gives 3 channels, but the adapter's input projection was trained on 4 \(R, G, B, NIR\)",
    ) as err:
        check_channels(metadata, 3, "data card three.yaml")
    assert "intensity.channels" in str(err.value)
    three = yaml.safe_load(card.read_text())
    three["intensity"] = {"channels": [0, 1, 2], "percentiles": [2, 98]}
    (tmp_path / "three.yaml").write_text(yaml.safe_dump(three))
    with pytest.raises(ConfigError, match="gives 3 channels.*trained on 4"):
        evaluate(evaluate_cfg(adapter, tmp_path / "three.yaml", tmp_path / "eval"))
    assert not (tmp_path / "eval").exists() or not any((tmp_path / "eval").iterdir())
    with pytest.raises(ConfigError, match="takes 4 channels, the image has 3"):
        ChannelProjection(4)(torch.zeros(1, 3, 8, 8))


@pytest.mark.parametrize("cache, refused", [({"mode": "memory", "auto": True}, False), ({"mode": "memory"}, True)])
def test_the_embedding_cache_gives_way_to_a_projection_unless_asked_for(cache, refused):
    from conftest import tiny_task_args

    from adapt.tasks.segmentation import SegmentationTask

    args = tiny_task_args({"kind": "decoder", "input_channels": "auto"}, embedding_cache=cache, input_channels=5)
    if refused:  # the user asked for the cache: the frozen encoder's input is trained, so it is refused by name
        with pytest.raises(ConfigError, match="embedding_cache needs the encoder's input fixed.*5 channels"):
            SegmentationTask(**args)
        return
    task = SegmentationTask(**args)  # the cache chosen by embedding_cache.mode=auto is turned off
    assert task.embedding_cache is None
    assert {n for n, p in task.model.named_parameters() if p.requires_grad} >= {
        "input_projection.delta",
        "input_projection.bias",
    }


@pytest.mark.parametrize(
    "channels, trained, refused",
    [
        (5, 1, True),  # a 4D cine: its 5 frames read as channels, for a grey adapter
        (4, 3, True),  # a 4-band tile for an RGB adapter whose card kept 3 bands
        (1, 4, True),
        (3, 1, False),  # RGB for a grey adapter: another domain, the same layout
        (1, 3, False),
        (4, 4, False),
        (5, None, False),  # an adapter from before preprocessing.channels was recorded
    ],
)
def test_inference_refuses_a_scan_of_another_channel_count_than_the_adapter_trained_on(channels, trained, refused):
    from adapt.errors import DataError
    from adapt.inference.io import Scan, to_unit

    scan = Scan(
        np.linspace(0, 1, channels * 2 * 4 * 4, dtype=np.float32).reshape(2, channels, 4, 4),
        "nifti",
        None,
        Path("cine_4d.nii.gz"),
    )
    preprocessing = {"intensity": {"window": [0, 1]}, "channels": trained}
    if not refused:
        assert to_unit(scan, preprocessing).shape == (2, channels, 4, 4)
        return
    with pytest.raises(DataError) as raised:
        to_unit(scan, preprocessing)
    message = str(raised.value)
    assert message.startswith("cine_4d.nii.gz:") and f"{channels} channel(s)" in message
    assert f"trained on images of {trained}" in message and "pass one 3D volume" in message
