"""The commands README.md tells a user to run, read from its fenced ``bash`` blocks (``tests/`` is not a
package: test modules import this file by name, as they do ``conftest``).

The journeys (``tests/test_journeys.py``) run these lines, not copies of them: a README line that
changes changes what the tests run, and a line the tests need but the README lost fails with the
line named. A command is one line of a block (``\\``-continued lines joined, the ``# ...`` comment
cut); the README's placeholders (``/data/busi``, ``busi.yaml``, ``outputs/demo/<run>``, ``<date>``,
``me/sam2-ct-liver``, ``case.nii.gz`` ...) are replaced by the test's own paths, ``[key=value]``
options are kept or dropped, and a placeholder left unreplaced fails the test.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```(\w*)\s*$")
OPTIONAL = re.compile(r"\s\[([\w.]+=[^\]\s]+)\]")
PLACEHOLDER = re.compile(r"<[a-z_]+>")


@dataclass(frozen=True)
class Command:
    """One command of the README: the section (``## ...`` heading) it is in and its text."""

    section: str
    text: str

    def argv(self, places: dict[str, str], options: tuple[str, ...] = ()) -> list[str]:
        """The command's words with ``places`` (README text -> the test's text, longest first) replaced and
        the bracketed options whose key is in ``options`` kept (the others dropped).

        Raises:
            AssertionError: a ``<placeholder>`` is left in the command.
        """
        text = OPTIONAL.sub(lambda m: f" {m.group(1)}" if m.group(1).split("=")[0] in options else "", self.text)
        for old in sorted(places, key=len, reverse=True):
            text = text.replace(old, places[old])
        left = PLACEHOLDER.findall(text)
        assert not left, f"README.md ({self.section}): {self.text!r} keeps {left} after the test's replacements"
        return shlex.split(text)


def commands(readme: Path = README) -> list[Command]:
    """Every command line of the README's ``bash`` blocks, in order."""
    found, section, block, pending = [], "", None, ""
    for line in readme.read_text().splitlines():
        fence = FENCE.match(line.strip())
        if fence:
            block = fence.group(1) if block is None else None
            continue
        if block is None:
            section = line[3:].strip() if line.startswith("## ") else section
            continue
        if block != "bash":
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip() + " "
            continue
        text = " ".join(shlex.split(pending, comments=True, posix=False)) if pending.strip() else ""
        pending = ""
        if text:
            found.append(Command(section, text))
    return found


def command(start: str, section: str | None = None, containing: tuple[str, ...] = ()) -> Command:
    """The first README command that starts with ``start`` (in ``section``, holding every word of
    ``containing``).

    Raises:
        AssertionError: naming what the README lacks.
    """
    for found in commands():
        if (
            found.text.startswith(start)
            and section in (None, found.section)
            and all(c in found.text for c in containing)
        ):
            return found
    where = f" in section {section!r}" if section else ""
    raise AssertionError(
        f"README.md has no command starting {start!r}{where} with {list(containing)}; "
        "the journeys run the README's own lines"
    )
