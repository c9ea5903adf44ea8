"""Transforms and sampling: geometry after orientation and resampling, intensity values,
alignment of pixels and masks through every step, augmentation (training only), caching,
empty share, objects=all, and per-patient splits."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from adapt.data.cache import CaseStore
from adapt.data.cards import load_card
from adapt.data.datamodule import SampleDataset, build_datamodule, index_cases
from adapt.data.device_transforms import model_sample
from adapt.data.sources import Case, list_cases
from adapt.data.splits import split_cases
from adapt.data.volumes import load_volume
from adapt.transforms.augment import PairAugment
from adapt.transforms.intensity import scale_channels
from adapt.transforms.prompts import PromptSimulator

# stored axes (j, -i, k) with anisotropic spacing and an offset: a permuted, flipped grid
OBLIQUE = np.array([[0.0, -1.5, 0.0, 40.0], [0.9, 0.0, 0.0, -30.0], [0.0, 0.0, 3.0, 12.0], [0, 0, 0, 1.0]])


def write_case(root, name, image, label, affine=OBLIQUE):
    for folder, array in (("imagesTr", image), ("labelsTr", label)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(array, affine), root / folder / f"{name}.nii.gz")


def msd_card(tmp_path, root, names, **changes):
    (root / "dataset.json").write_text(
        json.dumps(
            {"training": [{"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz"} for n in names]}
        )
    )
    card = yaml.safe_load(open("data_cards/ct_phantom.yaml"))
    card.update({"source": {"kind": "msd", "root": str(root)}, **changes})
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump(card))
    return load_card(path)


def test_a_voxel_keeps_its_world_position_through_orientation_and_resampling(tmp_path):
    label = np.zeros((10, 14, 6), np.uint8)
    label[6:9, 3:6, 2] = 1  # a 3x3 patch on one slice
    image = (label.astype(np.int16) * 1000 - 500).astype(np.int16)
    write_case(tmp_path / "d", "c0", image, label)
    centre = OBLIQUE @ [7, 4, 2, 1]  # world position (mm) of the patch centre

    card = msd_card(tmp_path, tmp_path / "d", ["c0"])
    volume = load_volume(card, list_cases(card, tmp_path / "d")[0])
    # RAS grid: positive diagonal steps (1.5 along x from stored -j, 0.9 along y from stored i)
    np.testing.assert_allclose(volume.affine[:3, :3], np.diag([1.5, 0.9, 3.0]), atol=1e-6)
    assert volume.label.shape == (14, 10, 6)
    found = np.argwhere(volume.label == 1).mean(0)
    np.testing.assert_allclose(volume.affine @ [*found, 1], centre, atol=1e-6)
    assert np.array_equal(volume.to_source(volume.label), label)  # back onto the stored grid, exactly
    np.testing.assert_array_equal(volume.image[0] > 0.5, volume.label == 1)  # pixels moved with the mask

    resampled = msd_card(tmp_path, tmp_path / "d", ["c0"], spacing=[0.5, 0.5])  # in-plane only
    volume = load_volume(resampled, list_cases(resampled, tmp_path / "d")[0])
    assert volume.spacing == pytest.approx((0.5, 0.5, 3.0))
    found = np.argwhere(volume.label == 1).mean(0)
    np.testing.assert_allclose(volume.affine @ [*found, 1], centre, atol=0.5)  # within one new voxel
    back = volume.to_source(volume.label)
    assert (back == label).mean() > 0.99 and back[7, 4, 2] == 1


def test_window_percentiles_and_8bit_scaling_values():
    hu = np.array([[-1000.0, -160.0, 40.0, 240.0, 2000.0]])
    np.testing.assert_allclose(scale_channels(hu, {"window": [-160, 240]}), [[0, 0, 0.5, 1, 1]])
    two = np.stack([np.arange(101.0), 1000.0 * np.arange(101.0)])  # channels on different scales
    scaled = scale_channels(two, {"percentiles": [10, 90]})
    np.testing.assert_allclose(scaled[:, [0, 10, 50, 90, 100]], [[0, 0, 0.5, 1, 1]] * 2, atol=1e-6)
    np.testing.assert_allclose(scale_channels(np.array([[0, 51, 255]], np.uint8), {}, "uint8"), [[0, 0.2, 1]])


def test_mr_channels_map_to_rgb_each_stretched_on_its_own(tmp_path):
    card = load_card("mr_phantom")  # channels [0, 1, 1], percentiles [0.5, 99.5]
    case = list_cases(card, tmp_path / "mr")[0]  # generated on first use
    volume = load_volume(card, case)
    assert volume.image.shape[0] == 3 and np.array_equal(volume.image[1], volume.image[2])
    raw = nib.as_closest_canonical(nib.load(case.image))
    t2 = np.asarray(raw.dataobj)[..., 0].astype(np.float32)
    low, high = np.percentile(t2, [0.5, 99.5])
    np.testing.assert_allclose(volume.image[0], np.clip((t2 - low) / (high - low), 0, 1), atol=1e-5)
    adc = np.asarray(raw.dataobj)[..., 1]
    assert np.corrcoef(volume.image[1].ravel(), adc.ravel())[0, 1] > 0.99  # ADC, not T2


def identity_dataset(tmp_path, augment=None, size=16, side=16, **changes):
    """Cubic cases (``side`` voxels) whose windowed image equals the label map (no resize when
    ``size == side``)."""
    names = []
    f = side // 16
    for n in range(3):
        label = np.zeros((side, side, 16), np.uint8)
        label[(3 + n) * f : 12 * f, 4 * f : (11 + n) * f, 2 : 6 + 2 * n] = 1
        write_case(tmp_path / "d", f"c{n}", label.astype(np.int16) * 1000, label)
        names.append(f"c{n}")
    card = msd_card(tmp_path, tmp_path / "d", names, intensity={"window": [0, 1000]}, **changes)
    store = CaseStore(card, list_cases(card, tmp_path / "d"), "memory")
    items, _ = index_cases(store)
    return SampleDataset(store, items, size, PromptSimulator(), train=augment is not None, augment=augment)


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
def test_slices_and_masks_stay_aligned(tmp_path, slice_axis):
    dataset = identity_dataset(tmp_path, slice_axis=slice_axis)
    assert len(dataset) == sum(
        4 + 2 * n if slice_axis == 2 else 9 - n if slice_axis == 0 else 7 + n for n in range(3)
    )  # one sample per slice holding the target
    for i in range(len(dataset)):
        sample = dataset[i]
        assert torch.equal(sample["image"][0], sample["label"][0])
        x0, y0, x1, y1 = sample["boxes"][0].tolist()
        ys, xs = torch.nonzero(sample["label"][0], as_tuple=True)
        assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max(), ys.max())
    resized = identity_dataset(tmp_path, size=40, slice_axis=slice_axis)  # 16 -> 40: bilinear vs nearest
    for i in range(len(resized)):
        sample = resized[i]
        inside, truth = sample["image"][0] > 0.5, sample["label"][0] > 0.5
        assert (inside & truth).sum() / (inside | truth).sum() > 0.9  # differ on the outline only


def test_augmentation_moves_image_and_mask_together(tmp_path):
    import albumentations as A

    flips = PairAugment(A.Compose([A.HorizontalFlip(p=0.5), A.RandomRotate90(p=1.0)]))
    exact = identity_dataset(tmp_path, augment=flips)
    for i in range(len(exact)):
        sample = exact[i]
        assert torch.equal(sample["image"][0], sample["label"][0])  # flips and 90-degree turns are exact
    torch.manual_seed(0)
    full = identity_dataset(tmp_path, augment=PairAugment(), size=64, side=64)

    def iou(image, label):
        inside, truth = image[0] > 0.5, label[0] > 0.5
        return float((inside & truth).sum() / (inside | truth).sum())

    aligned = [iou(sample["image"], sample["label"]) for sample in (full[i] for i in range(len(full)))]
    assert min(aligned) > 0.9  # affine/elastic: bilinear pixels vs nearest labels differ on edges only
    shuffled = [iou(full[i]["image"], full[i]["label"]) for i in range(len(full))]  # two different draws
    assert min(shuffled) < 0.9  # the check can fail: independent augmentations do not overlap so well
    changed = [not torch.equal(full[0]["image"], full[0]["image"]) for _ in range(4)]
    assert any(changed)  # a training sample is augmented afresh at every read


def test_validation_samples_are_fixed_and_unaugmented():
    dm = build_datamodule({"card": "aerial_phantom", "augment": True, "cache": "memory"}, 64, seed=0)
    assert dm.train_set.augment is not None and dm.val_set.augment is None
    first, again = (model_sample(dm.val_set[0], 64) for _ in range(2))
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["boxes"], again["boxes"])
    plain_image, plain_label = dm.val_set.pixels(0)
    assert torch.equal(first["image"], plain_image) and torch.equal(first["label"][0], (plain_label == 1).float())


def test_an_epoch_reads_no_file_once_cached(tmp_path, monkeypatch):
    import adapt.data.load as io

    reads = []
    original = io.read_raster
    monkeypatch.setattr(io, "read_raster", lambda path, **options: reads.append(path) or original(path, **options))
    # prepare_workers=1: cases are read in this process, where the reads are counted
    config = {"card": "ct_phantom", "root": str(tmp_path / "ct"), "batch_size": 8, "prepare_workers": 1}
    list_cases(load_card("ct_phantom"), tmp_path / "ct")  # generate the files first
    for mode in ("memory", "disk"):
        reads.clear()
        dm = build_datamodule({**config, "cache": mode, "cache_dir": str(tmp_path / "cache")}, 32, seed=0)
        assert len(reads) == 2 * 8  # image + label of each case, once, while indexing
        for _ in dm.train_dataloader():
            pass
        for _ in dm.val_dataloader():
            pass
        assert len(reads) == 2 * 8, mode
    reads.clear()
    again = build_datamodule({**config, "cache": "disk", "cache_dir": str(tmp_path / "cache")}, 32, seed=0)
    assert reads == [] and len(again.train_set) == len(dm.train_set)  # a later run reuses the disk cache
    reads.clear()
    uncached = build_datamodule({**config, "cache": "none"}, 32, seed=0)
    uncached.train_set[0]
    assert len(reads) == 2 * 8 + 2  # none: every sample reads its case again


def test_disk_cache_notices_a_changed_file(tmp_path):
    card = load_card("ct_phantom")
    cases = list_cases(card, tmp_path / "ct")[:1]
    first = CaseStore(card, cases, "disk", tmp_path / "cache")[0]
    image = nib.load(cases[0].image)
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj) * 0 + 240, image.affine), cases[0].image)
    second = CaseStore(card, cases, "disk", tmp_path / "cache")[0]
    assert float(np.asarray(first.image).min()) == 0.0 and np.all(np.asarray(second.image) == 1.0)


def test_empty_share_adds_slices_without_the_target(tmp_path):
    card = load_card("ct_phantom")
    cases = list_cases(card, tmp_path / "ct")[:2]
    store = CaseStore(card, cases, "memory")
    foreground, _ = index_cases(store)
    mixed, _ = index_cases(store, empty_share=0.25, seed=1)
    empty = [row for row in mixed.tolist() if row not in foreground.tolist()]
    assert len(empty) == round(0.25 / 0.75 * len(foreground)) and len(mixed) == len(foreground) + len(empty)
    dataset = SampleDataset(store, mixed, 32, PromptSimulator(kind="box+points"), train=False)
    sample = dataset[mixed.tolist().index(empty[0])]
    assert sample["label"].sum() == 0
    height, width = dataset.plane(0)[1].shape  # the box of a mask filling the plane, on the model's grid
    expected = [[0, 0, (width - 1) * np.float32(32 / width), (height - 1) * np.float32(32 / height)]]
    np.testing.assert_allclose(sample["boxes"].numpy(), expected, rtol=1e-6)
    assert sample["point_labels"].tolist() == [[-1]]


def test_objects_all_gives_one_channel_per_target_in_card_order(tmp_path):
    dm = build_datamodule({"card": "mr_phantom", "objects": "all", "prompt": {"kind": "box"}}, 32, seed=0)
    sample = model_sample(dm.train_set[0], 32)
    assert sample["label"].shape == (2, 32, 32) and sample["boxes"].shape == (2, 4)
    assert sample["meta"]["target"] == "all" and sample["meta"]["label_id"] == -1
    _, label = dm.train_set.pixels(0)
    for channel, value in enumerate((1, 2)):  # peripheral_zone, transition_zone
        assert torch.equal(sample["label"][channel], (label == value).float())
    assert dm.preprocessing["channels"] == 3 and dm.preprocessing["bands"] == [0, 1, 1]


def test_splits_never_share_a_patient(tmp_path):
    cases = [Case(f"p{p}_scan{s}", None, None, group=f"p{p}") for p in range(12) for s in range(3)]
    sides = split_cases(cases, {"val": 0.25, "test": 0.25, "seed": 3})
    groups = {side: {c.group for c in chosen} for side, chosen in sides.items()}
    assert not groups["train"] & groups["val"] and not groups["train"] & groups["test"]
    assert not groups["val"] & groups["test"] and len(groups["val"]) == 3 and len(groups["test"]) == 3
    assert sum(len(v) for v in sides.values()) == len(cases)
    pinned = [Case("a", None, None, group="a", split="test")] + cases
    assert [c.id for c in split_cases(pinned, {"val": 0.25})["test"]] == ["a"]


def test_csv_source_groups_cases_by_patient(tmp_path):
    from PIL import Image

    rows = ["image,label,case"]
    for n in range(8):
        image = np.zeros((16, 16, 3), np.uint8)
        image[4:10, 4:10] = 200
        Image.fromarray(image).save(tmp_path / f"i{n}.png")
        Image.fromarray((image[..., 0] > 0).astype(np.uint8)).save(tmp_path / f"m{n}.png")
        rows.append(f"i{n}.png,m{n}.png,patient{n // 2}")
    (tmp_path / "list.csv").write_text("\n".join(rows))
    card = yaml.safe_load(open("data_cards/kvasir_seg.yaml"))
    card["source"] = {"kind": "csv", "root": str(tmp_path), "manifest": "list.csv"}
    card.pop("mask_values")  # the masks above store the label ids (0/1), not Kvasir-SEG's 0/255
    card["split"] = {"val": 0.5, "seed": 0}
    (tmp_path / "card.yaml").write_text(yaml.safe_dump(card))
    dm = build_datamodule({"card": str(tmp_path / "card.yaml"), "cache": "memory"}, 16, seed=0)
    train = {c.group for c in dm.train_set.store.cases}
    val = {c.group for c in dm.val_set.store.cases}
    assert len(train) == 2 and len(val) == 2 and not train & val


def test_target_free_images_train_with_an_empty_share_and_never_validate(tmp_path):
    from adapt.data.synthetic import write_aerial_tiles, write_geotiff
    from adapt.errors import DataError

    write_aerial_tiles(tmp_path / "tiles", num_cases=8)
    for i in range(4):  # no building on these (the label tiles stay where their images are)
        write_geotiff(
            tmp_path / "tiles" / "labels" / f"tile_{i:03d}.tif",
            np.zeros((96, 96), np.uint8),
            origin=(500000.0 + i * 96 * 0.5, 5200000.0),
        )
    config = {"card": "aerial_phantom", "root": str(tmp_path / "tiles"), "cache": "memory"}
    with pytest.raises(DataError, match="tile_00[0-3].tif: none of the targets"):
        build_datamodule(config, 32, seed=0)
    dm = build_datamodule({**config, "empty_share": 0.3}, 32, seed=0)
    assert all(dm.val_set[i]["label"].sum() > 0 for i in range(len(dm.val_set)))
    empty = [i for i in range(len(dm.train_set)) if dm.train_set[i]["label"].sum() == 0]
    assert empty and len(empty) <= round(0.3 / 0.7 * (len(dm.train_set) - len(empty)))
