"""``python -m adapt.data init`` drafts cards that train once licence and citation are filled in;
``python -m adapt.data check`` prints, plots and names every planted problem.

Datasets are written by ``tests/data/generate.py`` (``write_layout``: an MSD task folder, Kvasir-SEG's
images/ + masks/, a DICOM series tree with NIfTI labels, GeoTIFF tiles, an nnU-Net v2 dataset) and by the shipped cards'
fake-data writers (ISIC, LoveDA, BTCV layouts).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from adapt.conf import CONFIG_DIR, register_recipes, register_resolvers
from adapt.data.__main__ import main
from adapt.data.cards import load_card
from adapt.data.card_writer import init_card
from adapt.data.check import check_card
from adapt.data.sources import data_root, list_cases
from adapt.errors import ConfigError, DataError
from conftest import TWO_STEPS

register_resolvers()
register_recipes()

LAYOUTS = ("msd", "kvasir", "dicom", "geotiff", "nnunet")


def fill_facts(card: Path) -> None:
    """What a user does after ``init``: licence and citation, nothing else."""
    lines = card.read_text().splitlines()
    facts = {"license:": "license: CC0-1.0", "citation:": "citation: Test data."}
    card.write_text("\n".join(next((v for k, v in facts.items() if line.startswith(k)), line) for line in lines) + "\n")
    assert load_card(card).todo_fields() == []


def predict_config(adapter: Path, image: Path, output: Path, **more):
    """``python -m adapt.predict`` on one image with a box on its object, on the CPU (``more``: other keys)."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(CONFIG_DIR / "predict.yaml")
    cfg.merge_with(
        {
            "adapter": str(adapter),
            "input": str(image),
            "output": str(output),
            "prompt": "box 8,8,46,40",
            "device": "cpu",
        }
    )
    cfg.merge_with(more)
    return cfg


def evaluate_config(adapter: Path, card: Path, out: Path):
    """``python -m adapt.evaluate`` on every case of ``card`` without clicks, every predicted mask kept."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(CONFIG_DIR / "evaluate.yaml")
    cfg.merge_with(
        {
            "adapter": str(adapter),
            "out": str(out),
            "clicks": "off",
            "device": "cpu",
            "split": "all",
            "save_masks": "all",
            "data": {"card": str(card)},
        }
    )
    return cfg


def compose_train(card: Path, out: Path):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[f"data.card={card}", *TWO_STEPS, f"out_dir={out}"])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_init_writes_a_card_that_lists_every_pair(layout, tmp_path, fake_data):
    folder = fake_data.write_layout(layout, tmp_path / "data")
    card_path, found, stats = init_card(folder, tmp_path / "card.yaml")
    card = load_card(card_path)
    assert card.todo_fields() == ["license", "citation"]
    assert len(list_cases(card, data_root(card))) == len(found.pairs) == len(stats) >= 4
    assert not found.unpaired_images and not found.unpaired_labels
    expected = {
        "msd": ("msd", 3, "CT", ["liver", "tumour"]),
        "kvasir": ("folder", 2, "RGB", ["label_1"]),
        "dicom": ("folder", 3, "CT", ["label_1"]),
        "geotiff": ("folder", 2, "multispectral", ["label_1"]),
        "nnunet": ("nnunet", 3, "CT", ["liver", "tumor"]),
    }
    kind, dims, modality, targets = expected[layout]
    assert (card.source["kind"], card.dims, card.modality, card.targets) == (kind, dims, modality, targets)
    text = card_path.read_text()
    if layout in ("msd", "dicom", "nnunet"):  # CT: a window in HU from the voxels inside the labels
        low, high = card.intensity["window"]
        assert -100 < low < high < 200
        assert "HU" in text
    if layout == "dicom":
        assert "DICOM Modality CT" in text and card.source["labels"] == "{parent}/label.nii.gz"
    if layout == "kvasir":  # 0/255 JPEG masks, 8-bit photos
        assert card.source["mask_threshold"] == 128 and card.intensity == {"window": [0, 255]}
        assert card.source["images"] == "images/*.jpg" and card.source["labels"] == "masks/{name}"
    if layout == "geotiff":  # 4 bands: all kept for the input projection, per-tile percentiles; the CRS is named
        assert card.intensity == {"channels": [0, 1, 2, 3], "percentiles": [2, 98]} and "EPSG:32633" in text
        assert "input projection" in text


@pytest.mark.parametrize("sequences", [2, 3])
def test_init_keeps_every_mr_sequence_with_dataset_json_names(tmp_path, fake_data, sequences):
    fake_data.write_msd("mr_phantom", tmp_path / "data", num_cases=4, channels=sequences, hu=False)
    card_path, _, _ = init_card(tmp_path / "data", tmp_path / "card.yaml")
    card = load_card(card_path)
    names = [f"channel{c}" for c in range(sequences)]
    assert card.intensity["channels"] == list(range(sequences)) and card.intensity["channel_names"] == names
    assert ("input projection" in card_path.read_text()) is (sequences == 2)  # 3 channels take the fixed map


@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUTS)
def test_init_card_trains_once_licence_and_citation_are_filled(layout, tmp_path, fake_data):
    from adapt.train import train

    folder = fake_data.write_layout(layout, tmp_path / "data")
    card, _, _ = init_card(folder, tmp_path / "card.yaml")
    with pytest.raises(ConfigError) as refused:
        train(compose_train(card, tmp_path / "refused"))
    assert str(card) in str(refused.value) and "license and citation" in str(refused.value)
    assert not (tmp_path / "refused").exists()
    fill_facts(card)
    metrics, _ = train(compose_train(card, tmp_path / "run"))
    assert metrics["steps"] == 2 and metrics["data"]["card"] == load_card(card).name
    assert 0.0 <= metrics["after"]["val/dice"] <= 1.0


def test_init_recognises_the_shipped_layouts(tmp_path, fake_data):
    """ISIC's ``<id>_segmentation.png``, LoveDA's nested tiles, BTCV's img/label digits, a CSV fallback."""
    cases = {
        "isic2018": (
            "ISIC2018_Task1-2_Training_Input/*.jpg",
            "ISIC2018_Task1_Training_GroundTruth/{stem}_segmentation.png",
        ),
        "loveda": ("*/*/images_png/*.png", "{parent}/../masks_png/{name}"),
        "btcv": ("Training/img/*.nii.gz", "Training/label/label{digits}.nii.gz"),
    }
    for stem, (images, labels) in cases.items():
        folder = fake_data.write_dataset(stem, tmp_path / stem)
        card = load_card(init_card(folder, tmp_path / f"{stem}.yaml")[0])
        assert (card.source["images"], card.source["labels"]) == (images, labels), stem
    # Labels beside their images under other names than the image's: no template, a CSV list.
    mixed = tmp_path / "mixed"
    for i, name in enumerate(["alpha", "beta", "gamma"]):
        image, mask = fake_data.photo_pair(i)
        (mixed / "scans" / f"group{i}").mkdir(parents=True)
        Image.fromarray(image).save(mixed / "scans" / f"group{i}" / f"{name}.png")
        Image.fromarray(mask).save(mixed / "scans" / f"group{i}" / f"{name}_mask.png")
    Image.fromarray(fake_data.photo_pair(9)[0]).save(mixed / "scans" / "extra.png")
    card_path, layout, _ = init_card(mixed, tmp_path / "mixed.yaml")
    card = load_card(card_path)
    assert len(list_cases(card, data_root(card))) == 3 and [p.name for p in layout.unpaired_images] == ["extra.png"]


def test_init_refuses_to_overwrite_and_names_a_folder_without_labels(tmp_path, fake_data):
    folder = fake_data.write_layout("kvasir", tmp_path / "data")
    init_card(folder, tmp_path / "card.yaml")
    with pytest.raises(ConfigError, match="exists"):
        init_card(folder, tmp_path / "card.yaml")
    shutil.rmtree(folder / "masks")
    assert main(["init", str(folder), f"out={tmp_path / 'other.yaml'}"]) == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image or label file under .*empty \\(files read: .*NIfTI"):
        init_card(tmp_path / "empty", tmp_path / "empty.yaml")


def test_init_names_label_folders_of_one_file_per_structure(tmp_path, fake_data):
    """TotalSegmentator keeps ``s0000/ct.nii.gz`` and one file per structure in ``s0000/segmentations/``:
    nothing pairs by name, and the error says to merge a case's files into one label map."""
    for case in ("s0000", "s0001"):
        write_pairs(tmp_path / "data", case + "/ct.png", case + "/segmentations/liver.png", [255], fake_data)
        write_pairs(tmp_path / "data", case + "/ct.png", case + "/segmentations/spleen.png", [255], fake_data)
    with pytest.raises(DataError) as raised:
        init_card(tmp_path / "data", tmp_path / "card.yaml")
    message = str(raised.value)
    assert "segmentations holds 2 label files (liver.png, spleen.png)" in message
    assert "merge a case's files into one label map" in message and not (tmp_path / "card.yaml").exists()


def plant_problems(folder: Path, card_path: Path) -> dict[str, str]:
    """Break an MSD-layout dataset after its card was written: each problem and the file it names."""
    cases = list_cases(load_card(card_path), folder)
    volume = lambda path: nib.load(path)  # noqa: E731
    # an image whose label went missing
    cases[0].label.unlink()
    # a label map without any target
    label = volume(cases[1].label)
    nib.save(nib.Nifti1Image(np.zeros(label.shape, np.uint8), label.affine), cases[1].label)
    # a label value the card does not list
    label = volume(cases[2].label)
    data = np.asarray(label.dataobj).copy()
    data[0, 0, 0] = 9
    nib.save(nib.Nifti1Image(data, label.affine), cases[2].label)
    # another voxel size (both files, so the pair still matches)
    for path in (cases[3].image, cases[3].label):
        image = volume(path)
        affine = image.affine.copy()
        affine[:3, :3] *= 1.5
        nib.save(nib.Nifti1Image(np.asarray(image.dataobj), affine), path)
    # a label file no image uses
    shutil.copy(cases[3].label, folder / "labelsTr" / "orphan.nii.gz")
    return {
        "unpaired image": cases[0].image.name,
        "empty label": cases[1].label.name,
        "label values not in the card": cases[2].label.name,
        "mixed spacing": "cases",
        "unpaired label": "orphan.nii.gz",
    }


def test_check_prints_plots_and_names_each_planted_problem(tmp_path, fake_data, capsys):
    folder = fake_data.write_msd_folder(tmp_path / "data", num_cases=5)  # a fifth, clean case beside the broken ones
    card, _, _ = init_card(folder, tmp_path / "card.yaml")
    clean = check_card(card)
    assert not clean.problems, clean.problems
    planted = plant_problems(folder, card)
    report = check_card(card)
    found = {p.what: p for p in report.problems}
    for what, where in planted.items():
        assert what in found and where in found[what].where, (what, report.problems)
    assert {p.what for p in report.errors} == {"unpaired image", "empty label", "label values not in the card"}
    assert "[9]" in found["label values not in the card"].detail

    figure = tmp_path / "figure.png"
    assert main(["check", f"card={card}", f"out={figure}"]) == 1  # errors: non-zero
    printed = capsys.readouterr().out
    assert figure.stat().st_size > 10_000
    for text in ("cases", "spacing", "label liver = 1 (target)", "intensity channel 0", *planted):
        assert text in printed, text


def test_check_of_a_2d_card_exits_zero_when_clean_and_names_problems_planted_later(tmp_path, fake_data, capsys):
    folder = fake_data.write_layout("geotiff", tmp_path / "data")
    card, _, _ = init_card(folder, tmp_path / "card.yaml")
    assert main(["check", f"card={card}", f"out={tmp_path / 'f.png'}"]) == 0
    printed = capsys.readouterr().out
    assert "no problem found" in printed and "EPSG:32633" in printed
    shutil.copy(folder / "tiles" / "area00.tif", folder / "tiles" / "lonely.tif")  # no mask tile
    tile = np.zeros((64, 64), np.uint8)
    tile[:4] = 7
    fake_data.synthetic.write_geotiff(folder / "masks" / "area01.tif", tile, (500032.0, 5200000.0))  # 7, no target
    found = {(p.what, Path(p.where).name) for p in check_card(card).problems}
    assert {
        ("unpaired image", "lonely.tif"),
        ("label values not in the card", "area01.tif"),
        ("empty label", "area01.tif"),
    } <= found


def test_init_reads_video_frame_folders_as_volumes(tmp_path, fake_data):
    """DAVIS layout: JPEGImages/480p/<video>/00000.jpg and Annotations/480p/<video>/00000.png."""
    for video in ("bear", "car"):
        for t in range(3):
            image, mask = fake_data.photo_pair(t)
            for folder, array, suffix in (("JPEGImages", image, "jpg"), ("Annotations", mask, "png")):
                (tmp_path / "davis" / folder / "480p" / video).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(tmp_path / "davis" / folder / "480p" / video / f"{t:05d}.{suffix}")
    card = load_card(init_card(tmp_path / "davis", tmp_path / "davis.yaml")[0])
    assert (card.dims, card.source["images"], card.source["labels"]) == (
        3,
        "JPEGImages/480p/*",
        "Annotations/480p/{name}",
    )
    assert card.modality == "RGB" and card.intensity == {"window": [0, 255]} and card.targets == ["label_1"]


def write_pairs(root: Path, image: str, label: str, scales: list[int], fake_data) -> list[tuple[Path, Path]]:
    """``len(scales)`` photo/mask pairs at ``image``/``label`` (``{i}`` = case number), mask ``i`` stored as 0/``scales[i]``."""
    pairs = []
    for i, scale in enumerate(scales):
        photo, mask = fake_data.photo_pair(i)
        paths = (root / image.format(i=i), root / label.format(i=i))
        for path, array in zip(paths, (photo, (mask * scale).astype(np.uint8))):
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)
        pairs.append(paths)
    return pairs


@pytest.mark.parametrize(
    "image, label",
    [
        ("images/scan_{i:02d}.png", "masks/scan_{i:02d}.png"),  # an image word in a label folder's file names
        ("images/img_{i:03d}.png", "masks/img_{i:03d}.png"),
        ("Images/image{i}.png", "Masks/image{i}.png"),
        ("scans/scan_{i}.png", "labels/scan_{i}.png"),
        ("train/image/{i}.png", "train/mask/{i}.png"),
        ("data/images/case{i}.png", "data/masks/case{i}_mask.png"),
        ("Input/ISIC_{i:04d}.png", "GroundTruth/ISIC_{i:04d}_segmentation.png"),
        ("photos/p{i}_img.png", "photos/p{i}_seg.png"),  # no role folder: the names decide
        ("case_{i:05d}/imaging.png", "case_{i:05d}/segmentation.png"),  # KiTS: a folder per case, roles as names
        ("train/{i}_sat.jpg", "train/{i}_mask.png"),  # DeepGlobe: satellite tile and its mask side by side
        ("images/{i}.png", "manual/{i}.gif"),  # GIF masks (retina datasets), read by Pillow
        ("training/images/{i}_training.png", "training/1st_manual/{i}_manual1.gif"),  # DRIVE: split word, annotator 1
        (
            "Dataset_BUSI_with_GT/benign/benign ({i}).png",
            "Dataset_BUSI_with_GT/benign/benign ({i})_mask.png",
        ),  # GT folder
        ("CVC-ClinicDB/Original/{i}.tif", "CVC-ClinicDB/Ground Truth/{i}.tif"),  # a space in the label folder
        ("top/top_mosaic_area{i}.png", "gts_for_participants/top_mosaic_area{i}.png"),  # ISPRS: "gts", names alike
        ("RGB-PanSharpen/RGB-PanSharpen_AOI_2_img{i}.png", "masks/mask_AOI_2_img{i}.png"),  # SpaceNet: folder prefix
    ],
)
def test_init_pairs_labels_by_their_folder_before_the_words_of_their_names(tmp_path, fake_data, image, label):
    pairs = write_pairs(tmp_path / "data", image, label, [255] * 3, fake_data)
    card_path, layout, _ = init_card(tmp_path / "data", tmp_path / "card.yaml")
    assert sorted(layout.pairs) == sorted(pairs)
    assert layout.unpaired_images == [] and layout.unpaired_labels == []
    card = load_card(card_path)
    assert {(c.image, c.label) for c in list_cases(card, data_root(card))} == set(pairs)


def test_init_names_second_labels_of_an_image_and_pairs_each_class_folder_apart(tmp_path, fake_data):
    """BUSI: ``benign/benign (2).png`` with ``_mask.png`` and a second ``_mask_1.png``, numbers repeated in each
    class folder; DRIVE keeps a field-of-view ``mask/21_training_mask.gif`` beside ``1st_manual/``. Each image
    pairs with its own first label, and the other label is named with the fix, never paired elsewhere."""
    root = tmp_path / "data"
    pairs = []
    for kind in ("benign", "malignant"):
        name = f"Dataset_BUSI_with_GT/{kind}/{kind} ({{i}})"
        pairs += write_pairs(root, name + ".png", name + "_mask.png", [255] * 3, fake_data)
    second = root / "Dataset_BUSI_with_GT/benign/benign (1)_mask_1.png"
    shutil.copy(pairs[1][1], second)
    _, layout, _ = init_card(root, tmp_path / "card.yaml")
    assert sorted(layout.pairs) == sorted(pairs) and layout.unpaired_labels == [second]
    [note] = [n for n in layout.notes if "left out" in n]
    assert "benign (1)_mask_1.png beside the kept Dataset_BUSI_with_GT/benign/benign (1)_mask.png" in note
    assert "merge them into the kept one" in note

    drive = tmp_path / "drive"
    pairs = write_pairs(
        drive, "training/images/2{i}_training.png", "training/1st_manual/2{i}_manual1.gif", [255] * 3, fake_data
    )
    fov = write_pairs(
        drive, "training/images/2{i}_training.png", "training/mask/2{i}_training_mask.gif", [255] * 3, fake_data
    )
    _, layout, _ = init_card(drive, tmp_path / "drive.yaml")
    assert sorted(layout.pairs) == sorted(pairs) and sorted(layout.unpaired_labels) == sorted(m for _, m in fov)
    assert any("3 label file(s) left out" in n and "move the one that is not a label out" in n for n in layout.notes)


def write_volume_case(root: Path, images: list[str], label: str, i: int, fake_data) -> tuple[list[Path], Path]:
    """Case ``i`` of a volume layout: each of ``images`` a NIfTI file (a DICOM series where it ends in ``/``),
    ``label`` a NIfTI label map on the first image's grid."""
    from adapt.data.formats import read_raster

    volume, labels = fake_data.blob_volume([1, 2], seed=i, shape=(12, 10, 4))
    paths = [root / name.format(i=i) for name in images]
    for path in paths:
        if images[0].endswith("/"):
            fake_data.write_dicom_series(path, volume.astype(np.int32) + 1024)
        else:
            fake_data.save_nifti(path, volume)
    path = root / label.format(i=i)
    if images[0].endswith("/"):  # the series' voxels are (column, row, slice)
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(labels.transpose(1, 0, 2).copy(), read_raster(paths[0]).affine), path)
    else:
        fake_data.save_nifti(path, labels)
    return paths, path


BRATS = "BraTS2021_{i:05d}/BraTS2021_{i:05d}"


@pytest.mark.parametrize(
    "images, label, refusal",
    [
        (["LIDC-{i:04d}/01-01-2000-CT/3000-{i}/"], "LIDC-{i:04d}/label.nii.gz", None),  # a series two folders down
        (["patient{i:04d}/patient{i:04d}_2CH_ED.nii.gz"], "patient{i:04d}/patient{i:04d}_2CH_ED_gt.nii.gz", None),
        (
            [f"{BRATS}_{sequence}.nii.gz" for sequence in ("flair", "t1", "t1ce", "t2")],
            f"{BRATS}_seg.nii.gz",
            "BraTS2021_00000 holds 4 images named like its label BraTS2021_00000_seg.nii.gz (BraTS2021_00000_flair.nii.gz, "
            "BraTS2021_00000_t1.nii.gz, BraTS2021_00000_t1ce.nii.gz, BraTS2021_00000_t2.nii.gz), one per sequence",
        ),
    ],
)
def test_init_pairs_volume_layouts_or_says_to_stack_one_file_per_channel(tmp_path, fake_data, images, label, refusal):
    """Volumes kept in a folder per case: a DICOM series under its patient's label, CAMUS-like ``_gt`` beside its
    image, and BraTS' one file per MR sequence, which init refuses (never a ``_t1`` paired as the only channel)."""
    cases = [write_volume_case(tmp_path / "data", images, label, i, fake_data) for i in range(3)]
    if refusal:
        with pytest.raises(DataError) as raised:
            init_card(tmp_path / "data", tmp_path / "card.yaml")
        assert refusal in str(raised.value) and "stack each case's files into one file" in str(raised.value)
        assert not (tmp_path / "card.yaml").exists()
        return
    card_path, layout, _ = init_card(tmp_path / "data", tmp_path / "card.yaml")
    assert sorted(layout.pairs) == sorted((paths[0], lab) for paths, lab in cases)
    card = load_card(card_path)
    assert card.dims == 3 and card.targets == ["label_1", "label_2"]
    assert check_card(card_path).errors == []


@pytest.mark.parametrize(
    "scales, mask_values, note",
    [
        ([255, 255, 255, 255], {"background": 0, "label_1": 255}, None),
        ([1, 1, 1, 1], None, None),  # ids: nothing to record
        ([255, 255, 255, 1], {"background": 0, "label_1": [255, 1]}, "3 store the mask as 0/255, 1 as label ids"),
        ([1, 1, 255, 1], {"background": 0, "label_1": [1, 255]}, "1 store the mask as 0/255, 3 as label ids"),
    ],
)
def test_init_decides_the_mask_encoding_per_file(tmp_path, fake_data, capsys, scales, mask_values, note):
    """A folder mixing 0/1 and 0/255 masks gets one label, and every file reads with its own object."""
    pairs = write_pairs(tmp_path / "data", "images/case{i}.png", "masks/case{i}.png", scales, fake_data)
    assert main(["init", str(tmp_path / "data"), f"out={tmp_path / 'card.yaml'}"]) == 0
    printed = capsys.readouterr().out
    card = load_card(tmp_path / "card.yaml")
    assert card.mask_values == mask_values and card.labels == {"background": 0, "label_1": 1}
    assert "mask_threshold" not in card.source
    assert (note in printed) if note else "mix encodings" not in printed
    report = check_card(card)
    assert report.errors == []
    for (_, label), case in zip(pairs, list_cases(card, data_root(card))):
        from adapt.data.encoding import LabelEncoding
        from adapt.data.formats import read_raster
        from adapt.data.raster import label_plane

        stored = np.asarray(Image.open(label))
        np.testing.assert_array_equal(label_plane(read_raster(case.label), LabelEncoding.of_card(card)), stored > 0)


MSD_ENTRY = {"image": "./imagesTr/c0.nii.gz", "label": "./labelsTr/c0.nii.gz"}


@pytest.mark.parametrize(
    "manifest, message",
    [
        ("{not json", "not valid JSON"),
        ("[]", "holds a JSON list, not an object"),
        ('{"name": "x"}', "has no 'training' key"),
        ('{"training": []}', "'training': '\\[\\]'"),
        ('{"training": ["./imagesTr/c0.nii.gz"]}', "training\\[0\\] is a plain path"),
        ('{"training": [{"image": "./imagesTr/c0.nii.gz"}]}', "training\\[0\\] = .* lacks an 'image' or 'label' path"),
        (
            '{"training": [{"image": "./imagesTr/gone.nii.gz", "label": "./labelsTr/gone.nii.gz"}]}',
            "none of its 1 training entries has both files",
        ),
    ],
)
def test_a_malformed_msd_dataset_json_is_named_by_init_check_and_training(tmp_path, capsys, manifest, message):
    folder = tmp_path / "Task01_X"
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True)
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.uint8), np.eye(4)), folder / sub / "c0.nii.gz")
    (folder / "dataset.json").write_text(manifest)
    assert main(["init", str(folder), f"out={tmp_path / 'card.yaml'}"]) == 2
    err = capsys.readouterr().err
    assert str(folder / "dataset.json") in err and "Traceback" not in err
    assert re.search(message, err), err
    if "both files" in message:  # the card lists the entry; reading the case names the missing file
        return
    card = tmp_path / "msd.yaml"
    card.write_text(
        f"name: x\ntitle: x\nmodality: CT\ndims: 3\nlicense: CC0-1.0\ncitation: x\n"
        f"source: {{kind: msd, root: {folder}}}\nlabels: {{background: 0, a: 1}}\ntargets: [a]\n"
    )
    assert main(["check", f"card={card}", f"out={tmp_path / 'f.png'}"]) == 2
    assert re.search(message, capsys.readouterr().err)
    with pytest.raises(DataError, match=message):
        list_cases(load_card(card), folder)


@pytest.mark.parametrize(
    "link, target",
    [
        ("images/case1.png", "case1.png"),  # a link to itself
        ("masks/case0.png", "../masks/loop.png"),  # a cycle of two links
    ],
)
def test_a_symbolic_link_loop_is_named_by_init_check_and_training(tmp_path, fake_data, capsys, link, target):
    root = tmp_path / "data"
    write_pairs(root, "images/case{i}.png", "masks/case{i}.png", [255] * 3, fake_data)
    assert main(["init", str(root), f"out={tmp_path / 'card.yaml'}"]) == 0
    (root / link).unlink()
    (root / link).symlink_to(target)
    if "loop" in target:
        (root / "masks" / "loop.png").symlink_to("case0.png")
    capsys.readouterr()
    assert main(["init", str(root), f"out={tmp_path / 'again.yaml'}"]) == 2
    assert "symbolic link loop" in capsys.readouterr().err
    assert main(["check", f"card={tmp_path / 'card.yaml'}", f"out={tmp_path / 'f.png'}"]) == 2
    assert f"{root / link}: a symbolic link loop" in capsys.readouterr().err
    card = load_card(tmp_path / "card.yaml")
    with pytest.raises(DataError, match="symbolic link loop"):
        list_cases(card, data_root(card))


@pytest.mark.slow
def test_a_0_255_folder_keeps_its_encoding_from_init_to_predict_and_evaluate(tmp_path, fake_data):
    """init records mask_values; the trained adapter carries it; predict and evaluate's saved masks are 0/255."""
    from adapt import predict
    from adapt.adapters.io import read_metadata
    from adapt.evaluation import evaluate
    from adapt.train import train

    pairs = write_pairs(tmp_path / "data", "images/scan_{i:02d}.png", "masks/scan_{i:02d}.png", [255] * 5, fake_data)
    card, _, _ = init_card(tmp_path / "data", tmp_path / "card.yaml")
    assert load_card(card).mask_values == {"background": 0, "label_1": 255}
    fill_facts(card)
    metrics, _ = train(compose_train(card, tmp_path / "run"))
    adapter = Path(metrics["run_dir"]) / "adapter"
    assert read_metadata(adapter)["mask_values"] == {"background": 0, "label_1": 255}
    [written] = predict.run(predict_config(adapter, pairs[0][0], tmp_path / "mask.png"))
    assert set(np.unique(np.asarray(Image.open(written))).tolist()) <= {0, 255}
    assert np.asarray(Image.open(written)).max() == 255  # a box this size always gives some object pixels
    summary = evaluate(evaluate_config(adapter, card, tmp_path / "eval"))
    saved = [np.asarray(Image.open(tmp_path / "eval" / path)) for path in summary["masks"].values()]
    assert len(saved) == 5 and set(np.unique(np.concatenate([s.ravel() for s in saved])).tolist()) <= {0, 255}


@pytest.mark.parametrize(
    "header, separator, encoding",
    [("image,label", ",", "utf-8"), ("image;label", ";", "utf-8-sig"), (" image\t label ", "\t", "utf-8")],
)
def test_init_reads_a_manifest_as_a_spreadsheet_saves_it(tmp_path, fake_data, header, separator, encoding):
    """A CSV list at the top of the folder, saved by Excel (byte-order mark, ``;`` in European locales) or
    typed by hand: init and the card read the same pairs; a table of other columns is not a manifest."""
    pairs = write_pairs(tmp_path / "data", "scans/s{i}.png", "truth/t{i}.png", [255] * 4, fake_data)
    rows = [separator.join(str(p.relative_to(tmp_path / "data")) for p in pair) for pair in pairs]
    (tmp_path / "data" / "list.csv").write_text("\n".join([header, *rows]) + "\n", encoding=encoding)
    (tmp_path / "data" / "a_patients.csv").write_text("patient,age\np1,54\n")  # sorted first, not a manifest
    card_path, layout, _ = init_card(tmp_path / "data", tmp_path / "card.yaml")
    assert layout.source["kind"] == "csv" and layout.source["manifest"] == "list.csv"
    card = load_card(card_path)
    assert sorted((c.image, c.label) for c in list_cases(card, data_root(card))) == sorted(pairs)
