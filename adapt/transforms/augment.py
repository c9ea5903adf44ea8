"""2D augmentation (albumentations), applied identically to a sample's image and label map.

Geometric steps (flips, 90-degree rotations, a small affine with scale and rotation, an
elastic warp) move the image (bilinear) and the integer label map (nearest) with the same
parameters; photometric steps (brightness, contrast) touch only the image. Training samples
only, when ``data.augment=true``: ``adapt.data.datamodule`` never builds an augmenter for
validation. Each call is seeded, so a sample's augmentation is reproducible from its seed.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np


def default_augmentation() -> A.Compose:
    """The default recipe: mild enough for anatomy, strong enough to matter on small datasets."""
    return A.Compose([
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.RandomRotate90(p=0.5),
        A.Affine(scale=(0.85, 1.15), rotate=(-15, 15), interpolation=cv2.INTER_LINEAR,
                 mask_interpolation=cv2.INTER_NEAREST, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=0.5),
        A.ElasticTransform(alpha=20, sigma=5, approximate=True, interpolation=cv2.INTER_LINEAR,
                           mask_interpolation=cv2.INTER_NEAREST, p=0.2),
        A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
    ])


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
        out = self.transform(image=np.ascontiguousarray(np.moveaxis(image, 0, -1), dtype=np.float32),
                             mask=np.ascontiguousarray(label))
        pixels = out["image"]
        pixels = pixels[..., None] if pixels.ndim == 2 else pixels
        augmented = np.clip(np.moveaxis(pixels, -1, 0), 0.0, 1.0).astype(np.float32)
        return np.ascontiguousarray(augmented), np.ascontiguousarray(out["mask"]).astype(label.dtype)
