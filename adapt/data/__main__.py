"""``python -m adapt.data <command> ...``: dataset chores outside training.

Commands:
    init <folder> [out=<card.yaml>] [name=<name>] [overwrite=true] [max_cases=N]
                                                   draft a data card from the files in <folder>
    check card=<stem or path> [root=<folder>] [out=<figure.png>]
                                                   statistics table + figure, and every problem found
                                                   (exit status 1 when one is an error)
    download card=<stem or path> [root=<folder>]   fetch, md5-check and unpack a card's data
    cards                                          list the shipped cards with their licence
"""

from __future__ import annotations

import logging
import sys

from adapt.cli import USER_ERROR_STATUS, format_error
from adapt.errors import AdaptError, ConfigError
from adapt.outputs import claimed

USAGE = __doc__
COMMANDS = ("init", "check", "download", "cards")
#: Exit status of ``check`` when it finds an error in the data.
PROBLEM_STATUS = 1


def _options(args: list[str], allowed: set[str], command: str) -> dict[str, str]:
    options = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ConfigError(f"expected key=value, got {arg!r}\n{USAGE}")
        options[key.strip()] = value.strip()
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(f"{command} takes {sorted(allowed)}; unknown: {unknown}\n{USAGE}")
    return options


def _flag(value: str | None, key: str) -> bool:
    if value is None:
        return False
    if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise ConfigError(f"{key}={value!r} must be true or false")
    return value.lower() in ("true", "1", "yes")


def init(args: list[str]) -> int:
    """Draft a card from a folder and say what was found."""
    from adapt.data.card_writer import init_card

    if not args or "=" in args[0]:
        raise ConfigError("init needs the dataset's folder first: python -m adapt.data init <folder> [out=card.yaml]")
    options = _options(args[1:], {"out", "name", "overwrite", "max_cases"}, "init")
    max_cases = options.get("max_cases")
    if max_cases is not None and (not max_cases.isdigit() or int(max_cases) < 1):
        raise ConfigError(f"max_cases={max_cases!r} must be a number of cases >= 1")
    with claimed(options.get("out"), "out"):  # a card refused after it was written is removed again
        out, layout, stats = init_card(args[0], options.get("out"), options.get("name"),
                                       _flag(options.get("overwrite"), "overwrite"), int(max_cases) if max_cases else None)
    print(f"{layout.description}; read {len(stats)} case(s)")
    for title, paths in (("images without a label", layout.unpaired_images),
                         ("labels without an image", layout.unpaired_labels)):
        if paths:
            print(f"{len(paths)} {title}: " + ", ".join(str(p.relative_to(layout.root)) for p in paths[:5])
                  + (" ..." if len(paths) > 5 else ""))
    unreadable = [s for s in stats if s.error]
    for s in unreadable[:5]:
        print(f"unreadable: {s.error}")
    print(f"card written to {out}\nnext: fill in license and citation, then\n"
          f"  python -m adapt.data check card={out}\n  python -m adapt.train data.card={out}")
    return 0


def check(args: list[str]) -> int:
    """Print the statistics and the problems of a card's data; save the figure."""
    from adapt.data.check import check_card, plot_report, print_report

    options = _options(args, {"card", "root", "out"}, "check")
    if "card" not in options:
        raise ConfigError("check needs card=<stem or path to a card YAML>")
    report = check_card(options["card"], options.get("root"))
    print_report(report)
    figure = plot_report(report, options.get("out") or f"{report.card.name}_check.png")
    print(f"figure saved to {figure}")
    if report.errors:
        print(f"{len(report.errors)} error(s): training would stop or learn from broken cases; fix them first")
        return PROBLEM_STATUS
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one command; user errors print as one message and exit with status 2."""
    from adapt.data.cards import load_card, shipped_cards
    from adapt.data.download import download

    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if not argv or argv[0] not in COMMANDS:
            raise ConfigError(f"unknown command {argv[:1]}\n{USAGE}")
        if argv[0] == "init":
            return init(argv[1:])
        if argv[0] == "check":
            return check(argv[1:])
        if argv[0] == "cards":
            _options(argv[1:], set(), "cards")
            for stem in shipped_cards():
                card = load_card(stem)
                print(f"{stem:18s} {card.dims}D {card.modality:14s} {card.license}")
            return 0
        options = _options(argv[1:], {"card", "root"}, "download")
        if "card" not in options:
            raise ConfigError(f"download takes card=<stem or path> and optional root=<folder>; got {sorted(options)}")
        root = download(load_card(options["card"]), options.get("root"))
        print(f"ready: data.card={options['card']} data.root={root}")
        return 0
    except AdaptError as err:
        print(format_error(err), file=sys.stderr)
        return USER_ERROR_STATUS


if __name__ == "__main__":
    sys.exit(main())
