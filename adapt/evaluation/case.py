"""One case through the model: prompts, batched slices, the volume reassembled, 3D metrics.

A case's image and label are read with ``adapt.inference.io.read_scan``, so volumes reach
the model exactly as the adapter saw them in training (canonical RAS, resampled to the
adapter's spacing, the card's slice axis) and the predicted stack goes back onto the stored
voxel grid with the same ``VolumeView``.
Metrics are computed there, in 3D, against the label file's own voxels and with the real
voxel spacing (mm); a slicing or reassembly error therefore lowers the score instead of
cancelling out.

Protocols (``Protocol.prompt``):
    box, box_jitter, point, points_k   one prompt per class on every slice where the class is
        present, simulated from the ground truth with a seeded ``PromptSimulator`` (key: case,
        class, slice), so two adapters evaluated with the same seed get the same prompts;
    none    a semantic adapter's class map, no prompt;
    auto    the semantic head's components as box prompts, refined (no ground truth used).
With ``propagation`` the prompt is given once, on the slice where the class is largest, and
SAM2's memory follows it through the volume (the semi-supervised video protocol).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from scipy import ndimage

from adapt.data.encoding import LabelEncoding
from adapt.data.geometry import check_same_grid
from adapt.data.volumes import compact_labels
from adapt.errors import ConfigError, check_choice
from adapt.evaluation.cases import EvalCase
from adapt.inference.engine import Engine, PlanePrompts
from adapt.guards import finite_stack
from adapt.data.formats import FORMATS, mask_name, suffix
from adapt.inference.io import Scan, drop_nodata, read_scan, scan_grid, to_unit, valid_like, write_mask
from adapt.inference.names import GT_PROMPTS, PROMPTS
from adapt.metrics.registry import VOLUME, of_family
from adapt.metrics import case_row, class_overlaps, confusion_matrix, surface_metrics
from adapt.metrics.surface import Spread
from adapt.metrics.case import clicked, video_scores
from adapt.transforms.prompts import PromptSimulator
from adapt.inference.propagation import SlicePrompt, propagate


@dataclass(frozen=True)
class Protocol:
    """How each case is prompted and scored.

    Attributes:
        prompt: one of ``PROMPTS``.
        seed: seed of every simulated prompt and click.
        jitter: outward box noise for ``box_jitter`` (fraction of the box side).
        num_points: positive points for ``points_k``.
        clicks: numbers of correction clicks to score besides the first prompt (``()`` = off).
        propagation: prompt one slice and follow it with SAM2's memory.
        tolerance_mm: NSD tolerance.
        min_area: smallest coarse component (pixels) that becomes a box for ``auto``.
        components: prompt every connected component of a class on a slice separately (one
            box per building, lesion, ...) instead of one prompt per class and slice.
    """

    prompt: str = "box"
    seed: int = 0
    jitter: float = 0.1
    num_points: int = 3
    clicks: tuple[int, ...] = ()
    propagation: bool = False
    tolerance_mm: float = 2.0
    min_area: int = 4
    components: bool = False

    def __post_init__(self) -> None:
        check_choice("prompt", self.prompt, PROMPTS)
        if self.clicks and self.prompt not in GT_PROMPTS:
            raise ConfigError(
                f"clicks need a simulated first prompt ({'|'.join(GT_PROMPTS)}), not prompt={self.prompt}"
            )
        if self.propagation and (self.prompt not in GT_PROMPTS or self.clicks):
            raise ConfigError("task=propagation takes prompt=box|box_jitter|point|points_k and clicks=off")
        if any(int(c) < 1 for c in self.clicks):
            raise ConfigError(f"clicks={list(self.clicks)} must be positive numbers of correction clicks")

    def simulator(self) -> PromptSimulator:
        """The seeded prompt simulator of a ground-truth protocol."""
        kinds = {
            "box": dict(kind="box"),
            "box_jitter": dict(kind="box", jitter=self.jitter),
            "point": dict(kind="point"),
            "points_k": dict(kind="points", num_positive=self.num_points),
        }
        return PromptSimulator(seed=self.seed, **kinds[self.prompt])


@dataclass
class CaseResult:
    """What one case gives: table rows, click scores, confusion matrix, the predicted class map."""

    rows: list[dict[str, Any]]
    clicks: dict[int, dict[str, dict[str, float]]] = field(default_factory=dict)
    confusion: torch.Tensor | None = None
    prediction: np.ndarray | None = None  # class indices [Z, H, W] on the scan's stack
    scan: Scan | None = None


def voxel_spacing(scan: Scan) -> tuple[tuple[float, ...] | None, str]:
    """Size of a stored voxel per axis, and its unit, in which distances are reported: the scan's format
    says (``Format.spacing``: mm from a volume's header, a GeoTIFF's pixel scale in its CRS's unit;
    ``(None, "px")`` for PNG/JPEG and GeoTIFFs without a pixel scale)."""
    return FORMATS[scan.kind].spacing(scan.geometry)


def stored(scan: Scan, stack: np.ndarray) -> np.ndarray:
    """A ``[Z, H, W]`` stack on the scan's stored grid (a 2D image: its single plane)."""
    return scan.view.to_volume(stack) if scan.is_volume else stack[0]


def label_stack(label: Scan, encoding: LabelEncoding | float | None = None) -> np.ndarray:
    """Label ids ``[Z, H, W]`` of a label scan, decoded as the card stores them (``LabelEncoding``:
    its ``mask_values`` and ``mask_threshold``; a bare number is a threshold: 1 where any channel
    reaches it, else 0), in the smallest integer type that holds them (``compact_labels``: a CT's
    label stack as int64 was 8x the bytes, and every comparison with it 8x the time)."""
    if not isinstance(encoding, LabelEncoding):
        encoding = LabelEncoding(threshold=encoding)
    if not encoding.values and encoding.threshold is None:
        return compact_labels(label.pixels[:, 0])
    return compact_labels(encoding.decode(np.moveaxis(label.pixels, 1, 0), label.path))


def stored_labels(label: Scan, encoding: LabelEncoding | float | None = None) -> np.ndarray:
    """The label file's own voxels, decoded, independent of the slicing: a volume's array as read
    (``Scan.stored``, not read a second time, in the file's layout: ``VolumeView.to_volume`` puts the
    prediction in the same one), a 2D file's single plane."""
    if not isinstance(encoding, LabelEncoding):
        encoding = LabelEncoding(threshold=encoding)
    if label.stored is None:
        return stored(label, label_stack(label, encoding))
    return compact_labels(encoding.decode(label.stored, label.path))


def read_case(
    case: EvalCase, slice_axis: int, needs_label: bool = True, spacing: Any = None
) -> tuple[Scan, Scan | None]:
    """The image and (when scoring needs it) the label of a case on the training grid (the adapter's
    ``spacing``), checked to share one stored grid."""
    scan = read_scan(case.image, slice_axis, spacing)
    if not needs_label:
        return scan, None
    label = read_scan(case.label, slice_axis, spacing, label=True)
    check_same_grid(scan_grid(scan), scan_grid(label))
    return scan, label


def _prompts(simulator: PromptSimulator, masks: np.ndarray, keys: list[tuple[int, ...]]) -> PlanePrompts:
    made = [simulator(mask, key=key) for mask, key in zip(masks, keys)]
    join = lambda name: np.concatenate([m[name] for m in made]) if name in made[0] else None  # noqa: E731
    return PlanePrompts(join("boxes"), join("points"), join("point_labels"))


def _plane_objects(plane: np.ndarray, components: bool) -> list[tuple[int, np.ndarray]]:
    """The prompted objects of a class on one plane: ``(0, its mask)``, or each connected component
    ``(number, mask)``."""
    if not components:
        return [(0, plane)]
    labelled, count = ndimage.label(plane)
    return [(c, labelled == c) for c in range(1, count + 1)]


def predict_classes(
    engine: Engine,
    images: np.ndarray,
    truth: np.ndarray | None,
    values: list[int],
    protocol: Protocol,
    case_index: int,
    video: Any = None,
    on_class: Callable[[int, np.ndarray], None] | None = None,
    on_planes: PlanesDone | None = None,
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Class indices ``[Z, H, W]`` (``i + 1`` for ``values[i]``), and after each number of clicks.

    Promptable protocols prompt each class on its own; where two predicted classes overlap the
    earlier class keeps the voxel. A class's voxels are final once the model is past its last plane:
    while the model still has planes to do, ``on_class(i + 1, classes)`` is called then (later classes
    only write voxels that hold 0), so its scoring can start beside the model. Planes prompted plane by
    plane are final once the model is past them: ``on_planes(stop, maps)`` says so of planes ``[0, stop)``
    of the class maps ``{clicks: [Z, H, W]}`` (``0``: the first prompt's) as they are being written.
    """
    if protocol.prompt == "none":
        return engine.classify(images), {}
    if protocol.prompt == "auto":
        return engine.auto(images, protocol.min_area), {}
    dtype = np.uint8 if len(values) < 255 else np.uint16  # one class map per click count: keep them small
    maps = {k: np.zeros(truth.shape, dtype=dtype) for k in (0, *protocol.clicks)}
    present = class_planes(truth, values)
    tell = on_class or (lambda index, classes: None)
    if protocol.propagation:
        found, simulator = np.flatnonzero(present.any(axis=1)), protocol.simulator()
        for index in found:
            mask = _propagate(engine, video, images, truth == values[index], simulator, (case_index, int(index)))
            claim(maps[0], mask, index + 1)
            if index != found[-1]:
                tell(index + 1, maps[0])
    else:
        _segment_planes(engine, images, truth, values, protocol, case_index, present, maps, tell, on_planes)
    return maps.pop(0), maps


#: ``on_planes(stop, maps)``: planes ``[0, stop)`` of the class maps ``{clicks: [Z, H, W]}`` are final.
PlanesDone = Callable[[int, dict[int, np.ndarray]], None]


def class_planes(truth: np.ndarray, values: list[int]) -> np.ndarray:
    """Where each class is: ``[class, plane]`` booleans of a ``[Z, H, W]`` label stack."""
    return np.stack([(truth == value).any(axis=(1, 2)) for value in values])


def _segment_planes(
    engine: Engine,
    images: np.ndarray,
    truth: np.ndarray,
    values: list[int],
    protocol: Protocol,
    case_index: int,
    present: np.ndarray,
    maps: dict[int, np.ndarray],
    tell: Callable[[int, np.ndarray], None],
    on_planes: PlanesDone | None = None,
) -> None:
    """Every class prompted on each plane where it is, the planes in order and a plane's objects of all
    classes in one batch: a plane's image is encoded once, not once per class (the image encoder is
    most of SAM2's work; a multi-organ CT has several classes on most planes). Each batch holds at most
    ``engine.batch_size`` objects, a plane's objects never split unless they alone are more. Results are
    written plane by plane in class order, so each voxel is decided as if class after class had been
    predicted; prompts and clicks are seeded by (case, class, plane, component), not by the batch."""
    simulator, last = protocol.simulator(), [int(np.flatnonzero(p)[-1]) if p.any() else -1 for p in present]
    batch: list[tuple[int, int, int, np.ndarray]] = []  # (plane, class index, component, mask)

    def run(more_to_do: bool) -> None:
        planes, owners = np.unique([z for z, *_ in batch], return_inverse=True)
        keys = [(case_index, index, z, part) for z, index, part, _ in batch]
        masks = np.stack([mask for *_, mask in batch])
        clicks = [((c * 1000 + index) * 100_000 + z) * 1000 + part for c, index, z, part in keys]
        prompts = _prompts(simulator, masks, keys)
        found = engine.segment(
            images[planes], prompts, masks, protocol.clicks, protocol.seed, clicks, owners.reshape(-1)
        )
        for k, predicted in found.items():
            for (z, index, _, _), plane in zip(batch, predicted):
                claim(maps[k][z], plane, index + 1)
        for index, end in enumerate(last):
            if more_to_do and planes[0] <= end <= planes[-1]:
                tell(index + 1, maps[0])
        if more_to_do and on_planes is not None:
            on_planes(int(planes[-1]) + 1, maps)  # a plane's objects are never split between batches
        batch.clear()

    for z in np.flatnonzero(present.any(axis=0)):
        objects = [
            (int(z), index, part, mask)
            for index in np.flatnonzero(present[:, z])
            for part, mask in _plane_objects(truth[z] == values[index], protocol.components)
        ]
        if batch and len(batch) + len(objects) > engine.batch_size:
            run(more_to_do=True)
        batch += objects
    if batch:
        run(more_to_do=False)


def claim(classes: np.ndarray, mask: np.ndarray, index: int) -> None:
    """Class ``index`` written into ``classes`` where ``mask`` is and no earlier class is: an addition of the
    masked index (one pass; a boolean-indexed assignment per object was ~5x the time, and 5 click counts of
    every object of a CT made it most of the evaluation's work between model calls)."""
    classes += ((classes == 0) & mask) * classes.dtype.type(index)


def _propagate(
    engine: Engine, video: Any, images: np.ndarray, target: np.ndarray, simulator: PromptSimulator, key: tuple[int, ...]
) -> np.ndarray:
    """Prompt the slice where the class is largest; SAM2's memory segments the rest."""

    z = int(target.sum(axis=(1, 2)).argmax())
    made = simulator(target[z], key=(*key, z))
    prompt = SlicePrompt(boxes=made.get("boxes"), points=made.get("points"), labels=made.get("point_labels"))
    result = propagate(
        video,
        images,
        {z: prompt},
        device=engine.device,
        autocast=torch.bfloat16 if engine.precision == "bf16" else None,
        fill_hole_area=engine.predictor.fill_hole_area,
    )
    engine.model_seconds += result.seconds
    engine.planes += len(result.visited)
    return result.masks[0]


@dataclass
class CaseInput:
    """One case read and made ready for the model, and what its scoring needs of the files.

    Attributes:
        case: its files.
        scan: the image (``Scan``: geometry, the view back to the stored grid).
        label: the label file (``Scan.stored``: its own voxels, scored against).
        images: ``[Z, C, H, W]`` model input in [0, 1] (shifted, for a robustness run).
        truth: label ids ``[Z, H, W]`` on the stack (nodata 0), from which prompts are simulated.
        truth_classes: the label file's own voxels as output class indices (``class_indices``; -1 where no
            data is), what the prediction is scored against.
        seconds: spent reading it.
    """

    case: EvalCase
    scan: Scan
    label: Scan
    images: np.ndarray
    truth: np.ndarray
    truth_classes: np.ndarray
    seconds: float


def read_input(
    case: EvalCase,
    slice_axis: int,
    preprocessing: dict[str, Any],
    label_encoding: LabelEncoding | float | None = None,
    shift: Callable[[np.ndarray], np.ndarray] | None = None,
    values: list[int] = (),
) -> CaseInput:
    """Read a case as the adapter saw its training cases (``preprocessing``: spacing, non-finite policy,
    intensity), ``shift`` applied to the ``[Z, C, H, W]`` pixels in [0, 1], and its truth as the indices
    of the classes whose label ``values`` are scored. Needs no model, so ``adapt.evaluation.pipeline``
    reads the next case while the model works on this one."""
    start = time.perf_counter()
    scan, label = read_case(case, slice_axis, spacing=preprocessing.get("spacing"))
    scan.pixels = finite_stack(scan.pixels, case.image, preprocessing)
    images = to_unit(scan, preprocessing)
    if shift is not None:
        images = shift(images)
    truth = drop_nodata(label_stack(label, label_encoding), scan)  # nodata pixels: never scored
    stored_truth = stored_labels(label, label_encoding)
    truth_classes = class_indices(stored_truth, list(values), valid_like(scan, stored_truth))
    return CaseInput(case, scan, label, images, truth, truth_classes, time.perf_counter() - start)


@dataclass
class CasePrediction:
    """The model's answer for one case: class indices ``[Z, H, W]`` on the stack (nodata 0), the same
    after each number of correction clicks, and the seconds it took (model and prompts)."""

    classes: np.ndarray
    after_clicks: dict[int, np.ndarray]
    seconds: float


def predict_input(
    engine: Engine,
    inputs: CaseInput,
    values: list[int],
    protocol: Protocol,
    case_index: int,
    video: Any = None,
    on_class: Callable[[int, np.ndarray], None] | None = None,
    on_planes: PlanesDone | None = None,
) -> CasePrediction:
    """The model's class map of one read case (``predict_classes``), nodata pixels dropped; ``on_class(i,
    mask)`` is given class ``i``'s final ``[Z, H, W]`` mask as soon as the model is done with it, and
    ``on_planes`` is ``predict_classes``' (the maps as written: nodata not dropped)."""
    start = time.perf_counter()
    done = (
        None if on_class is None else lambda index, classes: on_class(index, drop_nodata(classes == index, inputs.scan))
    )
    prediction, after_clicks = predict_classes(
        engine, inputs.images, inputs.truth, values, protocol, case_index, video, done, on_planes
    )
    after_clicks = {k: drop_nodata(stack, inputs.scan) for k, stack in after_clicks.items()}
    return CasePrediction(drop_nodata(prediction, inputs.scan), after_clicks, time.perf_counter() - start)


def class_indices(truth: np.ndarray, values: list[int], valid: np.ndarray | None) -> np.ndarray:
    """Output class ``i + 1`` where ``truth`` holds ``values[i]``, 0 elsewhere, -1 where no data is
    (a GeoTIFF's nodata: counted in no class); int8 (int16 from 127 classes on: a CT's copy is half the
    bytes), in ``truth``'s layout."""
    classes = np.zeros_like(truth, dtype=np.int8 if len(values) < 127 else np.int16)
    for index, value in enumerate(values, start=1):
        classes[truth == value] = index
    if valid is not None:
        classes[~valid] = -1
    return classes


def class_surfaces(
    inputs: CaseInput, mask: np.ndarray, index: int, protocol: Protocol, spread: Spread = map
) -> dict[str, float]:
    """HD95 and NSD (``surface_metrics``, its halves run by ``spread``) of class ``index``'s predicted
    ``mask`` on the stored grid (a mask on the stack goes there with ``stored``) against the label file's
    voxels of that class, in the grid's units."""
    spacing, _ = voxel_spacing(inputs.scan)
    return surface_metrics(mask, inputs.truth_classes == index, spacing, protocol.tolerance_mm, spread=spread)


def score_case(
    inputs: CaseInput,
    prediction: CasePrediction,
    classes: dict[str, int],
    protocol: Protocol,
    spread: Spread = map,
    surfaces: Mapping[int, Future] | None = None,
    confusions: Mapping[int, torch.Tensor] | None = None,
) -> CaseResult:
    """Score a predicted case in 3D on its stored grid against the label file's own voxels.

    Dice, IoU and the voxel counts of every class come from one confusion matrix of the case (one
    counting pass over the volume, not two comparisons and a count per class), the surface metrics
    from each class's masks (``class_surfaces``); the click curve from one confusion matrix per number
    of clicks. Needs no model, so ``adapt.evaluation.pipeline`` scores a case while the model works on
    the next. ``surfaces`` holds the classes whose surface metrics are already under way (started
    when the model was done with them); ``spread`` measures the others (``map``: one after the other;
    the pipeline's last case, with the model done, two threads beside each other: the classes, or the two
    halves of a single class's work). ``confusions`` holds the confusion matrices already counted, by number
    of clicks (``adapt.evaluation.streaming``: plane by plane as the model passed them).
    """
    start = time.perf_counter()
    scan, values, surfaces = inputs.scan, list(classes.values()), surfaces or {}
    spacing, unit = voxel_spacing(scan)
    predicted = stored(scan, prediction.classes)
    confusions = confusions or {}

    def counted(k: int, stack: np.ndarray) -> torch.Tensor:
        if k in confusions:
            return confusions[k]
        return confusion_matrix(stored(scan, stack), inputs.truth_classes, len(values) + 1, ignore_index=-1)

    confusion = counted(0, prediction.classes)
    overlaps = class_overlaps(confusion)
    pending = [index for index in range(1, len(classes) + 1) if index not in surfaces]
    if len(pending) == 1:
        measured = {pending[0]: class_surfaces(inputs, predicted == pending[0], pending[0], protocol, spread)}
    else:
        measure = lambda index: class_surfaces(inputs, predicted == index, index, protocol)  # noqa: E731
        measured = dict(zip(pending, spread(measure, pending)))
    rows = []
    for index, name in enumerate(classes, start=1):
        surface = measured[index] if index in measured else surfaces[index].result()
        scores = case_row(overlaps[index], surface)
        rows.append(
            {
                "case": inputs.case.id,
                "class": name,
                **{m: scores[m] for m in of_family(VOLUME)},
                "gt_voxels": scores["gt_voxels"],
                "pred_voxels": scores["pred_voxels"],
            }
        )
        if protocol.propagation:
            rows[-1].update(video_scores(prediction.classes == index, inputs.truth == classes[name]))
    clicks = {}
    for k, stack in ({0: prediction.classes, **prediction.after_clicks} if prediction.after_clicks else {}).items():
        overlaps_k = overlaps if k == 0 else class_overlaps(counted(k, stack))
        clicks[k] = {name: clicked(overlap) for name, overlap in zip(classes, overlaps_k[1:])}
    seconds = inputs.seconds + prediction.seconds + time.perf_counter() - start
    for row in rows:
        row.update(
            seconds=seconds,
            slices=int(prediction.classes.shape[0]),
            image=str(inputs.case.image),
            label=str(inputs.case.label),
            unit=unit,
            voxel_size=float(np.prod(spacing)) if spacing else None,
        )
    return CaseResult(rows, clicks, confusion, prediction.classes, scan)


def evaluate_case(
    engine: Engine,
    case: EvalCase,
    case_index: int,
    classes: dict[str, int],
    protocol: Protocol,
    slice_axis: int,
    video: Any = None,
    label_encoding: LabelEncoding | float | None = None,
    shift: Callable[[np.ndarray], np.ndarray] | None = None,
) -> CaseResult:
    """Read, predict and score one case, one step after the other (``adapt.evaluation.pipeline`` overlaps
    the steps of consecutive cases).

    Args:
        engine: the batched model.
        case: image and label files.
        case_index: position in the evaluated list (part of every prompt's seed key).
        classes: class name -> label value in the label file, in output order.
        protocol: how to prompt and what to score.
        slice_axis: the canonical axis the adapter was trained on.
        video: ``Sam2VideoModel`` with the adapter, for ``protocol.propagation``.
        label_encoding: how the card's label files store their ids (``LabelEncoding.of_card``).
        shift: a corruption of the model input (``adapt.transforms.shifts.Shift``), applied to the
            ``[Z, C, H, W]`` pixels in [0, 1] after reading and before the model.
    """
    values = list(classes.values())
    inputs = read_input(case, slice_axis, engine.predictor.loaded.preprocessing, label_encoding, shift, values)
    prediction = predict_input(engine, inputs, values, protocol, case_index, video)
    return score_case(inputs, prediction, classes, protocol)


def save_prediction(
    result: CaseResult, values: list[int], folder: Path, case_id: str, encoding: LabelEncoding | None = None
) -> Path:
    """The predicted label map (card label values, stored as ``encoding`` says) in the input's format and geometry."""
    lookup = compact_labels((encoding or LabelEncoding()).encode(np.array([0, *values], dtype=np.int64)))
    stem = case_id.replace("/", "__")  # case ids of nested folders are relative paths
    name = mask_name(result.scan.kind, stem if FORMATS[result.scan.kind].folder else stem + suffix(result.scan.path))
    return write_mask(lookup[result.prediction], result.scan, folder / name)
