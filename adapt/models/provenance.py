"""Which base weights an adapter was trained on: a fingerprint recorded beside it and checked at load.

An adapter only means something on the exact weights it was trained on, and a name does not
say which weights those were: a Meta ``.pt`` (MedSAM2's, say) is loaded over the architecture of
``facebook/sam2.1-hiera-tiny`` under that Hub id, a Hub repo moves on between commits, and a
local copy of a model can be replaced under the same folder name. So ``sam2_adapt.json`` records
``base_fingerprint``:

- ``hub``: the Hub id and the commit the weights came from (read from the local Hugging Face
  cache, no network);
- ``checkpoint`` / ``folder``: a SHA-256 of the weight files (a Meta ``.pt``; a local folder's
  ``*.safetensors`` / ``*.bin``), with the architecture or folder name;
- ``random``: the architecture and seed of random weights (``model=tiny``, offline fallback).

Hashing gigabytes takes seconds, so each file's digest is cached by (absolute path, size,
modification time) in a small JSON file under the user's cache (``$SAM2_ADAPT_CACHE``, default
``~/.cache/sam2-adapt``), written atomically; a cache that cannot be written only costs time.
``check_fingerprint`` refuses to put an adapter on other weights than its own unless asked to.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

from adapt.errors import ConfigError
from adapt.storage import write_atomically
from adapt.models.sam2 import RANDOM_INIT_SEED

log = logging.getLogger(__name__)

CACHE_FILE = "base_fingerprints.json"
#: Weight files of a local model folder (``save_pretrained``'s, sharded or not).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
#: The fields that decide whether two fingerprints name the same weights, per kind.
IDENTITY = {
    "hub": ("id", "revision"),
    "checkpoint": ("sha256",),
    "folder": ("sha256",),
    "random": ("architecture", "seed"),
}
OVERRIDE = "allow_base_mismatch=true"


def cache_file() -> Path:
    """The digest cache: ``$SAM2_ADAPT_CACHE/base_fingerprints.json`` (default ``~/.cache/sam2-adapt``)."""
    root = (
        os.environ.get("SAM2_ADAPT_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sam2-adapt"
    )
    return Path(root).expanduser() / CACHE_FILE


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of one file, computed once per (path, size, modification time) and cached."""

    path = Path(path).resolve()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    store = cache_file()
    cache = _read_cache(store)
    if key in cache:
        return str(cache[key])
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    cache = {k: v for k, v in cache.items() if not k.startswith(f"{path}|")}  # older versions of this file
    cache[key] = digest.hexdigest()
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(cache, indent=1, sort_keys=True).encode()
        write_atomically(
            store, lambda f: f.write(text), "SAM2_ADAPT_CACHE", "point SAM2_ADAPT_CACHE to a writable folder"
        )
    except (OSError, ConfigError) as err:  # a read-only or full cache only costs a second hash later
        log.debug("base fingerprint cache %s not written: %s", store, err)
    return cache[key]


def folder_sha256(folder: str | Path) -> str:
    """One SHA-256 over a model folder's weight files (their names and digests, in name order)."""
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not files:
        raise ConfigError(f"{folder}: no weight file ({', '.join(WEIGHT_SUFFIXES)}) to fingerprint")
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.relative_to(folder).as_posix()}:{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def hub_commit(repo_id: str, revision: str | None) -> str | None:
    """The commit of ``repo_id`` at ``revision`` in the local Hugging Face cache (``None``: not known)."""
    from huggingface_hub import try_to_load_from_cache
    from transformers.utils.hub import extract_commit_hash

    path = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    return extract_commit_hash(path, None) if isinstance(path, str) else revision


def base_fingerprint(info: Any) -> dict[str, Any]:
    """The fingerprint of the base weights ``load_sam2`` loaded (its ``ModelInfo``).

    Args:
        info: ``adapt.models.sam2.ModelInfo`` (name, revision, pretrained, checkpoint).
    """

    if info.checkpoint:
        return {
            "kind": "checkpoint",
            "file": Path(info.checkpoint).name,
            "architecture": info.name,
            "sha256": file_sha256(info.checkpoint),
        }
    if not info.pretrained:
        return {"kind": "random", "architecture": info.name, "seed": RANDOM_INIT_SEED}
    if Path(info.name).is_dir():
        return {"kind": "folder", "name": Path(info.name).name, "sha256": folder_sha256(info.name)}
    return {"kind": "hub", "id": info.name, "revision": hub_commit(info.name, info.revision)}


def describe(fingerprint: Mapping[str, Any] | None) -> str:
    """A fingerprint in words, for messages and the model card."""
    if not fingerprint:
        return "unknown weights (the adapter records no fingerprint)"
    kind = fingerprint.get("kind")
    if kind == "hub":
        return f"Hub model {fingerprint.get('id')} @ {fingerprint.get('revision') or 'an unrecorded commit'}"
    if kind == "checkpoint":
        return (
            f"Meta checkpoint {fingerprint.get('file')} (sha256 {str(fingerprint.get('sha256'))[:16]}…) "
            f"in the architecture of {fingerprint.get('architecture')}"
        )
    if kind == "folder":
        return f"local model folder {fingerprint.get('name')} (sha256 {str(fingerprint.get('sha256'))[:16]}…)"
    return f"RANDOM weights of {fingerprint.get('architecture')} (seed {fingerprint.get('seed')})"


def same_weights(recorded: Mapping[str, Any], loaded: Mapping[str, Any]) -> bool:
    """Whether two fingerprints name the same weights (a Hub commit that was not recorded matches any)."""
    if recorded.get("kind") != loaded.get("kind"):
        return False
    fields = IDENTITY.get(str(recorded.get("kind")), ())
    return all((k == "revision" and recorded.get(k) is None) or recorded.get(k) == loaded.get(k) for k in fields)


def check_fingerprint(
    recorded: Mapping[str, Any] | None, loaded: Mapping[str, Any], where: Any, allow_mismatch: bool = False
) -> None:
    """Refuse (or, with ``allow_mismatch``, warn loudly) when ``loaded`` are not the weights of ``recorded``.

    Adapters written before fingerprints were recorded (``recorded`` empty) pass.

    Raises:
        ConfigError: both fingerprints named, and how to get the right weights or override.
    """
    if not recorded or same_weights(recorded, loaded):
        return
    message = f"the adapter {where} was trained on {describe(recorded)}, but the base loaded now is {describe(loaded)}"
    if allow_mismatch:
        log.warning(
            "!!! %s; loading it anyway (%s): its outputs are not those it was validated with !!!", message, OVERRIDE
        )
        return
    raise ConfigError(
        f"{message}. An adapter only works on the weights it was trained on: load those (the same "
        f"checkpoint= file, model folder or Hub revision), or pass {OVERRIDE} to load it on these "
        "weights anyway"
    )
