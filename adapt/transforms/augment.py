"""2D augmentation, applied identically to a sample's image and label map.

Geometric steps (flips, 90-degree rotations, a small affine with scale and rotation, an
elastic warp) move the image (bilinear) and the integer label map (nearest) with the same
parameters; photometric steps (brightness, contrast) touch only the image. Training samples
only, when ``data.augment=true``: ``adapt.data.datamodule`` never builds an augmenter for
validation. Each call is seeded, so a sample's augmentation is reproducible from its seed.

Two implementations of the same recipe (``RECIPE``):

* ``PairAugment`` (``data.device_transforms=false``): albumentations on the loader, image and
  label together on the plane's own grid.
* ``SplitAugment`` (``data.device_transforms=true``): the loader does what is cheap or has no
  batched equivalent -- flips and 90-degree turns of image and label (index permutations of the
  plane it copies out of the cache anyway), the elastic warp (albumentations: its displacement
  field has no batched equivalent here), and the affine of the *label* (nearest, so prompts
  are drawn on the augmented label exactly as before) -- and hands the device the rest as nine
  numbers per sample: the same affine for the image as ``F.affine_grid``'s ``theta`` (normalised
  coordinates, so it holds at any resolution), contrast gain, brightness offset and gamma
  (``adapt.data.device_transforms.augment_pixels`` applies them to the whole batch at once).
"""

from __future__ import annotations

from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np

#: The default recipe: mild enough for anatomy, strong enough to matter on small datasets.
RECIPE = {
    "flip_p": 0.5,  # horizontal and vertical flips, each
    "rot90_p": 0.5,  # a turn by k * 90 degrees, k uniform in 0..3
    "affine_p": 0.5,
    "scale": (0.85, 1.15),
    "rotate": (-15.0, 15.0),  # about the plane's centre, in its pixels
    "elastic_p": 0.2,
    "elastic_alpha": 20.0,
    "elastic_sigma": 5.0,
    "photometric_p": 0.5,
    "brightness": 0.1,
    "contrast": 0.1,  # image * (1 + c) + b
}


def default_augmentation() -> A.Compose:
    """``RECIPE`` as an albumentations pipeline (``PairAugment``'s default)."""
    r = RECIPE
    return A.Compose(
        [
            A.HorizontalFlip(p=r["flip_p"]),
            A.VerticalFlip(p=r["flip_p"]),
            A.RandomRotate90(p=r["rot90_p"]),
            A.Affine(
                scale=r["scale"],
                rotate=r["rotate"],
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=0,
                p=r["affine_p"],
            ),
            elastic(p=r["elastic_p"]),
            A.RandomBrightnessContrast(
                brightness_limit=r["brightness"], contrast_limit=r["contrast"], p=r["photometric_p"]
            ),
        ]
    )


def elastic(p: float) -> A.ElasticTransform:
    """The recipe's elastic warp (bilinear image, nearest label)."""
    return A.ElasticTransform(
        alpha=RECIPE["elastic_alpha"],
        sigma=RECIPE["elastic_sigma"],
        approximate=True,
        interpolation=cv2.INTER_LINEAR,
        mask_interpolation=cv2.INTER_NEAREST,
        p=p,
    )


class PairAugment:
    """Augment ``image`` ``[C, H, W]`` (float in [0, 1]) and ``label`` ``[H, W]`` (integer ids) together.

    Args:
        transform: an albumentations ``Compose``; ``default_augmentation()`` when omitted.
    """

    def __init__(self, transform: A.Compose | None = None) -> None:
        self.transform = transform or default_augmentation()

    def __call__(self, image: np.ndarray, label: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """The augmented pair, same shapes and dtypes; the same ``seed`` gives the same result."""
        self.transform.set_random_seed(int(seed))
        out = self.transform(
            image=np.ascontiguousarray(np.moveaxis(image, 0, -1), dtype=np.float32), mask=np.ascontiguousarray(label)
        )
        pixels = out["image"]
        pixels = pixels[..., None] if pixels.ndim == 2 else pixels
        augmented = np.clip(np.moveaxis(pixels, -1, 0), 0.0, 1.0).astype(np.float32)
        return np.ascontiguousarray(augmented), np.ascontiguousarray(out["mask"]).astype(label.dtype)


#: ``SplitAugment``'s per-sample values for the device: theta (2 x 3, row-major), gain, offset, gamma.
IDENTITY = np.array([1, 0, 0, 0, 1, 0, 1, 0, 1], dtype=np.float32)
#: Salt of the generator that draws ``SplitAugment``'s parameters from a sample's seed.
SPLIT_KEY = 0x5A17


@dataclass(frozen=True)
class SplitAugment:
    """``RECIPE`` split between the loader (``__call__``) and the device (the returned parameters).

    Probabilities and ranges default to ``RECIPE``'s; ``gamma_p`` (off by default) adds a
    gamma ``image ** g``, ``g`` uniform in ``gamma``, on the device.
    """

    flip_p: float = RECIPE["flip_p"]
    rot90_p: float = RECIPE["rot90_p"]
    affine_p: float = RECIPE["affine_p"]
    scale: tuple[float, float] = RECIPE["scale"]
    rotate: tuple[float, float] = RECIPE["rotate"]
    elastic_p: float = RECIPE["elastic_p"]
    photometric_p: float = RECIPE["photometric_p"]
    brightness: float = RECIPE["brightness"]
    contrast: float = RECIPE["contrast"]
    gamma_p: float = 0.0
    gamma: tuple[float, float] = (0.8, 1.25)

    def _elastic(self) -> A.Compose:
        """The elastic warp, built once per process (albumentations validates on construction)."""
        if "_warp" not in self.__dict__:
            object.__setattr__(self, "_warp", A.Compose([elastic(p=1.0)]))
        return self.__dict__["_warp"]

    def draw(self, seed: int) -> dict[str, float]:
        """Every random choice of one sample, a pure function of ``seed`` (all drawn, used or not,
        so changing one probability leaves the other draws alone)."""
        u = np.random.default_rng([int(seed), SPLIT_KEY]).random(14)
        lerp = lambda v, bounds: bounds[0] + v * (bounds[1] - bounds[0])  # noqa: E731
        return {
            "hflip": u[0] < self.flip_p,
            "vflip": u[1] < self.flip_p,
            "turns": int(u[3] * 4) if u[2] < self.rot90_p else 0,
            "affine": u[4] < self.affine_p,
            "scale": lerp(u[5], self.scale),
            "angle": lerp(u[6], self.rotate),
            "elastic": u[7] < self.elastic_p,
            "elastic_seed": int(u[8] * 2**31),
            "photometric": u[9] < self.photometric_p,
            "gain": 1 + lerp(u[10], (-self.contrast, self.contrast)),
            "offset": lerp(u[11], (-self.brightness, self.brightness)),
            "gamma": lerp(u[13], self.gamma) if u[12] < self.gamma_p else 1.0,
        }

    def __call__(self, image: np.ndarray, objects: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The loader's share of the augmentation.

        Args:
            image: ``[C, H, W]`` pixels in [0, 1] (any float dtype; kept).
            objects: ``[H, W]`` object index map (0 = background; uint8 or uint16).
            seed: the sample's seed.

        Returns:
            ``(image, objects, params)``: the image flipped/turned (and elastically warped; possibly
            a view of the input), the object map with every geometric step, ``float32 [9]``
            parameters for the device.
        """
        d = self.draw(seed)
        if d["hflip"]:
            image, objects = image[..., ::-1], objects[:, ::-1]
        if d["vflip"]:
            image, objects = image[..., ::-1, :], objects[::-1]
        if d["turns"]:
            image, objects = np.rot90(image, d["turns"], axes=(-2, -1)), np.rot90(objects, d["turns"])
        if d["elastic"]:
            warp = self._elastic()
            warp.set_random_seed(d["elastic_seed"])
            out = warp(
                image=np.ascontiguousarray(np.moveaxis(image, 0, -1), dtype=np.float32),
                mask=np.ascontiguousarray(objects),
            )
            pixels = out["image"][..., None] if out["image"].ndim == 2 else out["image"]
            image, objects = np.clip(np.moveaxis(pixels, -1, 0), 0, 1).astype(image.dtype), out["mask"]
        params = IDENTITY.copy()
        height, width = objects.shape
        if d["affine"]:
            inverse = rotation(-d["angle"]) / d["scale"]  # output pixel -> source pixel, about the centre
            centre = np.array([(width - 1) / 2, (height - 1) / 2])
            matrix = np.concatenate([inverse, (centre - inverse @ centre)[:, None]], axis=1)
            objects = cv2.warpAffine(
                np.ascontiguousarray(objects),
                matrix,
                (width, height),
                flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=0,
            )
            half = np.array([width / 2, height / 2])  # normalised -> centred pixel coordinates
            params[:6] = np.concatenate([inverse * half[None, :] / half[:, None], np.zeros((2, 1))], axis=1).ravel()
        if d["photometric"]:
            params[6:8] = d["gain"], d["offset"]
        params[8] = d["gamma"]
        return image, np.ascontiguousarray(objects), params  # the image may be a view: the caller copies it


def rotation(degrees: float) -> np.ndarray:
    """The 2 x 2 rotation by ``degrees`` in ``(x, y)`` pixel coordinates."""
    a = np.deg2rad(degrees)
    return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
