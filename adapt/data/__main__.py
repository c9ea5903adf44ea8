"""``python -m adapt.data <command> key=value ...``: dataset chores outside training.

Commands:
    download card=<stem or path> [root=<folder>]   fetch, md5-check and unpack a card's data
    cards                                          list the shipped cards with their licence
"""

from __future__ import annotations

import logging
import sys

from adapt.cli import USER_ERROR_STATUS, format_error
from adapt.errors import AdaptError, ConfigError

USAGE = __doc__


def _options(args: list[str]) -> dict[str, str]:
    options = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ConfigError(f"expected key=value, got {arg!r}\n{USAGE}")
        options[key.strip()] = value.strip()
    return options


def main(argv: list[str] | None = None) -> int:
    """Run one command; user errors print as one message and exit with status 2."""
    from adapt.data.cards import load_card, shipped_cards
    from adapt.data.download import download

    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if not argv or argv[0] not in ("download", "cards"):
            raise ConfigError(f"unknown command {argv[:1]}\n{USAGE}")
        options = _options(argv[1:])
        if argv[0] == "cards":
            for stem in shipped_cards():
                card = load_card(stem)
                print(f"{stem:18s} {card.dims}D {card.modality:14s} {card.license}")
            return 0
        unknown = sorted(set(options) - {"card", "root"})
        if unknown or "card" not in options:
            raise ConfigError(f"download takes card=<stem or path> and optional root=<folder>; got {sorted(options)}")
        root = download(load_card(options["card"]), options.get("root"))
        print(f"ready: data.card={options['card']} data.root={root}")
        return 0
    except AdaptError as err:
        print(format_error(err), file=sys.stderr)
        return USER_ERROR_STATUS


if __name__ == "__main__":
    sys.exit(main())
