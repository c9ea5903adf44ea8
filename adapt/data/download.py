"""Fetch a card's archives, check their md5, and unpack them where ``list_cases`` looks.

MONAI's ``download_and_extract`` does the transfer, the md5 check and the unpacking; this
module decides where things go and makes failures clean. Everything happens in a staging
folder next to the destination, moved into place only once every archive of the card has
been fetched, verified and unpacked, so a wrong checksum or a broken transfer leaves
nothing half-extracted behind.

Destinations follow the cards: an MSD task or an nnU-Net dataset is unpacked so that ``root`` *is*
its folder (``dataset.json`` at its top, as ``data.root=/path/to/Task09_Spleen`` expects); other cards
keep their archives' own folders under ``root``, which is what their globs name.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from adapt.data.cards import DataCard
from adapt.data.sources import data_root
from adapt.errors import DataError, DataNotFoundError

log = logging.getLogger(__name__)


def archive_name(url: str) -> str:
    """The file name of a URL's path (query strings such as ``?download=1`` dropped)."""
    name = Path(unquote(urlparse(url).path)).name
    if not name:
        raise DataError(f"download URL {url!r} names no file")
    return name


def no_url_error(card: DataCard) -> DataNotFoundError:
    """The error for a card without a download URL, with how to get its data instead."""
    how = card.source.get("access") or f"obtain it as its card ({card.path}) describes"
    return DataNotFoundError(f"data card {card.name!r} has no public download URL (source.url); {how}")


def download(card: DataCard, root: str | Path | None = None, progress: bool = True) -> Path:
    """Download, verify and unpack every archive of ``card`` into its data root.

    Args:
        card: a card with ``source.url`` (and ``source.md5`` where the source publishes one).
        root: destination (default: ``data_root(card)``: the card's root or the cache).
        progress: show MONAI's progress bar.

    Returns:
        The data root, ready for ``data.root=``.

    Raises:
        DataNotFoundError: the card has no URL (says how to get the data).
        DataError: a transfer failed or an archive's md5 differs (nothing is left behind).
    """
    from monai.apps import download_and_extract

    urls = card.urls()
    if not urls:
        raise no_url_error(card)
    root = data_root(card, root)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        unpacked = staging / "unpacked"
        for url, md5 in urls:
            archive = staging / archive_name(url)
            log.info("downloading %s -> %s", url, archive)
            try:
                download_and_extract(
                    url,
                    filepath=archive,
                    output_dir=unpacked,
                    hash_val=md5,
                    hash_type="md5",
                    has_base=False,
                    progress=progress,
                )
            except Exception as err:  # MONAI raises RuntimeError/HashCheckError/URLError/ValueError
                check = f" (expected md5 {md5})" if md5 and "hash" in str(err).lower() else ""
                raise DataError(
                    f"data card {card.name!r}: downloading {url} failed{check}: "
                    f"{type(err).__name__}: {err}. Nothing was written to {root}; "
                    f"run the download again, or fetch the file yourself and use data.root="
                ) from None
            archive.unlink()
        _move_into(_content_root(card, unpacked), root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def _content_root(card: DataCard, unpacked: Path) -> Path:
    """The folder whose entries become ``root``'s: an MSD or nnU-Net archive's single dataset folder, else the
    unpacked tree."""
    entries = [p for p in unpacked.iterdir() if not p.name.startswith(".")]
    if card.source["kind"] in ("msd", "nnunet") and len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return unpacked


def _move_into(source: Path, root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for entry in sorted(source.iterdir()):
        target = root / entry.name
        if target.exists():
            log.warning("%s already exists; kept as is", target)
            continue
        shutil.move(str(entry), str(target))  # a rename: staging sits next to root
