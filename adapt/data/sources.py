"""Case lists: which image/label files make up a dataset, for each kind of ``source``.

* ``msd``: a Medical Segmentation Decathlon task folder (``dataset.json`` + ``imagesTr/`` +
  ``labelsTr/``);
* ``folder``: an image glob and a label-path template (``{name}`` = file name, ``{stem}`` = name
  without suffixes, ``{parent}`` = folder relative to the root, ``{digits}`` = the stem's
  trailing digits, for layouts such as BTCV's ``img0001`` / ``label0001``);
* ``csv``: a manifest with ``image`` and ``label`` columns, optional ``case`` (patient: rows
  that share it are split together) and ``split`` (``train``/``val``/``test``);
* ``synthetic``: phantoms generated on first use (``adapt.data.synthetic``), then read as MSD.

Listing only looks at names; the files themselves are read and checked while indexing, so
that one bad case can be reported (or skipped) without hiding the others.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from adapt.data.cards import DataCard
from adapt.errors import ConfigError, DataError, DataNotFoundError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Case:
    """One image (file or DICOM folder) and its label file.

    Attributes:
        id: unique name of the case (used in ``meta.case`` and error messages).
        image: path of the image file, or of the folder of a DICOM series.
        label: path of the label map.
        group: the patient; cases of one group always land in the same split.
        split: an explicit split from the source (``csv`` column), else ``None``.
    """

    id: str
    image: Path
    label: Path
    group: str
    split: str | None = None


def cache_root() -> Path:
    """Where generated, downloaded and preprocessed data live (``$SAM2_ADAPT_DATA`` or ``~/.cache``)."""
    return Path(os.environ.get("SAM2_ADAPT_DATA") or Path.home() / ".cache" / "sam2-adapt" / "data").expanduser()


def data_root(card: DataCard, root: str | Path | None = None) -> Path:
    """The dataset folder: ``data.root`` if given, else the card's ``source.root``, else the cache.

    A relative ``source.root`` is taken relative to the card's own folder, so a card can
    travel with its data.
    """
    if root:
        return Path(root).expanduser()
    chosen = card.source.get("root")
    if chosen:
        path = Path(chosen).expanduser()
        return path if path.is_absolute() or not card.path else Path(card.path).parent / path
    default = card.source.get("task", card.name) if card.source["kind"] == "msd" else card.name
    return cache_root() / default


def missing_data_error(card: DataCard, root: Path, what: str) -> DataNotFoundError:
    """The error for data that is not there, with both ways to supply it."""
    fixes = [f"point to an existing copy: data.root=/path/to/{card.source.get('task', card.name)}"]
    if card.urls():
        fixes.append(f"download it: python -m adapt.data download card={card.name}")
    elif card.source.get("access"):
        fixes.append(f"get it (no public download URL): {card.source['access']}")
    else:
        fixes.append(f"this dataset has no public download URL; obtain it as its card ({card.path}) describes")
    return DataNotFoundError(f"data card {card.name!r}: no dataset at {root} ({what}).\nFix one of:\n  - "
                             + "\n  - ".join(fixes))


def list_cases(card: DataCard, root: Path) -> list[Case]:
    """Every labelled case of the dataset at ``root``.

    Raises:
        DataNotFoundError: nothing at ``root``, with how to supply the data.
        ConfigError: the source's manifest lacks a required column.
        DataError: a manifest lists no case.
    """
    kind = card.source["kind"]
    if kind == "synthetic":
        _generate(card, root)
    if not root.exists():
        raise missing_data_error(card, root, "folder not found")
    cases = {"msd": _msd, "synthetic": _msd, "folder": _folder, "csv": _csv}[kind](card, root)
    ids = [c.id for c in cases]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise DataError(f"{root}: case ids {dupes[:5]} occur more than once; give cases distinct file names")
    return cases


def _generate(card: DataCard, root: Path) -> None:
    if (root / "dataset.json").exists():
        return
    from adapt.data import synthetic

    writer = getattr(synthetic, synthetic.GENERATORS[card.source.get("generator", "ct")])
    options = {k: card.source[k] for k in ("num_cases", "seed") if k in card.source}
    if "shape" in card.source:
        options["shape"] = tuple(card.source["shape"])
    writer(root, **options)


def _msd(card: DataCard, root: Path) -> list[Case]:
    manifest = root / "dataset.json"
    if not manifest.exists():
        raise missing_data_error(card, root, f"{manifest.name} not found")
    try:
        entries = json.loads(manifest.read_text()).get("training", [])
    except json.JSONDecodeError as err:
        raise DataError(f"{manifest}: not valid JSON ({err}); re-extract the dataset") from None
    cases = []
    for entry in entries:
        image = root / entry["image"]
        case_id = _strip_suffixes(image.name)
        cases.append(Case(case_id, image, root / entry["label"], group=case_id))
    if not cases:
        raise DataError(f"{manifest}: the 'training' list is empty")
    return cases


def _folder(card: DataCard, root: Path) -> list[Case]:
    pattern = card.source["images"]
    images = sorted(root.glob(pattern))
    if not images:
        raise missing_data_error(card, root, f"no file matches source.images={pattern!r}")
    template = card.source["labels"]
    stems = [_strip_suffixes(p.name) for p in images]
    unique = len(set(stems)) == len(stems)
    cases = []
    for image, stem in zip(images, stems):
        relative = image.relative_to(root)
        try:
            digits = re.search(r"(\d*)$", stem).group(1)
            label = root / template.format(name=image.name, stem=stem, parent=relative.parent.as_posix(),
                                           digits=digits)
        except (KeyError, IndexError) as err:
            raise ConfigError(f"data card {card.path}: source.labels={template!r} uses an unknown placeholder "
                              f"{err}; use {{name}}, {{stem}}, {{parent}} or {{digits}}") from None
        case_id = stem if unique else _strip_suffixes(relative.as_posix())
        cases.append(Case(case_id, image, label, group=case_id))
    return cases


def _csv(card: DataCard, root: Path) -> list[Case]:
    manifest = root / card.source["manifest"]
    if not manifest.exists():
        raise missing_data_error(card, root, f"manifest {card.source['manifest']} not found")
    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f))
    columns = set(rows[0]) if rows else set()
    if not {"image", "label"} <= columns:
        raise ConfigError(f"{manifest}: needs columns 'image' and 'label' (optional 'case', 'split'); "
                          f"found {sorted(columns)}")
    cases = []
    for line, row in enumerate(rows, start=2):
        image = Path(row["image"])
        image = image if image.is_absolute() else root / image
        label = Path(row["label"])
        label = label if label.is_absolute() else root / label
        split = (row.get("split") or "").strip() or None
        if split is not None and split not in SPLITS:
            raise DataError(f"{manifest}, line {line}: split {split!r} is not one of {SPLITS}")
        case_id = _strip_suffixes(image.name)
        group = (row.get("case") or "").strip() or case_id
        cases.append(Case(case_id, image, label, group=group, split=split))
    if not cases:
        raise DataError(f"{manifest}: lists no case")
    return cases


def _strip_suffixes(name: str) -> str:
    """``case_001.nii.gz`` -> ``case_001``; ``a/b.png`` -> ``a/b``."""
    for suffix in (".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
