"""``python -m adapt.evaluate``: reassembly on the stored grid, tables, comparisons, clicks, auto prompts."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
from conftest import PHANTOM_SHAPE, load_user_folders, phantom_data, train_tiny
import torch
import yaml
from omegaconf import OmegaConf
from rich.console import Console

from adapt.conf import CARD_DIR, CONFIG_DIR
from adapt.errors import ConfigError, DataNotFoundError, ModelNotFoundError
from adapt.evaluation import evaluate, runner
from adapt.data.formats.tiff import unit as geotiff_unit
from adapt.evaluation.report import print_table
from adapt.inference import engine as engine_module
from adapt.inference import runner as runner_module
from adapt.inference.engine import component_boxes
from adapt.models.primitives import Prediction
from tiny_adapters import make_semantic_adapter


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Small non-square phantoms and a tiny run trained on them (shared by the module)."""
    base = tmp_path_factory.mktemp("evaluate")
    with phantom_data(base) as data:
        run = train_tiny(base / "run", data)
        yield SimpleNamespace(base=base, data=data, run=run)


def config(out: Path, **values) -> OmegaConf:
    cfg = OmegaConf.load(CONFIG_DIR / "evaluate.yaml")
    cfg.merge_with({"out": str(out), "clicks": "off", "batch_size": 4, "device": "cpu", **values})
    return cfg


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


# --- reassembly: a perfect predictor gives perfect scores, every slice in its place -----------------


def oblique_case(root: Path) -> None:
    """One case whose stored axes are permuted and flipped against RAS, with anisotropic voxels.

    The label differs on every slice (a box that moves and grows), so a slice put back in the
    wrong place, or a transposed plane, changes the score.
    """
    shape = (12, 30, 22)  # stored (i, j, k); i becomes the slice axis in RAS
    label = np.zeros(shape, np.uint8)
    for i in range(2, 10):
        label[i, 3 + i : 10 + 2 * i, 4 + (i % 3) : 9 + i] = 1
    image = np.where(label > 0, 200, -1000).astype(np.int16)
    affine = np.array([[0.0, 0.0, -0.8, 60.0], [0.0, 1.4, 0.0, -30.0], [2.5, 0.0, 0.0, 12.0], [0, 0, 0, 1]])
    for folder, array in (("imagesTr", image), ("labelsTr", label)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(array, affine), root / folder / "oblique.nii.gz")
    (root / "dataset.json").write_text(
        json.dumps({"training": [{"image": "./imagesTr/oblique.nii.gz", "label": "./labelsTr/oblique.nii.gz"}]})
    )


@pytest.fixture
def perfect(monkeypatch):
    """A model whose mask is its input image thresholded: with image = label it is the ground truth.

    Pixels reach ``decode`` unresized, so the only thing between the label file and the scores
    is the slicing, the batching and the reassembly under test.
    """
    monkeypatch.setattr(runner_module, "model_pixels", lambda model, pixels, size: pixels)
    monkeypatch.setattr(runner_module, "image_embeddings", lambda model, pixels: [pixels])

    def decode(model, embeddings, multimask, **prompts):
        logits = torch.where(embeddings[-1][:, :1] > 0.5, 10.0, -10.0)
        return Prediction(logits[:, :, None], torch.ones(len(logits), 1, 1))

    monkeypatch.setattr(runner_module, "decode", decode)


def test_perfect_predictor_scores_one_and_every_slice_lands_where_it_came_from(tmp_path, perfect):
    data = tmp_path / "oblique"
    oblique_case(data)
    summary = evaluate(
        config(
            tmp_path / "out",
            adapter="none",
            model="tiny",
            **{"data": {"card": "ct_phantom", "root": str(data)}},
            split="all",
            batch_size=3,
            save_masks="all",
        )
    )
    [row] = read_rows(tmp_path / "out" / "cases.csv")
    truth = np.asarray(nib.load(data / "labelsTr" / "oblique.nii.gz").dataobj)
    assert float(row["dice"]) == 1.0 and float(row["iou"]) == 1.0 and float(row["nsd"]) == 1.0
    assert float(row["hd95"]) == 0.0
    assert int(row["gt_voxels"]) == int(row["pred_voxels"]) == int(truth.sum())
    saved = nib.load(tmp_path / "out" / summary["masks"]["oblique"])
    np.testing.assert_array_equal(np.asarray(saved.dataobj), truth)  # the label file's own voxel order
    np.testing.assert_allclose(saved.affine, nib.load(data / "labelsTr" / "oblique.nii.gz").affine)
    assert summary["throughput"]["planes"] == 8  # slices 2..9 hold the target; batches of 3
    assert summary["miou"] == 1.0 and summary["global_accuracy"] == 1.0


def test_a_card_with_spacing_is_evaluated_on_its_grid_and_scored_on_the_files(tmp_path, perfect, monkeypatch):
    """The model sees the card's grid (resampled, as in training); scores are on the label file's voxels."""
    data = tmp_path / "oblique"
    oblique_case(data)
    card = yaml.safe_load(open(CARD_DIR / "ct_phantom.yaml"))
    card.update({"name": "resampled", "spacing": [1.0, 1.0, None]})
    (tmp_path / "resampled.yaml").write_text(yaml.safe_dump(card))
    seen = []
    real_embed = runner_module.Predictor.embed
    monkeypatch.setattr(
        runner_module.Predictor, "embed", lambda self, images: seen.append(images.shape) or real_embed(self, images)
    )
    summary = evaluate(
        config(
            tmp_path / "out",
            adapter="none",
            model="tiny",
            split="all",
            batch_size=3,
            save_masks="all",
            **{"data": {"card": str(tmp_path / "resampled.yaml"), "root": str(data)}},
        )
    )
    # RAS axes: i (2.5 mm) is the slice axis, in-plane 1.4 mm and 0.8 mm voxels go to 1.0 mm
    assert {tuple(shape[-2:]) for shape in seen} == {(round(30 * 1.4), round(22 * 0.8))}
    [row] = read_rows(tmp_path / "out" / "cases.csv")
    truth = nib.load(data / "labelsTr" / "oblique.nii.gz")
    saved = nib.load(tmp_path / "out" / summary["masks"]["oblique"])
    assert saved.shape == truth.shape and np.allclose(saved.affine, truth.affine)
    assert float(row["dice"]) > 0.9 and int(row["gt_voxels"]) == int(np.asarray(truth.dataobj).sum())


@pytest.mark.parametrize(
    "encoding, choice, saved_scale",
    [
        ("source_threshold", "card", 1),  # a bare threshold: masks saved as label ids
        ("mask_values: {background: 0, polyp: 255}", "card", 255),  # the card's encoding: saved as its files are
        ("mask_values: {background: 0, polyp: 255}", "ids", 1),  # mask_values=ids
    ],
)
def test_perfect_predictor_on_2d_png_cases_with_0_255_masks(tmp_path, perfect, encoding, choice, saved_scale):
    """A folder of PNGs whose masks are 0/255 images, read through the card's mask_threshold or mask_values;
    evaluate's saved masks store the labels as the card says (or as ids)."""
    from PIL import Image

    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    for i in range(2):
        mask = np.zeros((30, 44), np.uint8)
        mask[5 + i : 20, 10 : 30 + i] = 255
        Image.fromarray(np.stack([mask // 255 * 230] * 3, axis=-1)).save(tmp_path / "images" / f"c{i}.png")
        Image.fromarray(mask).save(tmp_path / "masks" / f"c{i}.png")
    card = tmp_path / "card.yaml"
    card.write_text(
        "name: pngs\ntitle: t\nmodality: endoscopy\ndims: 2\nlicense: CC0-1.0\ncitation: none\n"
        f"source: {{kind: folder, root: {tmp_path}, images: 'images/*.png', labels: 'masks/{{name}}'"
        f"{', mask_threshold: 128' if encoding == 'source_threshold' else ''}}}\n"
        "labels: {background: 0, polyp: 1}\ntargets: [polyp]\nintensity: {window: [0, 255]}\nsplit: {val: 0.5}\n"
        + ("" if encoding == "source_threshold" else encoding + "\n")
    )
    summary = evaluate(
        config(
            tmp_path / "out",
            adapter="none",
            model="tiny",
            split="all",
            save_masks="all",
            mask_values=choice,
            **{"data": {"card": str(card)}},
        )
    )
    rows = read_rows(tmp_path / "out" / "cases.csv")
    assert [float(r["dice"]) for r in rows] == [1.0, 1.0] and [float(r["hd95"]) for r in rows] == [0.0, 0.0]
    saved = np.asarray(Image.open(tmp_path / "out" / summary["masks"]["c1"]))
    np.testing.assert_array_equal(saved, np.asarray(Image.open(tmp_path / "masks" / "c1.png")) // 255 * saved_scale)


def shifted_square_case(root: Path, suffix: str) -> np.ndarray:
    """One 2D case whose image is its label shifted 4 pixels right: the perfect predictor then
    misses by 4 pixels, a distance the metrics must report in the file's units."""
    from PIL import Image

    from adapt.data.synthetic import write_geotiff

    label = np.zeros((40, 48), np.uint8)
    label[10:26, 12:28] = 1
    image = np.roll(label, 4, axis=1) * 230
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
    if suffix == "tif":  # EPSG:32633 (UTM, metres), 0.5 m pixels
        write_geotiff(root / "images" / "c0.tif", np.stack([image] * 3), origin=(500000.0, 4600000.0))
        write_geotiff(root / "masks" / "c0.tif", label, origin=(500000.0, 4600000.0))
    else:
        Image.fromarray(np.stack([image] * 3, axis=-1)).save(root / "images" / "c0.png")
        Image.fromarray(label).save(root / "masks" / "c0.png")
    (root / "card.yaml").write_text(
        f"name: squares\ntitle: t\nmodality: RGB\ndims: 2\nlicense: CC0-1.0\ncitation: none\n"
        f"source: {{kind: folder, root: {root}, images: 'images/*.{suffix}', labels: 'masks/{{name}}'}}\n"
        "labels: {background: 0, building: 1}\ntargets: [building]\nintensity: {window: [0, 255]}\nsplit: {val: 0.5}\n"
    )
    return label


@pytest.mark.parametrize("suffix, unit, spacing", [("png", "px", 1.0), ("tif", "m", 0.5)])
def test_distances_are_reported_in_the_units_of_the_files(suffix, unit, spacing, tmp_path, perfect):
    from monai.metrics import compute_hausdorff_distance

    label = shifted_square_case(tmp_path / "data", suffix)
    summary = evaluate(
        config(
            tmp_path / "out",
            adapter="none",
            model="tiny",
            split="all",
            **{"data": {"card": str(tmp_path / "data" / "card.yaml")}},
        )
    )
    [row] = read_rows(tmp_path / "out" / "cases.csv")
    predicted = np.roll(label, 4, axis=1)
    expected = compute_hausdorff_distance(
        torch.from_numpy(predicted)[None, None],
        torch.from_numpy(label)[None, None],
        percentile=95,
        spacing=[spacing, spacing],
    )
    assert float(row["hd95"]) == pytest.approx(float(expected), rel=1e-6) and float(expected) > 0
    assert row["unit"] == summary["distance_unit"] == unit
    assert row["voxel_size"] == ("" if unit == "px" else str(spacing * spacing))
    table = print_table(summary, Console(file=io.StringIO(), width=200))
    assert f"hd95 ({unit})" in list(table.columns[1].cells)


@pytest.mark.parametrize(
    "keys, unit",
    [
        ([1024, 0, 1, 1, 3072, 0, 1, 32633], "m"),  # projected, UTM zone 33N
        ([1024, 0, 1, 1, 3072, 0, 1, 3857], "m"),  # Web Mercator
        ([1024, 0, 1, 1, 3072, 0, 1, 2263, 3076, 0, 1, 9003], "US survey ft"),  # units given explicitly
        ([1024, 0, 1, 1, 3072, 0, 1, 27700], "map units"),  # a projected CRS whose unit is not stated
        ([1024, 0, 1, 2, 2048, 0, 1, 4326], "deg"),  # geographic (longitude, latitude)
    ],
)
def test_geotiff_unit_is_read_from_the_geokey_directory(keys, unit):
    header = [1, 1, 0, len(keys) // 4]
    assert geotiff_unit([(34735, "H", len(keys) + 4, tuple(header + keys), True)]) == unit
    assert geotiff_unit([]) == "map units"


@pytest.mark.parametrize(
    "latitude, metres",  # lengths of a degree of latitude and longitude on WGS84 (geodesic tables, to the metre)
    [(0.0, (110574, 111320)), (45.0, (111132, 78847)), (-60.0, (111412, 55800))],
)
def test_a_geographic_tiles_degrees_become_metres_at_its_latitude(latitude, metres):
    """EPSG:4326 tiles (SpaceNet) scale pixels in degrees: distances and the NSD tolerance are in metres."""
    from adapt.data.formats.tiff import spacing

    keys = [1, 1, 0, 2, 1024, 0, 1, 2, 2048, 0, 1, 4326]
    tags = [
        (33550, "d", 3, (2e-5, 1e-5, 0.0), True),  # pixel scale: x (longitude), y (latitude)
        (33922, "d", 6, (0.0, 0.0, 0.0, -115.3, latitude, 0.0), True),
        (34735, "H", len(keys), tuple(keys), True),
    ]
    (height, width), unit = spacing(tags)
    assert unit == "m"
    assert height == pytest.approx(1e-5 * metres[0], abs=1e-5) and width == pytest.approx(2e-5 * metres[1], abs=2e-5)
    assert spacing([tags[0], tags[2]]) == (None, "px")  # degrees without a place on Earth: pixels


def test_a_misplaced_slice_is_caught(tmp_path, perfect, monkeypatch):
    """The same run with planes handed back one slice off scores below 1: the test above can fail."""
    data = tmp_path / "oblique"
    oblique_case(data)
    segment = engine_module.Engine.segment

    def shifted(self, *args, **kwargs):
        return {k: np.roll(v, 1, axis=0) for k, v in segment(self, *args, **kwargs).items()}

    monkeypatch.setattr(engine_module.Engine, "segment", shifted)
    evaluate(
        config(
            tmp_path / "out",
            adapter="none",
            model="tiny",
            **{"data": {"card": "ct_phantom", "root": str(data)}},
            split="all",
        )
    )
    [row] = read_rows(tmp_path / "out" / "cases.csv")
    assert float(row["dice"]) < 0.9 and float(row["hd95"]) > 0


@pytest.fixture
def box_echo(monkeypatch):
    """A model whose mask is exactly its box prompt, at the model's input size."""
    monkeypatch.setattr(runner_module, "image_embeddings", lambda model, pixels: [pixels])

    def decode(model, embeddings, multimask, input_boxes=None, **prompts):
        size = model.config.prompt_encoder_config.image_size
        ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        logits = torch.stack(
            [
                torch.where((xs >= b[0]) & (xs <= b[2]) & (ys >= b[1]) & (ys <= b[3]), 5.0, -5.0)
                for b in input_boxes[:, 0]
            ]
        )
        return Prediction(logits[:, None, None], torch.ones(len(logits), 1, 1))

    monkeypatch.setattr(runner_module, "decode", decode)
    return decode


def test_components_prompt_each_object_on_its_own(tmp_path, box_echo):
    """Two rectangles per slice: one box each is exact, one box around both fills the gap between them."""
    root = tmp_path / "two"
    label = np.zeros((128, 128, 3), np.uint8)  # planes of the model's size: the box echo is exact
    label[10:30, 20:50, :] = 1
    label[70:100, 60:90, 1:] = 1
    for folder, array in (("imagesTr", np.where(label > 0, 200, -1000).astype(np.int16)), ("labelsTr", label)):
        (root / folder).mkdir(parents=True)
        nib.save(nib.Nifti1Image(array, np.diag([0.7, 0.7, 3.0, 1.0])), root / folder / "two.nii.gz")
    (root / "dataset.json").write_text(
        json.dumps({"training": [{"image": "./imagesTr/two.nii.gz", "label": "./labelsTr/two.nii.gz"}]})
    )
    data = {"data": {"card": "ct_phantom", "root": str(root)}}
    each = evaluate(
        config(tmp_path / "each", adapter="none", model="tiny", split="all", components=True, batch_size=8, **data)
    )
    assert each["classes"]["liver"]["dice"]["mean"] == 1.0 and each["classes"]["liver"]["hd95"]["mean"] == 0.0
    assert each["throughput"]["planes"] == 3  # five objects, three planes encoded
    joint = evaluate(config(tmp_path / "joint", adapter="none", model="tiny", split="all", **data))
    assert joint["classes"]["liver"]["dice"]["mean"] < 0.9


# --- outputs of a real (tiny) adapter ------------------------------------------------------------------


def test_cases_csv_and_summary_hold_the_recomputed_values(env, tmp_path):
    out = tmp_path / "eval"
    summary = evaluate(
        config(
            out, adapter=str(env.run), split="all", save_masks="all", clicks=[1, 2], **{"data": {"root": str(env.data)}}
        )
    )
    rows = read_rows(out / "cases.csv")
    assert [r["case"] for r in rows] == [f"phantom_{i:03d}" for i in range(3)]
    assert {r["class"] for r in rows} == {"liver"} and {r["run"] for r in rows} == {"adapter"}
    for key in ("dice", "iou", "nsd", "hd95", "gt_voxels", "pred_voxels", "seconds", "slices"):
        assert all(r[key] != "" for r in rows), key

    # One case recomputed from the files alone: the saved mask against the label file.
    row = rows[1]
    label = nib.load(row["label"])
    truth = np.asarray(label.dataobj) == 1
    assert Path(row["image"]).is_absolute() and not Path(summary["masks"][row["case"]]).is_absolute()
    pred = np.asarray(nib.load(out / summary["masks"][row["case"]]).dataobj) == 1  # relative to out=
    assert pred.shape == truth.shape == PHANTOM_SHAPE
    dice = 2 * (pred & truth).sum() / (pred.sum() + truth.sum())
    assert float(row["dice"]) == pytest.approx(dice, abs=1e-9)
    assert int(row["gt_voxels"]) == truth.sum() and int(row["pred_voxels"]) == pred.sum()
    from monai.metrics import compute_hausdorff_distance

    hd = compute_hausdorff_distance(
        torch.from_numpy(pred)[None, None],
        torch.from_numpy(truth)[None, None],
        percentile=95,
        spacing=[float(z) for z in label.header.get_zooms()[:3]],
    )
    assert float(row["hd95"]) == pytest.approx(float(hd), rel=1e-5)

    stored = json.loads((out / "summary.json").read_text())
    dices = [float(r["dice"]) for r in rows]
    liver = stored["classes"]["liver"]["dice"]
    assert liver["mean"] == pytest.approx(np.mean(dices)) and liver["median"] == pytest.approx(np.median(dices))
    assert liver["std"] == pytest.approx(np.std(dices)) and liver["count"] == 3
    assert stored["undefined"] == {"dice": 0, "iou": 0, "nsd": 0, "hd95": 0}
    for key in ("miou", "global_accuracy", "mean_pixel_accuracy"):
        assert 0 <= stored[key] <= 1
    assert set(stored["pixel_accuracy"]) == {"background", "liver"}
    assert stored["throughput"]["unit"] == "slices/s" and stored["throughput"]["per_second"] > 0
    # The click curve: the first prompt alone and after each requested number of clicks.
    assert set(stored["clicks"]) == {"0", "1", "2"}
    assert stored["clicks"]["0"]["dice"] == pytest.approx(liver["mean"])
    assert set(stored["clicks"]["2"]["dice_per_class"]) == {"liver"}


def test_clicks_feed_the_previous_logits_back(env, tmp_path, decode_calls):
    """Every correction round gets the previous round's logits as its mask prompt, and one more click."""
    calls = decode_calls
    evaluate(
        config(
            tmp_path / "eval", adapter=str(env.run), clicks=[1, 3], batch_size=64, **{"data": {"root": str(env.data)}}
        )
    )
    rounds = [c for c in calls if "input_masks" in c[0]]
    assert len(rounds) == 3  # one batch: rounds 1..3
    for r in range(1, len(rounds)):  # (the first prediction is the engine's own decode, not recorded)
        prompts, previous = rounds[r][0], rounds[r - 1][1]
        torch.testing.assert_close(prompts["input_masks"], previous.low_res[:, :, 0])
        assert prompts["input_points"].shape[2] == rounds[r - 1][0]["input_points"].shape[2] + 1


def test_compare_runs_both_on_the_same_prompts_and_prints_the_difference(env, tmp_path, capsys):
    summary = evaluate(
        config(tmp_path / "eval", adapter=str(env.run), compare="none", **{"data": {"root": str(env.data)}})
    )
    printed = capsys.readouterr().out
    assert "difference" in printed and "zero-shot tiny" in printed
    other = summary["compare"]
    delta = other["difference"]["liver"]["dice"]
    assert delta == pytest.approx(
        summary["classes"]["liver"]["dice"]["mean"] - other["classes"]["liver"]["dice"]["mean"]
    )
    assert f"{delta:+.4f}" in printed
    rows = read_rows(tmp_path / "eval" / "cases.csv")
    assert [r["run"] for r in rows] == ["adapter", "compare"] and rows[0]["case"] == rows[1]["case"]
    assert rows[0]["gt_voxels"] == rows[1]["gt_voxels"]


def other_classes(run: Path, folder: Path) -> Path:
    """A copy of ``run``'s adapter recorded as trained on another card, whose only target is ``lesion``."""
    adapter = Path(shutil.copytree(run / "adapter", folder))
    record = json.loads((adapter / "sam2_adapt.json").read_text())
    record.update(data_card="lesions", label_map={"background": 0, "lesion": 1}, targets=["lesion"])
    (adapter / "sam2_adapt.json").write_text(json.dumps(record))
    return adapter


def scans_card(folder: Path) -> Path:
    """A user's 2D card of grey PNG scans (``dims: 2``) whose target is the adapter's ``liver``."""
    root = load_user_folders().write_ultrasound_folder(folder / "scans", num_cases=3, shape=(40, 48))
    card = folder / "scans.yaml"
    card.write_text(
        f"name: scans\ntitle: scans\nmodality: US\ndims: 2\nlicense: CC0-1.0\ncitation: none\n"
        f"source: {{kind: folder, root: {root}, images: 'images/*.png', labels: 'masks/{{name}}'}}\n"
        "labels: {background: 0, liver: 1}\nmask_values: {background: 0, liver: 255}\ntargets: [liver]\n"
        "intensity: {window: [0, 255]}\nsplit: {val: 0.34, seed: 0}\n"
    )
    return card


@pytest.mark.parametrize(
    "values, expected",
    [
        (
            lambda env, tmp: {"model": "tiny_sam3_tracker"},
            r"model=tiny_sam3_tracker: applies to adapter=none \(zero-shot SAM2\); adapter=.* runs on the base model",
        ),
        (lambda env, tmp: {"image_size": 512}, "image_size=512: applies to adapter=none"),
        (
            lambda env, tmp: {"compare": str(other_classes(env.run, tmp / "other"))},
            r"trained on \['lesion'\] of data card 'lesions'.*data card 'ct_phantom' names none of them",
        ),
        (
            lambda env, tmp: {"task": "propagation", "data": {"card": str(scans_card(tmp))}},
            r"data card .*scans.yaml has dims=2: task=propagation follows an object .* use task=segmentation",
        ),
    ],
    ids=["model= with an adapter", "image_size= with an adapter", "compare= of other classes", "propagation on 2D"],
)
def test_options_the_adapter_cannot_take_are_refused_before_a_model_loads(
    env, tmp_path, forbid_model, values, expected
):
    chosen = {"adapter": str(env.run), "data": {"root": str(env.data)}, **values(env, tmp_path)}
    with pytest.raises(ConfigError, match=expected):
        evaluate(config(tmp_path / "eval", **chosen))
    assert not (tmp_path / "eval").exists()


def test_zero_shot_sam2_with_bf16_and_propagation(env, tmp_path):
    data = {"data": {"card": "ct_phantom", "root": str(env.data)}}
    summary = evaluate(config(tmp_path / "zs", adapter="none", model="tiny", precision="bf16", **data))
    assert summary["adapter"] == "zero-shot tiny" and summary["model"]["name"] == "tiny"
    assert 0 <= summary["classes"]["liver"]["dice"]["mean"] <= 1
    memory = evaluate(config(tmp_path / "memory", adapter=str(env.run), task="propagation", **data))
    assert memory["throughput"]["unit"] == "frames/s" and memory["throughput"]["planes"] > 0
    assert memory["protocol"]["propagation"] is True
    [row] = read_rows(tmp_path / "memory" / "cases.csv")
    j, f = float(row["j"]), float(row["f"])
    assert 0 <= j <= 1 and 0 <= f <= 1 and float(row["j_and_f"]) == pytest.approx((j + f) / 2)
    assert memory["classes"]["liver"]["j_and_f"]["count"] == 1


# --- prompt=auto -----------------------------------------------------------------------------------------


def semantic_adapter(path: Path) -> Path:
    return make_semantic_adapter(
        path,
        ["liver"],
        {"background": 0, "liver": 1, "spine": 2},
        {"intensity": {"window": [-160, 240]}, "slice_axis": 2},
        data_card="ct_phantom",
    )


def test_component_boxes_one_per_component_and_class():
    classes = np.zeros((20, 30), np.int64)
    classes[2:5, 3:8] = 1
    classes[10:15, 20:29] = 1
    classes[12, 2] = 1  # below min_area
    classes[15:19, 1:4] = 2
    boxes = component_boxes(classes, min_area=2)
    assert [(c, b.tolist()) for c, b in boxes] == [(1, [3, 2, 7, 4]), (1, [20, 10, 28, 14]), (2, [1, 15, 3, 18])]


def test_auto_prompts_refine_each_coarse_component_without_a_label_file(tmp_path, monkeypatch, box_echo):
    """Coarse masks become boxes; the decoder's answer (here: the box itself) is what is written."""
    from adapt import predict

    adapter = semantic_adapter(tmp_path / "semantic")
    image = np.full((36, 28, 3), -1000, np.int16)
    nib.save(nib.Nifti1Image(image, np.diag([0.8, 0.8, 2.0, 1])), tmp_path / "ct.nii.gz")

    def coarse(model, embeddings):  # class 1 on two blobs of every plane
        logits = torch.zeros(len(embeddings[-1]), 2, 32, 32)
        logits[:, 1, 4:9, 4:10] = logits[:, 1, 20:26, 15:30] = 9.0
        return logits

    seen = []

    def counting(model, embeddings, multimask, input_boxes=None, **prompts):
        seen.append(input_boxes.shape[0])
        return box_echo(model, embeddings, multimask, input_boxes, **prompts)

    monkeypatch.setattr(runner_module, "class_logits", coarse)
    monkeypatch.setattr(runner_module, "decode", counting)
    cfg = OmegaConf.load(CONFIG_DIR / "predict.yaml")
    cfg.merge_with(
        {
            "adapter": str(adapter),
            "input": str(tmp_path / "ct.nii.gz"),
            "output": str(tmp_path / "m.nii.gz"),
            "prompt": "auto",
            "device": "cpu",
        }
    )
    [written] = predict.run(cfg)
    mask = np.asarray(nib.load(written).dataobj)
    assert mask.shape == (36, 28, 3) and set(np.unique(mask)) == {0, 1}
    assert sum(seen) == 2 * 3  # two components on each of three slices, each refined once
    planes = mask.transpose(2, 1, 0)  # the stored grid's slices, rows = j
    assert all((p == planes[0]).all() for p in planes)  # the same answer on every slice
    assert 0.05 < planes[0].mean() < 0.5


def test_predict_auto_refuses_a_promptable_adapter(env, tmp_path):
    from adapt import predict

    nib.save(nib.Nifti1Image(np.zeros((8, 8, 2), np.int16), np.eye(4)), tmp_path / "ct.nii.gz")
    cfg = OmegaConf.load(CONFIG_DIR / "predict.yaml")
    cfg.merge_with(
        {
            "adapter": str(env.run),
            "input": str(tmp_path / "ct.nii.gz"),
            "output": str(tmp_path / "m.nii.gz"),
            "prompt": "auto",
        }
    )
    with pytest.raises(ConfigError, match="prompt=auto needs a semantic adapter"):
        predict.run(cfg)
    assert not (tmp_path / "m.nii.gz").exists()


def test_evaluate_auto_needs_no_ground_truth_for_its_prompts(env, tmp_path, monkeypatch):
    adapter = semantic_adapter(tmp_path / "semantic")
    monkeypatch.setattr(engine_module.Engine, "segment", lambda *a, **k: pytest.fail("auto must not use GT prompts"))
    summary = evaluate(
        config(
            tmp_path / "auto",
            adapter=str(adapter),
            prompt="auto",
            clicks=[1],
            min_area=64,
            **{"data": {"root": str(env.data)}},
        )
    )
    assert summary["protocol"]["prompt"] == "auto" and summary["protocol"]["clicks"] == []
    semantic = evaluate(config(tmp_path / "semantic_eval", adapter=str(adapter), **{"data": {"root": str(env.data)}}))
    assert semantic["protocol"]["prompt"] == "none" and set(semantic["classes"]) == {"liver"}


# --- errors, before any model is loaded ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, error, message",
    [
        ({"adapter": "nowhere/at/all"}, ConfigError, "adapter='nowhere/at/all': no such directory"),
        ({"compare": "nowhere/at/all"}, ConfigError, "compare='nowhere/at/all': no such directory"),  # its own key
        (
            {"adapter": "someone/absent-adapter"},
            ModelNotFoundError,
            "cannot download the adapter someone/absent-adapter",
        ),
        ({"adapter": "none"}, ConfigError, "name it with model="),
        ({"split": "holdout"}, ConfigError, "split='holdout' is not one of"),
        ({"split": "test"}, ConfigError, "split=test holds no case"),
        ({"prompt": "lasso"}, ConfigError, "prompt='lasso' is not one of"),
        ({"prompt": "auto"}, ConfigError, "needs a semantic adapter"),
        ({"adapter": "{tmp}/semantic", "compare": "none"}, ConfigError, "zero-shot tiny is promptable"),
        ({"task": "tracking"}, ConfigError, "task='tracking' is not one of"),
        ({"clicks": "many"}, ConfigError, "clicks="),
        ({"data": {"card": "msd_liver", "root": "{tmp}/nowhere"}}, DataNotFoundError, "data.root="),
        ({"data": {"card": "no_such_card"}}, ConfigError, "not a shipped card"),
        ({"out": None}, ConfigError, "out= is required"),
    ],
)
def test_bad_input_is_refused_before_any_model_loads(env, tmp_path, monkeypatch, values, error, message):
    monkeypatch.setattr(runner, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    values = {"adapter": str(env.run), "data": {"root": str(env.data)}, **values}
    values["data"] = {k: v.replace("{tmp}", str(tmp_path)) for k, v in values["data"].items()}
    if values["adapter"].startswith("{tmp}"):  # a semantic adapter: prompt=none by default
        values["adapter"] = str(semantic_adapter(tmp_path / "semantic"))
    if values["data"].get("card") is None and values["adapter"] == "none":
        values["data"]["card"] = "ct_phantom"
    with pytest.raises(error, match=message):
        evaluate(
            config(tmp_path / "eval", **values)
            if values.get("out", 1) is not None
            else OmegaConf.merge(config(tmp_path, **{k: v for k, v in values.items() if k != "out"}), {"out": None})
        )


def test_existing_output_is_kept_unless_overwrite(env, tmp_path):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "cases.csv").write_text("mine")
    with pytest.raises(ConfigError, match="overwrite=true"):
        evaluate(config(out, adapter=str(env.run), **{"data": {"root": str(env.data)}}))
    assert (out / "cases.csv").read_text() == "mine"


@pytest.mark.slow
def test_cli_prints_the_table_and_user_errors_without_traceback(env, tmp_path):
    envvars = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONWARNINGS": "ignore",
        "SAM2_ADAPT_DATA": str(env.base / "cache"),
    }
    command = [sys.executable, "-m", "adapt.evaluate", f"adapter={env.run}", f"data.root={env.data}", "clicks=[1]"]
    result = subprocess.run(
        [*command, f"out={tmp_path / 'eval'}"], env=envvars, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sam2-adapt evaluation" in result.stdout and "dice @ 1 clicks" in result.stdout
    assert (tmp_path / "eval" / "summary.json").exists() and (tmp_path / "eval" / "cases.csv").exists()
    again = subprocess.run(
        [*command, f"out={tmp_path / 'eval'}"], env=envvars, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 2 and "Traceback" not in again.stderr and "overwrite=true" in again.stderr
