"""Cases of a 3D dataset: where the files are, reading them in a canonical frame, checking them.

Volumes are reoriented to the closest canonical (RAS+) frame with nibabel, so
``slice_axis: 2`` always means axial slices whatever the scanner stored; intensities are
mapped to [0, 1] as the card says (a CT window in HU or robust percentiles). Problems with
a file — missing, unreadable, image/label grids that disagree, label ids the card does not
know — raise a ``DataError`` that names the file, found while indexing, before training.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from adapt.data.cards import DataCard
from adapt.errors import DataError, DataNotFoundError


@dataclass(frozen=True)
class Case:
    """One image (and its label map) on disk."""

    id: str
    image: Path
    label: Path


def cache_root() -> Path:
    """Where generated and downloaded datasets live (``$SAM2_ADAPT_DATA`` or ``~/.cache``)."""
    return Path(os.environ.get("SAM2_ADAPT_DATA", Path.home() / ".cache" / "sam2-adapt" / "data"))


def data_root(card: DataCard, root: str | None = None) -> Path:
    """The dataset folder: ``data.root`` if given, else the card's, else the cache."""
    chosen = root or card.source.get("root")
    return Path(chosen).expanduser() if chosen else cache_root() / card.name


def list_cases(card: DataCard, root: Path) -> list[Case]:
    """Cases of an MSD-layout dataset (``dataset.json`` + imagesTr/labelsTr); synthetic ones are generated.

    Raises:
        DataNotFoundError: nothing at ``root``, with how to supply the data.
    """
    if card.source["kind"] == "synthetic" and not (root / "dataset.json").exists():
        from adapt.data.synthetic import write_ct_phantoms

        write_ct_phantoms(root, num_cases=int(card.source.get("num_cases", 8)), seed=int(card.source.get("seed", 0)))
    manifest = root / "dataset.json"
    if not manifest.exists():
        raise DataNotFoundError(
            f"data card {card.name!r}: no dataset at {root} ({manifest.name} not found).\n"
            f"Fix one of:\n  - point to an existing copy: data.root=/path/to/{card.source.get('task', card.name)}\n"
            f"  - download it: python -m adapt.data download card={card.name}"
        )
    entries = json.loads(manifest.read_text()).get("training", [])
    cases = []
    for entry in entries:
        image, label = root / entry["image"], root / entry["label"]
        cases.append(Case(id=Path(entry["image"]).name.split(".")[0], image=image, label=label))
    if not cases:
        raise DataError(f"{manifest}: the 'training' list is empty")
    return cases


def _load(path: Path) -> nib.Nifti1Image:
    if not path.exists():
        raise DataError(f"{path}: file not found (listed in the dataset manifest)")
    try:
        image = nib.load(path)
        return nib.as_closest_canonical(image)
    except Exception as err:  # nibabel raises many types for truncated or foreign files
        raise DataError(f"{path}: unreadable as NIfTI ({type(err).__name__}: {err})") from None


def check_pair(case: Case, known_ids: set[int]) -> np.ndarray:
    """Validate a case's image/label pair and return its label volume (canonical frame).

    Raises:
        DataError: grids differ, or the label map has ids the card does not list.
    """
    image, label = _load(case.image), _load(case.label)
    if image.shape[:3] != label.shape[:3]:
        raise DataError(f"{case.label}: label shape {label.shape[:3]} differs from image {case.image} shape {image.shape[:3]}")
    if not np.allclose(image.affine, label.affine, atol=1e-3):
        raise DataError(f"{case.label}: affine differs from the image's ({case.image}); resample the label onto the image grid")
    try:
        data = np.asarray(label.dataobj).astype(np.int64)
    except Exception as err:
        raise DataError(f"{case.label}: cannot read voxels ({type(err).__name__}: {err})") from None
    unknown = sorted(set(np.unique(data).tolist()) - known_ids)
    if unknown:
        raise DataError(f"{case.label}: label ids {unknown} are not in the data card's labels {sorted(known_ids)}")
    return data


def scale_intensity(volume: np.ndarray, intensity: dict[str, Any]) -> np.ndarray:
    """Map raw intensities to [0, 1]: a ``window: [low, high]`` (CT, HU) or ``percentiles: [lo, hi]``."""
    if "window" in intensity:
        low, high = intensity["window"]
    else:
        low, high = np.percentile(volume, intensity.get("percentiles", [0.5, 99.5]))
    return np.clip((volume - low) / max(high - low, 1e-6), 0, 1).astype(np.float32)


@lru_cache(maxsize=8)
def load_image(path: Path, window: tuple | None, percentiles: tuple | None) -> np.ndarray:
    """The image volume in the canonical frame, scaled to [0, 1]; the last few stay in memory."""
    intensity = {"window": window} if window else {"percentiles": percentiles or (0.5, 99.5)}
    volume = np.asarray(_load(path).dataobj, dtype=np.float32)
    return scale_intensity(volume[..., 0] if volume.ndim == 4 else volume, intensity)
