"""nnU-Net v2 raw datasets: the cases their file names make, and the faults this project refuses.

nnU-Net v2 keeps a dataset as ``DatasetXXX_Name/``: ``dataset.json`` (``channel_names`` such as
``{"0": "CT"}``, ``labels`` as name -> id, ``numTraining``, ``file_ending`` such as ``.nii.gz`` or
``.png``), ``imagesTr/{case}_{XXXX}{file_ending}`` (``XXXX``: the 4-digit channel index, ``0000``
for a single channel), ``labelsTr/{case}{file_ending}`` and optional ``imagesTs/{case}_0000...``.
Unlike an MSD ``dataset.json`` it lists no file: the cases come from the images' names, their
channel suffix removed (``liver_007_0000.nii.gz`` is case ``liver_007``, labelled by
``labelsTr/liver_007.nii.gz``). The suffix is removed here only, for files this module lists: in
other trees a trailing ``_0000`` is a case number (``adapt.data.inspect``).

``read_dataset`` lists every case and refuses, naming ``dataset.json``, the field and the fix:

* several channels in separate files (``channel_names`` with more than one entry, or ``_0001``
  files): the readers take one file per case, so the channels must be stacked into one file first.
  RGB pictures are nnU-Net's own exception (``R, G, B`` named, one ``_0000`` PNG holding them) and
  are read as they are;
* region-based ``labels`` (a list of ids for one name): the project trains on the ids the label
  files store;
* a ``file_ending`` no reader of ``adapt.data.formats`` takes (``.mha``, ``.nrrd``...);
* an image named without its ``_XXXX`` channel suffix.

A training image without its label is not refused here: ``python -m adapt.data init`` keeps it as a
case to annotate and listing refuses it for a card without ``source.unlabelled: true``
(``adapt.data.sources``). ``numTraining`` disagreeing with the images found is a note, not an error:
the project lists the files themselves and never reads the count, and its own annotation loop saves
new labels into ``labelsTr/`` (so counts drift by design); nnU-Net's ``verify_dataset_integrity``
does refuse the mismatch, so the note says which number to write before training nnU-Net itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapt.data.formats import FORMATS, for_name, suffix, supported
from adapt.errors import DataError

#: The 4-digit channel index ending an image's stem.
CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
#: Endings whose ``_0000`` file may hold nnU-Net's one multi-channel exception, RGB natural images.
PICTURE_ENDINGS = FORMATS["pillow"].suffixes + FORMATS["tiff"].suffixes


def recognises(content: Any) -> bool:
    """Whether a parsed ``dataset.json`` is nnU-Net v2's: ``channel_names`` and ``file_ending``, no
    ``training`` list (that is MSD's, or nnU-Net v1's, whose entries name their files)."""
    return isinstance(content, dict) and {"channel_names", "file_ending"} <= set(content) and "training" not in content


@dataclass(frozen=True)
class NnunetCase:
    """One image of ``imagesTr/`` (``test``: of ``imagesTs/``) and its label path, ``labelsTr/{case}{ending}``
    (where it is, or where a label made for it will be saved)."""

    id: str
    image: Path
    label: Path
    test: bool = False


@dataclass
class NnunetDataset:
    """What ``read_dataset`` found. ``extra_labels``: label files of no image; ``notes``: what is worth
    saying but refuses nothing (``numTraining``)."""

    manifest: Path
    file_ending: str
    cases: list[NnunetCase]
    extra_labels: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def unlabelled_training(self) -> list[NnunetCase]:
        """``imagesTr`` cases whose ``labelsTr`` file is not there."""
        return [c for c in self.cases if not c.test and not c.label.exists()]

    def missing_label_error(self) -> DataError:
        """The error for ``imagesTr`` images without their label, naming the first and the fixes."""
        missing = self.unlabelled_training
        first = missing[0]
        return DataError(
            f"{self.manifest}: imagesTr/{first.image.name} has no label labelsTr/{first.label.name} "
            f"({len(missing)} of the {sum(not c.test for c in self.cases)} imagesTr case(s) lack theirs); "
            "add the label file, move the image to imagesTs/, or keep such images as cases to annotate "
            "with source.unlabelled: true in the card"
        )


def read_dataset(root: Path, content: Any) -> NnunetDataset:
    """The cases of the nnU-Net v2 dataset at ``root`` whose parsed ``dataset.json`` is ``content``.

    Raises:
        DataError: naming ``dataset.json``, the field and the fix (see the module doc), or no image at all.
    """
    manifest = root / "dataset.json"
    if not recognises(content):
        raise DataError(
            f"{manifest}: not an nnU-Net v2 dataset.json (it needs channel_names and file_ending and no "
            "training list); for an MSD task folder use source.kind: msd, or run python -m adapt.data init "
            "on the folder again"
        )
    ending = _file_ending(manifest, content.get("file_ending"))
    _check_labels(manifest, content.get("labels"))
    names = content.get("channel_names")
    if not isinstance(names, dict) or not names:
        raise DataError(f'{manifest}: channel_names must name each channel, e.g. {{"0": "CT"}}; got {names!r}')
    found = {test: _images(root / ("imagesTs" if test else "imagesTr"), ending, manifest) for test in (False, True)}
    if not found[False]:
        others = sorted(p.name for p in (root / "imagesTr").glob("*") if not p.name.startswith("."))[:3]
        raise DataError(
            f"{manifest}: no image named {{case}}_0000{ending} in imagesTr/ (file_ending {ending!r}"
            + (f"; found {others}" if others else "; the folder is empty or missing")
            + "); put the images there, or set file_ending to the images' suffix"
        )
    _check_channels(manifest, names, ending, found)
    labels = root / "labelsTr"
    cases = [
        NnunetCase(case, channels[0], labels / f"{case}{ending}", test)
        for test in (False, True)
        for case, channels in sorted(found[test].items())
    ]
    known = {c.label.name for c in cases}
    extra = sorted(p for p in labels.glob(f"*{ending}") if p.name not in known and not p.name.startswith("."))
    dataset = NnunetDataset(manifest, ending, cases, extra)
    count, listed = len(found[False]), content.get("numTraining")
    if isinstance(listed, int) and not isinstance(listed, bool) and listed != count:
        dataset.notes.append(
            f"{manifest}: numTraining is {listed} but imagesTr holds {count} case(s); the cases found are "
            f"used (nnU-Net's own verify_dataset_integrity refuses the mismatch: set numTraining to {count} "
            "before training nnU-Net on this folder)"
        )
    return dataset


def _file_ending(manifest: Path, ending: Any) -> str:
    known = isinstance(ending, str) and ending.startswith(".") and for_name(f"x{ending}") is not None
    if not known or suffix(f"x{ending}") != ending.lower():
        raise DataError(
            f"{manifest}: file_ending {ending!r} is not a format this project reads (it reads "
            f"{supported()}); convert images and labels to .nii.gz (volumes, e.g. with SimpleITK: "
            "sitk.WriteImage(sitk.ReadImage(path), new_path)) or .png (2D images) and set file_ending to match"
        )
    return ending


def _check_labels(manifest: Path, labels: Any) -> None:
    if not isinstance(labels, dict) or not labels:
        raise DataError(
            f'{manifest}: labels must map each label name to its id, e.g. {{"background": 0, "liver": 1}}; got {labels!r}'
        )
    for name, value in labels.items():
        if isinstance(value, (list, tuple)):
            raise DataError(
                f"{manifest}: labels.{name} = {value} is a region (nnU-Net's region-based training joins label "
                "ids); this project trains on the ids the label files store: give every label one integer id "
                '(e.g. "tumor": 2) and drop regions_class_order'
            )
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise DataError(f"{manifest}: labels.{name} = {value!r} must be a non-negative integer id")


def _images(folder: Path, ending: str, manifest: Path) -> dict[str, dict[int, Path]]:
    """``{case: {channel: image}}`` of the files of ``folder`` that end in ``ending``."""
    found: dict[str, dict[int, Path]] = {}
    files = sorted(p for p in folder.glob(f"*{ending}") if not p.name.startswith(".")) if folder.is_dir() else []
    for path in files:
        stem = path.name[: len(path.name) - len(ending)]
        named = CHANNEL.match(stem)
        if not named:
            raise DataError(
                f"{manifest}: {folder.name}/{path.name} lacks the channel suffix nnU-Net's images carry "
                f"({{case}}_XXXX{ending}, 0000 for a single channel); rename it {stem}_0000{ending}"
            )
        found.setdefault(named["case"], {})[int(named["channel"])] = path
    return found


def _check_channels(manifest: Path, names: dict[str, Any], ending: str, found: dict[bool, dict]) -> None:
    """One channel per case, in its ``_0000`` file; RGB pictures named by several ``channel_names`` pass."""
    extra = sorted(p for images in found.values() for channels in images.values() for n, p in channels.items() if n)
    if not extra and (len(names) == 1 or ending.lower() in PICTURE_ENDINGS):
        return
    example = extra[0].name if extra else f"{{case}}_0001{ending}"
    raise DataError(
        f"{manifest}: channel_names lists {len(names)} channel(s) {dict(names)}: nnU-Net keeps each channel in a "
        f"file of its own (e.g. {example}), and channels in separate files are not read by this project yet. "
        "Stack each case's channels into one 4D NIfTI, e.g. with nibabel: nib.save(nib.Nifti1Image(np.stack("
        f"[nib.load(p).get_fdata() for p in sorted(glob('imagesTr/case_*{ending}'))], axis=-1), "
        f"nib.load('imagesTr/case_0000{ending}').affine), 'stacked/images/case.nii.gz'), copy labelsTr/case{ending} "
        "to stacked/labels/case.nii.gz, and run python -m adapt.data init stacked (every channel is kept)"
    )
