"""The CSV files users write or edit by hand (a card's manifest, a prompts file, a worklist), read one way.

A spreadsheet saves CSV in shapes ``csv.DictReader`` reads wrongly without a word: Excel's UTF-8
starts the file with a byte-order mark (the first column is then ``"\\ufeffcase"``, not ``case``),
a European locale separates fields with ``;``, a hand-typed header has spaces around its names,
and a value with an unquoted comma splits a row into more fields than the header (``DictReader``
files the extra ones under the key ``None``). ``read_rows`` reads all of these as meant (the
mark dropped, the separator found from the header line, the names stripped) and refuses the rest
with the file, the line and the fix: columns missing, a row of more fields than the header, a file
that is not text. Every caller then sees the same columns whatever tool wrote the file.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterable

from adapt.errors import ConfigError

#: Field separators a spreadsheet writes, tried on the header line in this order.
SEPARATORS = (",", ";", "\t")


def read_rows(path: str | Path, required: Iterable[str], where: str, fix: str) -> list[dict[str, str]]:
    """The rows of the CSV ``path`` as column -> value (header names stripped), each value stripped.

    Args:
        path: the file.
        required: columns it must have.
        where: how the message names the file (``prompts=<path>``, ``<manifest>``).
        fix: what the user can do when the columns are wrong (how to write the file).

    Raises:
        ConfigError: not a text file, no header, columns missing, or a row with more fields than the
            header; the file (and line) named, with ``fix``.
    """
    required = tuple(required)
    try:
        reader, columns, separator = _reader(path)
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not a text (UTF-8) CSV file; {fix}") from None
    missing = [c for c in required if c not in columns]
    if missing:
        found = f"found {columns}" if columns else "the file is empty"
        raise ConfigError(f"{where}: needs the columns {','.join(required)}; {found}; {fix}")
    rows = []
    for row in reader:
        if None in row:
            raise ConfigError(
                f"{where}, line {reader.line_num}: more fields than the header's {len(columns)} "
                f"({row[None]!r} left over); quote a value that holds {separator!r}; {fix}"
            )
        rows.append({name: (value or "").strip() for name, value in zip(columns, row.values())})
    return rows


def columns_of(path: str | Path) -> list[str]:
    """The column names of the CSV ``path`` as ``read_rows`` reads them (``[]`` for a file that is not
    text): whether a CSV found in a dataset folder is a manifest, before it is read as one."""
    try:
        return _reader(path)[1]
    except UnicodeDecodeError:
        return []


def _reader(path: str | Path) -> tuple[csv.DictReader, list[str], str]:
    """A reader of the file's rows, its stripped column names, and the separator found on its header line."""
    lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    header = next((line for line in lines if line.strip()), "")
    separator = next((s for s in SEPARATORS if s in header), ",")
    reader = csv.DictReader(lines, delimiter=separator)
    return reader, [name.strip() for name in reader.fieldnames or []], separator
