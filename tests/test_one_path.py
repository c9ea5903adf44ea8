"""One path for pixels: a case reaches the model identically through training and inference.

The same case is read by the training data module (card -> cached volume -> slice -> resize, the
resize done by the loader or, with ``data.device_transforms``, on the device after the batch is
transferred) and by the reader ``adapt.predict`` and ``adapt.evaluate`` use (``read_scan`` -> ``to_unit`` ->
the runner), and the tensors the model receives are compared for equality: the normalised
pixels, the image embeddings and the box on the model's grid. The cases cover what made the
routes differ before: an oblique NIfTI with anisotropic voxels and a card that resamples
(2- and 3-value spacing, ``null`` keeping the slice axis), 2D photos larger and smaller than
the model's side (resize direction), and a 4-band GeoTIFF with a band selection; and all four bands
through a learned input projection at its initial value (``adapt.models.channels``), which the
runner applies and which must give the fixed channel map's tensors and embeddings exactly.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from conftest import load_fake_data

from adapt.data.cards import load_card
from adapt.data.datamodule import build_datamodule
from adapt.data.encoding import LabelEncoding
from adapt.data.sources import data_root, list_cases
from adapt.evaluation.case import label_stack
from adapt.adapters.loading import LoadedAdapter
from adapt.inference.io import read_scan, to_unit
from adapt.inference.runner import Predictor
from adapt.models.channels import add_input_projection, input_projection
from adapt.models.primitives import image_embeddings, preprocess, to_model_coords
from adapt.models.sam2 import load_sam2
from adapt.transforms.prompts import box_from_mask

SIZE = 64


def rotation(degrees: float) -> np.ndarray:
    """A rotation about the second world axis: an oblique scanner frame."""
    a = np.deg2rad(degrees)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def oblique_nifti_card(tmp_path: Path, spacing) -> Path:
    """Two CT-like cases on an oblique, flipped, anisotropic grid, and an MSD card for them."""
    affine = np.eye(4)
    affine[:3, :3] = rotation(12) @ np.diag([-0.8, 0.6, 2.5])
    affine[:3, 3] = (40.0, -20.0, 7.0)
    rng = np.random.default_rng(0)
    root = tmp_path / "oblique"
    names = []
    for n in range(3):
        ii, jj, kk = np.mgrid[:40, :52, :9]
        label = (((ii - 20 - n) / 9) ** 2 + ((jj - 25) / 12) ** 2 + ((kk - 4) / 3.5) ** 2 <= 1).astype(np.uint8)
        image = (label * 180 - 60 + rng.normal(0, 25, label.shape)).astype(np.int16)
        for folder, array in (("imagesTr", image), ("labelsTr", label)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(array, affine), root / folder / f"c{n}.nii.gz")
        names.append(f"c{n}")
    (root / "dataset.json").write_text(
        json.dumps(
            {"training": [{"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz"} for n in names]}
        )
    )
    card = yaml.safe_load(open("data_cards/ct_phantom.yaml"))
    card.update(
        {
            "name": "oblique",
            "source": {"kind": "msd", "root": str(root)},
            "spacing": spacing,
            "labels": {"background": 0, "liver": 1},
            "targets": ["liver"],
            "split": {"val": 0.34, "seed": 0},
        }
    )
    path = tmp_path / "oblique.yaml"
    path.write_text(yaml.safe_dump(card))
    return path


def fake_card(tmp_path: Path, stem: str) -> tuple[str, Path]:
    root = load_fake_data().write_dataset(stem, tmp_path / stem)
    return stem, root


CASES = {
    "nifti-oblique-spacing-3": lambda tmp: (oblique_nifti_card(tmp, [1.1, 0.9, None]), None),
    "nifti-oblique-spacing-2": lambda tmp: (oblique_nifti_card(tmp, [0.7, 0.7]), None),
    "nifti-oblique-no-spacing": lambda tmp: (oblique_nifti_card(tmp, None), None),
    "jpeg-shrunk": lambda tmp: fake_card(tmp, "kvasir_seg"),  # 48 x 56 photos -> 32 (antialiased)
    "png-enlarged": lambda tmp: fake_card(tmp, "isic2018"),  # -> 64 (upsampled)
    "geotiff-bands": lambda tmp: ("aerial_phantom", None),  # 96 x 96, 4 bands, NIR-R-G
    "ct-phantom": lambda tmp: ("ct_phantom", None),  # HU window, flipped in-plane axes
    "mr-phantom": lambda tmp: ("mr_phantom", None),  # per-channel percentiles
    "geotiff-4-bands-projected": lambda tmp: ("aerial_phantom_bands", None),  # 4 bands -> input projection
}
#: Cases whose model holds an input projection of the card's channels (at its initial value).
PROJECTED = {"geotiff-4-bands-projected": 4}
SIDES = {"jpeg-shrunk": 32}


@pytest.fixture(scope="module")
def tiny_model():
    model, info = load_sam2("tiny", image_size=SIZE)
    return model.eval(), info


@pytest.mark.parametrize("name", list(CASES))
def test_training_and_inference_feed_the_model_the_same_tensors(tmp_path, tiny_model, name):
    card_ref, root = CASES[name](tmp_path)
    size = SIDES.get(name, SIZE)
    card = load_card(str(card_ref))
    data = {
        "card": str(card_ref),
        "root": str(root) if root else None,
        "cache": "none",
        "prompt": {"kind": "box", "jitter": 0.0},
        "val_batch_size": 3,
    }
    model, info = tiny_model
    if name in PROJECTED:  # the runner projects the planes; training's fixed-map tensors must equal them
        model = copy.deepcopy(model)
        add_input_projection(model, PROJECTED[name])
    cases = {case.id: case for case in list_cases(card, data_root(card, str(root) if root else None))}
    encoding = LabelEncoding.of_card(card)  # mask_values and mask_threshold, as training reads labels
    scans = {}
    checked = 0
    # Both loader layouts: planes resized by the loader, and native planes resized on the device
    # (data.device_transforms); a batch is taken as Lightning hands it to the task.
    for device_transforms in (False, True):
        datamodule = build_datamodule({**data, "device_transforms": device_transforms}, image_size=size, seed=0)
        loaded = LoadedAdapter(model, dict(datamodule.preprocessing), dict(card.labels), {}, info, Path("none"))
        predictor = Predictor(loaded, device="cpu")
        predictor.size = size
        spacing = datamodule.preprocessing["spacing"]
        for raw in datamodule.val_dataloader():
            batch = datamodule.on_after_batch_transfer(raw, 0)
            for b, case_id in enumerate(batch["meta"]["case"]):
                case = cases[case_id]
                z = max(int(batch["meta"]["slice"][b]), 0)
                if case_id not in scans:
                    scans[case_id] = (
                        read_scan(case.image, card.slice_axis, spacing),
                        read_scan(case.label, card.slice_axis, spacing, label=True),
                    )
                scan, label = scans[case_id]
                plane = to_unit(scan, datamodule.preprocessing)[z]
                trained = preprocess(batch["image"][b : b + 1], size)
                inferred = preprocess(torch.from_numpy(plane)[None], size, input_projection(model))
                assert trained.shape == inferred.shape == (1, 3, size, size)
                assert torch.equal(trained, inferred), (
                    f"{name}: pixels differ on {case.id} slice {z} ({device_transforms=})"
                )
                mask = label_stack(label, encoding)[z] == int(batch["meta"]["label_id"][b])
                height, width = mask.shape
                prompts = predictor.model_prompts(height, width, boxes=box_from_mask(mask)[None])
                assert torch.equal(prompts["input_boxes"][0], batch["boxes"][b]), f"{name}: box differs on {case.id}"
                np.testing.assert_array_equal(
                    prompts["input_boxes"][0, 0].numpy(),
                    box_from_mask(mask) * np.array([size / width, size / height] * 2, np.float32),
                )
                checked += 1
    assert checked >= 1
    with torch.no_grad():  # the runner's embeddings equal training's on the last sample
        for ours, theirs in zip(predictor.embed(plane[None]), image_embeddings(model, trained)):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_a_resampling_card_trains_on_its_own_grid(tmp_path):
    """The card's spacing is what training sees (not the file's): slices of the resampled grid."""
    path = oblique_nifti_card(tmp_path, [1.1, 0.9, None])
    datamodule = build_datamodule({"card": str(path), "cache": "none"}, image_size=SIZE, seed=0)
    case = datamodule.val_set.store.cases[0]
    scan = read_scan(case.image, 2, [1.1, 0.9, None])
    spacing = np.linalg.norm(scan.view.grid_affine[:3, :3], axis=0)
    np.testing.assert_allclose(spacing[:2], [1.1, 0.9], rtol=1e-6)
    assert scan.shape[0] == 9  # the slice axis keeps its own spacing and count
    assert datamodule.val_set.store[0].image.shape[1:] == scan.view.grid_shape


def test_model_coordinates_are_sams():
    """SAM2 maps a pixel coordinate by ``x * S / W``: the far corner of a 100 x 50 plane lands at S."""
    box = np.array([[0.0, 0.0, 100.0, 50.0]], np.float32)
    np.testing.assert_array_equal(to_model_coords(box, 50, 100, 1024), [[0, 0, 1024, 1024]])
    t = to_model_coords(torch.tensor([[[25.0, 10.0]]]), 50, 100, 512)
    torch.testing.assert_close(t, torch.tensor([[[128.0, 102.4]]]))
