"""Case lists: which image/label files make up a dataset, for each kind of ``source``.

* ``msd``: a Medical Segmentation Decathlon task folder (``dataset.json`` + ``imagesTr/`` +
  ``labelsTr/``);
* ``nnunet``: an nnU-Net v2 raw dataset (``dataset.json`` with ``channel_names`` and ``file_ending``,
  ``imagesTr/{case}_0000{file_ending}`` + ``labelsTr/{case}{file_ending}``; ``adapt.data.nnunet``);
* ``folder``: an image glob and a label-path template (``{name}`` = file name, ``{stem}`` = name
  without suffixes, ``{parent}`` = folder relative to the root, ``{digits}`` = the stem's
  trailing digits, for layouts such as BTCV's ``img0001`` / ``label0001``);
* ``csv``: a manifest with ``image`` and ``label`` columns, optional ``case`` (patient: rows
  that share it are split together) and ``split`` (``train``/``val``/``test``);
* ``synthetic``: phantoms generated on first use (``adapt.data.synthetic``), then read as MSD.

A card with ``source.unlabelled: true`` may also hold images without a label (cases to be
annotated): a ``folder`` image whose label file is not there, a ``csv`` row with an empty
``label``, an MSD ``dataset.json`` ``test`` entry, an nnU-Net ``imagesTs/`` image or ``imagesTr/`` image
without its ``labelsTr/`` file. ``list_cases`` leaves them out (training,
evaluation and ``check`` use the labelled cases only); ``partition_cases`` returns both, for
``python -m adapt.annotate``. Without the flag a missing label stays an error, found while indexing.

Listing only looks at names; the files themselves are read and checked while indexing, so
that one bad case can be reported (or skipped) without hiding the others.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable

from adapt.data.cards import DataCard, load_card
from adapt.data.formats import strip_suffix
from adapt.data.nnunet import read_dataset
from adapt.data.tables import read_rows
from adapt.errors import ConfigError, DataError, DataNotFoundError

SPLITS = ("train", "val", "test")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Case:
    """One image (file or DICOM folder) and its label file.

    Attributes:
        id: unique name of the case (used in ``meta.case`` and error messages).
        image: path of the image file, or of the folder of a DICOM series.
        label: path of the label map; for an unlabelled case, where its label will be saved (``None``
            when the source does not say: a ``csv`` row with an empty ``label``).
        group: the patient; cases of one group always land in the same split.
        split: an explicit split from the source (``csv`` column), else ``None``.
    """

    id: str
    image: Path
    label: Path | None
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
    return cache_root() / folder_name(card)


def folder_name(card: DataCard) -> str:
    """The dataset folder's usual name: an MSD ``task`` or nnU-Net ``dataset`` (``Dataset001_Liver``), else the card's."""
    return card.source.get("task") or card.source.get("dataset") or card.name


def missing_data_error(card: DataCard, root: Path, what: str) -> DataNotFoundError:
    """The error for data that is not there, with both ways to supply it."""
    fixes = [f"point to an existing copy: data.root=/path/to/{folder_name(card)}"]
    if card.urls():
        fixes.append(f"download it: python -m adapt.data download card={card.name}")
    elif card.source.get("access"):
        fixes.append(f"get it (no public download URL): {card.source['access']}")
    else:
        fixes.append(f"this dataset has no public download URL; obtain it as its card ({card.path}) describes")
    return DataNotFoundError(
        f"data card {card.name!r}: no dataset at {root} ({what}).\nFix one of:\n  - " + "\n  - ".join(fixes)
    )


def list_cases(card: DataCard, root: Path, say: str | None = None) -> list[Case]:
    """Every labelled case of the dataset at ``root`` (a card's unlabelled images left out).

    Args:
        card: the data card.
        root: its data folder.
        say: the command that lists them (``training``, ``evaluation``): it warns how many unlabelled
            images it leaves out.

    Raises:
        DataNotFoundError: nothing at ``root``, with how to supply the data.
        ConfigError: the source's manifest lacks a required column.
        DataError: a manifest lists no case; every case of the card is unlabelled.
    """
    labelled, unlabelled = partition_cases(card, root)
    if unlabelled and not labelled:
        raise DataError(
            f"data card {card.path or card.name}: all {len(unlabelled)} image(s) under {root} are "
            "unlabelled (source.unlabelled: true); training and evaluation need labels: pre-annotate "
            "them (python -m adapt.annotate data.card=... out=...) and save the corrected labels first"
        )
    if unlabelled and say:
        log.warning(unlabelled_note(len(unlabelled), say))
    return labelled


def partition_cases(card: DataCard, root: Path) -> tuple[list[Case], list[Case]]:
    """``(labelled, unlabelled)`` cases of the dataset at ``root``; see the module doc.

    Raises:
        DataNotFoundError, ConfigError, DataError: as ``list_cases``, except for a card that is all unlabelled.
    """
    kind = card.source["kind"]
    if kind == "synthetic":
        _generate(card, root)
    if not root.exists():
        raise missing_data_error(card, root, "folder not found")
    cases = {"msd": _msd, "synthetic": _msd, "nnunet": _nnunet, "folder": _folder, "csv": _csv}[kind](card, root)
    refuse_link_loops(p for c in cases for p in (c.image, c.label) if p is not None)
    ids = [c.id for c in cases]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise DataError(f"{root}: case ids {dupes[:5]} occur more than once; give cases distinct file names")
    if not card.source.get("unlabelled"):
        return cases, []
    missing = [c for c in cases if c.label is None or not Path(c.label).exists()]
    return [c for c in cases if c not in missing], missing


def unlabelled_note(count: int, what: str) -> str:
    """What a command says when it leaves a card's unlabelled images out."""
    return (
        f"{count} unlabelled image(s) of the card skipped by {what} (source.unlabelled: true; "
        "python -m adapt.annotate pre-annotates them)"
    )


def check_data(card: str | None, root: str | None = None, listed: bool = True) -> None:
    """The door's data check: the data card ``card`` loads and (``listed``) its dataset is there.

    Run by ``adapt.cli`` before a command imports torch, and by ``python -m adapt.data check``.
    A synthetic card's phantoms are generated on first use, by the data module, not here.

    Raises:
        AdaptError: the card's own message (bad field, unknown stem), or the data folder that is
            missing with how to supply it.
    """
    if not card:
        return
    loaded = load_card(str(card))
    if listed and loaded.source.get("kind") != "synthetic":
        list_cases(loaded, data_root(loaded, root))


def _generate(card: DataCard, root: Path) -> None:
    if (root / "dataset.json").exists():
        return
    from adapt.data import synthetic  # lazy: start-up

    writer = getattr(synthetic, synthetic.GENERATORS[card.source.get("generator", "ct")])
    options = {k: card.source[k] for k in ("num_cases", "seed") if k in card.source}
    if "shape" in card.source:
        options["shape"] = tuple(card.source["shape"])
    writer(root, **options)


def read_manifest(manifest: Path, wanted: str) -> dict:
    """A ``dataset.json`` parsed; ``wanted`` says, in the error, what it should hold and how to fix it.

    Raises:
        DataError: naming the file: not JSON, or not a JSON object.
    """
    try:
        content = json.loads(manifest.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{manifest}: not valid JSON ({err}); re-extract the dataset") from None
    if not isinstance(content, dict):
        raise DataError(f"{manifest}: holds a JSON {type(content).__name__}, not {wanted}")
    return content


def msd_entries(manifest: Path) -> list[tuple[str, str]]:
    """``(image, label)`` of every entry of an MSD ``dataset.json``'s ``training`` list, as written.

    Raises:
        DataError: naming the file and what is wrong: not JSON, not an object, no or an empty
            ``training`` list, an entry that is a plain path or lacks ``image``/``label``.
    """
    fix = (
        're-extract the dataset, or write the entries as {"image": "./imagesTr/x.nii.gz", '
        '"label": "./labelsTr/x.nii.gz"}'
    )
    content = read_manifest(manifest, f"an object with a 'training' list; {fix}")
    entries = content.get("training")
    if not isinstance(entries, list) or not entries:
        what = "has no 'training' key" if "training" not in content else f"has 'training': {str(entries)[:60]!r}"
        raise DataError(f"{manifest}: {what}; it must be a non-empty list of image/label pairs; {fix}")
    pairs = []
    for n, entry in enumerate(entries):
        if isinstance(entry, str):
            raise DataError(
                f"{manifest}: training[{n}] is a plain path ({entry!r}); every training entry must name "
                f"its image and its label; {fix}"
            )
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(k), str) and entry.get(k) for k in ("image", "label")
        ):
            raise DataError(f"{manifest}: training[{n}] = {str(entry)[:80]} lacks an 'image' or 'label' path; {fix}")
        pairs.append((entry["image"], entry["label"]))
    return pairs


def _msd(card: DataCard, root: Path) -> list[Case]:
    manifest = root / "dataset.json"
    if not manifest.exists():
        raise missing_data_error(card, root, f"{manifest.name} not found")
    cases = []
    for image_name, label_name in msd_entries(manifest):
        image = root / image_name
        case_id = strip_suffix(image.name)
        cases.append(Case(case_id, image, root / label_name, group=case_id))
    if card.source.get("unlabelled"):
        for image_name in _msd_test_entries(manifest):
            image = root / image_name
            case_id = strip_suffix(image.name)
            cases.append(Case(case_id, image, root / "labelsTr" / image.name, group=case_id))
    return cases


def _msd_test_entries(manifest: Path) -> list[str]:
    """The image paths of an MSD ``dataset.json``'s ``test`` list (images without labels)."""
    entries = json.loads(manifest.read_text()).get("test") or []
    return [e if isinstance(e, str) else e.get("image", "") for e in entries if isinstance(e, (str, dict))]


def _nnunet(card: DataCard, root: Path) -> list[Case]:
    """``imagesTr`` cases (and, for a card with ``source.unlabelled: true``, ``imagesTs`` ones); an ``imagesTr``
    image without its label is refused unless the card keeps unlabelled cases."""
    manifest = root / "dataset.json"
    if not manifest.exists():
        raise missing_data_error(card, root, f"{manifest.name} not found")
    dataset = read_dataset(root, read_manifest(manifest, "an nnU-Net v2 dataset.json object; re-extract the dataset"))
    for note in dataset.notes:
        log.warning(note)
    unlabelled = card.source.get("unlabelled")
    if dataset.unlabelled_training and not unlabelled:
        raise dataset.missing_label_error()
    return [Case(c.id, c.image, c.label, group=c.id) for c in dataset.cases if unlabelled or not c.test]


def _folder(card: DataCard, root: Path) -> list[Case]:
    pattern = card.source["images"]
    images = sorted(root.glob(pattern))
    if not images:
        raise missing_data_error(card, root, f"no file matches source.images={pattern!r}")
    template = card.source["labels"]
    stems = [strip_suffix(p.name) for p in images]
    cases = []
    for image, stem, case_id in zip(images, stems, case_ids([p.relative_to(root).as_posix() for p in images])):
        relative = image.relative_to(root)
        try:
            digits = re.search(r"(\d*)$", stem).group(1)
            label = root / template.format(name=image.name, stem=stem, parent=relative.parent.as_posix(), digits=digits)
        except (KeyError, IndexError) as err:
            raise ConfigError(
                f"data card {card.path}: source.labels={template!r} uses an unknown placeholder "
                f"{err}; use {{name}}, {{stem}}, {{parent}} or {{digits}}"
            ) from None
        cases.append(Case(case_id, image, label, group=case_id))
    return cases


def case_ids(images: list[str], names: list[str] | None = None) -> list[str]:
    """The case ids of images named by these paths: their ``names`` (default: the file names without suffixes)
    where those are unique, else the paths without suffixes (``case_00000/imaging``: per-case folders of
    same-named files)."""
    names = [strip_suffix(PurePosixPath(p).name) for p in images] if names is None else names
    return names if len(set(names)) == len(names) else [strip_suffix(p) for p in images]


#: How a ``csv`` source's manifest is written (named when it is not).
MANIFEST_FIX = "a manifest's columns are image,label (optional: case, split)"


def _csv(card: DataCard, root: Path) -> list[Case]:
    manifest = root / card.source["manifest"]
    if not manifest.exists():
        raise missing_data_error(card, root, f"manifest {card.source['manifest']} not found")
    rows = read_rows(manifest, ("image", "label"), str(manifest), MANIFEST_FIX)
    cases = []
    ids = case_ids([Path(row["image"]).as_posix() for row in rows])
    for line, (row, case_id) in enumerate(zip(rows, ids), start=2):
        image = Path(row["image"])
        image = image if image.is_absolute() else root / image
        text = row["label"]
        if not text and not card.source.get("unlabelled"):
            raise DataError(
                f"{manifest}, line {line}: empty label; give the label file, or mark the card's "
                "unlabelled images with source.unlabelled: true"
            )
        label = Path(text) if text else None
        label = label if label is None or label.is_absolute() else root / label
        split = (row.get("split") or "").strip() or None
        if split is not None and split not in SPLITS:
            raise DataError(f"{manifest}, line {line}: split {split!r} is not one of {SPLITS}")
        group = (row.get("case") or "").strip() or case_id
        cases.append(Case(case_id, image, label, group=group, split=split))
    if not cases:
        raise DataError(f"{manifest}: lists no case")
    return cases


def link_loop(path: Path) -> bool:
    """Whether ``path`` is a symbolic link that never reaches a file (to itself, or round a cycle)."""
    if not path.is_symlink():
        return False
    try:
        path.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 names the loop this way
        return True
    except OSError as err:
        return err.errno == errno.ELOOP
    return False


def refuse_link_loops(paths: Iterable[Path]) -> None:
    """Refuse the first symbolic link loop among ``paths`` (it would read as a missing file, or hang a resolve).

    Raises:
        DataError: naming the link and where it points.
    """
    for path in paths:
        if link_loop(Path(path)):
            raise DataError(
                f"{path}: a symbolic link loop (it points to {os.readlink(path)}, which leads back to "
                "itself); point the link at the real file, or remove it"
            )
