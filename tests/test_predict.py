"""Prediction on files: masks in the input's format and geometry, prompt mapping, refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch
from omegaconf import OmegaConf
from PIL import Image
from conftest import load_user_folders, read_mask

from adapt import predict
from adapt.adapters import apply_adapter
from adapt.adapters.io import save_adapter
from adapt.conf import CONFIG_DIR
from adapt.data.synthetic import phantom_affine, write_ct_phantoms
from adapt.errors import ConfigError, DataError
from adapt.inference import runner as inference
from adapt.inference.io import to_training_grid
from adapt.inference.prompt_syntax import parse_prompt, quote_argv
from adapt.models.primitives import Prediction
from adapt.models.sam2 import load_sam2
from adapt.transforms.prompts import box_from_mask

GEO_TAGS = [
    (33550, 12, 3, (0.5, 0.5, 0.0), True),
    (33922, 12, 6, (0.0, 0.0, 0.0, 500000.0, 4000000.0, 0.0), True),
    (34735, 3, 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633), True),
    (34737, 2, 0, "WGS 84 / UTM zone 33N|", True),
]


def decoder_adapter(out: Path, **metadata) -> Path:
    """A tiny decoder adapter that records a CT window, a one-class label map and ``metadata``."""
    model, info = load_sam2("tiny")
    spec = {"kind": "decoder", "modules": ["mask_decoder"]}
    metadata = {
        "base_model": {"name": "tiny", "revision": None},
        "model": info.to_dict(),
        "preprocessing": {"window": [-100, 240]},
        "label_map": {"background": 0, "liver": 6},
        **metadata,
    }
    save_adapter(apply_adapter(model, spec), spec, out, metadata)
    return out


folders = load_user_folders()


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    return decoder_adapter(tmp_path_factory.mktemp("adapter"))


@pytest.fixture
def box_echo(monkeypatch):
    """Replace SAM2 by a model whose mask is exactly its box prompt (in the model's grid).

    What comes out then shows where the prompt landed, so the pixel -> model -> pixel mapping
    and each format's orientation are checked exactly, independent of random weights.
    """

    def decode(model, embeddings, multimask, input_boxes=None, **prompts):
        size = model.config.prompt_encoder_config.image_size
        low = size // 4
        x0, y0, x1, y1 = ((input_boxes[0, 0] + 0.5) * low / size - 0.5).tolist()
        ys, xs = torch.meshgrid(torch.arange(low), torch.arange(low), indexing="ij")
        inside = (xs >= round(x0)) & (xs <= round(x1)) & (ys >= round(y0)) & (ys <= round(y1))
        logits = torch.where(inside, 10.0, -10.0)
        return Prediction(logits.view(1, 1, 1, low, low), torch.ones(1, 1, 1))

    monkeypatch.setattr(inference, "decode", decode)
    monkeypatch.setattr(inference, "image_embeddings", lambda model, pixels: None)


def config(adapter: Path, input: Path, output: Path, prompt: str, **extra):
    cfg = OmegaConf.load(CONFIG_DIR / "predict.yaml")
    cfg.merge_with({"adapter": str(adapter), "input": str(input), "output": str(output), "prompt": prompt, **extra})
    return cfg


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_png_in_png_mask_of_same_size(adapter, tmp_path):
    image = (np.random.default_rng(0).random((90, 140, 3)) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "tile.png")
    [out] = predict.run(config(adapter, tmp_path / "tile.png", tmp_path / "mask.png", "box 20,10,100,60"))
    mask = np.asarray(Image.open(out))
    assert mask.shape == (90, 140) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 6}  # the adapter's only foreground label


def test_prompt_lands_where_given_and_mask_comes_back_there(adapter, tmp_path, box_echo):
    Image.fromarray(np.zeros((64, 256), np.uint8)).save(tmp_path / "wide.png")  # non-square: x and y scale apart
    [out] = predict.run(config(adapter, tmp_path / "wide.png", tmp_path / "m.png", "box 40,8,199,39"))
    truth = np.zeros((64, 256), bool)
    truth[8:40, 40:200] = True
    assert iou(np.asarray(Image.open(out)) > 0, truth) > 0.9


def test_nifti_mask_keeps_shape_affine_and_spacing(adapter, tmp_path):
    case = write_ct_phantoms(tmp_path / "ct", num_cases=1, shape=(64, 64, 12))[0]
    source = nib.load(tmp_path / "ct" / case["image"])
    out = tmp_path / "pred" / "mask.nii.gz"
    predict.run(config(adapter, tmp_path / "ct" / case["image"], out, "box 10,20,40,50 slice=6"))
    mask = nib.load(out)
    assert mask.shape == source.shape == (64, 64, 12)
    np.testing.assert_array_equal(mask.affine, source.affine)
    assert mask.header.get_zooms() == source.header.get_zooms() == (0.9, 0.9, 3.0)
    assert int(mask.header["sform_code"]) == int(source.header["sform_code"])
    assert mask.get_data_dtype() == np.uint8
    data = np.asarray(mask.dataobj)
    assert set(np.unique(data)) <= {0, 6}  # the adapter's target value (random weights: any shape)


@pytest.mark.parametrize("shape", [(40, 36), (40, 36, 1)])
def test_a_one_slice_nifti_is_prompted_without_a_slice(adapter, tmp_path, box_echo, shape):
    """A 2D NIfTI (CAMUS' frames, either shape) is a volume of one slice: ``box x0,y0,x1,y1`` prompts it, as
    ``slice=0`` does, and the box comes back where it was given."""
    nib.save(nib.Nifti1Image(np.zeros(shape, np.int16), np.diag([0.3, 0.3, 1.0, 1.0])), tmp_path / "frame.nii.gz")
    masks = [
        predict.run(config(adapter, tmp_path / "frame.nii.gz", tmp_path / f"m{n}.nii.gz", prompt, propagation="boxes"))[
            0
        ]
        for n, prompt in enumerate(["box 4,6,20,30", "box 4,6,20,30 slice=0"])
    ]
    first, second = (np.asarray(nib.load(m).dataobj).reshape(40, 36) > 0 for m in masks)
    np.testing.assert_array_equal(first, second)
    box = np.zeros((40, 36), bool)
    box[4:21, 6:31] = True  # x = first voxel index, y = second
    assert iou(first, box) > 0.8


def test_nifti_from_mask_gives_a_box_per_slice_in_the_right_orientation(adapter, tmp_path, box_echo):
    case = write_ct_phantoms(tmp_path / "ct", num_cases=1)[0]
    label = np.asarray(nib.load(tmp_path / "ct" / case["label"]).dataobj) == 1
    out = tmp_path / "mask.nii"
    predict.run(
        config(adapter, tmp_path / "ct" / case["image"], out, f"from_mask={tmp_path / 'ct' / case['label']} label=1")
    )
    mask = np.asarray(nib.load(out).dataobj) > 0
    covered = label.any(axis=(0, 1))
    np.testing.assert_array_equal(mask.any(axis=(0, 1)), covered)  # nothing where the guide is empty
    for k in np.flatnonzero(covered):  # within the low-res grid's quantisation (3 voxels here)
        np.testing.assert_allclose(
            box_from_mask(mask[..., k]), box_from_mask(label[..., k]), atol=4, err_msg=f"slice {k}"
        )


@pytest.fixture(scope="module")
def resampling_adapter(tmp_path_factory):
    """The tiny decoder adapter of a card that resamples to 1.5 mm in-plane (slices kept)."""
    out = tmp_path_factory.mktemp("resampling-adapter")
    model, info = load_sam2("tiny")
    spec = {"kind": "decoder", "modules": ["mask_decoder"]}
    metadata = {
        "base_model": {"name": "tiny", "revision": None},
        "model": info.to_dict(),
        "preprocessing": {"window": [-100, 240], "spacing": [1.5, 1.5, None], "slice_axis": 2},
        "label_map": {"background": 0, "liver": 6},
    }
    save_adapter(apply_adapter(model, spec), spec, out, metadata)
    return out


def test_an_adapter_with_spacing_predicts_on_its_grid_and_writes_on_the_files(
    resampling_adapter, tmp_path, box_echo, monkeypatch
):
    case = write_ct_phantoms(tmp_path / "ct", num_cases=1, shape=(64, 64, 9))[0]  # 0.9 mm in-plane, flipped
    source = nib.load(tmp_path / "ct" / case["image"])
    seen = []
    real_embed = inference.Predictor.embed
    monkeypatch.setattr(
        inference.Predictor, "embed", lambda self, images: seen.append(images.shape) or real_embed(self, images)
    )
    out = tmp_path / "mask.nii.gz"
    predict.run(
        config(resampling_adapter, tmp_path / "ct" / case["image"], out, "box 10,20,30,40 slice=4", propagation="boxes")
    )
    side = int(np.ceil(64 * 0.9 / 1.5))  # the adapter's grid: MONAI's Spacing covers the field of view
    assert {tuple(shape[-2:]) for shape in seen} == {(side, side)}
    mask = nib.load(out)
    assert mask.shape == source.shape and np.array_equal(mask.affine, source.affine)
    box = np.zeros((64, 64), bool)
    box[10:31, 20:41] = True  # the prompt, in the file's own voxels
    assert iou(np.asarray(mask.dataobj)[..., 4] > 0, box) > 0.75  # within the 1.5 mm grid's quantisation


def test_volume_prompt_is_read_in_the_stored_grid_and_chained_through_slices(adapter, tmp_path, box_echo):
    case = write_ct_phantoms(tmp_path / "ct", num_cases=1, shape=(64, 64, 9))[0]  # x and y stored flipped
    out = tmp_path / "mask.nii.gz"
    predict.run(config(adapter, tmp_path / "ct" / case["image"], out, "box 10,20,30,40 slice=4", propagation="boxes"))
    mask = np.asarray(nib.load(out).dataobj) > 0
    box = np.zeros((64, 64), bool)
    box[10:31, 20:41] = True  # x = first voxel index, y = second
    assert iou(mask[..., 4], box) > 0.8
    assert mask.any(axis=(0, 1)).all()  # the box echo never empties, so every slice is reached
    assert iou(mask[..., 0], mask[..., 4]) > 0.8


@pytest.mark.parametrize(
    "affine",
    [
        phantom_affine(),  # flipped in-plane axes
        np.array([[0, 0, 2.0, 5], [-1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 1]]),  # permuted and flipped
    ],
)
def test_volume_view_maps_stored_voxels_to_training_planes_and_back(affine):
    volume = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    stack, view = to_training_grid(volume[None], affine, slice_axis=2)
    stack = stack[:, 0]
    canonical = np.asarray(nib.as_closest_canonical(nib.Nifti1Image(volume, affine)).dataobj)
    np.testing.assert_array_equal(stack[3], canonical[:, :, 3].T)  # exactly the data layer's planes
    np.testing.assert_array_equal(view.to_volume(stack), volume)
    width, height, depth = view.extent()
    a_x, a_y = view.stored_plane_axes
    for x, y, k in [(0, 0, 0), (width - 1, 1, depth - 1), (2, height - 1, 1)]:
        stored = [0, 0, 0]
        stored[a_x], stored[a_y], stored[view.stored_slice_axis] = x, y, k
        vx, vy, z = view.to_view(x, y, k)
        assert stack[z, int(vy), int(vx)] == volume[tuple(stored)]


def test_volume_prompt_propagates_with_sam2_memory(adapter, tmp_path):
    case = write_ct_phantoms(tmp_path / "ct", num_cases=1, shape=(64, 64, 6))[0]
    source = nib.load(tmp_path / "ct" / case["image"])
    out = tmp_path / "mask.nii.gz"
    predict.run(config(adapter, tmp_path / "ct" / case["image"], out, "box 10,20,40,50 slice=3", propagation="memory"))
    mask = nib.load(out)
    assert mask.shape == source.shape and np.array_equal(mask.affine, source.affine)
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 6}


def test_geotiff_mask_keeps_crs_and_transform(adapter, tmp_path):
    bands = (np.random.default_rng(0).random((3, 64, 80)) * 4000).astype(np.uint16)
    tifffile.imwrite(
        tmp_path / "scene.tif", bands, photometric="minisblack", planarconfig="separate", extratags=GEO_TAGS
    )
    [out] = predict.run(config(adapter, tmp_path / "scene.tif", tmp_path / "scene_mask.tif", "point 40,30"))
    with tifffile.TiffFile(tmp_path / "scene.tif") as src, tifffile.TiffFile(out) as dst:
        assert dst.pages[0].shape == (64, 80)
        geo = dst.pages[0].geotiff_tags
        assert geo == src.pages[0].geotiff_tags
        assert geo["ProjectedCSTypeGeoKey"] == 32633 and geo["ModelPixelScale"] == [0.5, 0.5, 0.0]
        assert geo["ModelTiepoint"][3:5] == [500000.0, 4000000.0]


def test_dicom_series_mask_keeps_slice_geometry(adapter, tmp_path, box_echo):
    import pydicom

    stored = np.stack([np.full((32, 48), 1000 + k, np.int16) for k in range(4)], axis=-1)
    names = [f"{9 - k}.dcm" for k in range(4)]  # files named against the slice order: sorting must use positions
    series = folders.write_dicom_series(
        tmp_path / "series", stored, spacing=(0.7, 0.7, 2.5), origin=(0.0, 0.0, 0.0), names=names, signed=True
    )
    uid = pydicom.dcmread(series / names[0]).SeriesInstanceUID
    predict.run(config(adapter, series, tmp_path / "mask_series", "box 5,5,30,20 slice=1", propagation="boxes"))
    out = [pydicom.dcmread(f) for f in sorted((tmp_path / "mask_series").iterdir())]
    assert [float(d.ImagePositionPatient[2]) for d in out] == [0.0, 2.5, 5.0, 7.5]
    assert len({d.SeriesInstanceUID for d in out}) == 1 and out[0].SeriesInstanceUID != uid
    assert all(d.pixel_array.shape == (32, 48) and list(d.PixelSpacing) == [0.7, 0.7] for d in out)
    box = np.zeros((32, 48), bool)
    box[5:21, 5:31] = True  # x = column, y = row of the DICOM plane
    assert iou(out[1].pixel_array == 6, box) > 0.8


def test_folder_to_folder_and_refusing_to_overwrite(adapter, tmp_path):
    (tmp_path / "in").mkdir()
    for i, suffix in enumerate(("png", "jpg")):
        Image.fromarray(np.full((40, 50), 60 * i, np.uint8)).save(tmp_path / "in" / f"tile{i}.{suffix}")
    written = predict.run(config(adapter, tmp_path / "in", tmp_path / "out", "box 5,5,30,30"))
    assert [p.name for p in written] == ["tile0.png", "tile1.png"]  # JPEG masks are lossless PNGs
    with pytest.raises(ConfigError, match=r"output exists: .*tile0.png.*overwrite=true"):
        predict.run(config(adapter, tmp_path / "in", tmp_path / "out", "box 5,5,30,30"))
    assert predict.run(config(adapter, tmp_path / "in", tmp_path / "out", "box 5,5,30,30", overwrite=True)) == written
    with pytest.raises(ConfigError, match="must be a folder"):
        predict.run(config(adapter, tmp_path / "in", tmp_path / "one.png", "box 5,5,30,30"))


def write_inputs(folder: Path, kind: str) -> Path:
    """One input of ``kind`` in ``folder`` (a fault of the table below); returns what ``input=`` names."""
    folder.mkdir()
    grey = np.zeros((40, 50), np.uint8)
    if kind == "png+jpg":  # two files whose masks share a name
        Image.fromarray(grey).save(folder / "a.png")
        Image.fromarray(grey).save(folder / "a.jpg")
        return folder
    if kind == "4-band tif":
        tifffile.imwrite(folder / "tile.tif", np.zeros((4, 40, 50), np.uint16))
        return folder / "tile.tif"
    if kind == "2-channel nifti":
        nib.save(nib.Nifti1Image(np.zeros((40, 50, 6, 2), np.int16), np.eye(4)), folder / "ct.nii.gz")
        return folder / "ct.nii.gz"
    if kind == "nifti":
        nib.save(nib.Nifti1Image(np.zeros((40, 50, 6), np.int16), np.eye(4)), folder / "ct.nii.gz")
        return folder / "ct.nii.gz"
    Image.fromarray(grey).save(folder / "a.png")
    return folder / "a.png"


#: Faults of inputs and outputs refused before the model loads: (input kind, output (``=``: the input itself),
#: prompt, extra options, error, what the message must name).
IO_FAULTS = {
    "two inputs, one mask name": ("png+jpg", "masks", "box 1,1,9,9", {}, ConfigError, ["a.jpg", "a.png", "rename"]),
    "output is the input, overwrite=true": (
        "png",
        "=",
        "box 1,1,9,9",
        {"overwrite": True},
        ConfigError,
        ["replace the input", "a.png"],
    ),
    "4 bands to a 1-channel adapter": (
        "4-band tif",
        "m.tif",
        "box 1,1,9,9",
        {},
        DataError,
        ["tile.tif", "4 channel(s)", "trained on images of 1", "preprocessing.channels", "adapter trained on"],
    ),
    "2 channels to a 1-channel adapter": (
        "2-channel nifti",
        "m.nii.gz",
        "box 1,1,9,9 slice=2",
        {},
        DataError,
        ["ct.nii.gz", "2 channel(s)", "trained on images of 1", "preprocessing.channels"],
    ),
    "box outside the picture": ("png", "m.png", "box 10,10,60,30", {}, ConfigError, ["a.png", "60", "50"]),
    "slice past the volume": ("nifti", "m.nii.gz", "box 1,1,9,9 slice=6", {}, ConfigError, ["slice=6", "0..5"]),
    "no slice for a volume": ("nifti", "m.nii.gz", "box 1,1,9,9", {}, ConfigError, ["ct.nii.gz", "add slice=K"]),
    "a slice for a picture": ("png", "m.png", "box 1,1,9,9 slice=3", {}, ConfigError, ["a.png", "2D image"]),
}


@pytest.fixture(scope="module")
def grey_adapter(tmp_path_factory):
    """A decoder adapter recorded as trained on 1-channel images (as every trained adapter records them)."""
    return decoder_adapter(tmp_path_factory.mktemp("grey"), preprocessing={"window": [-100, 240], "channels": 1})


@pytest.mark.parametrize("kind, output, prompt, extra, error, names", IO_FAULTS.values(), ids=list(IO_FAULTS))
def test_input_and_output_faults_are_refused_before_the_model_loads(
    grey_adapter, tmp_path, monkeypatch, kind, output, prompt, extra, error, names
):
    from conftest import forbid_model_loads

    source = write_inputs(tmp_path / "in", kind)
    target = source if output == "=" else tmp_path / output
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    forbid_model_loads(monkeypatch)
    with pytest.raises(error) as refused:
        predict.run(config(grey_adapter, source, target, prompt, **extra))
    assert all(name in str(refused.value) for name in names), str(refused.value)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing written or changed


def test_a_grey_or_colour_picture_fits_a_1_channel_adapter(grey_adapter, tmp_path):
    """The fixed channel map makes the same picture of a grey file and of its RGB copy: neither is refused."""
    grey = (np.arange(40 * 50).reshape(40, 50) % 200).astype(np.uint8)
    Image.fromarray(grey).convert("RGB").save(tmp_path / "rgb.png")
    Image.fromarray(grey).save(tmp_path / "grey.png")
    masks = [
        predict.run(config(grey_adapter, tmp_path / f"{n}.png", tmp_path / f"m_{n}.png", "box 5,5,30,30"))[0]
        for n in ("grey", "rgb")
    ]
    assert np.array_equal(read_mask(masks[0]), read_mask(masks[1]))


def test_an_adapter_recording_no_slice_axis_reads_a_picture(tmp_path):
    """A 2D adapter's ``sam2_adapt.json`` may hold ``slice_axis: null`` (written by hand or by another tool)."""
    adapter = decoder_adapter(tmp_path / "flat", preprocessing={"window": [0, 255], "slice_axis": None})
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(tmp_path / "a.png")
    [out] = predict.run(config(adapter, tmp_path / "a.png", tmp_path / "m.png", "box 5,5,30,30"))
    assert read_mask(out).shape == (40, 50)


@pytest.mark.parametrize(
    "name, mode, channels",
    [
        ("l.png", "L", 1),
        ("rgb.png", "RGB", 3),
        ("rgba.png", "RGBA", 3),
        ("p.png", "P", 3),
        ("la.png", "LA", 1),
        ("i16.png", "I;16", 1),
    ],
)
def test_header_channels_of_a_picture_are_those_it_is_read_with(tmp_path, name, mode, channels):
    from adapt.data.formats import header_channels, read_raster

    Image.new(mode, (7, 5)).save(tmp_path / name)
    assert header_channels(tmp_path / name) == channels == read_raster(tmp_path / name, as_image=True).array.shape[0]


@pytest.mark.parametrize(
    "shape, axes", [((5, 7), None), ((4, 5, 7), None), ((5, 7, 3), "rgb"), ((5, 7, 6), "interleaved")]
)
def test_header_channels_of_a_tiff_are_those_it_is_read_with(tmp_path, shape, axes):
    from adapt.data.formats import header_channels, read_raster

    kwargs = (
        {"photometric": "rgb"}
        if axes == "rgb"
        else {"planarconfig": "contig", "photometric": "minisblack"}
        if axes
        else {}
    )
    tifffile.imwrite(tmp_path / "t.tif", np.zeros(shape, np.uint16), **kwargs)
    assert header_channels(tmp_path / "t.tif") == read_raster(tmp_path / "t.tif", as_image=True).array.shape[0]


@pytest.mark.parametrize(
    "prompt, message",
    [
        ("box 10,20,60", "expected 4 numbers"),
        ("circle 1,2", "'circle' is not a prompt kind"),
        ("box 60,20,10,80", "x0 <= x1"),
        ("point 1,2 label=2", "label is 1 .object. or 0"),
        ("box 1,2,3,4 slice=1; point 2,2 slice=2", "different slices"),
        ("from_mask=m.png; box 1,2,3,4", "cannot be combined"),
        ("box 1,2,3,4 size=3", "unknown option 'size'"),
    ],
)
def test_bad_prompt_syntax_is_named(prompt, message):
    with pytest.raises(ConfigError, match=message) as err:
        parse_prompt(prompt)
    assert "Syntax:" in str(err.value) or "slices" in str(err.value)


def test_semantic_adapter_needs_no_prompt_and_writes_label_values(tmp_path, monkeypatch):
    from tiny_adapters import make_semantic_adapter

    make_semantic_adapter(tmp_path / "semantic", ["liver", "spine"], {"background": 0, "liver": 3, "spine": 7}, {})
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(tmp_path / "a.png")
    [out] = predict.run(config(tmp_path / "semantic", tmp_path / "a.png", tmp_path / "m.png", None))
    assert np.asarray(Image.open(out)).shape == (40, 50) and set(np.unique(np.asarray(Image.open(out)))) <= {0, 3, 7}

    def halves(model, embeddings):  # class 2 ("spine") wins on the left half, class 1 on the right
        logits = torch.zeros(1, 3, 32, 32)
        logits[0, 2, :, :16], logits[0, 1, :, 16:] = 5.0, 5.0
        return logits

    monkeypatch.setattr(inference, "class_logits", halves)
    [out] = predict.run(config(tmp_path / "semantic", tmp_path / "a.png", tmp_path / "m.png", None, overwrite=True))
    mask = np.asarray(Image.open(out))
    assert (mask[:, :24] == 7).all() and (mask[:, 26:] == 3).all()


def test_promptable_adapter_needs_a_prompt(adapter, tmp_path):
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(ConfigError, match="prompt= is required"):
        predict.run(config(adapter, tmp_path / "a.png", tmp_path / "m.png", None))


def test_prompt_errors_that_need_the_image(adapter, tmp_path):
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(ConfigError, match="outside .*a.png, 50x40"):
        predict.run(config(adapter, tmp_path / "a.png", tmp_path / "m.png", "box 10,10,60,20"))
    case = write_ct_phantoms(tmp_path / "ct", num_cases=1, shape=(32, 32, 4))[0]
    with pytest.raises(ConfigError, match="add slice=K"):
        predict.run(config(adapter, tmp_path / "ct" / case["image"], tmp_path / "m.nii.gz", "box 1,2,10,12"))
    with pytest.raises(DataError, match="the from_mask does not lie on its image's grid \\(shapes differ\\)"):
        predict.run(
            config(adapter, tmp_path / "ct" / case["image"], tmp_path / "m.nii.gz", f"from_mask={tmp_path / 'a.png'}")
        )
    with pytest.raises(DataError, match="does not exist"):
        predict.run(config(adapter, tmp_path / "missing.png", tmp_path / "m.png", "point 1,1"))


@pytest.mark.slow  # command lines in subprocesses
def test_cli_quotes_the_prompt_and_writes_the_mask(adapter, tmp_path):
    assert quote_argv(["p", "prompt=box 1,2,3,4 slice=5", "input=a.png"]) == [
        "p",
        "prompt='box 1,2,3,4 slice=5'",
        "input=a.png",
    ]
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(tmp_path / "a b.png")
    cmd = [
        sys.executable,
        "-m",
        "adapt.predict",
        f"adapter={adapter}",
        f"input={tmp_path / 'a b.png'}",
        f"output={tmp_path / 'mask.png'}",
        "prompt=box 10,10,30,30",
    ]
    done = subprocess.run(
        cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert done.returncode == 0, done.stderr
    assert np.asarray(Image.open(tmp_path / "mask.png")).shape == (40, 50)


def test_cli_prints_user_errors_without_traceback(adapter, tmp_path, monkeypatch, capsys):
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "mask.png").write_bytes(b"taken")
    argv = [
        "predict",
        f"adapter={adapter}",
        f"input={tmp_path / 'a.png'}",
        f"output={tmp_path / 'mask.png'}",
        "prompt=point 3,4",
    ]
    monkeypatch.setattr(sys, "argv", quote_argv(argv))
    with pytest.raises(SystemExit) as exit_:
        predict.main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "ConfigError: output exists" in err and "overwrite=true" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def binary_255_adapter(tmp_path_factory):
    """The ``adapter`` fixture's model, recorded as trained on a card whose label files store ``liver`` as 255."""
    return decoder_adapter(tmp_path_factory.mktemp("adapter255"), mask_values={"background": 0, "liver": 255})


def _png(folder: Path) -> tuple[Path, str]:
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(folder / "scan.png")
    return folder / "scan.png", "box 10,8,40,30"


def _nifti(folder: Path) -> tuple[Path, str]:
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 3), np.int16), np.diag([0.8, 0.8, 2.0, 1])), folder / "scan.nii.gz")
    return folder / "scan.nii.gz", "box 6,6,20,20 slice=1"


@pytest.mark.parametrize(
    "write, output, choice, written",
    [
        (_png, "mask.png", "card", {0, 255}),  # a 0/255 card's PNG mask is 0/255, not a black 0/1 picture
        (_png, "mask.png", "ids", {0, 6}),  # mask_values=ids: the label id as it is
        (_nifti, "mask.nii.gz", "card", {0, 255}),  # NIfTI keeps the card's values
        (_nifti, "mask.nii.gz", "ids", {0, 6}),
    ],
)
def test_masks_are_written_in_the_cards_encoding_unless_ids_are_asked(
    binary_255_adapter, tmp_path, box_echo, write, output, choice, written
):
    source, prompt = write(tmp_path)
    [out] = predict.run(config(binary_255_adapter, source, tmp_path / output, prompt, mask_values=choice))
    assert set(np.unique(read_mask(out)).tolist()) == written


def test_the_app_saves_masks_in_the_cards_encoding(binary_255_adapter, tmp_path, box_echo):
    from adapt.app.session import Session
    from adapt.inference.onnx_backend import load_predictor

    source, prompt = _png(tmp_path)
    for choice, written in (("card", {0, 255}), ("ids", {0, 6})):
        session = Session(load_predictor(binary_255_adapter), tmp_path / choice, mask_values=choice)
        session.open([source])
        session.segment(prompt)
        assert set(np.unique(read_mask(session.save())).tolist()) == written


def test_an_unknown_mask_values_choice_is_refused_before_the_model_loads(binary_255_adapter, tmp_path):
    source, prompt = _png(tmp_path)
    with pytest.raises(ConfigError, match="mask_values"):
        predict.run(config(binary_255_adapter, source, tmp_path / "m.png", prompt, mask_values="255"))
