"""Look at a folder of scans and find its layout: which files are images, which are labels, which belong together.

``find_layout(root)`` is the first half of ``python -m adapt.data init`` (the second,
``adapt.data.card_writer``, reads the pairs and writes the card). It recognises, in order:

* an nnU-Net v2 raw dataset: ``dataset.json`` with ``channel_names`` and ``file_ending`` and no
  ``training`` list; ``imagesTr/{case}_0000{file_ending}`` pairs with ``labelsTr/{case}{file_ending}``
  (``adapt.data.nnunet``: the channel suffix is stripped there only, never in other trees, where
  ``_0000`` is a case number);
* an MSD task folder: ``dataset.json`` with a ``training`` list (``imagesTr/`` + ``labelsTr/``);
* a CSV list at the top of the folder with ``image`` and ``label`` columns;
* any other tree of NIfTI files, DICOM series (a folder of slices), PNG/JPEG/BMP/GIF, (Geo)TIFF or
  video frame folders. Each file (or series/frame folder) gets a role (``role_of``): a
  ``_segmentation``/``_mask``/``_seg`` stem suffix makes a label; else the nearest folder that
  names a role decides (``images/``, ``imagesTr``, ``Input`` are images; ``masks/``,
  ``labelsTr``, ``GroundTruth`` labels), so ``masks/scan_00.png`` is a label although its name
  says ``scan``; else the words of the file name)
  and a key: its stem without role words, split words and an annotator's number
  (``ISIC_0001_segmentation`` -> ``isic_0001``, ``img0001`` -> ``0001``, ``21_training`` and
  ``21_manual1`` -> ``21``). A file beside a label of its name plus a label word is that label's image,
  whatever its folder says (``Dataset_BUSI_with_GT/benign/benign (1).png`` beside ``benign (1)_mask.png``).
  Labels pair with the image of the same key, the one nearest in the tree when several share it;
  where no image has its key, with the one image whose key without the folder's name is the label's
  (``MUL-PanSharpen/MUL-PanSharpen_AOI_2_img1`` + ``masks/mask_AOI_2_img1``); a label named by its
  role alone with the only image under its folder (``p1/label.nii.gz`` + the series ``p1/study/series/``).
  A second label of a paired image is left out and named; a case folder of one image file per
  channel (BraTS' ``_t1``, ``_t2`` beside ``_seg``) is refused with the fix (stack them), never
  paired as if one sequence were the image.

The pairs become a ``folder`` source (an image glob and a label template, checked to give back
every pair) or, when no template fits, a ``csv`` manifest listing them. Files left over are
reported: images without a label, labels without an image. Images without a label are kept as the
card's unlabelled cases (``source.unlabelled: true``, cases to annotate) where the source can list
them: the image glob matches them too, a CSV row with an empty ``label``, an MSD ``test`` entry, an
nnU-Net ``imagesTs/`` image or ``imagesTr/`` image without its label.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from adapt.data.formats import FORMATS, for_name, strip_suffix
from adapt.data.formats.dicom import is_series
from adapt.data.nnunet import read_dataset, recognises
from adapt.data.sources import MANIFEST_FIX, _msd_test_entries, case_ids, msd_entries, refuse_link_loops
from adapt.data.tables import columns_of, read_rows
from adapt.errors import ConfigError, DataError

LABEL_WORDS = {
    "label",
    "labels",
    "mask",
    "masks",
    "seg",
    "segs",
    "segmentation",
    "segmentations",
    "gt",
    "gts",
    "truth",
    "groundtruth",
    "annotation",
    "annotations",
    "annot",
    "manual",
}
IMAGE_WORDS = {
    "image",
    "images",
    "img",
    "imgs",
    "input",
    "inputs",
    "jpegimages",
    "scan",
    "scans",
    "volume",
    "volumes",
    "photo",
    "photos",
    "tiles",
    "frames",
    "rgb",
    "imaging",
    "ct",
    "sat",
    "satellite",
}
#: Words naming a split, not a case: DRIVE's ``21_training.tif`` pairs with ``21_manual1.gif``.
SPLIT_WORDS = {"train", "training", "test", "testing", "val", "valid", "validation"}
SKIPPED_NAMES = {"dataset.json", "thumbs.db", ".ds_store"}


@dataclass
class Item:
    """One image or label: a file, a DICOM series folder or a folder of video frames."""

    rel: PurePosixPath
    kind: str  # a name of adapt.data.formats.FORMATS
    role: str  # image | label
    key: str
    bare: str = ""  # key_of(rel, bare=True)


@dataclass
class Layout:
    """What a folder holds, as a card's ``source`` sees it.

    Attributes:
        root: the folder inspected.
        source: the card's ``source`` section (``root`` is added by the card writer).
        pairs: ``(image, label)`` absolute paths of every labelled case.
        unpaired_images: images no label belongs to.
        unpaired_labels: labels no image belongs to.
        manifest: ``dataset.json`` of an MSD folder (label names, modality), else ``None``.
        description: the layout in words (printed by ``init``).
        csv_rows: for a ``csv`` source written by ``init``: the manifest's rows.
        notes: what ``init`` found worth saying (e.g. label files that mix encodings).
        unlabelled: the images without a label the card keeps as unlabelled cases (of ``unpaired_images``).
    """

    root: Path
    source: dict[str, Any]
    pairs: list[tuple[Path, Path]]
    unpaired_images: list[Path] = field(default_factory=list)
    unpaired_labels: list[Path] = field(default_factory=list)
    manifest: dict[str, Any] | None = None
    description: str = ""
    csv_rows: list[dict[str, str]] | None = None
    notes: list[str] = field(default_factory=list)
    unlabelled: list[Path] = field(default_factory=list)


def find_layout(root: str | Path) -> Layout:
    """The layout of the dataset at ``root`` (see the module doc).

    Raises:
        ConfigError: ``root`` is not a folder.
        DataError: no image/label pair can be found (says what was found).
    """
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise ConfigError(f"init: {root} is not a folder; give the folder that holds the dataset")
    if (root / "dataset.json").is_file():
        content = _peek(root / "dataset.json")
        return _nnunet_layout(root, content) if recognises(content) else _msd_layout(root)
    for manifest in sorted(root.glob("*.csv")):
        layout = _csv_layout(root, manifest)
        if layout is not None:
            return layout
    return _folder_layout(root)


def _peek(manifest: Path) -> Any:
    """A ``dataset.json``'s content, ``None`` when it is not JSON (the MSD reader then names the fault)."""
    try:
        return json.loads(manifest.read_text())
    except ValueError:
        return None


def _nnunet_layout(root: Path, content: dict[str, Any]) -> Layout:
    dataset = read_dataset(root, content)
    refuse_link_loops(p for c in dataset.cases for p in (c.image, c.label))
    missing = dataset.unlabelled_training
    if len(missing) == sum(not c.test for c in dataset.cases):
        raise dataset.missing_label_error()
    pairs = [(c.image, c.label) for c in dataset.cases if c.label.exists()]
    unlabelled = [c.image for c in dataset.cases if not c.label.exists()]
    tests = sum(c.test for c in dataset.cases)
    layout = Layout(
        root,
        {"kind": "nnunet", **({"unlabelled": True} if unlabelled or tests else {})},
        pairs,
        unlabelled,
        dataset.extra_labels,
        content,
        f"nnU-Net v2 dataset ({len(dataset.cases) - tests} cases in imagesTr"
        + (f", {tests} in imagesTs" if tests else "")
        + f", file_ending {dataset.file_ending})",
        notes=list(dataset.notes),
        unlabelled=unlabelled,
    )
    if missing:
        layout.notes.append(
            f"{len(missing)} imagesTr image(s) without their label (e.g. labelsTr/{missing[0].label.name}) kept as "
            "cases to annotate (source.unlabelled: true)"
        )
    return layout


def _msd_layout(root: Path) -> Layout:
    path = root / "dataset.json"
    entries = [(root / image, root / label) for image, label in msd_entries(path)]
    refuse_link_loops(p for entry in entries for p in entry)
    pairs = [(image, label) for image, label in entries if image.exists() and label.exists()]
    if not pairs:
        image, label = entries[0]
        raise DataError(
            f"{path}: none of its {len(entries)} training entries has both files (e.g. "
            f"{image if not image.exists() else label} is missing); extract imagesTr/ and labelsTr/ "
            "beside it, or fix the paths in dataset.json"
        )
    missing = [image for image, label in entries if not (image.exists() and label.exists())]
    listed_labels = {label.resolve() for _, label in entries}
    listed_images = {image.resolve() for image, _ in entries}
    extra_labels = [p for p in _files(root / "labelsTr") if p.resolve() not in listed_labels]
    extra_images = [p for p in _files(root / "imagesTr") if p.resolve() not in listed_images]
    tests = [root / image for image in _msd_test_entries(path)]
    unlabelled = [image for image in tests if image.exists()]
    layout = Layout(
        root,
        {"kind": "msd", **({"unlabelled": True} if unlabelled else {})},
        pairs,
        missing + extra_images + unlabelled,
        extra_labels,
        json.loads(path.read_text()),
        f"MSD task folder ({len(entries)} cases listed in dataset.json"
        + (f", {len(missing)} of them missing a file)" if missing else ")"),
        unlabelled=unlabelled,
    )
    return layout


def _files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []
    refuse_link_loops(files)
    return files


def _csv_layout(root: Path, manifest: Path) -> Layout | None:
    if not {"image", "label"} <= set(columns_of(manifest)):
        return None  # another table beside the files (metadata, a spreadsheet of patients)
    rows = read_rows(manifest, ("image", "label"), str(manifest), MANIFEST_FIX)
    if not rows:
        return None
    pairs, unpaired, unlabelled = [], [], []
    for row in rows:
        image, label = (Path(row[k]) if Path(row[k]).is_absolute() else root / row[k] for k in ("image", "label"))
        if not (row["label"] or "").strip() and image.exists():
            unlabelled.append(image)
        (pairs.append((image, label)) if image.exists() and label.exists() else unpaired.append(image))
    source = {"kind": "csv", "manifest": manifest.name, **({"unlabelled": True} if unlabelled else {})}
    return Layout(
        root,
        source,
        pairs,
        unpaired,
        [],
        description=f"CSV list {manifest.name} ({len(rows)} rows)",
        unlabelled=unlabelled,
    )


# --------------------------------------------------------------------------- folder trees


def _folder_layout(root: Path) -> Layout:
    items = images_beside_their_labels(scan_items(root))
    images = [i for i in items if i.role == "image"]
    labels = [i for i in items if i.role == "label"]
    if not items:
        formats = ", ".join(f.title for f in FORMATS.values())
        raise DataError(f"init: no image or label file under {root} (files read: {formats}); give the dataset's folder")
    if not labels:
        raise DataError(
            f"init: found {len(images)} image(s) under {root} but no label file: label files are "
            "recognised by a folder or name such as masks/, labels/, labelsTr/, *_mask, *_seg, "
            "*_segmentation; rename them, or list the pairs in a CSV (columns image,label) in the folder"
        )
    pairs, lone_images, lone_labels = pair_items(images, labels)
    channels = _channel_files(lone_images, lone_labels)
    if not pairs:
        raise DataError(
            f"init: {len(images)} image(s) and {len(labels)} label(s) under {root}, but no label "
            f"matches an image by name (e.g. {images[0].rel if images else '-'} and {labels[0].rel}); "
            + (
                f"{channels}, or list one image per case in a CSV"
                if channels
                else f"{_structure_files(labels, len(images))}give labels the image's name (optionally with "
                "_mask/_seg), or list the pairs in a CSV"
            )
        )
    source, description = folder_source(root, pairs, labels, lone_images)
    absolute = [(root / i.rel, root / lab.rel) for i, lab in pairs]
    layout = Layout(
        root,
        source,
        absolute,
        [root / i.rel for i in lone_images],
        [root / lab.rel for lab in lone_labels],
        description=description,
    )
    layout.notes += [channels] if channels else []
    layout.notes += _second_labels(pairs, lone_labels)
    if source["kind"] == "csv":
        rows = [(i, lab.rel.as_posix()) for i, lab in pairs] + [(i, "") for i in lone_images]
        groups = case_ids([i.rel.as_posix() for i, _ in rows], [i.key for i, _ in rows])  # keys, else paths
        layout.csv_rows = [
            {"image": i.rel.as_posix(), "label": label, "case": group} for (i, label), group in zip(rows, groups)
        ]
        if lone_images:
            source["unlabelled"] = True
    if source.get("unlabelled"):
        layout.unlabelled = list(layout.unpaired_images)
    return layout


def images_beside_their_labels(items: list[Item]) -> list[Item]:
    """A file beside a label of its name plus a label word (``benign (1).png`` beside ``benign (1)_mask.png``)
    is that label's image, even in a folder whose name reads as a label folder (``Dataset_BUSI_with_GT/``):
    the label word of one name says which of the two is the label."""
    marked = {(i.rel.parent, i.key) for i in items if marked_label(strip_suffix(i.rel.name))}
    return [
        Item(i.rel, i.kind, "image", i.key, i.bare)
        if i.role == "label" and (i.rel.parent, i.key) in marked and not marked_label(strip_suffix(i.rel.name))
        else i
        for i in items
    ]


def _channel_files(lone_images: list[Item], lone_labels: list[Item]) -> str:
    """The refusal for a case folder of one file per channel (BraTS' ``BraTS2021_00000_t1.nii.gz``,
    ``_t1ce``, ``_t2``, ``_flair`` beside ``_seg.nii.gz``): images named like a label plus one word each.
    None of them is the case's image alone, so none is paired; the fix stacks them."""
    for label in lone_labels:
        siblings = sorted(
            i.rel.name for i in lone_images if i.rel.parent == label.rel.parent and i.key.startswith(label.key + "_")
        )
        if len(siblings) >= 2:
            return (
                f"{label.rel.parent} holds {len(siblings)} images named like its label {label.rel.name} "
                f"({', '.join(siblings[:4])}{', ...' if len(siblings) > 4 else ''}), one per sequence or band: this "
                "project reads one image file per case, with its channels inside it, so none was paired; stack "
                f"each case's files into one file (a 4D NIfTI with the channels last, the same order in every case, "
                "e.g. with nibabel) named like the label without its label word"
            )
    return ""


def _second_labels(pairs: list[tuple[Item, Item]], lone_labels: list[Item]) -> list[str]:
    """A note on labels left out because their image already has one (BUSI's ``benign (4)_mask_1.png`` beside
    ``benign (4)_mask.png``; DRIVE's ``mask/21_training_mask.gif`` field of view beside ``1st_manual/``)."""
    paired = {image.key: label for image, label in pairs} | {image.bare: label for image, label in pairs}
    second = [
        (lab, paired[lab.key] if lab.key in paired else paired[lab.bare])
        for lab in lone_labels
        if {lab.key, lab.bare} & paired.keys()
    ]
    if not second:
        return []
    label, kept = second[0]
    return [
        f"{len(second)} label file(s) left out because their image has another label (e.g. {label.rel} beside the "
        f"kept {kept.rel}): this project reads one label file per case; merge them into the kept one (e.g. their "
        "union, with numpy) if both outline objects, or move the one that is not a label out of the folder"
    ]


def _structure_files(labels: list[Item], images: int) -> str:
    """The hint for label folders of one file per structure (``s0000/segmentations/liver.nii.gz``,
    ``spleen.nii.gz``, as TotalSegmentator ships them: more labels than ``images``): a case is read with
    one label map."""
    folders = defaultdict(list)
    for label in labels:
        folders[label.rel.parent].append(label.rel.name)
    folder, names = max(folders.items(), key=lambda item: len(item[1]))
    if len(names) < 2 or len(labels) <= images:
        return ""
    return (
        f"{folder} holds {len(names)} label files ({', '.join(sorted(names)[:3])}{', ...' if len(names) > 3 else ''}): "
        "if each is one structure, merge a case's files into one label map (ids 1, 2, ...; e.g. with nibabel) "
        "beside its image first, as this project reads one label file per case; otherwise "
    )


def scan_items(root: Path) -> list[Item]:
    """Every image or label under ``root``: files, DICOM series folders and video frame folders."""
    items: list[Item] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        here = Path(folder)
        files = sorted(f for f in files if not f.startswith(".") and f.lower() not in SKIPPED_NAMES)
        refuse_link_loops(here / f for f in files)
        if here != root and files and is_series(here):
            items.append(_item(here.relative_to(root), "dicom"))
            dirs[:] = []
            continue
        if here != root and not dirs and _is_frame_folder(here, files):
            items.append(_item(here.relative_to(root), "frames"))
            continue
        for name in files:
            found = for_name(name)
            if found:
                items.append(_item((here / name).relative_to(root), found.name))
    return items


def _is_frame_folder(folder: Path, files: list[str]) -> bool:
    """Video frames: numbered PNG/JPEG files in a folder named for the video, not for a role."""
    frames = [f for f in files if f.lower().endswith(FORMATS["frames"].suffixes)]
    if len(frames) < 2 or len(frames) != len(files) or _role_of_words(_words(folder.name)):
        return False
    return all(re.fullmatch(r"\d+", strip_suffix(f)) for f in frames)


def _item(rel: PurePosixPath | Path, kind: str) -> Item:
    rel = PurePosixPath(Path(rel).as_posix())
    return Item(rel, kind, role_of(rel), key_of(rel), key_of(rel, bare=True))


def _words(text: str) -> list[str]:
    """``labelsTr`` -> ``[labels, tr]``; ``ISIC_0001_segmentation`` -> ``[isic, 0001, segmentation]``;
    ``GroundTruth`` -> ``[ground, truth, groundtruth]``."""
    parts = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", text)
    words = [p.lower() for p in parts]
    return words + ["".join(words[i : i + 2]) for i in range(len(words) - 1)]


def _role_of_words(words: list[str]) -> str | None:
    label, image = bool(LABEL_WORDS & set(words)), bool(IMAGE_WORDS & set(words))
    return "label" if label and not image else "image" if image and not label else None


def role_of(rel: PurePosixPath) -> str:
    """``label`` or ``image``, in this order: a label word ending the stem (``_mask``, ``_seg``,
    ``_segmentation``: labels kept beside their images), else the nearest folder naming a role
    (``masks/``, ``labelsTr``, ``images/``), else the words of the file name, else ``image``.

    The folder decides before the name's words because label files are often named like their
    images: ``masks/scan_00.png`` and ``masks/img_001.png`` are labels, whatever ``scan`` or ``img`` say.
    """
    stem = strip_suffix(rel.name)
    if marked_label(stem):
        return "label"
    for part in reversed(rel.parts[:-1]):
        role = _role_of_words(_words(part))
        if role:
            return role
    return _role_of_words(_words(stem)) or "image"


def _name_words(stem: str) -> list[str]:
    """``21_manual1`` -> ``[21, manual]``: the stem's words, less an annotator's number after a label word
    that is not the first (``_manual1``, ``_mask_1``: the first or second annotator's outline of one image;
    ``label0001`` keeps its case number)."""
    words = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", stem)
    if len(words) > 2 and words[-1].isdigit() and words[-2].lower() in LABEL_WORDS:
        words = words[:-1]
    return words


def marked_label(stem: str) -> bool:
    """A label word ends the stem (``_mask``, ``_seg``, ``_segmentation``, ``_manual1``, ``_mask_1``): a label
    kept beside its image, whatever its folder says."""
    words = _name_words(stem)
    return bool(words) and words[-1].lower() in LABEL_WORDS


def key_of(rel: PurePosixPath, bare: bool = False) -> str:
    """What an image and its label share: the stem's words without role words (``img0001`` -> ``0001``),
    split words (``21_training`` -> ``21``) and an annotator's number (``21_manual1`` -> ``21``).

    ``bare``: also without the name of its folder where the stem starts with it, the key tried when the
    full keys match nothing (``RGB-PanSharpen/RGB-PanSharpen_AOI_2_img1`` pairs with
    ``masks/mask_AOI_2_img1``; ``top/top_mosaic_area1`` keeps ``top`` first, as its label
    ``gts/top_mosaic_area1`` does). A folder of case numbers (``BraTS2021_00000/``) is never removed: it names the case.
    """
    stem = strip_suffix(rel.name)
    folder = rel.parent.name
    if bare and folder and not re.search(r"\d", folder) and stem.lower().startswith(folder.lower()):
        stem = stem[len(folder) :] or stem
    words = [w.lower() for w in re.findall(r"[A-Za-z]+|\d+", " ".join(_name_words(stem)))]
    kept = [w for w in words if w not in LABEL_WORDS | IMAGE_WORDS | SPLIT_WORDS]
    return "_".join(kept) or "_".join(words)


def _neutral_parts(rel: PurePosixPath) -> list[str]:
    """Path folders without role words: what an image and its label's folders have in common."""
    return [p for p in rel.parts[:-1] if not _role_of_words(_words(p))]


def pair_items(images: list[Item], labels: list[Item]) -> tuple[list[tuple[Item, Item]], list[Item], list[Item]]:
    """Labels matched with images of the same key (nearest in the tree first); the leftovers of each."""
    by_key: dict[str, list[Item]] = defaultdict(list)
    by_bare: dict[str, list[Item]] = defaultdict(list)
    for image in images:
        by_key[image.key].append(image)
        by_bare[image.bare].append(image)
    taken: set[PurePosixPath] = set()
    pairs, lone_labels = [], []
    for label in labels:
        same = by_key.get(label.key, [])
        candidates = [i for i in same if i.rel not in taken]
        if not same:  # keys without the folder's name: only where they name one image (benign/benign (2).png is "2")
            bare = [i for i in by_bare.get(label.bare, []) if i.rel not in taken]
            candidates = bare if len(bare) == 1 else []
        # A per-case folder: p1/study/series/ (DICOM) or case_1/imaging.nii.gz beside a label named by its role.
        if not candidates:
            candidates = [
                i
                for i in images
                if i.rel not in taken
                and i.rel.parts[: len(label.rel.parts) - 1] == label.rel.parts[:-1]
                and label.key in LABEL_WORDS | {""}
            ]
            candidates = candidates if len(candidates) == 1 else []
        if not candidates:
            lone_labels.append(label)
            continue
        shared = lambda i, label=label: len(set(_neutral_parts(i.rel)) & set(_neutral_parts(label.rel)))  # noqa: E731
        best = max(candidates, key=lambda i: (shared(i), -len(i.rel.parts)))
        taken.add(best.rel)
        pairs.append((best, label))
    pairs.sort(key=lambda p: p[0].rel.as_posix())
    return pairs, [i for i in images if i.rel not in taken], lone_labels


# --------------------------------------------------------------------------- templates


def folder_source(
    root: Path, pairs: list[tuple[Item, Item]], labels: list[Item], lone: list[Item] = ()
) -> tuple[dict[str, Any], str]:
    """A ``folder`` source (image glob + label template) that gives back every pair, else a ``csv`` one.

    A glob that also matches the ``lone`` images (without a label) is preferred: the source then keeps
    them as unlabelled cases (``unlabelled: true``).
    """
    images = [i.rel for i, _ in pairs]
    wanted = {(root / i).resolve() for i in images}
    label_paths = {(root / lab.rel).resolve() for lab in labels}
    template = label_template([(i.rel, lab.rel) for i, lab in pairs])
    lone_paths = {(root / i.rel).resolve() for i in lone}
    tries = [(p, True) for p in image_globs(images + [i.rel for i in lone])] if lone else []
    for pattern, keeps in tries + [(p, False) for p in image_globs(images)]:
        matched = {p.resolve() for p in root.glob(pattern)}
        if template and wanted <= matched and not matched & label_paths and (not keeps or lone_paths <= matched):
            first = pairs[0]
            return (
                {"kind": "folder", "images": pattern, "labels": template, **({"unlabelled": True} if keeps else {})},
                f"folder of {len(pairs)} pairs such as {first[0].rel} + {first[1].rel}"
                + (f" and {len(lone)} image(s) without a label" if keeps else ""),
            )
    return ({"kind": "csv"}, f"{len(pairs)} pairs that no image glob and label template describe; listed in a CSV")


def image_globs(images: list[PurePosixPath]) -> list[str]:
    """Globs matching every image, loosest first: constant folders kept, varying ones ``*``, the shared
    suffix kept; then with the shared name prefix (``ISIC_*.jpg``), to leave out labels beside the images."""
    depths = {len(p.parts) for p in images}
    if len(depths) != 1:
        return []
    parts = []
    for level in range(depths.pop() - 1):
        names = {p.parts[level] for p in images}
        parts.append(names.pop() if len(names) == 1 else "*")
    names = [p.name for p in images]
    suffix = os.path.commonprefix([n[::-1] for n in names])[::-1]
    suffix = suffix[suffix.find(".") :] if "." in suffix else ""
    globs = ["/".join([*parts, f"*{suffix}"])]
    prefix = os.path.commonprefix([n[: len(n) - len(suffix)] for n in names])
    if prefix and not any(c in prefix for c in "*?["):
        globs.append("/".join([*parts, f"{prefix}*{suffix}"]))
    return globs


def fill_template(template: str, image: PurePosixPath) -> str:
    """The label path a template names for an image (as ``adapt.data.sources`` fills it), normalised."""
    stem = strip_suffix(image.name)
    digits = re.search(r"(\d*)$", stem).group(1)  # type: ignore[union-attr]
    return posixpath.normpath(
        template.format(name=image.name, stem=stem, parent=image.parent.as_posix(), digits=digits)
    )


def label_template(pairs: list[tuple[PurePosixPath, PurePosixPath]]) -> str | None:
    """A label template with placeholders (``masks/{name}``, ``{parent}/../masks/{stem}_mask.png``,
    ``{parent}/label.nii.gz``) that names every pair's label, or ``None``."""
    image, label = pairs[0]
    stem = strip_suffix(image.name)
    digits = re.search(r"(\d*)$", stem).group(1)  # type: ignore[union-attr]
    names = []
    if label.name == image.name:
        names.append("{name}")
    if stem and stem in label.name:
        names.append(label.name.replace(stem, "{stem}", 1))
    if digits and digits in label.name:
        at = label.name.rfind(digits)
        names.append(label.name[:at] + "{digits}" + label.name[at + len(digits) :])
    names.append(label.name.replace("{", "{{").replace("}", "}}"))
    literal = label.parent.as_posix()
    relative = posixpath.relpath(label.parent.as_posix(), image.parent.as_posix())
    folders = [literal, "{parent}" if relative == "." else f"{{parent}}/{relative}"]
    for folder in folders:
        for name in names:
            template = name if folder in ("", ".") else f"{folder}/{name}"
            if "{" not in template.replace("{{", "") or any(c in template for c in "*?["):
                continue
            if all(fill_template(template, i) == lab.as_posix() for i, lab in pairs):
                return template
    return None
