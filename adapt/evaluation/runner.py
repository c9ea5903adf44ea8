"""``evaluate(cfg)``: every check first, then each run over the same cases and prompts.

Order matters to users: a wrong ``out``, protocol, adapter path, card, data folder or split
is reported in seconds, before any model weight is read. Both runs of a comparison see the
same cases with the same seeded prompts, since prompts are pure functions of (ground
truth, seed, case, class, slice).
"""

from __future__ import annotations

import functools
import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
from omegaconf import DictConfig, OmegaConf

from adapt.data.cards import DataCard
from adapt.data.encoding import LabelEncoding
from adapt.data.headers import check_grids, check_headers, check_inputs_finite, check_labels_finite
from adapt.data.sources import data_root
from adapt.errors import ConfigError
from adapt.evaluation.case import GT_PROMPTS, CaseResult, Protocol, save_prediction
from adapt.evaluation.cases import EvalCase, evaluation_card, load_cases
from adapt.evaluation.pipeline import evaluate_cases
from adapt.evaluation.views import label_reading
from adapt.inference.engine import Engine
from adapt.evaluation.models import ModelSpec, card_preprocessing, is_none, load_model, resolve_spec
from adapt.evaluation import domain, robustness
from adapt.evaluation.report import difference, print_table, summarize_run, write_cases, write_summary
from adapt.inference.runner import Predictor
from adapt.inference.user_files import slice_axis_of
from adapt.data.encoding import label_names
from adapt.models.channels import check_channels
from adapt.schema import validate
from adapt.storage import check_apart, check_writable
from adapt.tasks import EVALUATED, TASKS
from adapt.inference.onnx_backend import OnnxPredictor

log = logging.getLogger(__name__)


def parse_clicks(value: Any) -> tuple[int, ...]:
    """``clicks=[1,3,5,10]`` -> ``(1, 3, 5, 10)``; ``off`` / ``null`` / ``[]`` -> ``()``."""
    if value is None or str(value).lower() in ("off", "none", "false", "0", "[]"):
        return ()
    values = OmegaConf.to_container(value) if not isinstance(value, (int, str)) else [value]
    try:
        return tuple(sorted({int(v) for v in values}))
    except (TypeError, ValueError):
        raise ConfigError(
            f"clicks={value!r}: give numbers of correction clicks, e.g. clicks=[1,3,5,10], or clicks=off"
        ) from None


def prepare_out(out: Any, overwrite: bool) -> Path:
    """The output folder, checked: writable, and an existing non-empty one only with ``overwrite=true``
    (emptied by ``clear_out`` once every other check has passed)."""
    if is_none(out):
        raise ConfigError("out= is required: the folder cases.csv, summary.json and masks/ are written to")
    path = check_writable(Path(str(out)).expanduser(), "out")
    if path.exists() and (not path.is_dir() or any(path.iterdir())) and not overwrite:
        raise ConfigError(f"out={path} exists and is not empty; choose another out= or pass overwrite=true")
    return path


def clear_out(path: Path) -> None:
    """Empty an existing output folder (``overwrite=true``), after the checks and before the first write."""
    if path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def class_values(spec: ModelSpec, card: DataCard, prompt: str) -> dict[str, int]:
    """Class name -> label value in the card's files, in output order.

    A semantic adapter's classes without a prompt (its own order); otherwise the card's targets.
    """
    if prompt in ("none", "auto"):
        classes = spec.metadata.get("classes") or []
        if spec.task != "semantic" or not classes:
            raise ConfigError(
                f"prompt={prompt} needs a semantic adapter (task=semantic); {spec.label} is promptable: "
                f"use prompt={'|'.join(GT_PROMPTS)}"
            )
        names = label_names(card.labels)
        missing = [c for c in classes if c not in names]
        if missing:
            raise ConfigError(
                f"the adapter's classes {missing} are not labels of data card {card.name!r} {sorted(names)}"
            )
        return {c: int(names[c]) for c in classes}
    return domain.matched_classes(spec.metadata, card)  # another card than the adapter's: its targets, by name


def protocol_from(cfg: DictConfig, spec: ModelSpec) -> Protocol:
    """The protocol of ``cfg``; clicks are dropped (and said so) where no ground-truth prompt exists."""
    prompt = cfg.get("prompt") or ("none" if spec.task == "semantic" else "box")
    task = str(cfg.get("task") or "segmentation")
    if task not in EVALUATED:
        raise ConfigError(f"task={task!r} is not one of {EVALUATED}")
    memory = TASKS[task].memory
    clicks = parse_clicks(cfg.get("clicks"))
    if spec.backend == "onnx":
        if memory:
            raise ConfigError(
                f"task={task} needs SAM2's memory model, which an ONNX export does not hold; "
                "evaluate the export with task=segmentation, or the adapter with backend=torch"
            )
        if clicks:
            log.info("correction clicks feed logits back as a mask prompt, which the ONNX export does not take: off")
            clicks = ()
    if clicks and (prompt not in GT_PROMPTS or memory):
        log.info(
            "clicks are scored for simulated prompts on single slices only: off for prompt=%s task=%s", prompt, task
        )
        clicks = ()
    return Protocol(
        prompt=str(prompt),
        seed=int(cfg.get("seed", 0)),
        jitter=float(cfg.get("jitter", 0.1)),
        num_points=int(cfg.get("num_points", 3)),
        clicks=clicks,
        propagation=memory,
        tolerance_mm=float(cfg.get("nsd_tolerance_mm", 2.0)),
        min_area=int(cfg.get("min_area", 4)),
        components=bool(cfg.get("components", False)),
    )


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run ``configs/evaluate.yaml``'s evaluation; returns the ``summary.json`` content."""
    validate(cfg, "evaluate")
    out = prepare_out(cfg.get("out"), bool(cfg.get("overwrite", False)))
    backend = str(cfg.get("backend") or "torch")
    main = resolve_spec(
        cfg.get("adapter"), cfg.get("revision"), cfg.get("model"), cfg.get("image_size"), backend=backend
    )
    main.allow_base_mismatch = bool(cfg.get("allow_base_mismatch", False))
    other = None
    compare = cfg.get("compare") if cfg.get("compare") is not None or backend != "onnx" else export_source(main)
    if compare is not None:
        if main.path is None and is_none(compare):
            raise ConfigError(
                "compare=none compares an adapter with its zero-shot base; adapter=none has nothing to compare"
            )
        other = resolve_spec(compare, None, cfg.get("model"), cfg.get("image_size"), base_of=main, key="compare")
        other.allow_base_mismatch = main.allow_base_mismatch
    data = cfg.get("data") or {}
    card, root = evaluation_card(main.path, main.metadata, data.get("card"), data.get("root"))
    selected = card.intensity.get("channels")
    for spec in (main, other):
        if spec is not None:  # a projection trained on C channels takes C: a card selecting others is refused here
            check_channels(
                spec.metadata,
                len(selected) if selected else None,
                f"data card {card.path or card.name} (intensity.channels={selected})",
            )
    card, cases = load_cases(card, root, str(cfg.get("split", "val")), main.metadata)
    protocol = protocol_from(cfg, main)
    if protocol.propagation:
        card.require_volumes(f"task={cfg.get('task')}")
    shifts = robustness.conditions(cfg.get("shift"), cfg.get("severity"))
    classes = class_values(main, card, protocol.prompt)
    if other is not None:  # the compared model segments the same classes: a semantic head, or targets of the card
        class_values(other, card, protocol.prompt)
    own = (
        domain.in_domain_cases(
            main.metadata,
            card,
            classes,
            cfg.get("in_domain"),
            cfg.get("in_domain_root"),
            str(cfg.get("split", "val")),
            main.path,
        )
        if cfg.get("in_domain")
        else None
    )
    # Zero-shot SAM2 compared with an adapter sees the adapter's pixels (same window, same bands).
    preprocessing = main.metadata.get("preprocessing") or (other.metadata.get("preprocessing") if other else None)
    every_case = cases + (own[1] if own else [])
    check_inputs_finite([case.image for case in every_case], preprocessing or card_preprocessing(card))
    check_labels_finite([case.label for case in every_case])
    check_headers([path for case in every_case for path in (case.image, case.label)])
    check_grids([(case.image, case.label) for case in every_case])
    check_apart(
        out,
        "out",
        {"the adapter": main.path, "the compared adapter": other.path if other else None},
        hosts={"the data": data_root(card, root)},
    )

    clear_out(out)
    summary: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    keep: Any = cfg.get("save_masks", 3)
    for run, spec in (("adapter", main), ("compare", other)):
        if spec is None:
            continue
        run_rows, run_summary = _run(cfg, spec, card, cases, classes, protocol, preprocessing, out, run, keep, shifts)
        keep = list(run_summary["masks"])  # the compared run keeps the same cases, for side-by-side views
        rows += run_rows
        summary[run] = run_summary
    result = summary["adapter"]
    result["domain"] = domain.describe(main.metadata, card, classes)
    if own is not None:  # the same models on the adapter's own card, for in-domain vs out-of-domain
        inside = {
            run: _run(cfg, spec, own[0], own[1], own[2], protocol, preprocessing, out, run, 0)
            for run, spec in (("adapter", main), ("compare", other))
            if spec is not None
        }
        result["domain"].update(domain.side_by_side(inside, summary, own[0], str(cfg.get("split", "val"))))
    if other is not None:
        result["compare"] = {**summary["compare"], "difference": difference(result, summary["compare"])}
    out.mkdir(parents=True, exist_ok=True)
    if own is not None:
        write_cases([row for run_rows, _ in inside.values() for row in run_rows], out / "in_domain_cases.csv")
    write_cases([r for r in rows if "shift" not in r], out / "cases.csv")
    if shifts:
        labels = {run: summary[run]["adapter"] for run in ("adapter", "compare") if run in summary}
        result["robustness"] = robustness.summarize(rows, shifts, labels, card.modality, protocol.seed)
        robustness.write(result["robustness"], [r for r in rows if "shift" in r], out)
    write_summary(result, out / "summary.json")
    print_table(result)
    if own is not None:
        domain.print_table(result["domain"])
    if shifts:
        robustness.print_table(result["robustness"])
    print(f"evaluation written to {out}")
    return result


def export_source(spec: ModelSpec) -> str | None:
    """The torch adapter an ONNX export was made from (the default comparison of ``backend=onnx``),
    or ``None`` (with a warning) when that folder is gone."""
    source = (spec.metadata.get("export") or {}).get("source")
    if source and (Path(source).exists() or not Path(source).is_absolute()):
        return str(source)
    log.warning(
        "the export's torch adapter %s is not here: the export is evaluated alone (compare=<adapter> to "
        "put torch beside it)",
        source,
    )
    return None


def _run(
    cfg: DictConfig,
    spec: ModelSpec,
    card: DataCard,
    cases: list[EvalCase],
    classes: Mapping[str, int],
    protocol: Protocol,
    preprocessing: dict[str, Any] | None,
    out: Path,
    run: str,
    keep: Any,
    shifts: list[tuple[str, int]] = (),
) -> tuple[list[dict], dict]:
    """One model over every case: rows, and its summary (of the clean cases); then every case again under
    each ``(shift, severity)`` of ``shifts``, as rows with ``shift`` and ``severity``."""
    started = time.perf_counter()
    loaded = load_model(spec, card, preprocessing)
    video = load_model(spec, card, preprocessing, video=True).model if protocol.propagation else None
    if spec.backend == "onnx":
        predictor = OnnxPredictor(loaded, str(cfg.get("device", "auto")), fill_hole_area=cfg.get("fill_hole_area"))
    else:
        predictor = Predictor(loaded, str(cfg.get("device", "auto")), fill_hole_area=cfg.get("fill_hole_area"))
    if video is not None:
        video = video.to(predictor.device).eval()
    engine = Engine(predictor, int(cfg.get("batch_size", 8)), str(cfg.get("precision", "32")))
    slice_axis = slice_axis_of(loaded.preprocessing, card.slice_axis)
    masks = out / "masks" / run
    # Saved masks sit beside the card's label files: written as they store labels unless mask_values=ids.
    choice = str(cfg.get("mask_values") or "card")
    encoding = LabelEncoding.of_card(card)
    written = encoding if choice == "card" else LabelEncoding()
    rows, clicks, confusion, saved = [], {}, None, {}

    def save(case: EvalCase, result: CaseResult) -> None:
        saved[case.id] = save_prediction(result, list(classes.values()), masks, case.id, written)

    results = evaluate_cases(
        engine, cases, dict(classes), protocol, slice_axis, video, encoding, finish=save if keep else None
    )
    for result in _progress(results, cases, run):
        for row in result.rows:
            row["run"] = run
        rows += result.rows
        confusion = result.confusion if confusion is None else confusion + result.confusion
        for k, scores in result.clicks.items():
            clicks.setdefault(k, []).append(scores)
    _keep_masks(saved, rows, keep)
    unit = "frames/s" if protocol.propagation else "slices/s"
    summary = summarize_run(rows, list(classes), confusion, clicks, engine.planes, engine.model_seconds, unit)
    summary = {
        "adapter": spec.label,
        "adapter_path": str(spec.path) if spec.path else None,
        "backend": spec.backend,
        **({"quantize": spec.metadata["export"].get("quantize")} if spec.backend == "onnx" else {}),
        "model": loaded.model_info.to_dict(),
        "data_card": card.name,
        "split": str(cfg.get("split", "val")),
        "slice_axis": slice_axis,
        "label_values": dict(classes),
        "label_reading": label_reading(card, choice),
        "protocol": {
            **protocol.__dict__,
            "clicks": list(protocol.clicks),
            "task": str(cfg.get("task") or "segmentation"),
        },
        "seconds": time.perf_counter() - started,
        "masks": {k: v.relative_to(out).as_posix() for k, v in saved.items() if v.exists()},
        **summary,
    }
    for name, severity in shifts:
        shift_of = functools.partial(
            robustness.shift_for, name, severity, card.modality, loaded.preprocessing, protocol.seed
        )
        shifted = replace(protocol, clicks=())
        results = evaluate_cases(engine, cases, dict(classes), shifted, slice_axis, video, encoding, shift_of)
        for result in _progress(results, cases, f"{run} {name} {severity}"):
            rows += [{**row, "run": run, "shift": name, "severity": severity} for row in result.rows]
    return rows, summary


def _keep_masks(saved: dict[str, Path], rows: list[dict[str, Any]], keep: Any) -> None:
    """Keep the masks of ``keep`` cases spread over the Dice ranking (worst, median and best
    first), of every case (``all``), or of the cases listed."""
    if not saved or str(keep).lower() == "all":
        return
    if not isinstance(keep, (int, str)):
        chosen = set(keep)
    else:
        dice = {case: np.mean([r["dice"] for r in rows if r["case"] == case]) for case in saved}
        ranked = sorted(saved, key=lambda c: dice[c])
        count = min(int(keep), len(ranked))
        chosen = {ranked[int(round(i))] for i in np.linspace(0, len(ranked) - 1, count)} if count else set()
    for case, path in saved.items():
        if case not in chosen:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def _progress(results: Iterator[CaseResult], cases: list[EvalCase], run: str) -> Iterator[CaseResult]:
    from tqdm import tqdm

    return tqdm(results, total=len(cases), desc=f"evaluate {run}", unit="case", disable=len(cases) < 2)
