"""``python -m adapt.data <command> ...``: dataset chores outside training.

Commands:
    init <folder> [out=<card.yaml>] [name=<name>] [overwrite=true] [max_cases=N]
                                                   draft a data card from the files in <folder>
    check card=<stem or path> [root=<folder>] [out=<figure.png>]
                                                   statistics table + figure, and every problem found
                                                   (exit status 1 when one is an error)
    download card=<stem or path> [root=<folder>]   fetch, md5-check and unpack a card's data
    prepare card=<stem or path> [root=<folder>] [cache_dir=<dir>] [workers=N]
                                                   write every case into the disk cache training reads
                                                   (every core by default; resumes where it stopped)
    shards card=<stem or path> out=<folder> [root=<folder>] [cache_dir=<dir>] [workers=N] [shard_size=N]
                                                   prepare the cases, then write them as WebDataset tar
                                                   shards for data.shards=<folder or URL> (several nodes)
    cards                                          list the shipped cards with their licence
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Any

from adapt.data.sources import check_data
from adapt.errors import AdaptError, ConfigError
from adapt.exits import USER_ERROR_STATUS, format_error
from adapt.outputs import claimed
from adapt.storage import check_writable

USAGE = __doc__
#: Every command's options and the kind of value each takes (checked by ``_options`` before anything runs).
OPTIONS = {
    "init": {"out": "output", "name": "name", "overwrite": "flag", "max_cases": "count"},
    "check": {"card": "card", "root": "folder", "out": "output"},
    "download": {"card": "card", "root": "output folder"},
    "cards": {},
    "prepare": {"card": "card", "root": "folder", "cache_dir": "output folder", "workers": "count"},
    "shards": {
        "card": "card",
        "out": "output folder",
        "root": "folder",
        "cache_dir": "output folder",
        "workers": "count",
        "shard_size": "count",
    },
}
COMMANDS = tuple(OPTIONS)
#: Values each kind refuses (the generated fault tests give them to every option of that kind): an
#: ``output`` is a file the command writes, an ``output folder`` a folder it creates or writes in
#: (``/dev/null`` is a file; nothing can be created inside it).
OPTION_FAULTS = {
    "output": ["", "/dev/null/out.png", "/"],
    "output folder": ["", "/dev/null", "/dev/null/out"],
    "name": ["", "my card"],
    "flag": ["", "maybe"],
    "count": ["", "0", "-1", "abc"],
    "card": ["", "/nonexistent/card.yaml", "no_such_card"],
    "folder": ["", "/nonexistent-folder"],
}
FLAGS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
#: Exit status of ``check`` when it finds an error in the data.
PROBLEM_STATUS = 1


def _options(args: list[str], command: str) -> dict[str, Any]:
    """``key=value`` arguments of ``command``, each checked for its kind (``OPTIONS``) and converted."""
    allowed = OPTIONS[command]
    options: dict[str, Any] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ConfigError(
                f"{arg!r}: expected key=value ({command} takes {sorted(allowed) or 'no options'})\n{USAGE}"
            )
        options[key.strip()] = value.strip()
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"{command} takes {sorted(allowed) or 'no options'}; unknown: {unknown}\n{USAGE}")
    return {key: _value(key, value, allowed[key]) for key, value in options.items()}


def _value(key: str, value: str, kind: str) -> Any:
    """``value`` of an option of ``kind`` (``OPTIONS``), or a ``ConfigError`` naming ``key=value``."""
    if not value:
        raise ConfigError(f"{key}= is empty; give a value (or leave {key}= out for its default)")
    if kind == "flag":
        if value.lower() not in FLAGS:
            raise ConfigError(f"{key}={value!r} must be true or false")
        return FLAGS[value.lower()]
    if kind == "count":
        if not value.isdigit() or int(value) < 1:
            raise ConfigError(f"{key}={value!r} must be a whole number >= 1")
        return int(value)
    if kind == "name" and not re.fullmatch(r"[A-Za-z0-9][\w.-]*", value):
        raise ConfigError(f"{key}={value!r} must be a card name of letters, digits, '_', '-' or '.' (it names files)")
    if kind == "card":
        from adapt.data.cards import card_path  # lazy: start-up

        card_path(value)  # a stem of a shipped card or an existing YAML file, or a ConfigError naming it
    if kind == "folder" and not Path(value).expanduser().is_dir():
        raise ConfigError(f"{key}={value}: no such folder ({Path(value).expanduser().absolute()})")
    if kind == "output":  # checked before the work whose result it holds
        path = Path(value).expanduser()
        if path.is_dir():
            raise ConfigError(f"{key}={value}: is a folder; name the file to write, e.g. {key}={path / 'out'}")
        check_writable(path.parent, key, value)
    if kind == "output folder":
        check_writable(value, key)
    return value


def init(args: list[str]) -> int:
    """Draft a card from a folder and say what was found."""
    from adapt.data.card_writer import init_card  # lazy: start-up

    if not args or "=" in args[0]:
        raise ConfigError("init needs the dataset's folder first: python -m adapt.data init <folder> [out=card.yaml]")
    options = _options(args[1:], "init")
    with claimed(options.get("out"), "out"):  # a card refused after it was written is removed again
        out, layout, stats = init_card(
            args[0], options.get("out"), options.get("name"), options.get("overwrite", False), options.get("max_cases")
        )
    print(f"{layout.description}; read {len(stats)} case(s)")
    for title, paths in (
        ("images without a label", layout.unpaired_images),
        ("labels without an image", layout.unpaired_labels),
    ):
        if paths:
            print(
                f"{len(paths)} {title}: "
                + ", ".join(str(p.relative_to(layout.root)) for p in paths[:5])
                + (" ..." if len(paths) > 5 else "")
            )
    if layout.unlabelled:
        print(
            f"kept {len(layout.unlabelled)} image(s) without a label as unlabelled cases (source.unlabelled: true): "
            "training, evaluation and check skip them; python -m adapt.annotate pre-annotates them"
        )
    for note in layout.notes:
        print(note)
    unreadable = [s for s in stats if s.error]
    for s in unreadable[:5]:
        print(f"unreadable: {s.error}")
    print(
        f"card written to {out}\nnext: fill in license and citation, then\n"
        f"  python -m adapt.data check card={out}\n  python -m adapt.train data.card={out}"
    )
    return 0


def check(args: list[str]) -> int:
    """Print the statistics and the problems of a card's data; save the figure."""
    options = _options(args, "check")
    if "card" not in options:
        raise ConfigError("check needs card=<stem or path to a card YAML>")
    check_data(options["card"], options.get("root"))  # the door: before the readers import torch
    from adapt.data.check import check_card, plot_report, print_report  # lazy: start-up

    report = check_card(options["card"], options.get("root"))
    print_report(report)
    figure = plot_report(report, options.get("out") or f"{report.card.name}_check.png")
    print(f"figure saved to {figure}")
    if report.errors:
        print(f"{len(report.errors)} error(s): training would stop or learn from broken cases; fix them first")
        return PROBLEM_STATUS
    return 0


def prepare(args: list[str]) -> int:
    """Write a card's cases into the disk cache, in parallel, with a progress bar; say what it cost."""
    import time

    from tqdm import tqdm

    from adapt.data.cache import CaseStore, default_workers  # lazy: start-up
    from adapt.data.cards import load_card  # lazy: start-up
    from adapt.data.sources import data_root, list_cases  # lazy: start-up

    options = _options(args, "prepare")
    if "card" not in options:
        raise ConfigError("prepare needs card=<stem or path to a card YAML>")
    workers = options.get("workers")
    card = load_card(options["card"])
    root = data_root(card, options.get("root"))
    store = CaseStore(card, list_cases(card, root), "disk", options.get("cache_dir"))
    start = time.perf_counter()
    with tqdm(total=len(store), unit="case", desc=f"preparing {card.name}") as bar:
        errors = store.prepare_missing(
            workers=workers or default_workers(), progress=lambda done, total: bar.update(done - bar.n)
        )
    files = [f for f in store.directory.glob("*") if f.is_file()] if store.directory.exists() else []
    left = [f for f in files if f.suffix == ".tmp"]  # a write cut short (a killed process): not the cache's
    size = sum(f.stat().st_size for f in files if f not in left)
    print(
        f"{store.prepared} case(s) prepared, {len(store) - store.prepared - len(errors)} already cached, in "
        f"{time.perf_counter() - start:.1f} s; cache {store.directory} holds {size / 1e6:,.1f} MB"
    )
    if left:
        print(
            f"{len(left)} unfinished file(s) (*.tmp, {sum(f.stat().st_size for f in left) / 1e6:,.1f} MB) of a "
            "preparation that was killed: delete them once no preparation writes to this cache"
        )
    for position, error in sorted(errors.items()):
        print(f"bad case {store.cases[position].id}: {error}")
    if errors:
        print(f"{len(errors)} bad case(s): training stops on them unless data.skip_bad_cases=true")
        return PROBLEM_STATUS
    extra = "" if options.get("root") is None else f" data.root={options['root']}"
    extra += "" if options.get("cache_dir") is None else f" data.cache_dir={options['cache_dir']}"
    print(f"next: python -m adapt.train data.card={options['card']}{extra} data.cache=disk")
    return 0


def shards(args: list[str]) -> int:
    """Write a card's prepared cases as tar shards (``adapt.data.shards``) with a progress bar."""
    import time

    from tqdm import tqdm

    from adapt.data.cards import load_card  # lazy: start-up
    from adapt.data.shards import INDEX_FILE, SHARD_SIZE, write_shards  # lazy: start-up
    from adapt.data.sources import data_root  # lazy: start-up

    options = _options(args, "shards")
    missing = [key for key in ("card", "out") if key not in options]
    if missing:
        raise ConfigError(
            f"shards needs {' and '.join(f'{k}=' for k in missing)} (card=<stem or path> out=<new folder>)"
        )
    card = load_card(options["card"])
    out = Path(options["out"]).expanduser()
    start = time.perf_counter()
    # one writer per folder; a refusal after the folder was made removes it again
    with claimed(str(out), "out"), tqdm(unit="plane", desc=f"sharding {card.name}") as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        index = write_shards(
            card,
            data_root(card, options.get("root")),
            out,
            options.get("shard_size", SHARD_SIZE),
            options.get("cache_dir"),
            options.get("workers"),
            progress=progress,
        )
    size = sum(f.stat().st_size for f in out.glob("*.tar"))
    counts = {split: len(entries) for split, entries in index["shards"].items()}
    print(
        f"{', '.join(f'{n} {split} shard(s)' for split, n in counts.items())} ({size / 1e6:,.1f} MB) and "
        f"{INDEX_FILE} written to {out} in {time.perf_counter() - start:.1f} s"
    )
    for case, error in sorted(index["bad_cases"].items()):
        print(f"bad case {case} (left out): {error}")
    print(
        f"next: python -m adapt.train data.card={options['card']} data.shards={out}  (or a URL where the folder is "
        "served; see docs/scaling.md)"
    )
    return PROBLEM_STATUS if index["bad_cases"] else 0


def main(argv: list[str] | None = None) -> int:
    """Run one command; user errors print as one message and exit with status 2."""
    from adapt.data.cards import load_card, shipped_cards  # lazy: start-up
    from adapt.data.download import download  # lazy: start-up

    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if not argv or argv[0] not in COMMANDS:
            raise ConfigError(f"unknown command {argv[:1]}\n{USAGE}")
        if argv[0] == "init":
            return init(argv[1:])
        if argv[0] == "check":
            return check(argv[1:])
        if argv[0] == "prepare":
            return prepare(argv[1:])
        if argv[0] == "shards":
            return shards(argv[1:])
        if argv[0] == "cards":
            _options(argv[1:], "cards")
            for stem in shipped_cards():
                card = load_card(stem)
                print(f"{stem:18s} {card.dims}D {card.modality:14s} {card.license}")
            return 0
        options = _options(argv[1:], "download")
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
