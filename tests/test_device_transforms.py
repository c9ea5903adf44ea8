"""Native planes from the loader, resized and augmented on the device (``data.device_transforms``).

Without augmentation the model's batch equals the loader-resized path's tensor for tensor
(padding included: planes of different sizes share a batch); with augmentation every random
choice is a function of the sample's seed, and the label, the prompts drawn on it and the
image warped on the device stay aligned.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from adapt.data.cache import CaseStore
from adapt.data.cards import load_card
from adapt.data.datamodule import SampleDataset, build_datamodule, index_cases
from adapt.data.device_transforms import augment_pixels, collate_native, model_sample, to_model_grid
from adapt.data.sources import Case
from adapt.data.volumes import Volume
from adapt.models.primitives import resize_image
from adapt.transforms.augment import IDENTITY, PairAugment, SplitAugment
from adapt.transforms.prompts import PromptSimulator
from adapt.transforms.slices import resize_label

KEYS = ("image", "label", "boxes", "points", "point_labels")


class PlaneStore(CaseStore):
    """2D cases held in memory (a ``CaseStore`` whose cases are made here, not read): each image is its
    label map (0/1), or the label plus noise, so pixels and labels can be checked against each other."""

    def __init__(self, shapes, dtype=np.float16, noise: float = 0.0) -> None:
        rng = np.random.default_rng(0)
        cases, self.volumes = [], []
        for n, (height, width) in enumerate(shapes):
            rows, cols = np.mgrid[:height, :width]
            label = (
                (rows - height * 0.45) ** 2 / (height * 0.3) ** 2 + (cols - width * 0.55) ** 2 / (width * 0.25) ** 2
                <= 1
            ).astype(np.uint8)
            image = np.clip(label + noise * rng.normal(size=label.shape), 0, 1)[None]
            case = Case(f"p{n}", Path(f"p{n}.png"), Path(f"p{n}_mask.png"), group=f"p{n}")
            cases.append(case)
            self.volumes.append(Volume(case, image.astype(dtype), label))
        super().__init__(load_card("kvasir_seg"), cases, "none")  # dims 2, target polyp = 1

    def _load(self, index: int) -> Volume:
        return self.volumes[index]


def plane_datasets(store, size, augment=None, prompts=None, train=True):
    """The loader-resized dataset and the native one over ``store`` (box and point prompts by default)."""
    prompts = prompts or PromptSimulator(kind="box+points", jitter=0.2)
    items, _ = index_cases(store)
    return (
        SampleDataset(store, items, size, prompts, train, PairAugment() if augment else None),
        SampleDataset(store, items, size, prompts, train, augment, native=True),
    )


def assert_same(ours, theirs):
    for key in KEYS:
        if key in theirs:
            assert ours[key].dtype == theirs[key].dtype, key
            assert torch.equal(ours[key], theirs[key]), key


@pytest.mark.parametrize("dtype", [np.float16, np.float32])  # a memory/disk cache holds float16, none float32
def test_planes_of_different_sizes_reach_the_model_as_the_loader_resized_them(dtype):
    store = PlaneStore([(40, 56), (64, 48), (40, 56), (23, 31), (80, 80)], dtype, noise=0.2)
    resized, native = plane_datasets(store, 48)
    keys = [(i, 1000 + i) for i in range(len(resized))]
    batch = collate_native([native[k] for k in keys])
    assert batch["image"].shape == (5, 1, 80, 80) and batch["image"].dtype == torch.from_numpy(np.zeros(1, dtype)).dtype
    assert batch["native_size"] == [[40, 56], [64, 48], [40, 56], [23, 31], [80, 80]]
    assert batch["image"][0, :, 40:].abs().sum() == 0 and batch["label"][1, :, :, 48:].sum() == 0  # zero padding
    model = to_model_grid(batch, 48)
    reference = torch.utils.data.default_collate([resized[k] for k in keys])
    assert "native_size" not in model
    assert_same(model, reference)


def test_phantom_batches_equal_the_loader_resized_batches_in_training_and_validation():
    config = {"card": "ct_phantom", "cache": "memory", "batch_size": 4, "prompt": {"kind": "box+points", "jitter": 0.2}}
    old = build_datamodule({**config, "device_transforms": False}, 64, seed=2)
    new = build_datamodule({**config, "device_transforms": True}, 64, seed=2)
    for loader in ("train_dataloader", "val_dataloader"):
        for theirs, ours in itertools.islice(zip(getattr(old, loader)(), getattr(new, loader)()), 3):
            assert ours["image"].dtype == torch.float16 and ours["image"].shape[-1] == 96  # the slice as cached
            assert ours["label"].dtype == torch.uint8
            assert_same(new.on_after_batch_transfer(ours, 0), theirs)
            assert ours["meta"]["case"] == theirs["meta"]["case"]
            assert torch.equal(ours["meta"]["slice"], theirs["meta"]["slice"])


def test_objects_all_ships_one_mask_per_target():
    dm = build_datamodule({"card": "mr_phantom", "objects": "all", "cache": "memory"}, 32, seed=0)
    sample = dm.train_set[(0, 7)]
    assert sample["label"].shape[0] == 2 and sample["label"].dtype == torch.uint8
    old = build_datamodule(
        {"card": "mr_phantom", "objects": "all", "cache": "memory", "device_transforms": False}, 32, seed=0
    )
    assert_same(model_sample(sample, 32), old.train_set[(0, 7)])


def test_device_augmentation_is_a_function_of_the_sample_seed():
    store = PlaneStore([(40, 56), (64, 48), (56, 56)], noise=0.2)
    _, native = plane_datasets(store, 48, augment=SplitAugment(gamma_p=0.5))
    first = [native[(i, seed)] for i in range(3) for seed in range(1, 9)]
    again = [native[(i, seed)] for i in range(3) for seed in range(1, 9)]
    for a, b in zip(first, again):
        assert_same(a, b)
        assert torch.equal(a["augment"], b["augment"])
    model_a = to_model_grid(collate_native(first), 48)
    model_b = to_model_grid(collate_native(again), 48)
    assert_same(model_a, model_b)
    # the seeds are at work: different draws, and every device step was drawn at least once
    params = torch.stack([s["augment"] for s in first])
    assert len({tuple(p.tolist()) for p in params}) > 6
    assert (params[:, 0] != 1).any() and (params[:, 6] != 1).any() and (params[:, 8] != 1).any()
    assert SplitAugment().draw(5) == SplitAugment().draw(5) and SplitAugment().draw(5) != SplitAugment().draw(6)


def test_identity_parameters_leave_the_pixels_alone():
    image = torch.rand(3, 2, 16, 16)
    params = torch.from_numpy(np.stack([IDENTITY] * 3))
    assert torch.equal(augment_pixels(image, params), image)
    params[1, 6:9] = torch.tensor([1.1, -0.05, 1.2])  # gain, offset, gamma
    out = augment_pixels(image, params)
    assert torch.equal(out[0], image[0]) and torch.equal(out[2], image[2])
    torch.testing.assert_close(out[1], (image[1] * 1.1 - 0.05).clamp(0, 1) ** 1.2)


@pytest.mark.parametrize("shape, size", [((64, 64), 64), ((48, 72), 96), ((80, 60), 40)])
def test_augmented_label_prompts_and_image_stay_aligned(shape, size):
    """The image is its label: after the device warps the image and the loader the label, they overlap
    but for the outline; boxes are the augmented label's own box; flips and turns are exact."""
    store = PlaneStore([shape] * 4)
    tight = PromptSimulator(kind="box")
    square = shape[0] == shape[1] == size
    turns = SplitAugment(affine_p=0.0, elastic_p=0.0, photometric_p=0.0)
    _, exact = plane_datasets(store, size, augment=turns, prompts=tight)
    _, full = plane_datasets(store, size, augment=SplitAugment(affine_p=1.0, photometric_p=0.0), prompts=tight)
    for seed in range(12):
        sample = model_sample(exact[(seed % 4, seed)], size)
        image, label = sample["image"][0] > 0.5, sample["label"][0] > 0.5
        if square:  # no resize: a flip or a turn moves pixels without interpolation
            assert torch.equal(sample["image"][0], sample["label"][0])
        else:
            assert (image & label).sum() / (image | label).sum() > 0.9
        raw = full[(seed % 4, seed)]
        plane = raw["label"][0].numpy()
        ys, xs = np.nonzero(plane)
        height, width = plane.shape
        expected = np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float32) * np.array(
            [size / width, size / height] * 2, np.float32
        )
        np.testing.assert_array_equal(raw["boxes"][0].numpy(), expected)  # drawn on the augmented label
        sample = model_sample(raw, size)
        image, label = sample["image"][0] > 0.5, sample["label"][0] > 0.5
        assert (image & label).sum() / (image | label).sum() > 0.85, seed  # bilinear vs nearest: edges only
        if square:
            ys, xs = torch.nonzero(label, as_tuple=True)
            assert raw["boxes"][0].tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]


def test_the_affine_on_the_device_is_the_loaders_label_warp():
    """A non-square plane rotated by the recipe's largest angle: the device's theta and the loader's
    cv2 warp of the label describe the same motion (centroids agree to a fraction of a pixel)."""
    store = PlaneStore([(60, 90)])
    augment = SplitAugment(
        flip_p=0.0, rot90_p=0.0, elastic_p=0.0, photometric_p=0.0, affine_p=1.0, scale=(0.85, 0.85), rotate=(15.0, 15.0)
    )
    _, native = plane_datasets(store, 90, augment=augment, prompts=PromptSimulator(kind="box"))
    sample = model_sample(native[(0, 3)], 90)
    image, label = sample["image"][0], sample["label"][0]
    rows, cols = torch.meshgrid(torch.arange(90.0), torch.arange(90.0), indexing="ij")
    centre = lambda w: torch.stack([(w * rows).sum(), (w * cols).sum()]) / w.sum()  # noqa: E731
    assert torch.allclose(centre(image), centre(label), atol=0.5)
    unmoved = resize_image(torch.from_numpy(store.volumes[0].image.astype(np.float32)), 90)[0]
    assert not torch.allclose(centre(unmoved), centre(image), atol=2.0)  # it did move


def test_validation_and_unaugmented_training_carry_no_parameters():
    dm = build_datamodule({"card": "ct_phantom", "cache": "memory", "augment": True}, 32, seed=0)
    assert isinstance(dm.train_set.augment, SplitAugment) and dm.val_set.augment is None
    assert "augment" in next(iter(dm.train_dataloader())) and "augment" not in next(iter(dm.val_dataloader()))
    assert dm.train_dataloader().collate_fn is collate_native and not dm.train_dataloader().pin_memory


def test_labels_resize_by_the_same_rule_on_any_device():
    label = torch.randint(0, 3, (2, 1, 13, 17), dtype=torch.uint8)
    assert torch.equal(resize_label(label, 40), resize_label(label.clone(), (40, 40)))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_the_batch_is_the_cpu_batch_to_rounding():
    store = PlaneStore([(40, 56), (64, 48), (40, 56)], noise=0.2)
    _, native = plane_datasets(store, 64, augment=SplitAugment(gamma_p=0.5))
    batch = collate_native([native[(i % 3, i)] for i in range(6)])
    cpu = to_model_grid({**batch}, 64)
    pinned = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    gpu = to_model_grid(
        {k: v.cuda(non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in pinned.items()}, 64
    )
    assert torch.equal(gpu["label"].cpu(), cpu["label"]) and torch.equal(gpu["boxes"].cpu(), cpu["boxes"])
    torch.testing.assert_close(gpu["image"].cpu(), cpu["image"], rtol=0, atol=1e-4)
