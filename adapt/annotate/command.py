"""``python -m adapt.annotate [calibrate]``: pre-annotate a card's unlabelled cases, or calibrate the flag.

``run`` (the default action) lists the unlabelled cases of the card (``source.unlabelled: true``;
the adapter's own card unless ``data.card=``), decides each case's prompt before any model is
loaded (``adapt.annotate.prompts``), then for each case: reads it as ``predict`` does, segments it
(``predict``'s runner: prompts, ``prompt=auto`` for a semantic adapter, or a partial label's slices
propagated through SAM2's memory), writes ``out/pre/<image name>`` in the image's format (a DICOM series': its label's, NIfTI), geometry and
the card's label encoding (never into the label folder), scores it (``adapt.annotate.scores``) and
exports it (``adapt.annotate.exports``). ``out/worklist.csv`` and a printed table rank the cases.
Without ``adapter`` (``adapter=none model=<preset>``) zero-shot SAM2 does the same.

``save`` copies reviewed pre-annotations into the label folder (``adapt.annotate.save``).

``calibrate`` prompts every target of every validation slice with its tight ground-truth box, pairs
the IoU head's prediction with the Dice measured against the label, fits the isotonic map
(``adapt.annotate.calibration``) and writes ``calibration.json`` into the adapter folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig

from tqdm import tqdm

from adapt.annotate import calibration, exports, prompts, worklist
from adapt.annotate.save import pre_name, record, save
from adapt.annotate.scores import box_masks, dice, plane_scores
from adapt.cli import register_cli_config, user_errors
from adapt.data.encoding import LabelEncoding
from adapt.data.formats import FORMATS, for_path, strip_suffix
from adapt.data.sources import data_root, partition_cases
from adapt.errors import ConfigError
from adapt.evaluation.case import label_stack, read_case
from adapt.evaluation.cases import evaluation_card, load_cases
from adapt.evaluation.models import is_none, load_model, resolve_spec
from adapt.inference.engine import auto_scan
from adapt.inference.io import drop_nodata, to_unit, write_mask
from adapt.inference.propagation import SlicePrompt, propagate
from adapt.inference.runner import Predictor, predict_scan
from adapt.inference.user_files import class_values, foreground_value, read_input, slice_axis_of
from adapt.outputs import claimed
from adapt.schema import validate
from adapt.storage import check_writable
from adapt.transforms.prompts import box_from_mask

EXPORT_FOLDERS = ("pre", "exports", "worklist.csv", "annotate.json")


@dataclass
class Result:
    """What ``run`` wrote: the pre-annotations, the worklist rows and the exports."""

    pre: list[Path] = field(default_factory=list)
    rows: list[Any] = field(default_factory=list)
    exports: list[Path] = field(default_factory=list)
    worklist: Path | None = None


def model_and_card(cfg: DictConfig) -> tuple[Any, Any, str | None]:
    """The model spec (adapter or zero-shot), the card and its data root (the adapter's own by default)."""

    spec = resolve_spec(cfg.adapter, cfg.get("revision"), cfg.get("model"), None)
    spec.allow_base_mismatch = bool(cfg.get("allow_base_mismatch"))
    if is_none(cfg.adapter) and not cfg.data.get("card"):
        raise ConfigError("zero-shot annotation (no adapter) needs data.card=<the card with unlabelled cases>")
    card, root = evaluation_card(spec.path, spec.metadata, cfg.data.get("card"), cfg.data.get("root"))
    return spec, card, root


def check_out(out: Path, cases: list[Any], overwrite: bool) -> None:
    """Refuse an ``out`` inside a label folder or over an earlier run (without ``overwrite``).

    Raises:
        ConfigError: names the folder and the fix.
    """
    label_folders = {Path(c.label).parent.resolve() for c in cases if c.label is not None}
    resolved = out.resolve()
    for folder in label_folders:
        if resolved == folder or folder in resolved.parents:
            raise ConfigError(
                f"out={out} is inside the label folder {folder}: pre-annotations must not become labels "
                "before a person saves them; choose an out= outside the dataset's label folders"
            )
    taken = [out / name for name in EXPORT_FOLDERS if (out / name).exists()]
    if taken and not overwrite:
        raise ConfigError(
            f"out={out} already holds {[p.name for p in taken]}; choose another out= or pass overwrite=true"
        )
    check_writable(out, "out")


def run(cfg: DictConfig) -> Result:
    """Pre-annotate, score, export and rank every unlabelled case (see the module doc)."""

    validate(cfg, "annotate")
    if not cfg.get("out"):
        raise ConfigError("out= is required: python -m adapt.annotate adapter=<run> out=<folder>")
    spec, card, root = model_and_card(cfg)
    labelled, unlabelled = partition_cases(card, data_root(card, root))
    if not unlabelled:
        raise ConfigError(
            f"data card {card.path or card.name} holds no unlabelled case ({len(labelled)} labelled): "
            "mark images without a label with source.unlabelled: true (python -m adapt.data init keeps "
            "them), or give data.card= a card that has some"
        )
    out = Path(str(cfg.out))
    check_out(out, labelled + unlabelled, bool(cfg.overwrite))
    kinds = {c.id: for_path(Path(c.image)).name for c in unlabelled}
    axis = slice_axis_of((spec.metadata or {}).get("preprocessing") or {}, card.slice_axis)  # the runner's
    given = prompts.read_prompts(cfg.prompts, unlabelled, axis) if cfg.get("prompts") else {}
    plans = prompts.plan(unlabelled, given, spec.task == "semantic", {k: FORMATS[v].volume for k, v in kinds.items()})
    exports.require(
        {"coco" for v in kinds.values() if v == "pillow"} | {"geojson" for v in kinds.values() if v == "tiff"}
    )
    predictor = load_predictor(spec, card, cfg)
    if spec.path is None and str(cfg.propagation) != "boxes" and any(p.source == "propagation" for p in plans):
        predictor.use_video_model(load_memory_model(spec, card))  # zero-shot: the base's own memory
    calibrated = calibration.read(spec.path)
    result, coco = Result(), []
    groups = []
    for plan in _progress(plans):
        scan, images, ids = segment(predictor, plan, card)
        written, planes = save_and_score(predictor, plan, scan, images, ids, card, out, int(cfg.seed))
        result.pre.append(written)
        groups.append(
            worklist.case_rows(
                plan.case.id,
                plan.source,
                Path(plan.case.image),
                written,
                planes,
                scan.is_volume,
                calibrated,
                float(cfg.accept_dice),
            )
        )
        result.exports += export_case(plan, scan, ids, written, card, out, coco)
    if coco:
        document = exports.coco_document(coco, card.labels)
        result.exports.append(exports.write_text(out / "exports" / "coco.json", exports.dump(document)))
    result.rows = worklist.rank(groups)
    result.worklist = worklist.write(result.rows, out)
    record(out, card, root, unlabelled)
    return result


def load_predictor(spec: Any, card: Any, cfg: DictConfig) -> Any:
    """The runner on the adapter (or zero-shot SAM2 with the card's preprocessing)."""

    loaded = load_model(spec, card)
    return Predictor(loaded, str(cfg.device), str(cfg.propagation), cfg.fill_hole_area)


def load_memory_model(spec: Any, card: Any) -> Any:
    """Zero-shot SAM2's video model (an adapter's is loaded by ``Predictor.video_model`` on first use)."""

    return load_model(spec, card, video=True).model


def segment(predictor: Any, plan: Any, card: Any) -> tuple[Any, np.ndarray, np.ndarray]:
    """The case read as ``predict`` reads it, its planes in [0, 1] and the predicted label ids ``[Z, H, W]``."""

    loaded = predictor.loaded
    scan = read_input(Path(plan.case.image), loaded)
    images = to_unit(scan, loaded.preprocessing)
    if plan.source == "auto":
        return scan, images, class_values(loaded)[drop_nodata(auto_scan(predictor, scan), scan)].astype(np.int64)
    guide = None
    if plan.prompt.from_mask is not None:
        guide = read_input(plan.prompt.from_mask, loaded, label=True)
        guide.pixels = LabelEncoding.of_card(card).decode(np.moveaxis(guide.pixels, 1, 0), guide.path)[:, None]
    if plan.source == "propagation" and predictor.video_model() is None:
        plan.source = "from_mask"  # propagation=boxes: a box on each labelled slice, as predict does
    if plan.source == "propagation":
        masks = propagate_slices(predictor, images, guide, plan.prompt.mask_label)
    else:
        masks = predict_scan(predictor, scan, plan.prompt, guide)
    value = plan.prompt.mask_label or foreground_value(loaded, None)
    return scan, images, drop_nodata(masks.astype(np.int64) * int(value), scan)


def propagate_slices(predictor: Any, images: np.ndarray, guide: Any, value: int | None) -> np.ndarray:
    """A volume segmented from its labelled slices: each is a mask prompt SAM2's memory propagates from;
    the labelled slices keep their own labels."""

    given = guide.pixels[:, 0] == value if value is not None else guide.pixels[:, 0] != 0
    slices = np.flatnonzero(given.reshape(len(given), -1).any(axis=1))
    if not len(slices):
        raise ConfigError(f"from_mask={guide.path}: no labelled slice to propagate from")
    prompts = {int(z): SlicePrompt(mask=given[z][None]) for z in slices}
    masks = propagate(
        predictor.video_model(), images, prompts, device=predictor.device, fill_hole_area=predictor.fill_hole_area
    ).masks[0]
    masks[slices] = given[slices]
    return masks


def save_and_score(
    predictor: Any, plan: Any, scan: Any, images: np.ndarray, ids: np.ndarray, card: Any, out: Path, seed: int
) -> tuple[Path, list[Any]]:
    """``out/pre/<name>`` in the card's label encoding, and the scores of its planes."""

    path = out / "pre" / pre_name(Path(plan.case.image), plan.case.label, scan.kind)
    written = write_mask(LabelEncoding.of_card(card).encode(ids), scan, path)
    return written, plane_scores(predictor, images, ids, seed)


def export_case(
    plan: Any, scan: Any, ids: np.ndarray, written: Path, card: Any, out: Path, coco: list[tuple[str, np.ndarray]]
) -> list[Path]:
    """The case's label map for Slicer/ITK-SNAP, its polygons for QGIS; 2D masks queued for ``coco.json``."""

    stem = strip_suffix(Path(plan.case.image).name)
    nifti = FORMATS["nifti"].suffixes[-1]  # the compressed one, as Slicer and ITK-SNAP save label maps
    if scan.is_volume:
        volume = scan.view.to_volume(ids)
        return [exports.write_nifti(volume, scan.view.source_affine, out / "exports" / "nifti" / f"{stem}{nifti}")]
    made = [exports.write_nifti(ids[0], None, out / "exports" / "nifti" / f"{stem}{nifti}")]
    if scan.kind == "tiff":
        document = exports.geojson_document(ids[0], written, card.labels)
        made.append(exports.write_text(out / "exports" / "geojson" / f"{stem}.geojson", exports.dump(document)))
    else:
        coco.append((Path(plan.case.image).name, ids[0]))
    return made


def calibrate(cfg: DictConfig) -> dict[str, Any]:
    """Measure the IoU head against Dice on the adapter's split and write ``calibration.json``."""

    validate(cfg, "annotate")
    if is_none(cfg.adapter):
        raise ConfigError("calibrate needs adapter=<run or adapter folder>: the calibration is written beside it")
    spec, card, root = model_and_card(cfg)
    if spec.path is None or not Path(spec.path).is_dir():
        raise ConfigError(f"adapter={cfg.adapter}: calibrate writes into a local adapter folder")
    card, cases = load_cases(card, root, str(cfg.split), spec.metadata)
    check_writable(spec.path, "adapter")
    predictor = load_predictor(spec, card, cfg)
    loaded, encoding = predictor.loaded, LabelEncoding.of_card(card)
    targets = sorted(set(card.target_ids().values()))
    predicted, measured = [], []
    for case in _progress(cases):
        scan, label = read_case(case, slice_axis_of(loaded.preprocessing), True, loaded.preprocessing.get("spacing"))
        images, ids = to_unit(scan, loaded.preprocessing), label_stack(label, encoding)
        for z in range(len(ids)):
            truths = [ids[z] == t for t in targets if (ids[z] == t).any()]
            if not truths:
                continue
            masks, iou = box_masks(predictor, images[z], np.stack([box_from_mask(t) for t in truths]))
            predicted += iou.tolist()
            measured += [dice(m, t) for m, t in zip(masks, truths)]
    if len(predicted) < 2:  # an isotonic fit of one point says nothing
        other = "train" if str(cfg.split) == "val" else "val"
        raise ConfigError(
            f"calibrate: the {cfg.split} split of card {card.name!r} holds {len(predicted)} labelled object(s) "
            f"in {len(cases)} case(s); the calibration needs at least two. Measure another split (split={other}), "
            "give the card more validation cases (its split: val), or go on without calibrate: the worklist "
            f"then flags by the rule '{calibration.DEFAULT_RULE}'"
        )
    content = calibration.report(predicted, measured, float(cfg.accept_dice))
    content.update(split=str(cfg.split), cases=len(cases), card=card.name)
    content["path"] = str(calibration.write(spec.path, content))
    return content


def _progress(items: list[Any]) -> Any:

    return tqdm(items, desc="annotate", unit="case", disable=len(items) < 2)


def print_calibration(content: dict[str, Any]) -> None:
    """The calibration report in a few lines."""
    precision = lambda v: "no mask accepted" if v is None else f"{v:.1%}"  # noqa: E731
    print(
        f"calibration on the {content['split']} split of {content['card']}: {content['masks']} masks in "
        f"{content['cases']} case(s); mean Dice {content['mean_dice']:.3f}, mean predicted IoU "
        f"{content['mean_predicted_iou']:.3f}\n"
        f"expected calibration error: {content['ece_raw']:.3f} (IoU head) -> {content['ece_calibrated']:.3f} "
        f"(calibrated, cross-fitted)\n"
        f"accept (expected Dice >= {content['threshold']}): {content['accepted']} masks, "
        f"{precision(content['accept_precision'])} of them really at or above it "
        f"(IoU head alone: {content['accepted_raw']} masks, {precision(content['accept_precision_raw'])})\n"
        f"wrote {content['path']}"
    )


@hydra.main(version_base="1.3", config_path=None, config_name=register_cli_config("annotate"))
def main(cfg: DictConfig) -> None:
    """Hydra entry point; user errors are printed without a traceback (exit code 2)."""
    action = str(cfg.get("action") or "run")
    if action == "calibrate":
        with user_errors():
            print_calibration(calibrate(cfg))
        return
    if action == "save":
        with user_errors():
            validate(cfg, "annotate")
            if not cfg.get("worklist"):
                raise ConfigError("save needs worklist=<out>/worklist.csv (written by python -m adapt.annotate)")
            written = save(str(cfg.worklist), str(cfg.cases))
            print(
                f"saved {len(written)} label(s): "
                + ", ".join(map(str, written[:5]))
                + (" ..." if len(written) > 5 else "")
            )
        return

    with user_errors(), claimed(cfg.get("out"), "out"):
        result = run(cfg)
        worklist.print_table(result.rows)
        print(
            f"wrote {len(result.pre)} pre-annotation(s) under {Path(str(cfg.out)) / 'pre'}, "
            f"{len(result.exports)} export(s) under {Path(str(cfg.out)) / 'exports'}, and {result.worklist}"
        )
