"""The data card an adapter carries: a copy of the card's YAML, where its data was, which cases.

A card given as a file (``data.card=/somewhere/busi.yaml``) is not found again by its name, and
its relative ``source.root`` means nothing once the file has moved; so training writes the card
as it was read (``data_card.yaml``, every field kept, those added later too) into the adapter
folder, and ``sam2_adapt.json["card_record"]`` records the absolute data root and a fingerprint
of the case list (count and SHA-256 of the sorted relative image and label paths). Evaluation,
``backend=onnx`` exports (which copy the file), ``in_domain=true``, robustness runs and the model
card read the card from there when ``data.card=`` is not given.

When the data root has moved too, ``adapter_card`` says which key to set (``data.root=``) before
any model loads. What is shared on the Hub (``public_card_text``, ``public_metadata``) holds no
local path: no data root, and file names in place of absolute paths.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Iterable, Mapping

import yaml

from adapt.conf import CARD_DIR
from adapt.errors import ConfigError
from adapt.data.cards import load_card

log = logging.getLogger(__name__)

CARD_FILE = "data_card.yaml"
RECORD_KEY = "card_record"


def case_fingerprint(cases: Iterable[Any], root: str | Path) -> dict[str, Any]:
    """``{"count", "sha256"}`` of the cases' image and label paths relative to ``root``, sorted."""
    root = Path(root).expanduser().resolve()
    paths = []
    for case in cases:
        for path in (case.image, case.label):
            path = Path(path).resolve()
            paths.append(path.relative_to(root).as_posix() if path.is_relative_to(root) else path.as_posix())
    digest = hashlib.sha256("\n".join(sorted(paths)).encode()).hexdigest()
    return {"count": len(paths) // 2, "sha256": digest}


def card_record(card: Any, root: str | Path, cases: Iterable[Any]) -> dict[str, Any]:
    """What ``sam2_adapt.json`` records of the training card (its copy is ``CARD_FILE``)."""
    shipped = bool(card.path) and Path(card.path).resolve().parent == CARD_DIR.resolve()
    return {
        "name": card.name,
        "file": CARD_FILE,
        "shipped": shipped,
        "root": str(Path(root).expanduser().resolve()),
        "cases": case_fingerprint(cases, root),
    }


def card_text(card: Any) -> str:
    """The card's YAML as the user wrote it (comments and every field kept)."""
    if card.path and Path(card.path).is_file():
        return Path(card.path).read_text()
    return yaml.safe_dump(card.to_dict(), sort_keys=False)


def adapter_card(
    folder: str | Path | None, metadata: Mapping[str, Any], root: Any = None, key: str = "data.root"
) -> tuple[Any, str | None] | None:
    """The card an adapter carries and the data root to read it at; ``None`` when it carries none
    (adapters written before cards travelled: their card is found by name as before).

    Args:
        folder: the adapter (or export) folder holding ``CARD_FILE``.
        metadata: its ``sam2_adapt.json``.
        root: the user's ``data.root`` (wins over the recorded one).
        key: the setting named when the recorded data root is gone.

    Raises:
        ConfigError: the recorded data root is not there and ``key`` is not set (exit 2, before
            any model loads), or the copy is broken.
    """

    record = metadata.get(RECORD_KEY) or {}
    path = Path(folder) / CARD_FILE if folder is not None else None
    if not record or path is None or not path.is_file():
        return None
    card = load_card(path)
    if root not in (None, ""):
        return card, str(root)
    recorded = record.get("root")
    if recorded and Path(recorded).exists():
        return card, recorded
    if card.source.get("kind") == "synthetic":
        return card, recorded  # generated again where it was (or in the data cache)
    if record.get("shipped"):
        return card, None  # where a shipped card's data is looked for by default, as when named
    where = f"was at {recorded}, which is not there any more" if recorded else "is not recorded (a shared adapter)"
    raise ConfigError(
        f"the data of the adapter's card {card.name!r} ({path}) {where}; set {key}=<the folder that "
        f"holds its {record.get('cases', {}).get('count', '?')} cases now>"
    )


def check_cases(metadata: Mapping[str, Any], card: Any, cases: Iterable[Any], root: str | Path) -> None:
    """Warn when the cases found for the adapter's own card are not those it was trained on."""
    recorded = metadata.get(RECORD_KEY) or {}
    if recorded.get("name") != card.name or not recorded.get("cases"):
        return
    now = case_fingerprint(cases, root)
    if now != recorded["cases"]:
        log.warning(
            "the cases of data card %r at %s (%d) are not those the adapter was trained on (%d): files were "
            "added, removed or renamed since; its scores are not comparable with the training run's",
            card.name,
            root,
            now["count"],
            recorded["cases"].get("count"),
        )


def _is_local_path(value: str) -> bool:
    return PurePosixPath(value).is_absolute() or PureWindowsPath(value).is_absolute() or value.startswith("~")


def strip_paths(value: Any) -> Any:
    """``value`` with every absolute or home path replaced by its file name (JSON-like data)."""
    if isinstance(value, Mapping):
        return {k: strip_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strip_paths(v) for v in value]
    if isinstance(value, str) and _is_local_path(value):
        return PurePosixPath(value.replace("\\", "/")).name
    return value


def public_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """``sam2_adapt.json`` as shared: no data root, file names for local paths."""
    public = strip_paths(dict(metadata))
    if isinstance(public.get(RECORD_KEY), dict):
        public[RECORD_KEY] = {**public[RECORD_KEY], "root": None}
    return public


def public_card_text(text: str) -> str:
    """The card copy as shared: ``source.root`` removed (the data is not shared), no local path."""
    card = yaml.safe_load(text) or {}
    if isinstance(card.get("source"), dict):
        card["source"].pop("root", None)
    return yaml.safe_dump(strip_paths(card), sort_keys=False, allow_unicode=True)


def copy_card(source: str | Path, target: str | Path, public: bool = False) -> Path | None:
    """Copy an adapter's ``CARD_FILE`` into ``target`` (an export, a merged model, an upload);
    ``public``: as shared (``public_card_text``). ``None`` when the adapter carries no card."""
    path = Path(source) / CARD_FILE
    if not path.is_file():
        return None
    text = path.read_text()
    out = Path(target) / CARD_FILE
    out.write_text(public_card_text(text) if public else text)
    return out


def carried_card(folder: str | Path | None) -> dict[str, Any] | None:
    """The fields of the card an adapter folder carries, as plain data (``None``: it carries none)."""
    path = Path(folder) / CARD_FILE if folder is not None else None
    if path is None or not path.is_file():
        return None
    card = yaml.safe_load(path.read_text())
    return card if isinstance(card, dict) else None
